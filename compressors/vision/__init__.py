"""Vision-token reduction inside a ViT: merge similar tokens or select attended ones."""

from ctxzip.compressors.vision.merge import VisionMergeCompressor
from ctxzip.compressors.vision.select import VisionSelectCompressor

__all__ = ["VisionMergeCompressor", "VisionSelectCompressor"]
