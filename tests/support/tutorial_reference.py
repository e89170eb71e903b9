"""The reference path the data plane must match: PyTorchVideo's EncodedVideo.get_clip plus the hub
tutorial's transforms, batch 1. X3D heads end in a Softmax, so their output is used as is (the
tutorial's extra softmax is its bug, not the reference).
"""

from __future__ import annotations

import sys

import torch
import torchvision.transforms._functional_tensor as _functional_tensor

# pytorchvideo 0.1.5 imports a torchvision module that moved; alias it for the reference only.
sys.modules.setdefault("torchvision.transforms.functional_tensor", _functional_tensor)

from pytorchvideo.data.encoded_video import EncodedVideo  # noqa: E402
from pytorchvideo.transforms import ShortSideScale, UniformTemporalSubsample  # noqa: E402
from torchvision.transforms import Compose, Lambda  # noqa: E402
from torchvision.transforms._transforms_video import CenterCropVideo, NormalizeVideo  # noqa: E402

from pipelines.models import MEAN, STD, ModelSpec  # noqa: E402


class PackPathway(torch.nn.Module):
    def __init__(self, alpha: int):
        super().__init__()
        self.alpha = alpha

    def forward(self, frames: torch.Tensor):
        slow = torch.index_select(
            frames, 1, torch.linspace(0, frames.shape[1] - 1, frames.shape[1] // self.alpha).long()
        )
        return [slow, frames]


def tutorial_transform(spec: ModelSpec):
    steps = [
        UniformTemporalSubsample(spec.num_frames),
        Lambda(lambda x: x / 255.0),
        NormalizeVideo(MEAN, STD),
        ShortSideScale(size=spec.side_size),
        CenterCropVideo(crop_size=(spec.crop_size, spec.crop_size)),
    ]
    if spec.slowfast_alpha:
        steps.append(PackPathway(spec.slowfast_alpha))
    return Compose(steps)


def reference_outputs(model: torch.nn.Module, spec: ModelSpec, path: str, spans: list[tuple[float, float]]):
    """(probabilities, embedding, frames in the span) per (start, end), the tutorial's way."""
    video = EncodedVideo.from_path(path)
    transform = tutorial_transform(spec)
    head = model.head if hasattr(model, "head") else model.blocks[-1]
    captured = []
    hook = head.proj.register_forward_pre_hook(lambda m, inp: captured.append(inp[0]))
    outputs = []
    try:
        for start, end in spans:
            clip = video.get_clip(start_sec=start, end_sec=end)["video"]
            inputs = transform(clip)
            batch = [x[None] for x in inputs] if isinstance(inputs, list) else inputs[None]
            with torch.no_grad():
                out = model(batch)
            probs = out[0] if spec.head_softmax else torch.softmax(out, dim=1)[0]
            feat = captured.pop()
            feat = feat.reshape(feat.shape[0], -1, feat.shape[-1]).mean(1)[0]
            outputs.append((probs, feat, clip.shape[1]))
    finally:
        hook.remove()
        video.close()
    return outputs
