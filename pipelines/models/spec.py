"""What a model is to reelflow: how it is built, fed and loaded (`ModelSpec`), and the facts shared
by the PyTorchVideo Kinetics-400 zoo. Pure data, no torch import.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    # Models that are not PyTorchVideo's hub models (pipelines/models/hf.py): where they come from
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
