"""The model table and every model's forward pass: probabilities and embeddings of the right size."""

import pytest
import torch

from pipelines.errors import UnknownModelError
from pipelines.inference import ClipModel
from pipelines.models import MODELS, get_spec

# name: (T, sampling rate, short side / crop, clip seconds, embedding size, checkpoint file)
TABLE = {
    "c2d_r50": (8, 8, 256, 2.13, 2048, "C2D_8x8_R50.pyth"),
    "i3d_r50": (8, 8, 256, 2.13, 2048, "I3D_8x8_R50.pyth"),
    "slow_r50": (8, 8, 256, 2.13, 2048, "SLOW_8x8_R50.pyth"),
    "slowfast_r50": (32, 2, 256, 2.13, 2304, "SLOWFAST_8x8_R50.pyth"),
    "slowfast_r101": (32, 2, 256, 2.13, 2304, "SLOWFAST_8x8_R101.pyth"),
    "x3d_xs": (4, 12, 182, 1.6, 2048, "X3D_XS.pyth"),
    "x3d_s": (13, 6, 182, 2.6, 2048, "X3D_S.pyth"),
    "x3d_m": (16, 5, 256, 2.67, 2048, "X3D_M.pyth"),
    "x3d_l": (16, 5, 312, 2.67, 2048, "X3D_L.pyth"),
    "mvit_base_16x4": (16, 4, 224, 2.13, 768, "MVIT_B_16x4.pyth"),
    "mvit_base_32x3": (32, 3, 224, 3.2, 768, "MVIT_B_32x3_f294077834.pyth"),
}


def test_the_table_lists_the_eleven_hub_models():
    assert list(MODELS) == list(TABLE)


@pytest.mark.parametrize("name, row", TABLE.items())
def test_model_facts(name, row):
    frames, rate, size, seconds, dim, ckpt = row
    spec = get_spec(name)
    assert (spec.num_frames, spec.sampling_rate, spec.side_size, spec.crop_size) == (frames, rate, size, size)
    assert round(spec.clip_seconds, 2) == seconds
    assert spec.embedding_dim == dim
    assert spec.checkpoint_url == f"https://dl.fbaipublicfiles.com/pytorchvideo/model_zoo/kinetics/{ckpt}"
    assert (spec.slowfast_alpha == 4) == name.startswith("slowfast")


def test_unknown_model_names_the_choices():
    with pytest.raises(UnknownModelError, match="x3d_xs"):
        get_spec("resnet9000")


# the biggest of each family in `make test-models` (slowfast_r50, x3d_m and mvit_base_16x4 run the same code here)
HEAVY = ("slowfast_r101", "x3d_l", "mvit_base_32x3")


@pytest.mark.parametrize("name", [pytest.param(n, marks=[pytest.mark.slow, pytest.mark.models]) if n in HEAVY else n
                                  for n in TABLE])
def test_every_model_gives_probabilities_and_embeddings_of_its_size(name):
    clip_model = ClipModel.load(name, "none", runtime="torch")  # the converted runtime: tests/unit/test_runtimes.py
    spec = clip_model.spec
    batch = torch.randn(2, 3, spec.num_frames, spec.crop_size, spec.crop_size, generator=torch.Generator().manual_seed(0))
    probs, embeddings = clip_model.predict(batch)
    assert probs.shape == (2, 400)
    assert embeddings.shape == (2, TABLE[name][4]) and embeddings.dtype == torch.float32
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(2), atol=1e-4, rtol=0)
    assert (probs >= 0).all()
    # the embedding is the projection's input: for heads without output pooling after the
    # projection, logits = W . embedding + b exactly
    if not spec.head_softmax:
        proj = clip_model.model.head.proj if name.startswith("mvit") else clip_model.model.blocks[-1].proj
        with torch.inference_mode():
            logits = proj(embeddings)
        torch.testing.assert_close(torch.softmax(logits, dim=1), probs, atol=1e-5, rtol=1e-4)


def test_batch_rates_time_each_size_and_respect_the_budget():
    clip_model = ClipModel.load("x3d_xs", "none")
    rates = clip_model.batch_rates(sizes=(1, 2, 4), budget_s=60)
    assert list(rates)[0] == 1 and set(rates) <= {1, 2, 4} and all(r > 0 for r in rates.values())
    assert list(clip_model.batch_rates(sizes=(1, 2, 4), budget_s=0)) == [1]  # budget spent after the first size


def test_half_precision_runs_and_stays_close_to_float32():
    """The GPU's float16 path, exercised on the CPU as bfloat16 autocast: approximate, not exact."""
    exact = ClipModel.load("x3d_xs", "none")
    half = ClipModel.load("x3d_xs", "none", precision="half")
    batch = torch.randn(2, 3, 4, 182, 182, generator=torch.Generator().manual_seed(1))
    (p32, e32), (p16, e16) = exact.predict(batch), half.predict(batch)
    assert p16.dtype == torch.float32 and p16.shape == p32.shape
    torch.testing.assert_close(p16, p32, rtol=0.02, atol=0)  # seen: 0.4% apart at most
    assert not torch.equal(p16, p32)  # it did compute in lower precision
    assert torch.nn.functional.cosine_similarity(e16, e32).min() > 0.99
    with pytest.raises(ValueError, match="precision must be one of"):
        ClipModel.load("x3d_xs", "none", precision="fp8")
