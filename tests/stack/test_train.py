"""Training on the user's own classes: `reelflow train`, then `classify`, `process` and `evaluate`
with the checkpoint answer with the dataset's class names.

The dataset is generated (tests/support/dataset_folders.py): three classes that differ by appearance and motion,
8 training and 4 validation videos each. From random weights (`--weights none`) a linear probe on
x3d_xs separates them; full fine-tuning is checked to lower the training loss over a few steps.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest
import torch

from support.dataset_folders import CLASSES, make_dataset
from support.stack_process import reelflow

MODEL = "x3d_xs"  # the fastest model


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data") / "shapes", train=8, val=4)


@pytest.fixture(scope="module")
def probe_checkpoint(dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ckpt") / "probe.pyth"
    done = reelflow("train", str(dataset), "--model", MODEL, "--weights", "none", "--linear-probe",
                    "-o", str(out), "--quiet")
    assert "best epoch" in done.stdout and "val accuracy" in done.stdout
    return out


def test_checkpoint_carries_classes_and_model_and_loads_without_pickled_code(probe_checkpoint):
    checkpoint = torch.load(probe_checkpoint, map_location="cpu", weights_only=True)
    assert checkpoint["classes"] == sorted(CLASSES)
    assert checkpoint["model"] == MODEL
    assert checkpoint["reelflow"]["linear_probe"] is True
    assert checkpoint["reelflow"]["spec"]["num_frames"] == 4
    assert checkpoint["model_state"]["blocks.5.proj.weight"].shape == (3, 2048)


@pytest.mark.slow  # about a minute or more: `make test-slow`
def test_classify_with_the_checkpoint_names_the_held_out_videos(dataset, probe_checkpoint):
    # Two videos per class through the CLI (a process each); `evaluate` below covers all twelve.
    videos = [v for name in CLASSES for v in sorted((dataset / "val" / name).glob("*.mp4"))[:2]]
    correct = 0
    for video in videos:
        out = reelflow("classify", str(video), "--model", MODEL, "--weights", str(probe_checkpoint), "--json",
                       "--topk", "3").stdout
        segments = [json.loads(line) for line in out.splitlines()]
        assert segments and all(set(s["labels"]) == set(CLASSES) for s in segments)
        majority = Counter(s["labels"][0] for s in segments).most_common(1)[0][0]
        correct += majority == video.parent.name
    assert correct / len(videos) >= 0.9, f"{correct}/{len(videos)} held-out videos right"


@pytest.mark.slow  # `make test` stays under 15 minutes (21 min before): `make test-slow`
def test_evaluate_reports_top1_per_class_and_confusion(dataset, probe_checkpoint, tmp_path):
    out = tmp_path / "report.json"
    report = json.loads(reelflow("evaluate", str(dataset), "--model", MODEL, "--weights", str(probe_checkpoint),
                                 "--json", "-o", str(out)).stdout)
    assert report["split"] == "val" and report["videos"] == 12
    assert report["top1"] >= 0.9
    assert "top5" not in report  # fewer than 5 classes
    assert report["classes"] == sorted(CLASSES)
    assert sum(map(sum, report["confusion"])) == 12 and len(report["confusion"]) == 3
    assert all(row["videos"] == 4 for row in report["per_class"].values())
    assert json.loads(out.read_text())["top1"] == report["top1"]
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_process_on_a_stack_answers_with_the_checkpoint_labels(dataset, probe_checkpoint, tmp_path):
    video = dataset / "val" / "green_stripes" / "green_stripes_2.mp4"
    reelflow("process", str(video), "--model", MODEL, "--weights", str(probe_checkpoint), "--no-ray",
             "--out", str(tmp_path / "out"), "--home", str(tmp_path / "home"))
    segments = [json.loads(line) for line in (tmp_path / "out" / "green_stripes_2.jsonl").read_text().splitlines()]
    assert segments and set(segments[0]["labels"]) <= set(CLASSES)
    assert Counter(s["labels"][0] for s in segments).most_common(1)[0][0] == "green_stripes"


def test_a_checkpoint_names_the_model_it_was_trained_for(probe_checkpoint):
    from pipelines.errors import WeightsError
    from pipelines.inference import ClipModel

    with pytest.raises(WeightsError, match="trained for x3d_xs, not x3d_s; pass --model x3d_xs"):
        ClipModel.load("x3d_s", str(probe_checkpoint))


def test_fine_tuning_lowers_the_training_loss(dataset):
    from pipelines.datasets import VideoFolder, augment_clip, random_clip
    from pipelines.models import get_spec
    from pipelines.training import FineTuner

    spec = get_spec(MODEL)
    data = VideoFolder.open(dataset)
    rng = random.Random(0)
    # Two clips of two classes: a depthwise 3D convolution's backward pass is slow on a CPU.
    videos = [next(v for v in data.split("train") if v.label == k) for k in (0, 1)]
    batch = torch.stack([augment_clip(random_clip(v.path, spec, rng), spec, rng) for v in videos])
    labels = torch.tensor([v.label for v in videos])
    assert batch.shape == (2, 3, 4, spec.crop_size, spec.crop_size)
    torch.manual_seed(0)
    tuner = FineTuner(spec, "none", num_classes=3, total_steps=4, lr=1e-3)
    losses = [tuner.step(batch, labels)[0] for _ in range(4)]
    assert losses[-1] < losses[0], losses


@pytest.mark.slow  # `make test` stays under 15 minutes (21 min before): `make test-slow`
def test_fine_tuning_writes_a_checkpoint_the_classifier_loads(tmp_path):
    from pipelines.classifier import ActionClassifier
    from pipelines.training import TrainConfig, train

    data = make_dataset(tmp_path / "tiny", train=2, val=1, seed=7)
    result = train(data, TrainConfig(model=MODEL, weights="none", epochs=1, batch_size=2, max_steps=2),
                   tmp_path / "ft.pyth", quiet=True)
    assert len(result.step_losses) == 2 and result.best_epoch == 1
    clf = ActionClassifier(MODEL, weights=str(tmp_path / "ft.pyth"), topk=3)
    assert clf.labels == sorted(CLASSES)
    labels, scores, features = clf(torch.zeros(8, 120, 160, 3, dtype=torch.uint8).numpy())
    assert set(labels) == set(CLASSES) and abs(sum(scores) - 1) < 1e-4 and features.shape == (2048,)


@pytest.mark.parametrize("layout, message", [
    ({}, "holds no class folders"),                                        # empty train/ and val/
    ({"train/a": 1, "train/b": 0, "val/a": 1}, "holds no videos"),         # a class with no videos
    ({"train/a": 1, "train/b": 1}, "has no val/ folder"),                  # no validation split
    ({"train/a": 1, "val/a": 1}, "needs at least two"),                    # one class
    ({"train/a": 1, "train/b": 1, "val/c": 1}, "is not one of the classes"),  # val class unknown
], ids=["empty", "class-without-videos", "missing-val", "one-class", "unknown-val-class"])
def test_bad_datasets_are_one_line_errors(tmp_path, layout, message):
    root = tmp_path / "bad"
    (root / "train").mkdir(parents=True)
    if not layout:
        (root / "val").mkdir()
    for folder, videos in layout.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for n in range(videos):
            (root / folder / f"{n}.mp4").write_bytes(b"")
    result = reelflow("train", str(root), "--weights", "none", "--linear-probe", "-o", str(tmp_path / "x.pyth"),
                      check=False)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("reelflow: error:") and message in lines[-1], result.stderr
    assert "Traceback" not in result.stderr
