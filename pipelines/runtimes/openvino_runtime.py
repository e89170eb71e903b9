"""OpenVINO on the CPU: a clip model converted once, checked against torch, cached, compiled.

The cache entry of a model is a directory under `<cache>/openvino/`, named by the model and a hash
of everything its conversion depends on (model, weights, OpenVINO's version, input shape, graph
version). It holds the converted model (`model.xml`, `model.bin`) and `verdict.json`:
whether the conversion matched torch (probabilities within `MAX_RELATIVE` of torch's, embeddings at
cosine >= `MIN_COSINE`), the sizes and hash of the files. A verdict against OpenVINO is kept too, so
a model that does not convert is tried once per version, not once per start. An entry that cannot
be read, or whose files do not match their hash, is removed and built again.

    >>> forward = load(make_graph, spec, weights_id, reference, cache_dir, threads=2, streams=2)  # doctest: +SKIP
    >>> probs, embeddings = forward(batch)           # numpy (B, 3, T, H, W) -> (B, C), (B, D)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from pipelines.errors import one_line
from pipelines.models import ModelSpec, model_slug
from pipelines.runtimes.graph import GRAPH_VERSION

log = logging.getLogger("reelflow.runtime")

MAX_RELATIVE = 1e-3  # largest |p_ov - p_torch| over the largest |p_torch|
MIN_COSINE = 0.9999  # smallest cosine between the two embeddings of a clip
CHECK_CLIPS = 3  # clips of seeded random input the parity check runs (as batches of 1 and 2)


class ConversionFailed(Exception):
    """The model did not convert, or its outputs differ from torch's (the message says which)."""


class OpenVINOForward:
    """A compiled model; each calling thread (a replica's forward lane) gets its own infer request."""

    def __init__(self, compiled, entry: Path, origin: str = ""):
        self.compiled = compiled
        self.entry = entry  # the cache directory it was read from
        self.origin = origin  # how it got there this time: read, converted, or converted again (and why)
        self._local = threading.local()
        # Two lanes setting their requests' inputs at once (a new batch size reshapes the input) deadlocked
        # OpenVINO 2026.4 here: both threads asleep in `tensor.data[:] = ...` of its data dispatcher, a
        # replica's warm-up never ending. Inputs and outputs pass one thread at a time; the forward passes
        # themselves (`infer`, which releases the GIL) still overlap.
        self._io = threading.Lock()

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import openvino as ov

        with self._io:
            request = getattr(self._local, "request", None)
            if request is None:
                request = self._local.request = self.compiled.create_infer_request()
            data = np.ascontiguousarray(batch, dtype=np.float32)  # held until the pass is done
            request.set_input_tensor(ov.Tensor(data))
        request.infer()
        with self._io:  # copies: the request reuses its buffers
            return request.get_output_tensor(0).data.copy(), request.get_output_tensor(1).data.copy()


def version() -> str:
    import openvino as ov

    return ov.get_version().split("-")[0]


def entry_dir(cache_dir: Path, spec: ModelSpec, weights_id: str) -> Path:
    key = (f"{spec.name}|{weights_id}|openvino={version()}|{spec.num_frames}x{spec.crop_size}x{spec.crop_size}"
           f"|graph={GRAPH_VERSION}|float32")  # it runs float32 only (ClipModel.use_runtime)
    return Path(cache_dir) / "openvino" / f"{model_slug(spec.name)}-{hashlib.sha1(key.encode()).hexdigest()[:16]}"


def load(graph: Callable[[], torch.nn.Module], spec: ModelSpec, weights_id: str,
         reference: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], cache_dir: Path, threads: int,
         streams: int = 1) -> OpenVINOForward:
    """The model compiled for this CPU, from the cache or converted now (`graph()`: the ClipGraph to
    convert; `reference`: torch's predict, for the parity check). ConversionFailed if it does not
    convert or does not match torch (kept, so the next start does not try again).

    `threads` in all, shared by `streams` passes that run at once (a replica's forward lanes, each
    calling from a thread of its own)."""
    import openvino as ov

    core = ov.Core()
    entry = entry_dir(cache_dir, spec, weights_id)
    verdict, damage = _read_entry(entry)
    if verdict is not None and verdict["ok"]:
        try:
            return _read_model(core, entry, threads, streams, "read from the cache")
        except Exception as e:  # files that match their hashes and still do not load: a forged or foreign entry
            verdict, damage = None, _damaged(entry, f"OpenVINO cannot read it: {one_line(e, limit=200)}")
    if verdict is not None:  # tried before with this OpenVINO and these weights
        raise ConversionFailed(f"{verdict['reason']} (found when it was converted before; remove {entry} "
                               "to try again)")
    verdict = _convert(core, graph, spec, reference, entry, threads)
    if not verdict["ok"]:
        raise ConversionFailed(verdict["reason"])
    origin = f"converted to OpenVINO in {verdict['seconds']:.1f} s"
    try:
        return _read_model(core, entry, threads, streams,
                           f"{origin} (the cached one was damaged: {damage})" if damage else origin)
    except Exception as e:
        raise ConversionFailed(f"OpenVINO cannot read the model it converted, in {entry}: {one_line(e, limit=200)}"
                               ) from None


def _read_model(core, entry: Path, threads: int, streams: int, origin: str) -> OpenVINOForward:
    return OpenVINOForward(_compile(core, core.read_model(entry / "model.xml"), threads, streams), entry, origin)


def _compile(core, model, threads: int, streams: int = 1):
    """One stream per pass run at once, the threads split between them. A single stream of all the
    threads, which the lanes' passes took in turn, was measured here (x3d_xs, 2 cores, 2 lanes): its
    threads wait on each other at every layer, and beside a busy decoder (a replica decoding jobs,
    a host decoding cameras) a thread descheduled stalls the pass: 19-29 clips/s at 35-53 ms of CPU
    a clip, against 42-43 clips/s at 34-35 ms with a stream per lane (and 48-54 against 53-55 with
    nothing beside it)."""
    config = {"INFERENCE_NUM_THREADS": max(1, threads), "NUM_STREAMS": max(1, min(streams, threads)),
              "INFERENCE_PRECISION_HINT": "f32"}
    if config["NUM_STREAMS"] == 1:
        config["PERFORMANCE_HINT"] = "LATENCY"
    return core.compile_model(model, "CPU", config)


def _read_entry(entry: Path) -> tuple[dict | None, str | None]:
    """The entry's verdict, or None when there is none or it is damaged (then it is removed); and
    what was wrong with a damaged one."""
    if not entry.exists() and not entry.is_symlink():
        return None, None
    try:
        if not entry.is_dir():
            raise ValueError("not a directory")
        try:
            verdict = json.loads((entry / "verdict.json").read_text())
            ok = verdict["ok"]
            files = verdict["files"].items() if ok else ()
        except json.JSONDecodeError:
            raise ValueError("verdict.json is not JSON") from None
        except (KeyError, TypeError, AttributeError):
            raise ValueError("verdict.json is not a verdict") from None
        for name, (size, digest) in files:
            path = entry / name
            if path.stat().st_size != size or _sha256(path) != digest:
                raise ValueError(f"{name} does not match its hash")
        return verdict, None
    except OSError as e:
        reason = f"{Path(e.filename).name}: {e.strerror}" if e.filename and e.strerror else one_line(e)
        return None, _damaged(entry, reason)
    except (ValueError, TypeError) as e:
        return None, _damaged(entry, one_line(e))


def _damaged(entry: Path, reason: str) -> str:
    """Removes a damaged cache entry, saying so; returns `reason`."""
    log.warning("the converted model in %s is damaged (%s); converting it again", entry, reason)
    try:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink(missing_ok=True)
    except OSError as e:  # the conversion's own write will then fail, and say so
        log.warning("cannot remove %s (%s)", entry, one_line(e))
    return reason


def _convert(core, graph, spec: ModelSpec, reference, entry: Path, threads: int) -> dict:
    import openvino as ov

    started = time.perf_counter()
    shape = [spec.num_frames, spec.crop_size, spec.crop_size]
    example = _check_input(spec)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=_made(entry.parent)))
        tmp.chmod(0o755)  # a cache other users of the machine may read
    except OSError as e:
        raise ConversionFailed(f"cannot write to the model cache {entry.parent} ({one_line(e)}); give it a "
                               "writable directory (REELFLOW_MODEL_CACHE)") from None
    log.info("%s: converting to OpenVINO (once; kept in %s)", spec.name, entry)
    try:
        try:
            with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.jit.trace's deprecation and tracer warnings: not the user's
                # traced on one clip: the converter runs the model several times over (mvit_base_32x3
                # here: 85 s on one clip, 219 s on three); the parity check's batch of two then shows
                # the batch size was not kept from the trace
                converted = ov.convert_model(graph(), example_input=(example[:1],),
                                             input=[ov.PartialShape([-1, 3, *shape])])
            forward = OpenVINOForward(_compile(core, converted, threads), tmp)
            verdict = _parity(forward, reference, example)
        except Exception as e:  # the converter's own errors are many and varied
            verdict = {"ok": False, "reason": f"OpenVINO cannot convert it: {one_line(e, limit=200)}"}
        if verdict["ok"]:
            ov.save_model(converted, tmp / "model.xml", compress_to_fp16=False)
            verdict["files"] = {n: [(tmp / n).stat().st_size, _sha256(tmp / n)] for n in ("model.xml", "model.bin")}
        verdict["seconds"] = round(time.perf_counter() - started, 1)
        (tmp / "verdict.json").write_text(json.dumps(verdict, indent=1))
        try:
            os.replace(tmp, entry)  # whole or not at all; another replica may have put its own there first
        except OSError:
            pass
        log.info("%s: %s after %.1f s", spec.name, "converted" if verdict["ok"] else verdict["reason"],
                 verdict["seconds"])
        if verdict["ok"] and not (entry / "model.xml").is_file():
            raise ConversionFailed(f"cannot keep the converted model in {entry}")
        return verdict
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _check_input(spec: ModelSpec) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(CHECK_CLIPS, 3, spec.num_frames, spec.crop_size, spec.crop_size, generator=generator)


def _parity(forward: OpenVINOForward, reference, example: torch.Tensor) -> dict:
    """Both runtimes on the same clips: OpenVINO's numbers must be torch's, within the tolerances —
    as a batch of one (the trace's size) and of two (a converter that kept the trace's batch size
    would fail there)."""
    want_probs, want_features = (t.numpy() for t in reference(example))
    probs, features = (np.concatenate(parts) for parts in zip(forward(example[:1].numpy()),
                                                               forward(example[1:].numpy())))
    relative = float(np.abs(probs - want_probs).max() / max(float(np.abs(want_probs).max()), 1e-12))
    norms = np.linalg.norm(features, axis=1) * np.linalg.norm(want_features, axis=1)
    cosine = float(((features * want_features).sum(axis=1) / np.maximum(norms, 1e-12)).min())
    failed = []  # (`not <=`: a NaN fails too)
    if not relative <= MAX_RELATIVE:
        failed.append(f"scores {relative:.1e} apart, relative; the most allowed is {MAX_RELATIVE:g}")
    if not cosine >= MIN_COSINE:
        failed.append(f"embeddings at cosine {cosine:.6f}; the least allowed is {MIN_COSINE}")
    reason = f"OpenVINO's outputs differ from torch's ({'; '.join(failed)})" if failed else ""
    return {"ok": not failed, "reason": reason, "relative": relative, "cosine": cosine}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _made(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
