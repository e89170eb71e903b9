"""ONNX Runtime against OpenVINO (and torch eager) on this CPU, to decide whether reelflow should offer
it as a runtime: the same ClipGraph (pipelines/runtimes/graph.py) exported to ONNX, `--weights none`,
batch 4, in turns in one process. Two settings per runtime: one caller with 2 threads; two callers at
once with 1 thread each (a replica's two forward lanes). ONNX Runtime's outputs against torch's too.
Not part of `make bench` (reelflow does not ship ONNX Runtime); results: benchmarks/onnxruntime.md.

    $ .venv/bin/pip install onnxruntime onnx        # not a reelflow dependency
    $ .venv/bin/python benchmarks/onnxruntime_vs_openvino.py x3d_xs x3d_m slow_r50 slowfast_r50 mvit_base_16x4
"""
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from pipelines.inference import ClipModel, default_cache_dir  # noqa: E402
from pipelines.runtimes.graph import ClipGraph  # noqa: E402
from pipelines.runtimes.openvino_runtime import _parity  # noqa: E402 -- the conversion's own check, on ORT

try:
    import onnxruntime as ort
except ImportError:
    sys.exit("onnxruntime is not installed: .venv/bin/pip install onnxruntime onnx (it is not a reelflow dependency)")

BATCH = 4
ROUNDS = 3
SECONDS = 6.0


def rate_one(fn, x):
    fn(x)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < SECONDS:
        fn(x)
        n += len(x)
    return n / (time.perf_counter() - t0)


def rate_two(fns, x):
    for f in fns:
        f(x)
    counts = [0, 0]
    stop = time.perf_counter() + SECONDS

    def run(i):
        while time.perf_counter() < stop:
            fns[i](x)
            counts[i] += len(x)
    t0 = time.perf_counter()
    ts = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    return sum(counts) / (time.perf_counter() - t0)


def ort_session(path, threads):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return lambda x: s.run(None, {"clips": x})


def main(name):
    cache = default_cache_dir()
    ov2 = ClipModel.load(name, "none", runtime="openvino", cache_dir=cache, threads=2, streams=1)
    ov11 = ClipModel.load(name, "none", runtime="openvino", cache_dir=cache, threads=2, streams=2)
    spec = ov2.spec
    x = ov2.example_batch(BATCH)
    with tempfile.TemporaryDirectory() as tmp:  # the ONNX file (mvit's: ~140 MB) goes once the sessions hold it
        onnx = Path(tmp) / "model.onnx"
        t0 = time.perf_counter()
        graph = ClipGraph(ov2.model, spec).eval()
        with torch.no_grad():
            torch.onnx.export(graph, (x[:1],), str(onnx), input_names=["clips"], output_names=["probs", "emb"],
                              dynamic_axes={"clips": {0: "b"}, "probs": {0: "b"}, "emb": {0: "b"}},
                              opset_version=17, dynamo=False)
        export_s = time.perf_counter() - t0
        o2 = ort_session(onnx, 2)
        o1a, o1b = ort_session(onnx, 1), ort_session(onnx, 1)
    xn = x.numpy()
    parity = _parity(o2, ov2._predict_torch, x)  # relative difference of probabilities, embeddings' cosine
    torch.set_num_threads(2)
    rows = {"ov 1x2": [], "ort 1x2": [], "ov 2x1": [], "ort 2x1": [], "torch 1x2": []}
    for _ in range(ROUNDS):
        rows["ov 1x2"].append(rate_one(ov2._fast, xn))
        rows["ort 1x2"].append(rate_one(o2, xn))
        rows["ov 2x1"].append(rate_two([ov11._fast, ov11._fast], xn))
        rows["ort 2x1"].append(rate_two([o1a, o1b], xn))
    rows["torch 1x2"].append(rate_one(ov2._predict_torch, x))
    out = {"model": name, "export_s": round(export_s, 1), "ort_relative": parity["relative"],
           "ort_cosine": parity["cosine"], **{k: [round(v, 2) for v in vs] for k, vs in rows.items()}}
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: benchmarks/onnxruntime_vs_openvino.py MODEL... (e.g. x3d_xs mvit_base_16x4)")
    for n in sys.argv[1:]:
        main(n)
