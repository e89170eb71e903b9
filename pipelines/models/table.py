"""The model table: every PyTorchVideo hub model reelflow serves, and how to feed it.

Pure data, no torch import, so client commands can list models instantly.

    >>> from pipelines.models import get_spec
    >>> spec = get_spec("x3d_xs")
    >>> spec.num_frames, spec.sampling_rate, spec.crop_size, round(spec.clip_seconds, 2)
    (4, 12, 182, 1.6)
"""

from __future__ import annotations

import hashlib
import re

from pipelines.errors import UnknownModelError
from pipelines.models.hf import canonical_name, get_hf_spec
from pipelines.models.spec import ASSUMED_FPS, MEAN, MODEL_ZOO_URL, STD, ModelSpec  # noqa: F401  (re-exported)

def _resnet(name: str, builder: str, ckpt: str) -> ModelSpec:
    return ModelSpec(name, builder, 8, 8, 256, 256, 2048, ckpt)


def _slowfast(name: str, ckpt: str) -> ModelSpec:
    return ModelSpec(name, name, 32, 2, 256, 256, 2304, ckpt, slowfast_alpha=4)


def _x3d(name: str, frames: int, rate: int, size: int, ckpt: str) -> ModelSpec:
    return ModelSpec(name, name, frames, rate, size, size, 2048, ckpt, head_softmax=True)


def _mvit(name: str, frames: int, rate: int, ckpt: str) -> ModelSpec:
    return ModelSpec(name, name, frames, rate, 224, 224, 768, ckpt, fixed_input=True)


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        _resnet("c2d_r50", "c2d_r50", "C2D_8x8_R50.pyth"),
        _resnet("i3d_r50", "i3d_r50", "I3D_8x8_R50.pyth"),
        _resnet("slow_r50", "slow_r50", "SLOW_8x8_R50.pyth"),
        _slowfast("slowfast_r50", "SLOWFAST_8x8_R50.pyth"),
        _slowfast("slowfast_r101", "SLOWFAST_8x8_R101.pyth"),
        _x3d("x3d_xs", 4, 12, 182, "X3D_XS.pyth"),
        _x3d("x3d_s", 13, 6, 182, "X3D_S.pyth"),
        _x3d("x3d_m", 16, 5, 256, "X3D_M.pyth"),
        _x3d("x3d_l", 16, 5, 312, "X3D_L.pyth"),
        _mvit("mvit_base_16x4", 16, 4, "MVIT_B_16x4.pyth"),
        _mvit("mvit_base_32x3", 32, 3, "MVIT_B_32x3_f294077834.pyth"),
    )
}

DEFAULT_MODEL = "x3d_xs"
DEFAULT_WEIGHTS = "kinetics"

# `--weights none`: seeded random init, the same in every process, and named so in every result.
RANDOM_SEED = 0
RANDOM_WEIGHTS_ID = f"none (random init, seed {RANDOM_SEED})"


def is_random_weights(weights_id: str) -> bool:
    return weights_id == RANDOM_WEIGHTS_ID


def get_spec(name: str) -> ModelSpec:
    """A model of the table, or a Hugging Face video classifier named `hf:DIR` or `hf:org/name`."""
    if name.startswith("hf:"):
        return get_hf_spec(name)
    try:
        return MODELS[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}; choose one of: {', '.join(MODELS)}, or hf:DIR / hf:org/name "
            "(a Hugging Face video classifier)"
        ) from None


def model_name(name: str) -> str:
    """The name jobs and results use: a table model as is, `hf:` models with their absolute
    directory (the same model whichever directory a worker runs in). UnknownModelError if neither."""
    if name.startswith("hf:"):
        return canonical_name(name)
    return get_spec(name).name


def model_slug(name: str) -> str:
    """The model's name where only letters, digits and -_. fit (Ray Serve applications and
    deployments): table models as they are, `hf:/models/videomae` as `hf-videomae-<hash>`.

    >>> model_slug("x3d_xs"), model_slug("hf:/models/videomae")
    ('x3d_xs', 'hf-videomae-787ebf')
    """
    if name in MODELS:
        return name
    tail = re.sub(r"[^A-Za-z0-9_.-]+", "-", name.rstrip("/").rsplit("/", 1)[-1].removeprefix("hf:"))[:40]
    return f"hf-{tail}-{hashlib.sha1(name.encode()).hexdigest()[:6]}"
