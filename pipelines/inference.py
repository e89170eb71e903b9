"""One forward pass per batch giving class probabilities and embeddings together.

The embedding is the input of the head's final projection (`logits = W · embedding + b`), captured
by a hook during the same pass and averaged over any remaining space-time positions. X3D heads end
in a Softmax already, so their output is taken as the probabilities; the others get one softmax.

The pass runs on a runtime (pipelines/runtimes): PyTorch eager, or the same model converted to
OpenVINO (`auto`, the default: OpenVINO on a CPU where it is installed), which gives both outputs
from one converted graph.

    >>> clip_model = ClipModel.load("x3d_xs", "none")                  # doctest: +SKIP
    >>> probs, embeddings = clip_model.predict(batch)                   # (B, 400), (B, 2048)
    >>> clip_model.runtime, clip_model.runtime_note                     # ('openvino', None)
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import torch
from torch import nn

from pipelines.models import ModelSpec, get_spec
from pipelines.transforms import pack_pathways
from pipelines.models.weights import load_model, projection_layer  # noqa: F401  (projection_layer: re-exported)
from pipelines.runtimes import RuntimeUnavailable, resolve
from pipelines.runtimes.graph import head_outputs

log = logging.getLogger("reelflow.runtime")

# float32: the reference's numbers. half: autocast to float16 on a GPU (bfloat16 on a CPU), faster
# on GPUs, approximate; the benchmark measures how often its labels agree.
PRECISIONS = ("float32", "half")


class ClipModel:
    def __init__(self, spec: ModelSpec, model: nn.Module, weights_id: str, device: str = "cpu",
                 precision: str = "float32", classes: list[str] | None = None):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.spec = spec
        self.weights_id = weights_id
        self.device = torch.device(device)
        self.precision = precision
        self.classes = classes  # the checkpoint's class names; None: Kinetics-400 (or class_i)
        self.model = model.to(self.device).eval()
        # The embedding hook captures into the calling thread's list: forward passes may run on
        # several threads at once (a replica's lanes), each seeing only its own.
        self._local = threading.local()
        projection_layer(self.model).register_forward_pre_hook(self._capture)
        self.runtime = "torch"  # where predict() runs: see use_runtime()
        self.runtime_note: str | None = None  # why it is torch when another runtime was wanted
        self.runtime_origin: str | None = None  # on OpenVINO: read from the cache, or converted now (and why)
        self.streams = 1  # the passes the runtime runs at once, each on its share of the threads
        self._fast = None  # the other runtime's forward pass

    @classmethod
    def load(cls, model_name: str, weights: str = "kinetics", device: str = "cpu", precision: str = "float32",
             runtime: str = "auto", cache_dir: str | os.PathLike | None = None, threads: int = 0,
             streams: int = 1) -> ClipModel:
        """The model with its weights, its forward pass on `runtime` (see `use_runtime`)."""
        spec = get_spec(model_name)
        loaded = load_model(spec, weights)
        clip_model = cls(spec, loaded.model, loaded.weights_id, device, precision, loaded.classes)
        clip_model.use_runtime(runtime, cache_dir, threads, streams)
        return clip_model

    def use_runtime(self, requested: str = "auto", cache_dir: str | os.PathLike | None = None, threads: int = 0,
                    streams: int = 1) -> str:
        """Run forward passes on `requested`: `torch`, `openvino`, or `auto` (OpenVINO on a CPU where
        it is installed). The model is converted once and kept in `cache_dir` (default
        `$XDG_CACHE_HOME/reelflow/models`); `threads`: the runtime's threads (default torch's), shared by
        `streams` passes that run at once (from as many threads: a replica's forward lanes).

        Under `auto`, a model OpenVINO cannot convert, or whose outputs differ from torch's, runs on
        torch, and `runtime_note` says why; asked for by name, that is a RuntimeUnavailable error.
        Returns the runtime that runs."""
        runtime = resolve(requested, self.device.type)
        self.runtime, self.runtime_note, self._fast, self.streams = "torch", None, None, 1
        self.runtime_origin = None
        if runtime == "openvino" and self.precision != "float32":
            if requested == "openvino":
                raise RuntimeUnavailable(f"--runtime openvino runs float32 only; drop --precision {self.precision} "
                                         "or use --runtime torch")
            self.runtime_note = f"{self.spec.name} runs on torch: --precision {self.precision} is torch's"
            log.warning("note: %s", self.runtime_note)
        elif runtime == "openvino":
            from pipelines.runtimes import openvino_runtime
            from pipelines.runtimes.graph import ClipGraph

            try:
                self._fast = openvino_runtime.load(
                    lambda: ClipGraph(self.model, self.spec).eval(), self.spec, self.weights_id, self._predict_torch,
                    Path(cache_dir) if cache_dir else default_cache_dir(), threads or torch.get_num_threads(),
                    streams)
                self.runtime, self.streams, self.runtime_origin = "openvino", streams, self._fast.origin
            except openvino_runtime.ConversionFailed as e:
                if requested == "openvino":
                    raise RuntimeUnavailable(f"{self.spec.name}: {e}; use --runtime torch") from None
                self.runtime_note = f"{self.spec.name} runs on torch: {e}"
                log.warning("note: %s", self.runtime_note)
        return self.runtime

    def _capture(self, _module, inputs) -> None:
        captured = getattr(self._local, "captured", None)
        if captured is not None:  # inside predict(); a forward pass of its own (training) is not captured
            captured.append(inputs[0])

    @property
    def num_classes(self) -> int:
        return projection_layer(self.model).out_features

    def predict(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, T, crop, crop) float input -> (probabilities (B, C), embeddings (B, D)) on the CPU."""
        if self._fast is not None:
            probs, features = self._fast(batch.numpy())
            return torch.from_numpy(probs), torch.from_numpy(features)
        return self._predict_torch(batch)

    @torch.inference_mode()
    def _predict_torch(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        half = torch.float16 if self.device.type == "cuda" else torch.bfloat16  # what each device is fast at
        with torch.autocast(self.device.type, dtype=half, enabled=self.precision == "half"):
            self._local.captured = []
            try:
                out = self.model(pack_pathways(batch.to(self.device), self.spec))
                features = self._local.captured.pop()
            finally:
                self._local.captured = None
        probs, features = head_outputs(out, features, self.spec)
        return probs.float().cpu(), features.float().cpu()

    def example_batch(self, size: int) -> torch.Tensor:
        """Random model input of `size` clips (the speed of a pass does not depend on the values)."""
        return torch.randn(size, 3, self.spec.num_frames, self.spec.crop_size, self.spec.crop_size)

    def batch_rates(self, sizes=(1, 2, 4, 8, 16), budget_s: float = 5.0) -> dict[int, float]:
        """Clips per second of the forward pass at each batch size, on random input (the speed does
        not depend on the values). Sizes are tried smallest first; it stops once a size is clearly
        slower than the best so far, or the time budget is spent."""
        rates: dict[int, float] = {}
        started = time.perf_counter()
        for size in sizes:
            batch = self.example_batch(size)
            self.predict(batch)  # warm-up: allocator, kernels
            fastest = float("inf")
            for _ in range(3):  # the fastest of three: other work on the machine only ever slows a pass down
                t0 = time.perf_counter()
                self.predict(batch)
                fastest = min(fastest, time.perf_counter() - t0)
            rates[size] = size / fastest
            if rates[size] < 0.9 * max(rates.values()) or time.perf_counter() - started > budget_s:
                break
        return rates


def default_cache_dir() -> Path:
    """Where converted models are kept when no directory is given: `$XDG_CACHE_HOME/reelflow/models`."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(root) / "reelflow" / "models"
