"""Hooks on a Hugging Face ViT-family encoder (DINOv2, ViT, CLIP vision, SigLIP vision).

- `install_merging(model, plan)` finds the encoder's transformer layers and gives each
  *instance* its own `forward` (an instance attribute, so the class and every other model stay
  untouched) that merges tokens between attention and MLP, as ToMe places it. Keys are captured
  by a forward hook on the layer's `k_proj`; proportional attention (log of token sizes) goes in
  through the layer's additive `attention_mask`, so eager and SDPA attention both work.
  `handle.remove()` restores the original forwards. A layer whose merge count is zero and that
  runs before any merge calls the original forward, so an all-zero plan is bit-identical to the
  unmodified encoder.
- `QKCapture(model, layer)` keeps one layer's latest `q_proj` / `k_proj` outputs (forward
  hooks), from which VisionZip-style selection ranks tokens without materialising attention.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ctxzip.compressors.vision.tokens import (
    TokenState,
    as_list,
    bipartite_merge,
    head_mean,
    proportional_attention_mask,
)

Parts = tuple[
    nn.Module, nn.Module, Callable[[Any], Any], nn.Module, nn.Module, Callable[[Any], Any]
]


def _identity(x: Any) -> Any:
    return x


def _child(layer: nn.Module, name: str) -> nn.Module:
    module = getattr(layer, name)
    if not isinstance(module, nn.Module):
        raise TypeError(f"{type(layer).__name__}.{name} is not a module")
    return module


def layer_parts(layer: nn.Module) -> Parts:
    """(norm1, attention, after_attention, norm2, mlp, after_mlp) for the known layer layouts."""
    if hasattr(layer, "norm1") and hasattr(layer, "layer_scale1"):  # DINOv2
        drop = _child(layer, "drop_path")
        scale1, scale2 = _child(layer, "layer_scale1"), _child(layer, "layer_scale2")

        def after1(h: Any) -> Any:
            return drop(scale1(h))

        def after2(h: Any) -> Any:
            return drop(scale2(h))

        return (
            _child(layer, "norm1"),
            _child(layer, "attention"),
            after1,
            _child(layer, "norm2"),
            _child(layer, "mlp"),
            after2,
        )
    if hasattr(layer, "layernorm_before"):  # ViT
        dropout = _child(layer, "dropout")
        return (
            _child(layer, "layernorm_before"),
            _child(layer, "attention"),
            dropout,
            _child(layer, "layernorm_after"),
            _child(layer, "mlp"),
            dropout,
        )
    if hasattr(layer, "layer_norm1") and hasattr(layer, "self_attn"):  # CLIP / SigLIP vision
        return (
            _child(layer, "layer_norm1"),
            _child(layer, "self_attn"),
            _identity,
            _child(layer, "layer_norm2"),
            _child(layer, "mlp"),
            _identity,
        )
    raise TypeError(f"token merging does not know the layer type {type(layer).__name__}")


def find_layers(model: nn.Module) -> nn.ModuleList:
    """The first ModuleList of transformer layers (each with a `k_proj`) inside `model`."""
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            first = module[0]
            if any(name.endswith("k_proj") for name, _ in first.named_modules()):
                layer_parts(first)  # raises for unknown layouts
                return module
    raise TypeError(f"no ViT-family encoder layers found in {type(model).__name__}")


def submodule(layer: nn.Module, suffix: str) -> nn.Module:
    """The first module inside `layer` whose name ends with `suffix` (e.g. `k_proj`)."""
    for name, module in layer.named_modules():
        if name.endswith(suffix):
            return module
    raise TypeError(f"{type(layer).__name__} has no {suffix}")


def attention_heads(layer: nn.Module) -> int:
    attn = layer_parts(layer)[1]
    for attr in ("num_attention_heads", "num_heads"):
        if hasattr(attn, attr):
            return int(getattr(attn, attr))
    config = getattr(attn, "config", None)
    if config is None:
        raise TypeError(f"{type(attn).__name__} does not say its number of heads")
    return int(config.num_attention_heads)


# -- token merging ---------------------------------------------------------------------------
@dataclass
class MergeHandle:
    """Merging installed on one model instance; change `plan` between calls, then `remove()`."""

    layers: nn.ModuleList
    plan: list[int]
    prop_attn: bool = True
    state: TokenState | None = None
    n_heads: int = 1
    _hooks: list[Any] = field(default_factory=list)
    _keys: dict[int, torch.Tensor] = field(default_factory=dict)

    def set_plan(self, plan: int | Sequence[int]) -> None:
        self.plan = as_list(plan, len(self.layers))

    def tokens_after(self, n_tokens: int, n_layers: int | None = None) -> int:
        """How many tokens are left after the first `n_layers` layers (all by default)."""
        plan = self.plan if n_layers is None else self.plan[:n_layers]
        for r in plan:
            n_tokens -= min(r, (n_tokens - 1) // 2)
        return n_tokens

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        for layer in self.layers:
            layer.__dict__.pop("forward", None)
            layer.__dict__.pop("_ctxzip_merge", None)
        self.state = None

    def __enter__(self) -> MergeHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def install_merging(
    model: nn.Module, plan: int | Sequence[int] = 0, prop_attn: bool = True
) -> MergeHandle:
    """Install ToMe merging on `model`'s encoder layers (this instance only)."""
    layers = find_layers(model)
    if any("_ctxzip_merge" in layer.__dict__ for layer in layers):
        raise RuntimeError("token merging is already installed on this model")
    handle = MergeHandle(
        layers, as_list(plan, len(layers)), prop_attn, n_heads=attention_heads(layers[0])
    )
    for index, layer in enumerate(layers):
        k_proj = submodule(layer, "k_proj")

        def keep_keys(_m: nn.Module, _i: Any, out: torch.Tensor, index: int = index) -> None:
            handle._keys[index] = out

        handle._hooks.append(k_proj.register_forward_hook(keep_keys))
        original = layer.forward  # the bound class method
        layer.__dict__["_ctxzip_merge"] = True
        layer.__dict__["forward"] = _merging_forward(layer, index, original, handle)
    return handle


def _merging_forward(
    layer: nn.Module, index: int, original: Callable[..., Any], handle: MergeHandle
) -> Callable[..., Any]:
    norm1, attention, after1, norm2, mlp, after2 = layer_parts(layer)

    def forward(
        hidden_states: torch.Tensor, attention_mask: Any = None, *args: Any, **kwargs: Any
    ) -> Any:
        if index == 0:
            handle.state = None
        r = handle.plan[index]
        if handle.state is None and r == 0:
            out = original(hidden_states, attention_mask, *args, **kwargs)
            handle._keys.pop(index, None)
            return out
        state = handle.state or TokenState.start(hidden_states)
        mask = attention_mask
        if handle.prop_attn and handle.state is not None:
            prop = proportional_attention_mask(state.sizes, hidden_states.dtype)
            mask = prop if mask is None else mask + prop
        residual = hidden_states
        h, _ = attention(norm1(hidden_states), mask, **kwargs)
        hidden_states = after1(h) + residual
        if r > 0:
            metric = head_mean(handle._keys.pop(index), handle.n_heads)
            state = bipartite_merge(TokenState(hidden_states, state.sizes, state.source), metric, r)
            hidden_states = state.tokens
        handle._keys.pop(index, None)
        handle.state = state
        out = after2(mlp(norm2(hidden_states))) + hidden_states
        handle.state = TokenState(out, state.sizes, state.source)
        return out

    return forward


# -- q/k capture -----------------------------------------------------------------------------
class QKCapture:
    """Keeps the latest `q_proj` / `k_proj` outputs of one encoder layer (hooks, removable)."""

    def __init__(self, model: nn.Module, layer: int = -1) -> None:
        layers = find_layers(model)
        self.layer = layers[layer]
        self.n_heads = attention_heads(self.layer)
        self.q: torch.Tensor | None = None
        self.k: torch.Tensor | None = None
        self._hooks = [
            submodule(self.layer, "q_proj").register_forward_hook(self._keep("q")),
            submodule(self.layer, "k_proj").register_forward_hook(self._keep("k")),
        ]

    def _keep(self, which: str) -> Callable[..., None]:
        def hook(_m: nn.Module, _i: Any, out: torch.Tensor) -> None:
            setattr(self, which, out)

        return hook

    def take(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.q is None or self.k is None:
            raise RuntimeError("the hooked layer did not run")
        q, k = self.q, self.k
        self.q = self.k = None
        return q, k

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
