"""`image-budget`: images for API models, resized or cropped to a provider's token budget.

`billing`: what each provider bills for an image; `fitting`: one image into a budget (downscale,
or crop to the salient region); `compressor`: `ImageBudgetCompressor`, the compressor interface.
"""

from ctxzip.compressors.images.compressor import ImageBudgetCompressor

__all__ = ["ImageBudgetCompressor"]
