"""ActionClassifier agrees with the PyTorchVideo reference (EncodedVideo.get_clip + the hub tutorial
transforms, batch 1): same frames, scores within 1e-3 relative, same top-5, embeddings cosine >= 0.9999.
Weights are random with the projection scaled up, so probabilities are far from uniform.

The fast models run on the default runtime (OpenVINO where installed, as users get them); the others
on torch here, and each model's OpenVINO conversion is checked against torch in test_runtimes.py."""

import pytest
import torch

from support.tutorial_reference import reference_outputs
from pipelines import ActionClassifier
from pipelines.synthetic import make_video

FAST = ["x3d_xs", "x3d_s"]
HEAVY = ["slow_r50", "i3d_r50", "slowfast_r50", "mvit_base_16x4"]
REST = ["c2d_r50", "x3d_m", "x3d_l", "slowfast_r101", "mvit_base_32x3"]


def assert_parity(name, path, checkpoint, stride_s=None):
    ckpt, model = checkpoint(name)
    clf = ActionClassifier(name, weights=str(ckpt), topk=5, batch_size=4, runtime="auto" if name in FAST else "torch")
    segments = clf.classify_video(path, stride_s=stride_s)
    reference = reference_outputs(model, clf.spec, str(path), [(s.start_s, s.end_s) for s in segments])
    assert len(segments) == len(reference)
    for seg, (probs, embedding, frames) in zip(segments, reference):
        top = probs.topk(5)
        assert seg.frames == frames, seg.index
        assert seg.labels == [clf.labels[i] for i in top.indices.tolist()], seg.index
        torch.testing.assert_close(torch.tensor(seg.scores), top.values, rtol=1e-3, atol=0)
        cosine = torch.nn.functional.cosine_similarity(torch.from_numpy(seg.embedding), embedding, dim=0)
        assert cosine >= 0.9999, (seg.index, float(cosine))
    assert max(s.scores[0] for s in segments) > 0.2, "probabilities too flat for a meaningful comparison"
    return segments


@pytest.fixture(scope="module")
def generated(video_dir):
    path = video_dir / "parity_generated.mp4"
    make_video(path, seconds=3.0, fps=25, size=(400, 300))
    return path


@pytest.mark.parametrize("name", FAST + [pytest.param("slowfast_r50", marks=pytest.mark.slow)])
def test_parity_on_a_generated_video(name, generated, peaked_checkpoint):
    assert_parity(name, generated, peaked_checkpoint)


@pytest.mark.shared_data
@pytest.mark.parametrize("name", FAST)
@pytest.mark.parametrize("video", ["mm_demo.mp4", "mm_test.avi", "sk_carphone_pristine.mp4"])
def test_parity_fast_models_on_real_videos(name, video, shared_videos, peaked_checkpoint):
    assert_parity(name, shared_videos / video, peaked_checkpoint)


@pytest.mark.slow  # a minute in all: `make test` stays under 15 minutes
@pytest.mark.shared_data
@pytest.mark.parametrize("name", HEAVY)
def test_parity_heavy_models_on_a_real_720p_video(name, shared_videos, peaked_checkpoint):
    assert_parity(name, shared_videos / "sk_bigbuckbunny.mp4", peaked_checkpoint)


@pytest.mark.shared_data
def test_parity_with_overlapping_stride(shared_videos, peaked_checkpoint):
    segments = assert_parity("x3d_xs", shared_videos / "mm_test.mp4", peaked_checkpoint, stride_s=0.7)
    assert [s.start_s for s in segments[:3]] == [0.0, 0.7, 1.4]


@pytest.mark.slow
@pytest.mark.models  # `make test-models`: the families above are checked in `make test` and `make test-slow`
@pytest.mark.parametrize("name", REST)
def test_parity_remaining_models(name, generated, peaked_checkpoint):
    assert_parity(name, generated, peaked_checkpoint)
