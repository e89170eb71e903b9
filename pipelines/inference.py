"""One forward pass per batch giving class probabilities and embeddings together.

The embedding is the input of the head's final projection (`logits = W · embedding + b`), captured
by a hook during the same pass and averaged over any remaining space-time positions. X3D heads end
in a Softmax already, so their output is taken as the probabilities; the others get one softmax.

    >>> clip_model = ClipModel.load("x3d_xs", "none")                  # doctest: +SKIP
    >>> probs, embeddings = clip_model.predict(batch)                   # (B, 400), (B, 2048)
"""

from __future__ import annotations

import torch
from torch import nn

from pipelines.models import ModelSpec, get_spec
from pipelines.transforms import pack_pathways
from pipelines.weights import build_model


def projection_layer(model: nn.Module) -> nn.Linear:
    """The head's final Linear: `model.head.proj` (MViT) or `model.blocks[-1].proj` (ResNet family)."""
    head = model.head if hasattr(model, "head") else model.blocks[-1]
    return head.proj


class ClipModel:
    def __init__(self, spec: ModelSpec, model: nn.Module, weights_id: str, device: str = "cpu"):
        self.spec = spec
        self.weights_id = weights_id
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self._captured: list[torch.Tensor] = []
        projection_layer(self.model).register_forward_pre_hook(
            lambda _module, inputs: self._captured.append(inputs[0])
        )

    @classmethod
    def load(cls, model_name: str, weights: str = "kinetics", device: str = "cpu") -> ClipModel:
        spec = get_spec(model_name)
        model, weights_id = build_model(spec, weights)
        return cls(spec, model, weights_id, device)

    @property
    def num_classes(self) -> int:
        return projection_layer(self.model).out_features

    @torch.inference_mode()
    def predict(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, T, crop, crop) float input -> (probabilities (B, C), embeddings (B, D)) on the CPU."""
        self._captured.clear()
        out = self.model(pack_pathways(batch.to(self.device), self.spec))
        features = self._captured.pop()
        if features.dim() > 2:  # (B, T', H', W', D) positions left by the head's pooling
            features = features.flatten(1, -2).mean(dim=1)
        probs = out if self.spec.head_softmax else out.softmax(dim=1)
        return probs.float().cpu(), features.float().cpu()
