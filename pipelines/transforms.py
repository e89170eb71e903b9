"""Clip transforms in plain torch, giving the PyTorchVideo hub tutorial's model input.

The reference chain is: uniform temporal subsample -> /255 -> normalize -> short-side scale
(bilinear, align_corners=False) -> centre crop -> (SlowFast) pack [slow, fast]. Bilinear scaling
is linear and its weights sum to one, so normalizing after scaling gives the same numbers; and
only the pixels inside the crop are ever computed, by gathering the two source rows and columns
each output pixel blends — the same taps and weights as `torch.nn.functional.interpolate`.

    >>> clip = np.zeros((4, 240, 320, 3), np.uint8)
    >>> preprocess_clip(clip, get_spec("x3d_xs")).shape
    torch.Size([3, 4, 182, 182])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from pipelines.models import MEAN, STD, ModelSpec, get_spec  # noqa: F401  (get_spec: doctest)


def short_side_size(height: int, width: int, size: int) -> tuple[int, int]:
    """(new_h, new_w) with the short side at `size`, as pytorchvideo's short_side_scale rounds."""
    if width < height:
        return int(math.floor(height / width * size)), size
    return size, int(math.floor(width / height * size))


def center_crop_offset(length: int, crop: int) -> int:
    """Start of a centred crop; Python's round() as in torchvision's CenterCropVideo."""
    return int(round((length - crop) / 2.0))


def _bilinear_taps(in_size: int, out_size: int, first: int, count: int):
    """Source indices and weights of output pixels first..first+count-1 (align_corners=False).

    Computed in float32 with PyTorch's own formula, so the taps are bit-identical to interpolate's.
    """
    scale = torch.tensor(in_size, dtype=torch.float32) / out_size
    dst = torch.arange(first, first + count, dtype=torch.float32)
    src = (scale * (dst + 0.5) - 0.5).clamp(min=0.0)
    i0 = src.long().clamp(max=in_size - 1)
    i1 = (i0 + 1).clamp(max=in_size - 1)
    w1 = src - i0
    return i0, i1, 1.0 - w1, w1


@dataclass
class CropTaps:
    """Everything a short-side-scaled centre crop reads from a clip, still in uint8.

    `region` holds the source rows and columns the crop's bilinear taps touch (at most two per
    output pixel in each direction); `rows` and `cols` are (index 0, index 1, weight 0, weight 1)
    into it. It is what a decoder sends a GPU replica: one byte per value, blended on the device.
    """

    region: torch.Tensor  # (T, R, C, 3) uint8
    rows: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
    cols: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]

    def as_arrays(self) -> tuple[np.ndarray, ...]:
        """Numpy arrays, which Ray's object store hands to another process without copying."""
        return (self.region.numpy(), *(t.numpy() for t in self.rows + self.cols))

    @classmethod
    def from_arrays(cls, arrays: tuple[np.ndarray, ...]) -> CropTaps:
        region, *taps = (torch.from_numpy(a) for a in arrays)
        return cls(region, tuple(taps[:4]), tuple(taps[4:]))

    def to(self, device: torch.device, pin: bool = False) -> CropTaps:
        region = self.region.pin_memory() if pin else self.region
        return CropTaps(region.to(device, non_blocking=pin), tuple(t.to(device) for t in self.rows),
                        tuple(t.to(device) for t in self.cols))


def _used(i0: torch.Tensor, i1: torch.Tensor, w0, w1):
    """The source indices the taps use, and the taps re-indexed into that subset."""
    used, inverse = torch.unique(torch.cat([i0, i1]), return_inverse=True)
    return used, (inverse[: len(i0)], inverse[len(i0):], w0, w1)


def _taps(height: int, width: int, side: int, crop: int):
    """Rows and columns taps, (index 0, index 1, weight 0, weight 1) each, of a short-side scale to
    `side` then a centre crop `crop` of a height x width frame."""
    new_h, new_w = short_side_size(height, width, side)
    if new_h < crop or new_w < crop:
        raise ValueError(f"scaled size {new_h}x{new_w} is smaller than the crop {crop}")
    return (_bilinear_taps(height, new_h, center_crop_offset(new_h, crop), crop),
            _bilinear_taps(width, new_w, center_crop_offset(new_w, crop), crop))


def crop_taps(frames: torch.Tensor, side: int, crop: int) -> CropTaps:
    """(T, H, W, C) uint8 frames -> just the pixels (and taps) the crop reads, for another device."""
    rows, cols = _taps(frames.shape[1], frames.shape[2], side, crop)
    used_rows, rows = _used(*rows)
    used_cols, cols = _used(*cols)
    return CropTaps(frames.index_select(1, used_rows).index_select(2, used_cols), rows, cols)


def blend(frames: torch.Tensor, rows, cols) -> torch.Tensor:
    """The crop, float32 (C, T, crop, crop), on the frames' device: interpolate's arithmetic, tap by tap."""
    y0, y1, wy0, wy1 = rows
    x0, x1, wx0, wx1 = cols
    crop = len(x0)
    columns = torch.cat([x0, x1])
    wy0, wy1 = wy0[:, None], wy1[:, None]
    out = torch.empty((frames.shape[3], frames.shape[0], len(y0), crop), dtype=torch.float32, device=frames.device)
    # Frame by frame: temporaries stay small enough for the allocator to reuse (no page faults).
    for t, frame in enumerate(frames):
        top, bottom = (  # (C, crop, 2*crop): rows y0 (y1), columns x0 then x1
            frame.index_select(0, rows).index_select(1, columns).permute(2, 0, 1).float() for rows in (y0, y1)
        )
        blended = top.mul_(wy0).add_(bottom.mul_(wy1))
        torch.mul(blended[..., :crop], wx0, out=out[:, t]).add_(blended[..., crop:].mul_(wx1))
    return out


def resized_center_crop(frames: torch.Tensor, side: int, crop: int) -> torch.Tensor:
    """Short-side scale to `side` then centre crop `crop`, computing only the cropped pixels.

    `frames` is (T, H, W, C) uint8; the result is float32 (C, T, crop, crop). Each output pixel
    blends the two source rows and columns it reads, gathered in uint8 (cheap), in float32 with
    interpolate's weights.
    """
    return blend(frames, *_taps(frames.shape[1], frames.shape[2], side, crop))


def normalize_(x: torch.Tensor, spec: ModelSpec | None = None) -> torch.Tensor:
    """In place: /255 (the spec's pixel_max), then (x - mean) / std per channel; x is (3, ...) float.
    Without a spec, the PyTorchVideo zoo's mean and std."""
    shape = (3,) + (1,) * (x.dim() - 1)
    mean = torch.tensor(spec.mean if spec else MEAN, dtype=x.dtype, device=x.device).view(shape)
    std = torch.tensor(spec.std if spec else STD, dtype=x.dtype, device=x.device).view(shape)
    return x.div_(spec.pixel_max if spec else 255.0).sub_(mean).div_(std)


def antialiased_crop(frames: torch.Tensor, spec: ModelSpec) -> torch.Tensor:
    """What a Hugging Face video processor does before normalizing: (T, H, W, 3) uint8 -> the short
    side resized to `side_size` (bilinear with antialiasing, in uint8, as torchvision resizes uint8
    images) -> centre crop -> (T, crop, crop, 3) uint8. Its own rounding of sizes and offsets."""
    t, height, width, _ = frames.shape
    short, long = min(height, width), max(height, width)
    new_short, new_long = spec.side_size, int(spec.side_size * long / short)
    size = (new_long, new_short) if width <= height else (new_short, new_long)
    x = frames.permute(0, 3, 1, 2)  # channels-last memory: torch's fast uint8 path
    x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    crop = spec.crop_size
    top, left = int((size[0] - crop) / 2.0), int((size[1] - crop) / 2.0)
    return x[:, :, top:top + crop, left:left + crop].permute(0, 2, 3, 1)


def preprocess_clip(frames: np.ndarray | torch.Tensor, spec: ModelSpec) -> torch.Tensor:
    """(T, H, W, 3) uint8 RGB frames, already sampled to T -> (3, T, crop, crop) float32 model input."""
    frames = torch.as_tensor(frames)
    if spec.antialias:
        return normalize_(antialiased_crop(frames, spec).permute(3, 0, 1, 2).float(), spec)
    return normalize_(resized_center_crop(frames, spec.side_size, spec.crop_size), spec)


def clip_taps(frames: torch.Tensor, spec: ModelSpec) -> CropTaps:
    """The uint8 a decoder sends a replica that finishes clips on its device (`finish_on`): the
    pixels the crop reads and their taps; for antialiased models, the resized crop itself (taps
    that copy it: blending with weights 1 and 0 is exact)."""
    if not spec.antialias:
        return crop_taps(frames, spec.side_size, spec.crop_size)
    region = antialiased_crop(frames, spec).contiguous()
    index = torch.arange(spec.crop_size)
    copy = (index, index, torch.ones(spec.crop_size), torch.zeros(spec.crop_size))
    return CropTaps(region, copy, copy)


def finish_on(taps: CropTaps, device: torch.device, spec: ModelSpec | None = None) -> torch.Tensor:
    """Model input from uint8 taps, blended and normalized on `device` (pinned copy for a GPU)."""
    taps = taps.to(device, pin=device.type == "cuda")
    return normalize_(blend(taps.region, taps.rows, taps.cols), spec)


def pack_pathways(batch: torch.Tensor, spec: ModelSpec) -> list[torch.Tensor] | torch.Tensor:
    """SlowFast input: [slow, fast], slow = T // alpha frames picked by linspace from fast."""
    if spec.slowfast_alpha is None:
        return batch
    t = batch.shape[2]
    index = torch.linspace(0, t - 1, t // spec.slowfast_alpha).long().to(batch.device)
    return [batch.index_select(2, index), batch]
