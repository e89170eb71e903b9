"""Video-level accuracy of a classifier on labelled videos: top-1, top-5, per class, confusion.

A video's prediction is the mean of its segments' class probabilities (the inference path's
segments and transform, so the numbers are those `reelflow classify` gives).

    >>> report = evaluate_folder("dataset", "x3d_xs", "ckpt.pyth")      # doctest: +SKIP
    >>> report["top1"], report["confusion"]                             # 0.94, [[6, 0, 0], ...]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch

from pipelines.datasets import SPLITS, LabelledVideo, class_folders, videos_of
from pipelines.errors import InputError
from pipelines.inference import ClipModel
from pipelines.labels import labels_for
from pipelines.sampler import sample_clips
from pipelines.transforms import preprocess_clip

TOP5_MIN_CLASSES = 5


def segment_outputs(clip_model: ClipModel, path: str, stride_s: float | None = None, batch_size: int = 8
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities (S, C), embeddings (S, D)) of a video's segments that hold frames. `clip_model`:
    a ClipModel, or anything with its `spec` and `predict(batch) -> (probs, embeddings)` (a FineTuner)."""

    spec = clip_model.spec
    probs, features, pending = [], [], []

    def flush():
        p, f = clip_model.predict(torch.stack(pending))
        probs.append(p)
        features.append(f)
        pending.clear()

    for clip in sample_clips(path, spec.clip_seconds, spec.num_frames, stride_s):
        if clip.frames is not None:
            pending.append(preprocess_clip(clip.frames, spec))
            if len(pending) == batch_size:
                flush()
    if pending:
        flush()
    if not probs:
        raise InputError(f"{path!r} has no frames; remove it from the dataset")
    return torch.cat(probs), torch.cat(features)


def metrics(probs: np.ndarray, truth: np.ndarray, classes: list[str]) -> dict:
    """Top-1, top-5 (>= 5 classes), per-class accuracy and the confusion matrix (rows: true class,
    columns: predicted) of video probabilities (N, C) against true class indices (N,)."""
    n, num_classes = probs.shape
    predicted = probs.argmax(1)
    confusion = np.zeros((num_classes, num_classes), dtype=int)
    np.add.at(confusion, (truth, predicted), 1)
    report = {"videos": int(n), "top1": float((predicted == truth).mean()) if n else 0.0}
    if num_classes >= TOP5_MIN_CLASSES:
        top5 = np.argsort(-probs, axis=1)[:, :5]
        report["top5"] = float((top5 == truth[:, None]).any(1).mean()) if n else 0.0
    report["per_class"] = {
        name: {"videos": int(confusion[i].sum()), "correct": int(confusion[i, i]),
               "accuracy": float(confusion[i, i] / confusion[i].sum()) if confusion[i].sum() else None}
        for i, name in enumerate(classes)
    }
    report["classes"] = list(classes)
    report["confusion"] = confusion.tolist()
    return report


def evaluate_videos(clip_model: ClipModel, labels: list[str], videos: Iterable[tuple[str, str]],
                    on_video: Callable[[str, str, str], None] | None = None) -> dict:
    """Metrics of (path, true class name) pairs; names must be among `labels` (the model's classes)."""
    index = {name: i for i, name in enumerate(labels)}
    rows, truth, per_video = [], [], []
    for path, name in videos:
        if name not in index:
            raise InputError(f"class {name!r} of {path!r} is not one of the model's classes "
                             f"({', '.join(labels[:8])}{', ...' if len(labels) > 8 else ''}); "
                             "pass the checkpoint trained on these classes")
        probs, _ = segment_outputs(clip_model, path)
        video_probs = probs.mean(0).numpy()
        rows.append(video_probs)
        truth.append(index[name])
        predicted = labels[int(video_probs.argmax())]
        per_video.append({"path": path, "true": name, "predicted": predicted,
                          "score": float(video_probs.max()), "segments": int(len(probs))})
        if on_video is not None:
            on_video(path, name, predicted)
    if not rows:
        raise InputError("no videos to evaluate")
    report = metrics(np.stack(rows), np.asarray(truth), labels)
    report["results"] = per_video
    return report


def labelled_videos(directory: str | Path) -> tuple[str, list[tuple[str, str]]]:
    """(split used, [(path, class name)]) of DIR: its test/ (else val/) split when DIR is a dataset
    root, else DIR itself as a folder of class folders."""
    root = Path(directory)
    if not root.is_dir():
        raise InputError(f"{str(root)!r} is not a directory; pass a dataset root or a folder of class folders")
    for name in ("test", "val"):
        if (root / name).is_dir():
            split_dir = root / name
            break
    else:
        if any((root / name).is_dir() for name in SPLITS):  # only train/: nothing held out
            raise InputError(f"dataset {str(root)!r} has no test/ or val/ folder to evaluate on")
        split_dir, name = root, root.name
    classes = class_folders(split_dir)
    videos: list[LabelledVideo] = videos_of(split_dir, classes)
    return name, [(v.path, classes[v.label]) for v in videos]


def evaluate_folder(directory: str | Path, model: str, weights: str, on_video=None) -> dict:

    split, videos = labelled_videos(directory)
    clip_model = ClipModel.load(model, weights)
    labels = labels_for(clip_model.num_classes, classes=clip_model.classes)
    report = evaluate_videos(clip_model, labels, videos, on_video)
    # Only the classes that occur (as truth or prediction): Kinetics' 400 would swamp the matrix.
    used = sorted({labels.index(r["true"]) for r in report["results"]} |
                  {labels.index(r["predicted"]) for r in report["results"]})
    if len(used) < len(labels):
        matrix = np.asarray(report["confusion"])[np.ix_(used, used)]
        report["classes"] = [labels[i] for i in used]
        report["confusion"] = matrix.tolist()
        report["per_class"] = {k: v for k, v in report["per_class"].items() if v["videos"]}
    return {"model": model, "weights": clip_model.weights_id, "split": split, **report}


def confusion_png(report: dict, path: str | Path, cell: int = 36) -> Path:
    """The confusion matrix as a PNG heat map with counts, drawn with Pillow."""
    from PIL import Image, ImageDraw, ImageFont  # Pillow: only when a confusion matrix is drawn

    classes, matrix = report["classes"], np.asarray(report["confusion"])
    font = ImageFont.load_default()
    margin = 12 + 7 * max(len(c) for c in classes)
    size = margin + cell * len(classes) + 10
    image = Image.new("RGB", (size, size + 20), "white")
    draw = ImageDraw.Draw(image)
    draw.text((4, 2), f"top-1 {report['top1']:.3f}  (rows: true, columns: predicted)", fill="black", font=font)
    peak = max(int(matrix.max()), 1)
    for i, name in enumerate(classes):
        draw.text((4, 20 + margin + i * cell + cell // 3), name, fill="black", font=font)
        draw.text((margin + i * cell + 2, 20 + margin - 14), name[:cell // 7], fill="black", font=font)
        for j in range(len(classes)):
            shade = int(255 - 200 * matrix[i, j] / peak)
            box = (margin + j * cell, 20 + margin + i * cell, margin + (j + 1) * cell - 1, 20 + margin + (i + 1) * cell - 1)
            draw.rectangle(box, fill=(shade, shade, 255))
            draw.text((box[0] + cell // 3, box[1] + cell // 3), str(matrix[i, j]), fill="black", font=font)
    image.save(path)
    return Path(path)
