"""What providers bill for an image, in their own vision tokens.

- OpenAI, tile models (gpt-4o, gpt-4.1, gpt-4.5, gpt-5, o1, o3, gpt-4o-mini, ...): `detail=low` is
  a flat base cost; `detail=high` (and `auto`, counted as high, the upper bound) scales the image
  to fit 2048x2048, then its shortest side down to 768, and bills base + per-tile x 512 px tiles.
- OpenAI, patch models (gpt-4.1-mini/nano, gpt-5-mini/nano, o4-mini): 32 px patches, at most
  1536 (the image is scaled down to fit), times a per-model multiplier.
- Anthropic: the image is scaled down until its long edge is at most 1568 px and it costs at most
  about 1.2 megapixels (about 1600 tokens); then tokens = width x height / 750.
"""

from __future__ import annotations

import math
from typing import Literal

from ctxzip.errors import InputError

Provider = Literal["openai", "anthropic"]
PROVIDERS = ("openai", "anthropic")

# (model prefix, base tokens, tokens per 512 px tile); most specific prefix first
OPENAI_TILE_MODELS: tuple[tuple[str, int, int], ...] = (
    ("gpt-4o-mini", 2833, 5667),
    ("computer-use-preview", 65, 129),
    ("gpt-5", 70, 140),
    ("o1", 75, 150),
    ("o3", 75, 150),
    ("gpt-4o", 85, 170),
    ("gpt-4.1", 85, 170),
    ("gpt-4.5", 85, 170),
)
# (model prefix, multiplier) for the 32 px patch rule
OPENAI_PATCH_MODELS: tuple[tuple[str, float], ...] = (
    ("gpt-4.1-mini", 1.62),
    ("gpt-4.1-nano", 2.46),
    ("gpt-5-mini", 1.62),
    ("gpt-5-nano", 2.46),
    ("o4-mini", 1.72),
)
OPENAI_DEFAULT_TILE = (85, 170)
PATCH = 32
MAX_PATCHES = 1536
ANTHROPIC_MAX_EDGE = 1568
ANTHROPIC_MAX_PIXELS = 784 * 1568
"""The largest area in Anthropic's table of sizes that are not resized (about 1.2 megapixels,
the documented "about 1600 tokens")."""
ANTHROPIC_PIXELS_PER_TOKEN = 750


def scaled(width: int, height: int, factor: float) -> tuple[int, int]:
    """`width` x `height` times `factor`, rounded down, at least 1 px each."""
    return max(1, int(width * factor)), max(1, int(height * factor))


def openai_high_size(width: int, height: int) -> tuple[int, int]:
    """The size OpenAI bills a `detail=high` image at on tile models."""
    if max(width, height) > 2048:
        width, height = scaled(width, height, 2048 / max(width, height))
    if min(width, height) > 768:
        width, height = scaled(width, height, 768 / min(width, height))
    return width, height


def openai_patch_size(width: int, height: int) -> tuple[int, int]:
    """The size OpenAI bills an image at on patch models (at most 1536 patches of 32 px)."""
    if math.ceil(width / PATCH) * math.ceil(height / PATCH) <= MAX_PATCHES:
        return width, height
    r = math.sqrt(PATCH * PATCH * MAX_PATCHES / (width * height))
    w, h = width * r / PATCH, height * r / PATCH
    r *= min(math.floor(w) / w, math.floor(h) / h)
    return max(1, int(width * r)), max(1, int(height * r))


def openai_image_tokens(
    width: int, height: int, detail: str = "high", model: str = "gpt-4o"
) -> int:
    """Tokens OpenAI bills for a `width` x `height` image (`detail` auto counts as high)."""
    _check_size(width, height)
    name = model.lower()
    for prefix, multiplier in OPENAI_PATCH_MODELS:
        if name.startswith(prefix):
            w, h = openai_patch_size(width, height)
            patches = min(MAX_PATCHES, math.ceil(w / PATCH) * math.ceil(h / PATCH))
            return math.ceil(patches * multiplier)
    base, tile = next(
        ((b, t) for prefix, b, t in OPENAI_TILE_MODELS if name.startswith(prefix)),
        OPENAI_DEFAULT_TILE,
    )
    if detail == "low":
        return base
    w, h = openai_high_size(width, height)
    return base + tile * math.ceil(w / 512) * math.ceil(h / 512)


def anthropic_size(width: int, height: int) -> tuple[int, int]:
    """The size Anthropic resizes an image to before billing it (long edge <= 1568 px,
    about 1600 tokens at most)."""
    factor = min(
        1.0,
        ANTHROPIC_MAX_EDGE / max(width, height),
        math.sqrt(ANTHROPIC_MAX_PIXELS / (width * height)),
    )
    return (width, height) if factor >= 1.0 else scaled(width, height, factor)


def anthropic_image_tokens(width: int, height: int) -> int:
    """Tokens Anthropic bills for a `width` x `height` image: pixels / 750 after resizing."""
    _check_size(width, height)
    w, h = anthropic_size(width, height)
    return math.ceil(w * h / ANTHROPIC_PIXELS_PER_TOKEN)


def image_tokens(
    provider: Provider, width: int, height: int, detail: str = "high", model: str | None = None
) -> int:
    """Tokens `provider` bills for a `width` x `height` image (`model` picks OpenAI's rule)."""
    if provider == "openai":
        return openai_image_tokens(width, height, detail, model or "gpt-4o")
    if provider == "anthropic":
        return anthropic_image_tokens(width, height)
    raise ValueError(f"unknown provider {provider!r} (openai or anthropic)")


def _check_size(width: int, height: int) -> None:
    if width < 1 or height < 1:
        raise InputError(f"image size must be positive, got {width}x{height}")
