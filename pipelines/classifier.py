"""ActionClassifier: the in-process data plane, from a video path or frames to labels.

    >>> from pipelines import ActionClassifier
    >>> clf = ActionClassifier("x3d_xs", weights="none", topk=5)         # doctest: +SKIP
    >>> segments = clf.classify_video("video.mp4")                       # SegmentResult list
    >>> labels, scores, features = clf(frames)                          # (T, H, W, 3) uint8

Decoding and preprocessing run in a background thread, one clip ahead of the model, and clips
are batched, so the model and the decoder work at the same time.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Container, Iterable, Iterator

import numpy as np
import torch

from pipelines.errors import InputError
from pipelines.inference import ClipModel
from pipelines.labels import labels_for, top_labels
from pipelines.models import DEFAULT_MODEL, DEFAULT_WEIGHTS
from pipelines.results import SegmentResult
from pipelines.sampler import SampledClip, sample_clips, subsample_indices
from pipelines.transforms import preprocess_clip

_DONE = object()


class ActionClassifier:
    def __init__(
        self,
        model_name: str = DEFAULT_MODEL,
        weights: str = DEFAULT_WEIGHTS,
        topk: int = 5,
        classmap: dict[str, int] | None = None,
        skip_preprocess: bool = False,
        device: str = "cpu",
        batch_size: int = 4,
        runtime: str = "auto",
        cache_dir: str | None = None,
    ):
        """`runtime`: where the forward pass runs (`auto`, `torch`, `openvino`; see
        pipelines/runtimes); `cache_dir`: where converted models are kept."""
        if topk < 1:
            raise InputError(f"topk must be at least 1, got {topk}")
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}")
        self.clip_model = ClipModel.load(model_name, weights, device, runtime=runtime, cache_dir=cache_dir)
        self.spec = self.clip_model.spec
        self.weights_id = self.clip_model.weights_id
        self.labels = labels_for(self.clip_model.num_classes, classmap, self.clip_model.classes)
        self.topk = min(topk, len(self.labels))
        self.skip_preprocess = skip_preprocess
        self.batch_size = batch_size

    # -- frames in, labels out (Towhee's action_classification operator interface) --

    def __call__(self, frames: np.ndarray | Iterable[np.ndarray]) -> tuple[list[str], list[float], np.ndarray]:
        """Classify one clip: (T, H, W, 3) uint8 RGB, or a list of (H, W, 3) frames.

        Returns (top-k labels, their scores, the embedding). Frames are subsampled to the model's
        T unless `skip_preprocess`, in which case exactly T frames must be given.
        """
        clip = _as_clip(frames)
        t = self.spec.num_frames
        if self.skip_preprocess:
            if len(clip) != t:
                raise InputError(f"skip_preprocess needs exactly {t} frames for {self.spec.name}, got {len(clip)}")
        else:
            clip = clip[subsample_indices(len(clip), t)]
        probs, features = self.clip_model.predict(preprocess_clip(clip, self.spec)[None])
        labels, scores = self._top(probs[0])
        return labels, scores, features[0].numpy()

    # -- a whole video, segment by segment --

    def classify_video(self, path: str | os.PathLike, stride_s: float | None = None) -> list[SegmentResult]:
        """Every segment of the video, in order."""
        return list(self.iter_video(path, stride_s))

    def iter_video(self, path: str | os.PathLike, stride_s: float | None = None, *, skip: Container[int] = (),
                   open_options: dict[str, str] | None = None, limits=None) -> Iterator[SegmentResult]:
        """Like classify_video, yielding each segment as soon as its batch is done. Segments whose
        index is in `skip` are left out (a resumed job's stored segments); `open_options` go to FFmpeg;
        `limits` (a SourcePolicy) bounds pixels, frames and duration while decoding."""
        return self.iter_videos([path], stride_s, skip=skip, open_options=open_options, limits=limits)

    def iter_videos(self, paths: Iterable[str | os.PathLike], stride_s: float | None = None, *, skip: Container[int] = (),
                    open_options: dict[str, str] | None = None, limits=None) -> Iterator[SegmentResult]:
        """Segments of several videos, in order (`result.source` tells which). The decoder runs on
        into the next video while the model works, so there is no pause between videos."""
        if stride_s is not None and stride_s <= 0:
            raise InputError(f"stride must be positive, got {stride_s}")
        sources = [os.fspath(p) for p in paths]
        clips = _Prefetch(self._prepared_clips(sources, stride_s, skip, open_options, limits), depth=2 * self.batch_size)
        try:
            for batch in _ready_batches(clips, self.batch_size):
                yield from self._classify_batch(batch)
        finally:
            clips.close()

    def _prepared_clips(self, sources: list[str], stride_s: float | None, skip: Container[int], open_options, limits):
        for source in sources:
            for clip in sample_clips(source, self.spec.clip_seconds, self.spec.num_frames, stride_s, skip=skip,
                                     open_options=open_options, limits=limits):
                tensor = None if clip.frames is None else preprocess_clip(clip.frames, self.spec)
                yield source, clip, tensor

    def _classify_batch(self, batch: list[tuple[str, SampledClip, torch.Tensor | None]]):
        ready = [tensor for _, _, tensor in batch if tensor is not None]
        if ready:
            probs, features = self.clip_model.predict(torch.stack(ready))
        k = 0
        for source, clip, tensor in batch:
            output = None
            if tensor is not None:
                output = (probs[k], features[k])
                k += 1
            yield clip_result(source, clip, self.spec.name, self.weights_id, self.labels, self.topk, output)

    def _top(self, probs: torch.Tensor) -> tuple[list[str], list[float]]:
        return top_labels(probs, self.labels, self.topk)


def clip_result(source: str, clip: SampledClip, model: str, weights_id: str, labels: list[str], topk: int,
                output: tuple[torch.Tensor, torch.Tensor] | None) -> SegmentResult:
    """A segment's result from the model's (probabilities, embedding) for its clip (None: no frames)."""
    names, scores, embedding = [], [], None
    if output is not None:
        probs, features = (torch.as_tensor(x) for x in output)
        names, scores = top_labels(probs, labels, topk)
        embedding = features.numpy()
    seg = clip.segment
    return SegmentResult(source, seg.index, seg.start_s, seg.end_s, model, weights_id,
                         names, scores, embedding, clip.frame_count)


def _as_clip(frames) -> np.ndarray:
    if isinstance(frames, torch.Tensor):
        frames = frames.numpy()
    if not isinstance(frames, np.ndarray):
        frames = [np.asarray(f) for f in frames]
        if not frames or len({f.shape for f in frames}) != 1:
            raise InputError("frames must be a non-empty list of (H, W, 3) uint8 arrays of one size")
    clip = np.stack(frames) if isinstance(frames, list) else frames
    if clip.ndim != 4 or clip.shape[-1] != 3 or clip.dtype != np.uint8 or len(clip) == 0:
        raise InputError(
            f"frames must be uint8 RGB of shape (T, H, W, 3) or a list of (H, W, 3); got {clip.dtype} {clip.shape}"
        )
    return clip


def _ready_batches(items: Iterator, size: int) -> Iterator[list]:
    """Dynamic batching: wait for one item, then add whatever else is ready, up to `size`."""
    pending = getattr(items, "ready", lambda: 0)
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size or pending() == 0:
            yield batch
            batch = []
    if batch:
        yield batch


class _Prefetch:
    """Run an iterator in a background thread, at most `depth` items ahead; its errors are raised
    in the consumer. `ready()` tells how many items are waiting."""

    def __init__(self, items: Iterator, depth: int):
        self._items = items
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._work, name="reelflow-decode", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def _work(self) -> None:
        try:
            for item in self._items:
                if not self._put((True, item)):
                    return
            self._put((True, _DONE))
        except BaseException as e:  # handed to the consumer, raised there
            self._put((False, e))
        finally:
            if hasattr(self._items, "close"):
                self._items.close()

    def ready(self) -> int:
        return self._queue.qsize()

    def __iter__(self):
        return self

    def __next__(self):
        if self._done:
            raise StopIteration
        ok, item = self._queue.get()
        if not ok:
            self.close()
            raise item
        if item is _DONE:
            self.close()
            raise StopIteration
        return item

    def close(self) -> None:
        self._done = True
        self._stop.set()
        self._thread.join()
