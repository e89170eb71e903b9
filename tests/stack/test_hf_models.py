"""Hugging Face video classifiers as a model backend: `--model hf:DIR`.

A tiny VideoMAE (one layer, 32x32, 4 frames; tests/support/tiny_videomae.py) is built from a config and saved
with `save_pretrained`, with its own id2label and an ImageNet-normalizing processor. It must
classify a real video with its own class names, preprocess exactly as its Hugging Face processor
does, give the Hugging Face model's own probabilities, and train (linear probe) into a checkpoint
that classify and a stack then serve.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from support.tiny_videomae import CLASSES, save_tiny_videomae
from support.stack_process import reelflow

@pytest.fixture(scope="module")
def videomae(tmp_path_factory) -> Path:
    return save_tiny_videomae(tmp_path_factory.mktemp("hf") / "videomae-tiny")


@pytest.fixture(scope="module")
def real_video(shared_videos) -> Path:
    return shared_videos / "mm_demo.mp4"


def test_spec_comes_from_the_saved_config_and_processor(videomae):
    from pipelines.models import get_spec

    spec = get_spec(f"hf:{videomae}")
    assert spec.name == f"hf:{videomae.resolve()}" and spec.backend == "hf"
    assert (spec.num_frames, spec.side_size, spec.crop_size, spec.embedding_dim) == (4, 36, 32, 32)
    assert spec.mean == (0.485, 0.456, 0.406) and spec.std == (0.229, 0.224, 0.225)


def test_preprocessing_and_scores_match_the_hugging_face_processor_and_model(videomae, real_video):
    from transformers import VideoMAEForVideoClassification, VideoMAEImageProcessor

    from pipelines.decode import open_container
    from pipelines.inference import ClipModel
    from pipelines.transforms import clip_taps, finish_on, preprocess_clip

    container, stream = open_container(real_video)
    with container:
        frames = np.stack([f.to_ndarray(format="rgb24") for _, f in zip(range(4), container.decode(stream))])
    model = ClipModel.load(f"hf:{videomae}", "pretrained")
    ours = preprocess_clip(frames, model.spec)  # (C, T, H, W)
    theirs = VideoMAEImageProcessor.from_pretrained(videomae)(list(frames), return_tensors="pt")["pixel_values"][0]
    assert ours.shape == (3, 4, 32, 32)
    assert torch.allclose(ours.transpose(0, 1), theirs, atol=1e-5)
    # what a GPU replica gets: uint8 from the decoder, finished on its device, the same numbers
    assert torch.equal(finish_on(clip_taps(torch.as_tensor(frames), model.spec), torch.device("cpu"), model.spec), ours)

    probs, embedding = model.predict(ours[None])
    reference = VideoMAEForVideoClassification.from_pretrained(videomae).eval()
    with torch.no_grad():
        out = reference(pixel_values=theirs[None], output_hidden_states=True)
    assert torch.allclose(probs, out.logits.softmax(1), rtol=1e-4, atol=1e-6)
    pooled = reference.fc_norm(out.hidden_states[-1].mean(1))  # VideoMAE's mean pooling, before its classifier
    assert embedding.shape == (1, 32) and torch.allclose(embedding, pooled, atol=1e-5)


def test_classify_a_real_video_answers_with_its_own_labels(videomae, real_video, tmp_path):
    out = reelflow("classify", str(real_video), "--model", f"hf:{videomae}", "--json", "--topk", "2",
                   cwd=tmp_path).stdout
    segments = [json.loads(line) for line in out.splitlines()]
    assert len(segments) >= 3
    for segment in segments:
        assert len(segment["labels"]) == 2 and set(segment["labels"]) <= set(CLASSES)
        assert segment["model"] == f"hf:{videomae.resolve()}"
        assert segment["weights"].startswith("pretrained (videomae-tiny/model.safetensors, sha256 ")
    assert segments[1]["start_s"] == pytest.approx(4 * 4 / 30, abs=1e-6)  # 4 frames x 4 at 30 fps per segment


@pytest.mark.slow  # about 15-25 s: `make test` stays under 15 minutes
def test_random_weights_are_the_same_in_every_process_and_named_so(videomae, real_video, tmp_path):
    runs = [reelflow("classify", str(real_video), "--model", f"hf:{videomae}", "--weights", "none", "--json",
                     cwd=tmp_path).stdout.splitlines()[0] for _ in range(2)]
    first, second = (json.loads(r) for r in runs)
    assert first["weights"] == "none (random init, seed 0)" and first["scores"] == second["scores"]


@pytest.mark.parametrize("model, message", [
    ("hf:./no-such-dir", "no such directory; pass hf:DIR"),
    ("hf:", "hf: needs a directory or a hub id"),
])
def test_bad_model_names_are_one_line_errors(model, message, tmp_path, real_video):
    result = reelflow("classify", str(real_video), "--model", model, cwd=tmp_path, check=False)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_a_directory_that_is_not_a_video_classifier_is_refused(tmp_path, real_video):
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    result = reelflow("classify", str(real_video), "--model", "hf:bert", cwd=tmp_path, check=False)
    assert result.returncode == 1 and "not a video classifier" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_processor_that_crops_more_than_it_resizes_is_refused(videomae, tmp_path, real_video):
    small = tmp_path / "small-side"
    small.mkdir()
    for name in ("config.json", "model.safetensors"):
        (small / name).write_bytes((videomae / name).read_bytes())
    processor = json.loads((videomae / "preprocessor_config.json").read_text())
    (small / "preprocessor_config.json").write_text(json.dumps({**processor, "size": {"shortest_edge": 24}}))
    result = reelflow("classify", str(real_video), "--model", "hf:small-side", cwd=tmp_path, check=False)
    assert result.returncode == 1 and "smaller than its 32x32 crop" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_hub_id_offline_is_a_one_line_error(tmp_path, real_video):
    result = reelflow("classify", str(real_video), "--model", "hf:MCG-NJU/videomae-base-finetuned-kinetics",
                      cwd=tmp_path, env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home")}, check=False)
    assert result.returncode == 1 and "cannot fetch hf:MCG-NJU/videomae-base-finetuned-kinetics" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_directory_without_weights_is_refused_before_loading(videomae, tmp_path, real_video):
    bare = tmp_path / "config-only"
    bare.mkdir()
    for name in ("config.json", "preprocessor_config.json"):
        (bare / name).write_bytes((videomae / name).read_bytes())
    result = reelflow("classify", str(real_video), "--model", "hf:config-only", cwd=tmp_path, check=False)
    assert result.returncode == 1 and "has no weights" in result.stderr and "Traceback" not in result.stderr
    # with random weights it needs none (on torch: converting it for OpenVINO is tested elsewhere)
    assert reelflow("classify", str(real_video), "--model", "hf:config-only", "--weights", "none", "--runtime", "torch",
                    cwd=tmp_path)


@pytest.mark.slow  # `make test` stays under 15 minutes (21 min before): `make test-slow`
def test_linear_probe_then_classify_and_a_stack_answer_with_the_dataset_classes(videomae, tmp_path):
    from support.dataset_folders import CLASSES as DATASET_CLASSES
    from support.dataset_folders import make_dataset

    data = make_dataset(tmp_path / "shapes", train=4, val=2)
    ckpt = tmp_path / "probe.pyth"
    model = f"hf:{videomae}"
    reelflow("train", str(data), "--model", model, "--weights", "none", "--linear-probe", "-o", str(ckpt), "--quiet")
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert checkpoint["model"] == f"hf:{videomae.resolve()}" and checkpoint["classes"] == sorted(DATASET_CLASSES)
    assert checkpoint["model_state"]["head.proj.weight"].shape == (3, 32)

    video = sorted((data / "val" / "green_stripes").glob("*.mp4"))[0]
    segments = [json.loads(line) for line in reelflow(
        "classify", str(video), "--model", model, "--weights", str(ckpt), "--json", "--topk", "3").stdout.splitlines()]
    assert segments and all(set(s["labels"]) == set(DATASET_CLASSES) for s in segments)

    # the same checkpoint on the bulk path (Redis queue + worker), the model directory named on the command line
    reelflow("process", str(video), "--model", model, "--weights", str(ckpt), "--no-ray", "--out", str(tmp_path / "out"),
             "--home", str(tmp_path / "home"), cwd=tmp_path, env={"REELFLOW_ALLOWED_ROOTS": ""})
    stacked = [json.loads(line) for line in (tmp_path / "out" / f"{video.stem}.jsonl").read_text().splitlines()]
    assert [s["labels"] for s in stacked] == [s["labels"] for s in segments]
    assert Counter(s["labels"][0] for s in stacked).most_common(1)[0][0] in DATASET_CLASSES


def test_a_job_names_a_model_directory_only_under_the_allowed_roots(videomae, tmp_path):
    from pipelines.errors import SourceNotAllowed
    from pipelines.sources import SourcePolicy
    from services.store.jobs import JobSpec

    inside = SourcePolicy(allowed_roots=(videomae.parent.resolve(),))
    inside.check_model(f"hf:{videomae.resolve()}")
    inside.check_model("hf:MCG-NJU/videomae-base-finetuned-kinetics")  # a hub id: fetched from the hub
    with pytest.raises(SourceNotAllowed, match="outside the allowed roots"):
        SourcePolicy(allowed_roots=(tmp_path.resolve(),)).check_model(f"hf:{videomae.resolve()}")
    with pytest.raises(ValueError, match="absolute directory"):
        JobSpec(source="/v.mp4", model="hf:relative/../dir")
    assert JobSpec(source="/v.mp4", model=f"hf:{videomae.resolve()}").model.startswith("hf:/")


def test_fine_tuning_a_hugging_face_model_lowers_the_training_loss(videomae, tmp_path):
    from support.dataset_folders import make_dataset

    from pipelines.datasets import VideoFolder, augment_clip, random_clip
    from pipelines.models import get_spec
    from pipelines.training import FineTuner

    spec = get_spec(f"hf:{videomae}")
    data = VideoFolder.open(make_dataset(tmp_path / "shapes", train=1, val=1))
    rng = random.Random(0)
    videos = list(data.split("train"))
    batch = torch.stack([augment_clip(random_clip(v.path, spec, rng), spec, rng) for v in videos])
    labels = torch.tensor([v.label for v in videos])
    assert batch.shape == (3, 3, 4, 32, 32)
    torch.manual_seed(0)
    tuner = FineTuner(spec, "pretrained", num_classes=3, total_steps=6, lr=1e-3)
    losses = [tuner.step(batch, labels)[0] for _ in range(6)]
    assert losses[-1] < losses[0], losses
