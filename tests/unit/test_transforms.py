"""The torch transforms give the hub tutorial's input (pytorchvideo + torchvision video transforms)."""

import numpy as np
import pytest
import torch

from support.tutorial_reference import PackPathway, tutorial_transform
from pipelines.models import MODELS, get_spec
from pipelines.transforms import center_crop_offset, pack_pathways, preprocess_clip, short_side_size


@pytest.mark.parametrize(
    "height, width, model",
    [
        (240, 320, "x3d_xs"),  # downscale, landscape
        (144, 176, "x3d_xs"),  # upscale (182 > 144)
        (1080, 1920, "slow_r50"),
        (320, 180, "x3d_s"),  # portrait
        (257, 341, "mvit_base_16x4"),  # odd sizes: crop offsets round half to even
        (256, 256, "x3d_m"),  # no scaling at all
        (720, 1280, "x3d_l"),
    ],
)
def test_preprocess_matches_the_tutorial_transform(height, width, model):
    spec = get_spec(model)
    gen = torch.Generator().manual_seed(height * width)
    frames = torch.randint(0, 256, (spec.num_frames, height, width, 3), generator=gen, dtype=torch.uint8)
    ours = preprocess_clip(frames.numpy(), spec)
    reference = tutorial_transform(spec)(frames.permute(3, 0, 1, 2).float())
    if isinstance(reference, list):
        reference = reference[1]
    assert ours.shape == reference.shape == (3, spec.num_frames, spec.crop_size, spec.crop_size)
    # 1e-4 in normalized units is 0.006 of a grey level: float rounding (the tap positions are
    # float32, as in interpolate); a wrong tap, weight or crop offset is off by far more.
    torch.testing.assert_close(ours, reference, atol=1e-4, rtol=0)


@pytest.mark.parametrize("height, width, size, expected", [(240, 320, 182, (182, 242)), (320, 240, 182, (242, 182)), (100, 100, 50, (50, 50))])
def test_short_side_size(height, width, size, expected):
    assert short_side_size(height, width, size) == expected


@pytest.mark.parametrize("length, crop, expected", [(242, 182, 30), (183, 182, 0), (185, 182, 2), (187, 182, 2)])
def test_center_crop_offset_rounds_half_to_even_like_torchvision(length, crop, expected):
    assert center_crop_offset(length, crop) == expected


@pytest.mark.parametrize("name", [n for n, s in MODELS.items() if s.slowfast_alpha])
def test_slowfast_pathways_match_the_tutorial(name):
    spec = get_spec(name)
    clip = torch.randn(3, spec.num_frames, 8, 8)
    slow, fast = pack_pathways(clip[None], spec)
    ref_slow, ref_fast = PackPathway(spec.slowfast_alpha)(clip)
    assert torch.equal(slow[0], ref_slow) and torch.equal(fast[0], ref_fast)
    assert slow.shape[2] == spec.num_frames // spec.slowfast_alpha


def test_preprocess_leaves_the_input_untouched():
    frames = np.full((4, 200, 300, 3), 128, np.uint8)
    preprocess_clip(frames, get_spec("x3d_xs"))
    assert (frames == 128).all()
