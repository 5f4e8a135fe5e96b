"""Weights on disk: a safetensors file plus a JSON manifest beside it, never pickle.

Every trained artefact (the token-classification head, the xrag projector, the vision
reader's projector, training checkpoints) is written and read here, so all of them are
atomic (a reader never sees half a file) and all shipped ones are found the same way:
`shipped(package, name)` through `importlib.resources`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ctxzip.errors import ModelNotFoundError


def base_path(path: str | Path) -> Path:
    """`path` without its `.safetensors` / `.json` suffix: the name both files share."""
    return Path(str(path).removesuffix(".safetensors").removesuffix(".json"))


def shipped(package: str, name: str) -> Path:
    """A weights file shipped inside `package` (e.g. its `weights/` folder)."""
    return Path(str(resources.files(package).joinpath(name)))


def write_atomic(path: str | Path, write: Callable[[str], None]) -> None:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it into place."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=target.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; weights are shareable
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_weights(path: str | Path, tensors: Mapping[str, Any], manifest: Mapping[str, Any]) -> Path:
    """Write `<base>.safetensors` (torch or numpy tensors) and `<base>.json`; returns the weights path.

    The manifest is written last, so a manifest on disk always describes complete weights.
    """
    base = base_path(path)
    weights = Path(f"{base}.safetensors")
    values = list(tensors.values())
    if values and isinstance(values[0], np.ndarray):
        from safetensors.numpy import save_file as save_numpy

        write_atomic(weights, lambda p: save_numpy(dict(tensors), p, metadata={"format": "np"}))
    else:
        from safetensors.torch import save_file as save_torch

        ready = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        write_atomic(weights, lambda p: save_torch(ready, p, metadata={"format": "pt"}))
    text = json.dumps(dict(manifest), indent=2) + "\n"

    def write_manifest(tmp: str) -> None:
        Path(tmp).write_text(text, encoding="utf-8")

    write_atomic(f"{base}.json", write_manifest)
    return weights


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The JSON manifest beside a weights file."""
    file = Path(f"{base_path(path)}.json")
    if not file.exists():
        raise ModelNotFoundError(f"weights manifest {file} not found")
    data = json.loads(file.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ModelNotFoundError(f"weights manifest {file} is not a JSON object")
    return data


def load_weights(path: str | Path, framework: str = "pt") -> tuple[dict[str, Any], dict[str, Any]]:
    """Tensors (`framework` "pt" or "np") and the manifest of `path`."""
    weights = Path(f"{base_path(path)}.safetensors")
    if not weights.exists():
        raise ModelNotFoundError(f"weights {weights} not found")
    manifest = read_manifest(path)
    if framework == "np":
        from safetensors.numpy import load_file as load_numpy

        return dict(load_numpy(str(weights))), manifest
    from safetensors.torch import load_file as load_torch

    return dict(load_torch(str(weights))), manifest
