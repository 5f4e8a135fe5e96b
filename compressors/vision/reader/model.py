"""A small LLaVA-style image reader: the real ViT-S, a trained projector, a frozen SmolLM2.

The eval harness reads image questions (easy-vqa) through it, so the vision methods can be
scored by answer accuracy against kept visual tokens. `build_llava(lm)` wraps a loaded
causal LM (its modules are shared, not copied) with the converted DINOv2-S tower and the
shipped projector (`vision_reader_smollm2.safetensors`, trained by `ctxzip train llava`);
`answer_requests` is what the vision compressors' `eval_answers` run: it attaches
`LlavaVisionCompression` (module hooks) for the request's budget, so compression happens
inside the reader, and generates with K image tokens per image.

The prompt is the readers' one template (`ctxzip.compressors.reader_prompt`) with the image's
placeholder tokens as the context, so the no-context baseline is the same reader and the
same prompt without the image. The projector was trained with exactly that text.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ctxzip.budget import Budget
from ctxzip.compressors.reader_prompt import clean_answer, messages_for
from ctxzip.compressors.vision.backbone import converted_folder, dinov2_small_config, preprocess
from ctxzip.compressors.vision.llava import LlavaVisionCompression
from ctxzip.errors import InputError, ModelNotFoundError
from ctxzip.models import SMOLLM, cached, canonical_id
from ctxzip.result import CompressionRequest, CompressionResult
from ctxzip.weights import load_weights, save_weights, shipped

LM_ID = SMOLLM
"""The LM the shipped projector was trained for (the eval harness's local reader)."""
IMAGE_SIZE = 112  # 8x8 patches of 14 px: the 64x64 easy-vqa images upscaled
FEATURE_LAYER = -2  # LLaVA's default: the second-to-last layer's patch tokens, CLS dropped
IMAGE_TOKEN = "<empty_output>"  # a single-token special string SmolLM2 never emits in chat
PROJECTOR_FILE = shipped(
    "ctxzip.compressors.vision.reader", "weights/vision_reader_smollm2.safetensors"
)
ANSWERS = (
    "circle",
    "rectangle",
    "triangle",
    "black",
    "blue",
    "brown",
    "gray",
    "green",
    "red",
    "teal",
    "yellow",
    "yes",
    "no",
)
"""Every easy-vqa answer."""


def chat_text(tokenizer: Any, question: str, n_image_tokens: int) -> str:
    """The reader's chat prompt with `n_image_tokens` placeholders as the context."""
    messages = messages_for(question, IMAGE_TOKEN * n_image_tokens)
    return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))


# -- data -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class VqaRecord:
    """One easy-vqa question: the image file, the question, its one-word answer."""

    id: str
    image: str
    question: str
    answer: str


def easy_vqa_records(split: str = "test") -> list[VqaRecord]:
    """The easy-vqa questions of `split` (train: 38,575 on 4,000 images; test: 9,673 on 1,000)."""
    if split not in ("train", "test"):
        raise InputError(f"easy-vqa has the splits train and test, not {split!r}")
    try:
        import easy_vqa
    except ImportError:
        raise InputError(
            "easy-vqa is not installed (pip install --no-deps easy-vqa==1.0)"
        ) from None
    if split == "train":
        questions, answers, image_ids = easy_vqa.get_train_questions()
        paths = easy_vqa.get_train_image_paths()
    else:
        questions, answers, image_ids = easy_vqa.get_test_questions()
        paths = easy_vqa.get_test_image_paths()
    return [
        VqaRecord(f"{split}-{i}", str(paths[image]), str(q), str(a))
        for i, (q, a, image) in enumerate(zip(questions, answers, image_ids, strict=True))
    ]


def load_images(paths: Sequence[str], device: Any = "cpu", dtype: Any = None) -> torch.Tensor:
    """Image files to the reader's `[B, 3, 112, 112]` normalised pixels."""
    from PIL import Image

    images = []
    for path in paths:
        try:
            with Image.open(path) as image:
                images.append(image.convert("RGB"))
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read image {path!r}: {exc}") from None
    return preprocess(images, IMAGE_SIZE, device=str(device), dtype=dtype)


# -- model ----------------------------------------------------------------------------------
def image_token_id(tokenizer: Any) -> int:
    ids = tokenizer(IMAGE_TOKEN, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise InputError(f"{IMAGE_TOKEN!r} is not one token in this tokenizer")
    return int(ids[0])


def new_projector(lm_hidden: int, vision_hidden: int = 384) -> torch.nn.Module:
    """LLaVA's two-layer GELU projector (vision hidden -> LM hidden)."""
    from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

    return LlavaMultiModalProjector(_config(vision_hidden, lm_hidden))


def _config(vision_hidden: int, lm_hidden: int, text_config: Any = None, image_id: int = 0) -> Any:
    from transformers import LlamaConfig, LlavaConfig

    vision = dinov2_small_config()
    if vision.hidden_size != vision_hidden:
        raise ValueError(f"the ViT-S has hidden size {vision.hidden_size}, not {vision_hidden}")
    return LlavaConfig(
        vision_config=vision,
        text_config=text_config or LlamaConfig(hidden_size=lm_hidden),
        image_token_index=image_id,
        vision_feature_layer=FEATURE_LAYER,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )


def load_projector(
    path: str | Path = PROJECTOR_FILE,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The projector's tensors and its JSON manifest (safetensors; no pickle)."""
    try:
        return load_weights(path)
    except ModelNotFoundError as exc:
        raise ModelNotFoundError(
            f"{exc}: no trained projector (run `ctxzip train llava`)"
        ) from None


def save_projector(
    projector: torch.nn.Module, path: str | Path, manifest: Mapping[str, Any]
) -> Path:
    """Write the projector in float16 safetensors plus its manifest (`<path>.json`); returns
    the weights file."""
    tensors = {k: v.detach().to("cpu", torch.float16) for k, v in projector.state_dict().items()}
    return save_weights(path, tensors, manifest)


def build_llava(
    lm: Any,
    tokenizer: Any,
    projector: torch.nn.Module | Mapping[str, torch.Tensor] | None = None,
    tower: Any = None,
) -> Any:
    """A `LlavaForConditionalGeneration` around `lm` (shared modules, nothing copied).

    `tower` defaults to a private instance of the converted ViT-S (hooks installed on it never
    touch another model); `projector` to the shipped trained weights. Everything follows the
    LM's device and dtype.
    """
    from transformers import Dinov2Model, LlavaForConditionalGeneration

    param = next(lm.parameters())
    device, dtype = param.device, param.dtype
    if tower is None:
        tower = Dinov2Model.from_pretrained(
            str(converted_folder()), dtype=dtype, attn_implementation="sdpa"
        )
    config = _config(
        tower.config.hidden_size, lm.config.hidden_size, lm.config, image_token_id(tokenizer)
    )
    with torch.device("meta"):
        llava = LlavaForConditionalGeneration(config)
    if not isinstance(projector, torch.nn.Module):
        state = projector if projector is not None else load_projector()[0]
        projector = new_projector(lm.config.hidden_size, tower.config.hidden_size)
        projector.load_state_dict(dict(state), strict=True)
    llava.model.vision_tower = tower.to(device=device, dtype=dtype).eval()
    llava.model.multi_modal_projector = projector.to(device=device, dtype=dtype)
    llava.model.language_model = lm.model
    llava.lm_head = lm.lm_head
    llava.generation_config = lm.generation_config
    return llava.eval()


# -- answering ------------------------------------------------------------------------------
def reader_llava(lm: Any, tokenizer: Any) -> Any:
    """One LLaVA per loaded LM per process (`ctxzip.models.cached`), around the shipped
    projector."""

    def build() -> tuple[Any, Any]:
        state, manifest = load_projector()
        if lm.config.hidden_size != manifest.get("lm_hidden"):
            raise InputError(
                f"the image reader's projector was trained for {manifest.get('lm')} "
                f"(hidden size {manifest.get('lm_hidden')}), not this LM "
                f"(hidden size {lm.config.hidden_size})"
            )
        return build_llava(lm, tokenizer, state), lm  # the LM stays alive while its id is a key

    return cached(("vision-reader", id(lm)), build)[0]


def generate_answers(
    llava: Any,
    tokenizer: Any,
    questions: Sequence[str],
    pixels: torch.Tensor,
    method: str,
    budget: Budget,
    *,
    max_new_tokens: int = 8,
    schedule: str = "constant",
) -> tuple[list[str], list[int], int, int, float]:
    """Greedy answers with `budget` of each image's tokens kept inside the reader.

    Returns (texts, prompt token counts, tokens per image before, after, seconds)."""
    before = (IMAGE_SIZE // 14) ** 2
    prompts = [chat_text(tokenizer, q, before) for q in questions]
    seqs = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), int(pad), dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, width - len(seq) :] = torch.tensor(seq)
        mask[row, width - len(seq) :] = 1
    device = next(llava.parameters()).device
    start = time.perf_counter()
    with LlavaVisionCompression(llava, method, budget, schedule=schedule) as comp:
        inputs = comp.prepare_inputs(
            ids.to(device), pixels.to(device=device, dtype=llava.dtype), mask.to(device)
        )
        with torch.inference_mode():
            out = llava.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=int(pad),
                eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
            )
        after = int(comp.last_state.tokens.shape[1]) if comp.last_state is not None else before
    seconds = time.perf_counter() - start
    new = out[:, inputs["input_ids"].shape[1] :].tolist()
    texts = [
        tokenizer.decode([t for t in row if t != pad], skip_special_tokens=True) for row in new
    ]
    prompt_tokens = [int(m) for m in inputs["attention_mask"].sum(dim=1).tolist()]
    return texts, prompt_tokens, before, after, seconds


def answer_requests(
    compressor: Any,
    requests: Sequence[CompressionRequest],
    reader: Any,
    method: str,
    *,
    schedule: str = "constant",
) -> list[tuple[CompressionResult, Mapping[str, Any]]]:
    """The eval hook of the vision methods (`eval_answers`): each request's context is one
    image file, answered with `method` ("select" or "merge") inside the image reader."""
    reader_id = getattr(reader, "model_id", None)
    if reader_id is not None and canonical_id(str(reader_id)) != canonical_id(LM_ID):
        raise InputError(f"the image reader is trained for {LM_ID}, not {reader_id}")
    tok = reader.hf_tokenizer
    llava = reader_llava(reader.model, tok)
    groups: dict[Budget, list[int]] = {}
    for i, request in enumerate(requests):
        if len(request.contexts) != 1:
            raise InputError("an image question needs exactly one context: the image file")
        groups.setdefault(request.budget, []).append(i)
    results: list[tuple[CompressionResult, Mapping[str, Any]] | None] = [None] * len(requests)
    for budget, members in groups.items():
        pixels = load_images([requests[i].contexts[0] for i in members])
        texts, prompt_tokens, before, after, seconds = generate_answers(
            llava,
            tok,
            [requests[i].query or "" for i in members],
            pixels,
            method,
            budget,
            max_new_tokens=reader.max_new_tokens,
            schedule=schedule,
        )
        per = seconds / len(members)
        for i, text, n_prompt in zip(members, texts, prompt_tokens, strict=True):
            result = CompressionResult(
                texts=[""],
                kept=[[]],
                tokens_in=before,
                tokens_out=after,
                tokenizer="visual tokens",
                requested_rate=budget.requested_rate(before),
                seconds=per,
                method=compressor.name,
                budget=budget,
                extra={"image_tokens_in": before, "image_tokens_out": after},
            )
            answer = {
                "text": clean_answer(text),
                "prompt_tokens": n_prompt,
                "answer_tokens": len(tok(text, add_special_tokens=False)["input_ids"]),
                "seconds": per,
            }
            results[i] = (result, answer)
    return [r for r in results if r is not None]
