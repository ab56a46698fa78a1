"""Frozen, pretrained timm backbones and the per-image embedding cache."""
