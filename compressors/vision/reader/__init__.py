"""The local image reader: SmolLM2 with a trained projector over the ViT-S tokens (LLaVA-style)."""
