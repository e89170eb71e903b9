"""A clip model's whole forward pass as one graph for export: input -> (probabilities, embedding).

The same computation as `ClipModel.predict` (pipelines/inference.py): SlowFast's two pathways are
picked inside, the embedding is the input of the head's projection averaged over any positions
left, and heads without their own softmax get one. A runtime that converts this module returns
both from one pass.
"""

from __future__ import annotations

import torch
from torch import nn

from pipelines.models import ModelSpec
from pipelines.models.weights import projection_layer
from pipelines.transforms import pack_pathways

GRAPH_VERSION = 1  # part of every converted model's cache key: change it when this module changes


class ClipGraph(nn.Module):
    def __init__(self, model: nn.Module, spec: ModelSpec):
        super().__init__()
        self.model = model
        self.spec = spec
        self.projection = projection_layer(model)

    def forward(self, clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        captured: list[torch.Tensor] = []
        hook = self.projection.register_forward_pre_hook(lambda _module, inputs: captured.append(inputs[0]))
        try:
            out = self.model(pack_pathways(clips, self.spec))
        finally:
            hook.remove()
        return head_outputs(out, captured[-1], self.spec)


def head_outputs(out: torch.Tensor, features: torch.Tensor, spec: ModelSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities, embedding) from the model's output and its projection's input: positions
    left by the head's pooling are averaged, and heads without their own softmax get one."""
    if features.dim() > 2:  # (B, T', H', W', D)
        features = features.flatten(1, -2).mean(dim=1)
    return (out if spec.head_softmax else out.softmax(dim=1)), features
