"""ActionClassifier's two interfaces: whole videos (classify_video) and frames (__call__)."""

import time

import numpy as np
import pytest

from pipelines import ActionClassifier
from pipelines.errors import InputError, VideoError
from pipelines.sampler import sample_clips
from pipelines.synthetic import make_video


@pytest.fixture(scope="module")
def peaked_xs(peaked_checkpoint):
    ckpt, _ = peaked_checkpoint("x3d_xs")
    return ActionClassifier("x3d_xs", weights=str(ckpt), topk=5)


def assert_well_formed(segments, starts, last_end):
    assert [s.start_s for s in segments] == starts
    assert segments[-1].end_s == last_end
    for seg in segments:
        assert len(seg.labels) == 5 and len(set(seg.labels)) == 5
        assert seg.scores == sorted(seg.scores, reverse=True) and seg.scores[0] > seg.scores[-1]
        assert seg.embedding.shape == (2048,) and seg.embedding.dtype == np.float32
        assert seg.model == "x3d_xs" and seg.frames > 0


@pytest.mark.shared_data
def test_a_real_10s_video_gives_seven_segments(shared_videos, peaked_xs):
    segments = peaked_xs.classify_video(shared_videos / "mm_demo.mp4")
    assert_well_formed(segments, [0.0, 1.6, 3.2, 4.8, 6.4, 8.0, 8.4], 10.0)
    assert segments[0].weights.startswith("x3d_xs.pyth (sha256 ") and not segments[0].random_weights


def test_a_generated_10s_video_gives_seven_segments(clip_10s, peaked_xs):
    assert_well_formed(peaked_xs.classify_video(clip_10s), [0.0, 1.6, 3.2, 4.8, 6.4, 8.0, 8.4], 10.0)


def test_random_weights_are_marked_in_every_result(clip_10s):
    segments = ActionClassifier("x3d_xs", weights="none").classify_video(clip_10s)
    assert all(s.random_weights and "random" in s.weights for s in segments)
    assert all(s.to_dict()["random_weights"] for s in segments)


def test_frames_interface_agrees_with_classify_video(clip_10s, peaked_xs):
    first = peaked_xs.classify_video(clip_10s)[0]
    (clip,) = [c for c in sample_clips(clip_10s, 1.6, 4, all_frames=True)][:1]
    labels, scores, features = peaked_xs(clip.frames)  # all 48 frames: subsampled to 4 inside
    assert labels == first.labels
    np.testing.assert_allclose(scores, first.scores, rtol=1e-5)
    np.testing.assert_allclose(features, first.embedding, rtol=1e-4, atol=1e-5)
    # a list of (H, W, 3) frames is the same clip
    assert peaked_xs(list(clip.frames))[0] == labels


def test_skip_preprocess_takes_frames_already_sampled_to_t(clip_10s, peaked_checkpoint):
    ckpt, _ = peaked_checkpoint("x3d_xs")
    clf = ActionClassifier("x3d_xs", weights=str(ckpt), skip_preprocess=True)
    clip = next(iter(sample_clips(clip_10s, 1.6, 4)))
    labels, scores, _ = clf(clip.frames)
    assert labels == clf.classify_video(clip_10s)[0].labels
    with pytest.raises(InputError, match="exactly 4 frames"):
        clf(np.zeros((5, 64, 64, 3), np.uint8))


def test_classmap_replaces_the_kinetics_names(clip_10s, peaked_checkpoint):
    ckpt, _ = peaked_checkpoint("x3d_xs")
    classmap = {f"action {i}": i for i in range(400)}
    clf = ActionClassifier("x3d_xs", weights=str(ckpt), classmap=classmap, topk=3)
    assert clf.labels[7] == "action 7"
    labels, scores, _ = clf(np.zeros((4, 64, 64, 3), np.uint8))
    assert len(labels) == 3 and all(label.startswith("action ") for label in labels)
    with pytest.raises(InputError, match="classmap"):
        ActionClassifier("x3d_xs", weights="none", classmap={"x": 400})


@pytest.mark.parametrize(
    "frames, message",
    [
        (np.zeros((4, 64, 64), np.uint8), "shape"),
        (np.zeros((4, 64, 64, 3), np.float32), "uint8"),
        (np.zeros((0, 64, 64, 3), np.uint8), "shape"),
        ([], "non-empty list"),
        ([np.zeros((64, 64, 3), np.uint8), np.zeros((32, 64, 3), np.uint8)], "one size"),
    ],
)
def test_bad_frames_are_input_errors(peaked_xs, frames, message):
    with pytest.raises(InputError, match=message):
        peaked_xs(frames)


@pytest.mark.parametrize("kwargs", [{"topk": 0}, {"batch_size": 0}, {"model_name": "nope"}])
def test_bad_options_are_refused(kwargs):
    with pytest.raises(ValueError):
        ActionClassifier(**{"weights": "none", **kwargs})


def test_stopping_early_does_not_hang(video_dir, peaked_xs):
    path = video_dir / "long_for_early_stop.mp4"
    make_video(path, seconds=30, fps=30, size=(160, 120))
    started = time.monotonic()
    segments = peaked_xs.iter_video(path)
    next(segments)
    segments.close()
    assert time.monotonic() - started < 10


def test_decoder_errors_reach_the_caller(tmp_path, clip_10s, peaked_xs):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(clip_10s.read_bytes()[:5000])
    with pytest.raises(VideoError):
        peaked_xs.classify_video(broken)


def test_skipped_segments_are_left_out_and_the_rest_unchanged(clip_10s, peaked_xs):
    everything = peaked_xs.classify_video(clip_10s)
    resumed = list(peaked_xs.iter_video(clip_10s, skip={0, 1, 2, 5}))
    assert [s.index for s in resumed] == [3, 4, 6]
    for seg in resumed:
        assert seg.scores == pytest.approx(everything[seg.index].scores, rel=1e-5)
