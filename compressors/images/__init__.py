"""`image-budget`: images for API models, resized or cropped to a provider's token budget."""

from ctxzip.compressors.images.compressor import ImageBudgetCompressor

__all__ = ["ImageBudgetCompressor"]
