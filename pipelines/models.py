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
from dataclasses import dataclass

from pipelines.errors import UnknownModelError

# Facts shared by every model of the PyTorchVideo Kinetics-400 zoo.
MEAN = (0.45, 0.45, 0.45)
STD = (0.225, 0.225, 0.225)
ASSUMED_FPS = 30
MODEL_ZOO_URL = "https://dl.fbaipublicfiles.com/pytorchvideo/model_zoo/kinetics"


@dataclass(frozen=True)
class ModelSpec:
    """How one hub model is built, fed and loaded."""

    name: str
    hub_builder: str  # function name in pytorchvideo.models.hub
    num_frames: int  # T frames per clip (the fast pathway's T for SlowFast)
    sampling_rate: int  # frames at ASSUMED_FPS between two sampled frames
    side_size: int  # short side after scaling
    crop_size: int  # centre crop, square
    embedding_dim: int  # input size of the head's final projection
    checkpoint_file: str  # file name under MODEL_ZOO_URL
    slowfast_alpha: int | None = None  # slow pathway = every alpha-th frame of the fast one
    head_softmax: bool = False  # the head already ends in a Softmax (X3D)
    fixed_input: bool = False  # the model only accepts exactly (num_frames, crop, crop) (MViT)
    # Models that are not PyTorchVideo's hub models (pipelines/hf_models.py): where they come from
    # and how their own processor feeds them.
    backend: str = "pytorchvideo"  # or "hf": a Hugging Face video classifier
    mean: tuple[float, ...] = MEAN
    std: tuple[float, ...] = STD
    pixel_max: float = 255.0  # pixel values are divided by this before normalizing
    antialias: bool = False  # resize whole frames with an antialiasing filter (Hugging Face processors)

    @property
    def clip_seconds(self) -> float:
        return self.num_frames * self.sampling_rate / ASSUMED_FPS

    @property
    def checkpoint_url(self) -> str:
        if self.backend == "hf":
            source = self.name.removeprefix("hf:")
            return source if source.startswith("/") else f"https://huggingface.co/{source}"
        return f"{MODEL_ZOO_URL}/{self.checkpoint_file}"


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
        from pipelines.hf_models import get_hf_spec

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
        from pipelines.hf_models import canonical_name

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
