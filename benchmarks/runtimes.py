"""Every model on every runtime: the first conversion's time, the forward pass's rate on each
runtime (batch 2, random input, `--weights none`), and the converted model's agreement with torch as
its parity check measured it (pipelines/runtimes/openvino_runtime.py). Results to
benchmarks/runtimes.md.

    $ python benchmarks/runtimes.py [--models x3d_xs,mvit_base_16x4]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.inference import ClipModel  # noqa: E402
from pipelines.models import MODELS  # noqa: E402

HERE = Path(__file__).resolve().parent
BATCH = 2
PASSES = 3


def rate(predict, batch) -> float:
    predict(batch)  # warm-up
    started = time.perf_counter()
    for _ in range(PASSES):
        predict(batch)
    return PASSES * len(batch) / (time.perf_counter() - started)


def measure(name: str, cache: Path) -> dict:
    started = time.perf_counter()
    clip_model = ClipModel.load(name, "none", cache_dir=cache)  # a fresh cache: the conversion is timed
    load_s = time.perf_counter() - started
    batch = clip_model.example_batch(BATCH)
    row = {"model": name, "runtime": clip_model.runtime, "note": clip_model.runtime_note, "load_s": load_s,
           "torch_cps": rate(clip_model._predict_torch, batch)}
    if clip_model.runtime == "openvino":
        verdict = json.loads((clip_model._fast.entry / "verdict.json").read_text())
        started = time.perf_counter()
        ClipModel.load(name, "none", cache_dir=cache)
        row.update(fast_cps=rate(clip_model.predict, batch), relative=verdict["relative"], cosine=verdict["cosine"],
                   reload_s=time.perf_counter() - started)
    print(json.dumps(row), flush=True)
    return row


def markdown(rows: list[dict]) -> str:
    lines = ["# Runtimes", "", f"Every model with `--weights none`, batch {BATCH}, {torch.get_num_threads()} threads, "
             "in one run on this machine: the first load (the conversion and its parity check included), a second "
             "load (the cache read), the forward pass's clips/s on each runtime, and the parity check's numbers "
             "(largest probability difference over the largest probability; smallest embedding cosine).", "",
             "| model | runs on | first load (s) | next load (s) | torch clips/s | OpenVINO clips/s | OpenVINO / torch "
             "| relative difference | embedding cosine |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["runtime"] == "openvino":
            lines.append(f"| {r['model']} | openvino | {r['load_s']:.1f} | {r['reload_s']:.1f} | {r['torch_cps']:.2f} | "
                         f"{r['fast_cps']:.2f} | **{r['fast_cps'] / r['torch_cps']:.2f}x** | {r['relative']:.1e} | "
                         f"{r['cosine']:.7f} |")
        else:
            lines.append(f"| {r['model']} | torch ({r['note']}) | {r['load_s']:.1f} | — | {r['torch_cps']:.2f} | — | — | — | — |")
    return "\n".join(lines) + "\n\nReproduce: `python benchmarks/runtimes.py`.\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated (default: every model of the table)")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory(prefix="reelflow-runtimes-") as cache:
        rows = [measure(name, Path(cache)) for name in (args.models.split(",") if args.models else MODELS)]
    text = markdown(rows)
    if not args.models:
        (HERE / "runtimes.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
