"""Labelled video folders and training clips: `DIR/{train,val,test}/<class>/<video>`.

    >>> data = VideoFolder.open("dataset")                               # doctest: +SKIP
    >>> data.classes, len(data.split("train"))                           # (['fall', 'walk'], 24)
    >>> clip = random_clip("dataset/train/fall/a.mp4", spec, rng)        # (T, H, W, 3) uint8, random position
    >>> x = augment_clip(clip, spec, rng)                                # (3, T, crop, crop) float32

Training clips start at a random position and are augmented (random short-side scale, random crop,
horizontal flip); validation and test clips are the segments of the inference path, unchanged.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipelines.errors import InputError
from pipelines.models import ModelSpec

VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mkv", ".webm", ".avi", ".mov", ".mpg", ".mpeg", ".ts", ".flv",
                            ".wmv", ".3gp", ".ogv", ".gif"})
SPLITS = ("train", "val", "test")
SCALE_JITTER = 1.25  # training short side is drawn from [side, side * SCALE_JITTER], as Kinetics recipes do


@dataclass(frozen=True)
class LabelledVideo:
    path: str
    label: int  # index into the dataset's classes


@dataclass
class VideoFolder:
    """A dataset root: its classes (the train/ class folders, sorted) and videos per split."""

    root: Path
    classes: list[str]
    splits: dict[str, list[LabelledVideo]] = field(default_factory=dict)

    @classmethod
    def open(cls, root: str | os.PathLike, *, need: tuple[str, ...] = ("train", "val")) -> VideoFolder:
        root = Path(root)
        if not root.is_dir():
            raise InputError(f"dataset {str(root)!r} is not a directory; pass a folder holding train/ and val/")
        for name in need:
            if not (root / name).is_dir():
                raise InputError(f"dataset {str(root)!r} has no {name}/ folder; lay it out as "
                                 f"{root}/{{train,val}}/<class>/<video>")
        classes = class_folders(root / need[0])
        splits = {name: videos_of(root / name, classes) for name in SPLITS if (root / name).is_dir()}
        return cls(root, classes, splits)

    def split(self, name: str) -> list[LabelledVideo]:
        return self.splits.get(name, [])


def class_folders(split_dir: Path) -> list[str]:
    """Sorted class names of a split folder; each must hold at least one video."""
    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise InputError(f"{str(split_dir)!r} holds no class folders; put each class's videos in "
                         f"{split_dir}/<class>/")
    if len(classes) < 2:
        raise InputError(f"{str(split_dir)!r} holds one class ({classes[0]}); a classifier needs at least two")
    for name in classes:
        if not _videos_in(split_dir / name):
            raise InputError(f"class folder {str(split_dir / name)!r} holds no videos "
                             f"({', '.join(sorted(VIDEO_SUFFIXES))}); add some or remove the folder")
    return classes


def videos_of(split_dir: Path, classes: list[str]) -> list[LabelledVideo]:
    """The labelled videos of a split; a class folder unknown to `classes` is an error."""
    index = {name: i for i, name in enumerate(classes)}
    videos = []
    for folder in sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if folder.name not in index:
            raise InputError(f"class folder {str(folder)!r} is not one of the classes ({', '.join(classes)}); "
                             "rename or remove it")
        videos += [LabelledVideo(str(path), index[folder.name]) for path in _videos_in(folder)]
    if not videos:
        raise InputError(f"{str(split_dir)!r} holds no videos; put them in {split_dir}/<class>/")
    return videos


def _videos_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)


def random_clip(path: str, spec: ModelSpec, rng: random.Random) -> np.ndarray:
    """T frames (uint8 RGB) of one clip-length window at a random position of the video."""
    from pipelines.decode import open_video  # PyAV: `reelflow train` checks a dataset's layout without it
    from pipelines.sampler import subsample_indices

    with open_video(path) as video:
        duration = video.duration_s()
        start = rng.uniform(0.0, max(0.0, duration - spec.clip_seconds))
        end = start + spec.clip_seconds
        window = []
        for pts, frame in video.frames():
            t = video.info.seconds(pts)
            if t >= end:
                break
            if t >= start:
                window.append(frame)
    if not window:
        raise InputError(f"{path!r} has no frames in [{start:.2f}, {end:.2f}) s; is the video empty?")
    picks = subsample_indices(len(window), spec.num_frames)
    return np.stack([window[i].to_ndarray(format="rgb24") for i in picks])


def augment_clip(frames: np.ndarray, spec: ModelSpec, rng: random.Random):
    """(T, H, W, 3) uint8 -> (3, T, crop, crop) float32: random short-side scale, random crop,
    horizontal flip (half the time), then the model's normalization."""
    import torch  # `reelflow train` checks a dataset's layout before torch loads

    from pipelines.transforms import normalize_, short_side_size

    x = torch.as_tensor(frames).permute(0, 3, 1, 2).float()  # (T, 3, H, W)
    side = rng.randint(spec.side_size, int(spec.side_size * SCALE_JITTER))
    size = short_side_size(x.shape[2], x.shape[3], side)
    x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=spec.antialias)
    top = rng.randint(0, size[0] - spec.crop_size)
    left = rng.randint(0, size[1] - spec.crop_size)
    x = x[:, :, top:top + spec.crop_size, left:left + spec.crop_size]
    if rng.random() < 0.5:
        x = x.flip(-1)
    return normalize_(x.permute(1, 0, 2, 3).contiguous(), spec)
