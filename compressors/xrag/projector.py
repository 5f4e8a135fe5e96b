"""The xRAG projector: a retriever embedding in, one LM input embedding out.

A projector is trained for one (retriever, LM) pair, so every checkpoint carries a
manifest naming both; loading refuses a pair it was not trained for. Checkpoints are
safetensors (no pickle) plus ``<name>.json``. The paper's released checkpoints (e.g.
``Hannibal046/xrag-7b``: Mistral-7B + SFR-Embedding-Mistral) keep the projector inside
the LM's own weight shards under ``projector.projector.{0,2}.*``;
`load_paper_projector` reads just those tensors.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ctxzip.errors import InputError, ModelNotFoundError
from ctxzip.models import MINILM, SMOLLM, canonical_id, resolve_model
from ctxzip.weights import base_path, load_weights, save_weights, shipped
from ctxzip.weights import read_manifest as read_weights_manifest

MANIFEST_VERSION = 1
PAPER_RETRIEVER = "Salesforce/SFR-Embedding-Mistral"
"""The retriever of the paper's released projectors (not a ctxzip default)."""
SHIPPED = base_path(shipped("ctxzip.compressors.xrag", "weights/xrag_minilm_smollm2.safetensors"))
"""The shipped projector (.safetensors + .json + .heldout.jsonl share this base name)."""


class PairMismatchError(InputError):
    """A projector, retriever, store or LM that were not trained together."""


@dataclass
class ProjectorManifest:
    """What a projector was trained for and how well it did (shipped next to the weights)."""

    retriever: str
    lm: str
    retriever_dim: int
    lm_dim: int
    layers: int = 2
    activation: str = "gelu"
    scaled: bool = True  # RMS-normalised output times a learned scale
    template: str = "Background: {doc} means the same as"
    version: int = MANIFEST_VERSION
    training: dict[str, Any] = field(default_factory=dict)
    quality: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProjectorManifest:
        known = {f for f in cls.__dataclass_fields__}
        missing = {"retriever", "lm", "retriever_dim", "lm_dim"} - set(data)
        if missing:
            raise InputError(f"projector manifest lacks {sorted(missing)}")
        return cls(**{k: v for k, v in data.items() if k in known})


class Projector(nn.Module):
    """``mlp{layers}x_gelu`` as in xRAG: Linear(d_r, d_lm) then (layers-1) x [GELU, Linear].

    With ``scaled`` the output is RMS-normalised and multiplied by a learned scale
    initialised to the LM's token-embedding RMS: an unscaled fresh projector emits
    vectors far off the embedding manifold, which hurts more than no context.
    """

    def __init__(
        self,
        retriever_dim: int,
        lm_dim: int,
        layers: int = 2,
        scaled: bool = True,
        init_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if layers < 1:
            raise InputError("projector needs at least one layer")
        mods: list[nn.Module] = [nn.Linear(retriever_dim, lm_dim)]
        for _ in range(layers - 1):
            mods += [nn.GELU(), nn.Linear(lm_dim, lm_dim)]
        self.projector = nn.Sequential(*mods)
        self.scaled = scaled
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)), requires_grad=scaled)
        self.retriever_dim = retriever_dim
        self.lm_dim = lm_dim
        self.layers = layers

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        if embeddings.shape[-1] != self.retriever_dim:
            raise PairMismatchError(
                f"embedding size {embeddings.shape[-1]} does not match the projector's "
                f"retriever size {self.retriever_dim}"
            )
        out = self.projector(embeddings.to(next(self.projector.parameters()).dtype))
        if self.scaled:
            rms = out.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()
            out = out / rms * self.log_scale.exp()
        return out


def embedding_rms(lm: Any) -> float:
    """RMS of the LM's input-embedding entries: the scale a soft token should have."""
    weight = lm.get_input_embeddings().weight
    return float(weight.detach().float().pow(2).mean().sqrt())


def new_projector(manifest: ProjectorManifest, lm: Any | None = None) -> Projector:
    scale = embedding_rms(lm) if lm is not None else 1.0
    return Projector(
        manifest.retriever_dim, manifest.lm_dim, manifest.layers, manifest.scaled, scale
    )


def save_projector(projector: Projector, manifest: ProjectorManifest, path: str | Path) -> Path:
    """Write ``path.safetensors`` and ``path.json`` atomically; returns the weights path."""
    tensors = {k: v.detach().float() for k, v in projector.state_dict().items()}
    return save_weights(path, tensors, asdict(manifest))


def read_manifest(path: str | Path) -> ProjectorManifest:
    """The manifest beside a projector checkpoint (``path`` with or without a suffix)."""
    return ProjectorManifest.from_dict(read_weights_manifest(path))


def load_projector(
    path: str | Path,
    retriever: str | None = None,
    lm: str | None = None,
) -> tuple[Projector, ProjectorManifest]:
    """Load a checkpoint; when `retriever`/`lm` are given they must match its manifest."""
    check_pair(read_manifest(path), retriever, lm)  # a wrong pair fails before any tensor loads
    state, data = load_weights(path)
    manifest = ProjectorManifest.from_dict(data)
    projector = Projector(manifest.retriever_dim, manifest.lm_dim, manifest.layers, manifest.scaled)
    projector.load_state_dict(state)
    return projector.eval(), manifest


def check_pair(manifest: ProjectorManifest, retriever: str | None, lm: str | None) -> None:
    """Fail clearly when a projector is used with a retriever or LM it was not trained for."""
    for role, wanted, have in (
        ("retriever", retriever, manifest.retriever),
        ("LM", lm, manifest.lm),
    ):
        if wanted is not None and not same_model(wanted, have):
            raise PairMismatchError(
                f"projector was trained for {role} {have!r}, not {wanted!r}; "
                f"train one with `ctxzip train xrag` or pick a matching pair"
            )


def same_model(a: str, b: str) -> bool:
    def norm(x: str) -> str:
        x = canonical_id(x.rstrip("/"))
        return x.rsplit("/", 1)[-1].lower() if "/" in x or os.sep in x else x.lower()

    return canonical_id(a) == canonical_id(b) or norm(a) == norm(b)


# Known (retriever, LM) pairs and where their projector lives.
PAIRS: dict[tuple[str, str], str] = {
    (MINILM, SMOLLM): str(SHIPPED),
    # The paper's pair: projector inside the LM checkpoint (see load_paper_projector).
    (PAPER_RETRIEVER, "Hannibal046/xrag-7b"): "paper:Hannibal046/xrag-7b",
    (PAPER_RETRIEVER, "Hannibal046/xrag-moe"): "paper:Hannibal046/xrag-moe",
}


def register_pair(retriever: str, lm: str, location: str) -> None:
    """Make `ctxzip` find a projector for (retriever, lm) without passing a path."""
    PAIRS[(canonical_id(retriever), canonical_id(lm))] = location


def find_pair(retriever: str, lm: str) -> str | None:
    for (r, m), loc in PAIRS.items():
        if same_model(r, retriever) and same_model(m, lm):
            return loc
    return None


def load_paper_projector(
    checkpoint: str | Path, retriever: str = PAPER_RETRIEVER
) -> tuple[Projector, ProjectorManifest]:
    """The projector from an xRAG release folder (``XMistralForCausalLM`` weights).

    Reads only ``projector.*`` tensors from ``model.safetensors`` or its sharded index;
    the paper's projector is unscaled (``mlp2x_gelu``) and its LM is the same folder.
    """
    from safetensors import safe_open

    folder = Path(resolve_model(str(checkpoint)))
    if not folder.is_dir():
        raise ModelNotFoundError(
            f"xRAG checkpoint {checkpoint!r} is not on disk; download it (e.g. "
            "`huggingface-cli download Hannibal046/xrag-7b`) and pass the folder"
        )
    index = folder / "model.safetensors.index.json"
    if index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
        shards = sorted({f for k, f in weight_map.items() if k.startswith("projector.")})
    else:
        shards = ["model.safetensors"]
    state: dict[str, torch.Tensor] = {}
    for shard in shards:
        with safe_open(str(folder / shard), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open is not iterable
                if key.startswith("projector."):
                    state[key.removeprefix("projector.")] = f.get_tensor(key)
    linears = sorted({k.split(".")[1] for k in state if k.startswith("projector.")}, key=int)
    if not linears:
        raise ModelNotFoundError(f"no projector.* weights in {folder}")
    first = state[f"projector.{linears[0]}.weight"]
    config = json.loads((folder / "config.json").read_text())
    manifest = ProjectorManifest(
        retriever=retriever,
        lm=str(checkpoint),
        retriever_dim=int(first.shape[1]),
        lm_dim=int(first.shape[0]),
        layers=len(linears),
        scaled=False,
        template="[INST] Refer to the background document and answer the questions:\n\n"
        "Background: {doc}\n\nQuestion: {question} [/INST] The answer is:",
        training={"source": "xRAG release", "projector_type": config.get("projector_type")},
    )
    projector = Projector(manifest.retriever_dim, manifest.lm_dim, manifest.layers, scaled=False)
    projector.load_state_dict({**state, "log_scale": torch.tensor(0.0)})
    return projector.eval(), manifest
