"""Weights: official Kinetics checkpoints through torch.hub's cache, local checkpoints in both
formats, and seeded random init. No network: the tests write the checkpoints themselves."""

import argparse
import subprocess
import sys

import pytest
import torch

from support.checkpoint_files import write_checkpoint
from pipelines.errors import WeightsError
from pipelines.models import RANDOM_WEIGHTS_ID, get_spec
from pipelines.models.weights import build_model, checkpoint_cache_path

XS = get_spec("x3d_xs")

FINGERPRINT = (
    "import torch; from pipelines.models import get_spec; from pipelines.models.weights import build_model; "
    "m, _ = build_model(get_spec('x3d_xs'), 'none'); "
    "print(sum(float(p.double().sum()) * (i + 1) for i, p in enumerate(m.state_dict().values())))"
)


def fingerprint_in_new_process() -> str:
    return subprocess.run([sys.executable, "-c", FINGERPRINT], capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.slow  # `make test` stays under 15 minutes (21 min before): `make test-slow`
def test_random_init_is_the_same_in_every_process():
    assert fingerprint_in_new_process() == fingerprint_in_new_process()
    model, weights_id = build_model(XS, "none")
    assert weights_id == RANDOM_WEIGHTS_ID and "random" in weights_id


def test_random_init_leaves_the_callers_rng_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    build_model(XS, "none")
    assert torch.equal(torch.rand(3), expected)


def altered_model():
    model, _ = build_model(XS, "none")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)
    return model


@pytest.mark.parametrize("wrapped", [True, False], ids=["pytorchvideo-format", "plain-state-dict"])
def test_local_checkpoints_load_strictly(tmp_path, wrapped):
    saved = altered_model()
    path = write_checkpoint(saved, tmp_path / "mine.pyth", wrapped=wrapped)
    model, weights_id = build_model(XS, str(path))
    assert weights_id.startswith("mine.pyth (sha256 ")
    for (name, a), b in zip(saved.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name


def test_kinetics_weights_come_from_the_torch_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("REELFLOW_MODEL_ZOO_URL", "http://127.0.0.1:9/unreachable")
    cached = checkpoint_cache_path(XS)
    assert cached == tmp_path / "hub" / "checkpoints" / "X3D_XS.pyth"
    cached.parent.mkdir(parents=True)
    saved = altered_model()
    write_checkpoint(saved, cached)
    model, weights_id = build_model(XS, "kinetics")
    assert weights_id == "kinetics (X3D_XS.pyth)"
    assert torch.equal(next(iter(model.state_dict().values())), next(iter(saved.state_dict().values())))


def test_kinetics_offline_names_the_url_and_the_cache_path(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("REELFLOW_MODEL_ZOO_URL", "http://127.0.0.1:9/zoo")
    with pytest.raises(WeightsError) as err:
        build_model(XS, "kinetics", progress=False)
    message = str(err.value)
    assert "http://127.0.0.1:9/zoo/X3D_XS.pyth" in message
    assert str(tmp_path / "hub" / "checkpoints" / "X3D_XS.pyth") in message
    assert "\n" not in message
    assert not (tmp_path / "hub" / "checkpoints" / "X3D_XS.pyth").exists()


def test_a_checkpoint_of_another_model_is_refused(tmp_path):
    # (x3d_xs, x3d_s and x3d_m share one architecture; x3d_l is deeper)
    other, _ = build_model(get_spec("x3d_l"), "none")
    other_path = write_checkpoint(other, tmp_path / "x3d_l.pyth")
    with pytest.raises(WeightsError, match="does not fit x3d_xs"):
        build_model(XS, str(other_path))


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "is not a file"),
        (b"garbage" * 10, "cannot read checkpoint"),
        ({"model_state": {"w": torch.zeros(1)}, "cfg": argparse.Namespace(lr=1)}, "Python objects"),
        ({"epoch": 3}, "neither"),
    ],
    ids=["missing", "garbage", "pickled-objects", "no-state-dict"],
)
def test_bad_checkpoints_give_clear_errors(tmp_path, content, message):
    path = tmp_path / "bad.pyth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(WeightsError, match=message) as err:
        build_model(XS, str(path))
    assert "\n" not in str(err.value)
