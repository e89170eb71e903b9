"""Checkpoints the tests write: random weights with the final projection scaled so that class
probabilities are far from uniform (with near-uniform ones a wrong crop or softmax would hide)."""

from __future__ import annotations

from pathlib import Path

import torch

from pipelines.inference import projection_layer
from pipelines.models import get_spec
from pipelines.models.weights import build_model

LOGIT_SPREAD = 6.0  # std of the logits on typical input: top-1 well above the rest


def peaked_model(model_name: str, embedding_norm: float):
    """Random-init model whose projection gives logits with std ~LOGIT_SPREAD for embeddings of that norm."""
    model, _ = build_model(get_spec(model_name), "none")
    proj = projection_layer(model)
    gen = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        proj.weight.copy_(torch.randn(proj.weight.shape, generator=gen) * LOGIT_SPREAD / embedding_norm)
        proj.bias.zero_()
    return model


def write_checkpoint(model: torch.nn.Module, path: Path, wrapped: bool = True) -> Path:
    state = model.state_dict()
    torch.save({"model_state": state, "epoch": 7} if wrapped else state, path)
    return path
