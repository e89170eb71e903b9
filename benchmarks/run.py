"""`make bench`: reelflow, in-process and on a running stack, against the PyTorchVideo tutorial loop
and the bound of this machine, in one run, on one corpus; results to benchmarks/results.{md,json}.

- tutorial loop: EncodedVideo.get_clip + the hub tutorial transforms per clip, batch 1.
- model only: the forward pass alone at its best batch size (random input).
- decode only: decoding the videos and converting just the frames segments sample.
- bound: decode-only time + clips / best model rate — what this CPU can do without overlap.
- reelflow classify: ActionClassifier.classify_video (decode, sample, transform, batched model).
- reelflow bulk: `reelflow submit --wait` over the corpus on a `reelflow up` stack (see bulk.py),
  and the stack's start-up time.
- memory against video length (1 min, 10 min at 360p): peak RSS of `classify` in a fresh process, and the
  peak summed RSS of the stack's processes while one job runs.

The default model gets the full corpus, in two rounds of (in-process measurements, then a stack's
bulk runs), each piece the best of REPEATS runs per round and of the rounds: this machine's speed
drifts over minutes, so what is compared is measured in turns. The others (slow on a small CPU)
get a short corpus and one run.

    $ python benchmarks/run.py [--models x3d_xs,slowfast_r50] [--quick]
    $ python benchmarks/run.py --corpus my_videos/          # the same measurements on other videos (printed)
    $ python benchmarks/run.py --streams-only --camera cam.mp4 --stream-counts 16,40
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import av
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from bulk import StackError, Stack, bulk_rate, memory_by_length  # noqa: E402
from streams import SIZES, markdown as streams_markdown, measure_streams  # noqa: E402
from corpus import generated_videos, long_video, real_videos, short_corpus, warmup_video  # noqa: E402
from support.tutorial_reference import tutorial_transform  # noqa: E402  (the tutorial's own transforms)

from pipelines import ActionClassifier  # noqa: E402
from pipelines.datasets import VIDEO_SUFFIXES  # noqa: E402
from pipelines.decode import open_container  # noqa: E402
from pipelines.errors import VideoError, one_line  # noqa: E402
from pipelines.models import DEFAULT_MODEL, get_spec  # noqa: E402
from pipelines.sampler import sample_clips  # noqa: E402
from pipelines.segments import plan_segments  # noqa: E402

HERE = Path(__file__).resolve().parent
MODELS = (DEFAULT_MODEL, "slowfast_r50", "mvit_base_16x4")
MEMORY_VIDEOS = {"1 min": 60, "10 min": 600}  # label: seconds of 360p video
REPEATS = 2  # the faster of two runs: this machine's other tenants add noise, never speed


@dataclass(frozen=True)
class Profile:
    """How hard to measure: best of `repeats` runs; the model-only rate over `batch_sizes`, at least
    `min_clips` clips each."""
    repeats: int
    min_clips: int
    batch_sizes: tuple[int, ...]
    rounds: int = 1  # in-process measurements then a stack's, in turns


FULL = Profile(repeats=REPEATS, min_clips=64, batch_sizes=(1, 2, 4, 8, 16), rounds=2)
SHORT = Profile(repeats=1, min_clips=4, batch_sizes=(1, 2, 4))  # slow models, --quick


def timed(fn, repeats: int = REPEATS):
    """(fn's result, its fastest time of `repeats` runs)."""
    best = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        elapsed = time.perf_counter() - start
        best = elapsed if best is None else min(best, elapsed)
    return result, best


def tutorial_loop(paths, spec, model) -> tuple[int, float]:
    """The PyTorchVideo tutorial's way, clip by clip: (clips, seconds)."""
    from pytorchvideo.data.encoded_video import EncodedVideo

    transform = tutorial_transform(spec)
    clips = 0
    start = time.perf_counter()
    for path in paths:
        video = EncodedVideo.from_path(str(path))
        for seg in plan_segments(float(video.duration), spec.clip_seconds):
            clip = video.get_clip(seg.start_s, seg.end_s)["video"]
            if clip is None:
                continue
            inputs = transform(clip)
            batch = [x[None] for x in inputs] if isinstance(inputs, list) else inputs[None]
            with torch.no_grad():
                preds = model(batch)
            if not spec.head_softmax:
                preds = torch.softmax(preds, dim=1)
            clips += 1
        video.close()
    return clips, time.perf_counter() - start


def model_rates(clip_model, spec, profile: Profile) -> dict[int, float]:
    """Clips per second of the forward pass alone, per batch size (random input)."""
    rates = {}
    for bs in profile.batch_sizes:
        x = torch.randn(bs, 3, spec.num_frames, spec.crop_size, spec.crop_size)
        clip_model.predict(x)  # warm-up
        n = max(1, profile.min_clips // bs)
        _, seconds = timed(lambda: [clip_model.predict(x) for _ in range(n)], profile.repeats)  # noqa: B023
        rates[bs] = n * bs / seconds
    return rates


def decode_only(paths, spec, repeats: int) -> tuple[int, float, float]:
    """Decoding and converting just the sampled frames: (clips, seconds as the pipeline decodes —
    not the frames nothing samples or depends on —, seconds decoding every frame), in turns."""
    def run(skip_unsampled: bool):
        return sum(1 for p in paths for _ in sample_clips(p, spec.clip_seconds, spec.num_frames,
                                                          skip_unsampled=skip_unsampled))
    best = {True: float("inf"), False: float("inf")}
    for _ in range(repeats):
        for skip_unsampled in (True, False):
            clips, seconds = timed(lambda: run(skip_unsampled), 1)  # noqa: B023
            best[skip_unsampled] = min(best[skip_unsampled], seconds)
    return clips, best[True], best[False]


def classify(paths, clf, repeats: int) -> tuple[int, float]:
    """reelflow's in-process classifier over the corpus: (clips, seconds)."""
    return timed(lambda: sum(1 for _ in clf.iter_videos(paths)), repeats)


PEAK_RSS = (  # VmHWM: ru_maxrss would include the parent's peak, inherited across fork
    "import sys; from pipelines import ActionClassifier; "
    "ActionClassifier(sys.argv[1], weights='none').classify_video(sys.argv[2]); "
    "print(open('/proc/self/status').read().split('VmHWM:')[1].split()[0])"
)


def peak_rss_mb(model: str, path: Path) -> float:
    """Peak RSS (VmHWM) of a fresh process that classifies one video."""
    out = subprocess.run([sys.executable, "-c", PEAK_RSS, model, str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.strip()) / 1024


def corpora(model: str, quick: bool, given: list[Path] | None = None) -> tuple[Profile, list[tuple[str, list[Path]]]]:
    """The profile and the (label, videos) corpora a model is measured on (`given`: `--corpus`'s)."""
    if given:
        return (SHORT if quick or model != DEFAULT_MODEL else FULL), [(f"given ({len(given)} videos)", given)]
    if quick or model != DEFAULT_MODEL:
        short = short_corpus()
        return SHORT, [(f"short: 2 x 20 s 360p + 1080p ({len(short)} videos)", short)]
    generated = generated_videos()
    full = generated + real_videos()
    return FULL, [(f"generated + real ({len(full)} videos)", full),
                  ("1080p only", [p for p in generated if "1080p" in p.name])]


def measure(model: str, paths: list[Path], label: str, profile: Profile, tutorial: tuple[int, float] | None = None
            ) -> dict:
    """The in-process columns of one table row (`tutorial`: its (clips, seconds) measured already)."""
    spec = get_spec(model)
    clf = ActionClassifier(model, weights="none")  # the default runtime: OpenVINO where installed
    model_module = clf.clip_model.model
    list(clf.iter_videos([warmup_video()]))  # warm-up: first-call allocations are not throughput
    if tutorial is None:
        print(f"[{label}] {model}: tutorial loop ...", flush=True)
        tutorial = tutorial_loop(paths, spec, model_module)
    tut_clips, tut_s = tutorial
    print(f"[{label}] {model}: model only, {clf.clip_model.runtime} ...", flush=True)
    rates = model_rates(clf.clip_model, spec, profile)
    print(f"[{label}] {model}: model only, torch ...", flush=True)
    torch_rates = model_rates(TorchForward(clf.clip_model), spec, profile)
    print(f"[{label}] {model}: decode only ...", flush=True)
    dec_clips, dec_s, dec_all_s = decode_only(paths, spec, profile.repeats)
    print(f"[{label}] {model}: reelflow classify ...", flush=True)
    cls_clips, cls_s = classify(paths, clf, profile.repeats)
    assert tut_clips == dec_clips == cls_clips, (tut_clips, dec_clips, cls_clips)
    return derive({"model": model, "corpus": label, "videos": len(paths), "clips": cls_clips,
                   "repeats": profile.repeats, "tutorial_s": tut_s, "decode_s": dec_s, "decode_all_s": dec_all_s, "classify_s": cls_s,
                   "runtime": clf.clip_model.runtime, "model_rates": rates, "torch_model_rates": torch_rates})


class TorchForward:
    """A clip model's PyTorch eager forward pass, whatever runtime it runs on."""

    def __init__(self, clip_model):
        self.predict = clip_model._predict_torch


def derive(row: dict) -> dict:
    """The row's rates and ratios from its measured times (and the bulk ones, once measured)."""
    rates, clips = row["model_rates"], row["clips"]
    best_bs = max(rates, key=rates.get)
    bound_s = row["decode_s"] + clips / rates[best_bs]
    torch_rates = row.get("torch_model_rates") or rates
    row.update(torch_model_cps=max(torch_rates.values()), torch_best_batch=max(torch_rates, key=torch_rates.get))
    row.update(best_batch=best_bs, model_cps=rates[best_bs], bound_s=bound_s, tutorial_cps=clips / row["tutorial_s"],
               bound_cps=clips / bound_s, classify_cps=clips / row["classify_s"], vs_bound=bound_s / row["classify_s"],
               vs_tutorial=row["tutorial_s"] / row["classify_s"])
    if "bulk_s" in row and "metrics_off_s" in row:  # the bulk path with metrics on / off
        row.update(metrics_off_cps=row["metrics_off_clips"] / row["metrics_off_s"],
                   metrics_on_vs_off=row["metrics_off_s"] / row["bulk_s"])
    if "bulk_s" in row and "index_off_s" in row:  # the bulk path with the vector index on / off
        row.update(index_off_cps=row["index_off_clips"] / row["index_off_s"],
                   index_on_vs_off=row["index_off_s"] / row["bulk_s"])
    if "bulk_s" in row and "torch_bulk_s" in row:  # the bulk path on the default runtime / on torch
        row.update(torch_bulk_cps=row["torch_bulk_clips"] / row["torch_bulk_s"],
                   bulk_vs_torch_bulk=row["torch_bulk_s"] / row["bulk_s"])
    if "bulk_s" in row:
        row.update(bulk_cps=row["bulk_clips"] / row["bulk_s"], bulk_vs_bound=row["bulk_clips"] / row["bulk_s"] / row["bound_cps"],
                   bulk_vs_tutorial=row["bulk_clips"] / row["bulk_s"] / row["tutorial_cps"],
                   span_cps=row["bulk_clips"] / row["bulk_span_s"],
                   span_vs_bound=row["bulk_clips"] / row["bulk_span_s"] / row["bound_cps"])
    return row


def best_of(rounds: list[dict]) -> dict:
    """One row from several rounds of the same measurements: each time its fastest, each rate its highest."""
    row = dict(rounds[0])
    row["decode_s"] = min(r["decode_s"] for r in rounds)
    row["decode_all_s"] = min(r["decode_all_s"] for r in rounds)
    row["classify_s"] = min(r["classify_s"] for r in rounds)
    bulk = [r for r in rounds if "bulk_s" in r]  # a round whose stack failed has none
    if bulk:
        row.update(min(({k: r[k] for k in ("bulk_clips", "bulk_s")} for r in bulk), key=lambda b: b["bulk_s"]))
        row["bulk_span_s"] = min(r["bulk_span_s"] for r in bulk)
    for variant, _ in VARIANTS:
        runs = [r for r in rounds if f"{variant}_s" in r]
        if runs:
            row.update(min(({k: r[k] for k in (f"{variant}_clips", f"{variant}_s")} for r in runs),
                           key=lambda b: b[f"{variant}_s"]))
    row["model_rates"] = {bs: max(r["model_rates"][bs] for r in rounds) for bs in row["model_rates"]}
    row["torch_model_rates"] = {bs: max(r["torch_model_rates"][bs] for r in rounds) for bs in row["torch_model_rates"]}
    row["rounds"] = len(rounds)
    derive(row)
    if bulk:  # each fresh stack's first run, against the same bound
        row["bulk_first_vs_bound"] = [r["bulk_clips"] / r["bulk_first_s"] / row["bound_cps"] for r in bulk]
    return row


def measure_bulk(model: str, plan: list[tuple[str, list[Path]]], rows: list[dict], profile: Profile,
                 memory_videos: dict[str, Path]) -> dict:
    """One stack for the model: the bulk columns of its rows, its start-up time and, given videos, the
    stack's memory while one job runs on each."""
    print(f"[bulk] {model}: reelflow up ...", flush=True)
    with Stack(model) as stack:
        print(f"[bulk] {model}: ready after {stack.startup_s:.1f} s; a warm-up job ...", flush=True)
        stack.submit_wait([warmup_video()])  # as in-process: first-job costs are not throughput
        for row, (label, paths) in zip(rows, plan):
            print(f"[{label}] {model}: reelflow submit --wait ...", flush=True)
            row.update(bulk_rate(stack, paths, profile.repeats))
            derive(row)
        memory = memory_by_length(stack, memory_videos) if memory_videos else {}
    return {"startup_s": stack.startup_s, "memory": memory}


# The bulk path again on stacks with one setting changed, on a row's corpus: (name, environment).
VARIANTS = [("metrics_off", {"REELFLOW_METRICS": "0"}),  # what the metrics cost (issue 19)
            ("torch_bulk", {"REELFLOW_RUNTIME": "torch"}),  # what the fast runtime gains (issue 20)
            ("index_off", {"REELFLOW_INDEX": "0"})]  # what indexing the embeddings costs (issue 21)
DEFAULT_MODEL_ONLY = ("metrics_off", "index_off")


def measure_variant(model: str, paths: list[Path], profile: Profile, variant: str, env: dict[str, str]) -> dict:
    """The bulk path on a stack with `env` on top of the default settings, same corpus and runs as
    the row's default stack: `{variant}_s`, `{variant}_clips`."""
    print(f"[bulk] {model}: reelflow up with {' '.join(f'{k}={v}' for k, v in env.items())} ...", flush=True)
    with Stack(model, env=env) as stack:
        stack.submit_wait([warmup_video()])
        run = bulk_rate(stack, paths, profile.repeats)
    return {f"{variant}_s": run["bulk_s"], f"{variant}_clips": run["bulk_clips"]}


def stack_settings() -> dict:
    """The stacks' settings: REELFLOW_* overrides from the environment, and every numeric setting in effect."""
    from services.settings import Settings

    overrides = {k: v for k, v in os.environ.items()
                 if k.startswith("REELFLOW_") and k not in ("REELFLOW_HOME", "REELFLOW_REDIS_URL")}
    effective = {k: v for k, v in Settings.from_env().model_dump().items() if isinstance(v, (int, float))}
    return {"overrides": overrides, "effective": effective}


def machine() -> dict:
    """What the numbers were measured on."""
    from services.ray_backend.batch_rates import cpu_name

    cpu = cpu_name()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{cpu}, {os.cpu_count()} cores", "python": platform.python_version(),
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "pyav": av.__version__,
        "ffmpeg": av.library_versions.get("libavcodec"),
    }


def table_row(r: dict) -> str:
    """One markdown table row; the bulk cells say "failed" when the row's stack did not serve it."""
    bulk = (f"{r['bulk_cps']:.2f} | **{r['bulk_vs_bound']:.2f}** | {r['span_cps']:.2f}, **{r['span_vs_bound']:.2f}** | "
            f"**{r['bulk_vs_tutorial']:.1f}x**" if "bulk_cps" in r else "failed | — | — | —")
    on_torch = (f"{r['torch_bulk_cps']:.2f} | **{r['bulk_vs_torch_bulk']:.2f}x**" if "bulk_vs_torch_bulk" in r
                else "— | —")
    return (f"| {r['model']} | {r['corpus']} | {r['clips']} | {r['tutorial_cps']:.2f} | "
            f"{r['torch_model_cps']:.2f} (b={r['torch_best_batch']}) | "
            f"{r['model_cps']:.2f} (b={r['best_batch']}, {r.get('runtime', 'torch')}) | {r['decode_s']:.2f} | "
            f"{r['bound_cps']:.2f} | {r['classify_cps']:.2f} | **{r['vs_bound']:.2f}** | **{r['vs_tutorial']:.1f}x** | "
            f"{bulk} | {on_torch} |")


def stack_lines(rows: list[dict], stacks: dict, settings: dict) -> list[str]:
    """Below the table: how each row was measured, the stacks' start-up times and their settings."""
    runs = {r["model"]: (r["repeats"], r.get("rounds", 1)) for r in rows}

    def described(model: str, repeats: int, rounds: int) -> str:
        if rounds > 1:
            return (f"{model} in {rounds} rounds of (in-process, then a fresh stack's bulk runs), each time the best "
                    f"of {repeats} runs per round and of the rounds")
        return f"{model} best of {repeats}" if repeats > 1 else f"{model} one run"

    lines = ["", "Runs: " + ", ".join(described(m, *n) for m, n in runs.items())
             + " (tutorial loop: one run); each stack ran one warm-up job first. Bulk clips are the segments "
             + "the jobs stored"
             + "".join(f"; {r['model']} {r['corpus']}: {r['bulk_clips']} (in-process: {r['clips']})"
                       for r in rows if "bulk_clips" in r and r["bulk_clips"] != r["clips"]) + "."]
    lines += ["", "Decode only is as the pipeline decodes: frames that no segment samples and that no frame "
              "depends on (non-reference B-frames) are not decoded (pipelines/sampler.py). Against decoding "
              "every frame (one video at a time, wall time): "
              + "; ".join(f"{r['model']} {r['corpus']}: {r['decode_s']:.2f} s against {r['decode_all_s']:.2f} s "
                          f"({abs(1 - r['decode_s'] / r['decode_all_s']):.0%} "
                          f"{'less' if r['decode_s'] <= r['decode_all_s'] else 'more'})"
                          for r in rows if "decode_all_s" in r) + "."]
    firsts = [f"{r['model']} {r['corpus']}: " + ", ".join(f"{v:.2f}" for v in r["bulk_first_vs_bound"])
              for r in rows if "bulk_first_vs_bound" in r]
    if firsts:
        lines += ["", "Bulk is the best run on a stack; the first run on each fresh stack (after its one short "
                  f"warm-up job) — vs bound per stack: {'; '.join(firsts)}."]
    startup = [f"{m} " + ", then ".join(f"{t:.1f} s" for t in s["startups"]) for m, s in stacks.items() if s.get("startups")]
    if startup:
        lines += ["", "Stack start-up, from launching `reelflow up --weights none --model M` to its ready line "
                  "(Redis, Ray, the model's Serve replica — which decodes the jobs too, in the default fused pipeline — are up by then); "
                  "a model's first start on the machine includes timing its batch sizes (kept for later starts, "
                  "services/ray_backend/batch_rates.py; the bench starts from an empty cache): "
                  + "; ".join(startup) + "."]
    for r in rows:
        if "metrics_on_vs_off" in r:
            lines += ["", f"Metrics cost (issue 19): the bulk path of {r['model']} on {r['corpus']}, on stacks with "
                      f"metrics recorded (the default) and with `REELFLOW_METRICS=0`, in turns in the same run: "
                      f"{r['bulk_cps']:.2f} vs {r['metrics_off_cps']:.2f} clips/s — on/off "
                      f"**{r['metrics_on_vs_off']:.2f}** (1.00: no cost; this machine's run-to-run noise is a few "
                      "percent)."]
    for r in rows:
        if "index_on_vs_off" in r:
            lines += ["", f"Indexing cost (issue 21): the bulk path of {r['model']} on {r['corpus']}, on stacks "
                      f"indexing every segment's embedding (the default) and with `REELFLOW_INDEX=0`, in turns in "
                      f"the same run: {r['bulk_cps']:.2f} vs {r['index_off_cps']:.2f} clips/s — on/off "
                      f"**{r['index_on_vs_off']:.2f}** (1.00: no cost)."]
    failed = [f"{m}: {s['error']}" for m, s in stacks.items() if s.get("error")]
    if failed:
        lines += ["", "Bulk path failed — " + "; ".join(failed)]
    overrides = ", ".join(f"{k}={v}" for k, v in settings["overrides"].items())
    lines += ["", f"Stack settings: the defaults of services/settings.py{f', with {overrides}' if overrides else ''}."]
    return lines


def memory_lines(classify_mb: dict, bulk: dict) -> list[str]:
    """Memory against video length, in-process and on the stack, as measured."""
    if not classify_mb and not bulk:
        return []
    short, long = MEMORY_VIDEOS
    lines = ["", f"Memory against video length ({DEFAULT_MODEL}, 360p, {short} vs {long}):", ""]
    if classify_mb:
        a, b = classify_mb[short], classify_mb[long]
        lines.append(f"- in-process `classify`, peak RSS (VmHWM) of a fresh process: {short} {a:.0f} MB, "
                     f"{long} {b:.0f} MB — ratio **{b / a:.2f}**")
    if bulk:
        one, ten = bulk[short], bulk[long]
        lines.append(
            f"- bulk path, peak of the summed RSS of the processes in `up`'s session (`up`, Ray's GCS, raylet "
            f"and workers, the decoder actor, the Serve replicas; {one['processes_at_peak']} and "
            f"{ten['processes_at_peak']} processes at the peaks), sampled every 0.2 s while one job runs, on one "
            f"stack: {short} {one['peak_mb']:.0f} MB, {long} {ten['peak_mb']:.0f} MB — ratio "
            f"**{ten['peak_mb'] / one['peak_mb']:.2f}** (idle just before: {bulk['idle']['peak_mb']:.0f} MB). "
            f"The embedded Redis, in a session of its own and holding the results: {one['redis_peak_mb']:.0f} MB, "
            f"{ten['redis_peak_mb']:.0f} MB. Summed RSS counts memory shared between processes (libraries, "
            "Ray's object store) once per process.")
        outside = sorted({c for k in (short, long) for c in bulk[k]["outside_session"]} - {"redis-server"})
        if outside:
            lines.append(f"- under `up` but outside its session, so not counted: {', '.join(outside)}")
    return lines


def write_markdown(info: dict, rows: list[dict], stacks: dict, settings: dict, classify_mb: dict,
                   streams: dict | None = None, given: list[Path] | None = None) -> str:
    """results.md: the table, then the notes on the stacks and on memory (`given`: `--corpus`'s videos)."""
    lines = [
        "# Benchmark results",
        "",
        f"{info['date']} · {info['cpu']} · Python {info['python']} · torch {info['torch']} "
        f"({info['torch_threads']} threads) · PyAV {info['pyav']} · weights: random init (speed is the same)",
        "",
        "Clips per second (higher is better), all measured in the same run. The model alone on each runtime "
        "(PyTorch eager; the default, OpenVINO where installed); the bound is decoding plus the clips at the "
        "default runtime's best rate, with no overlap. vs bound / vs tutorial: reelflow classify (in-process) "
        "against the bound and the tutorial loop; bulk vs …: `reelflow submit --wait` (wall time, client "
        "start-up and polling included) on a running stack against the same; jobs' span: the same jobs from "
        "the first one's submission to the last one's end, as their records say (the stack's part, without the "
        "client's start-up), and that against the bound; bulk, torch runtime: `submit --wait` "
        "on a stack with `REELFLOW_RUNTIME=torch`, in turns with the default one.",
        "",
        "| model | corpus | clips | tutorial loop | model only, torch (best batch) | model only, default runtime "
        "| decode only (s) | bound | reelflow classify | vs bound | vs tutorial | reelflow bulk (submit --wait) "
        "| bulk vs bound | jobs' span: clips/s, vs bound | bulk vs tutorial | bulk, torch runtime | bulk vs torch runtime |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [table_row(r) for r in rows]
    lines += stack_lines(rows, stacks, settings)
    lines += memory_lines(classify_mb, stacks.get(DEFAULT_MODEL, {}).get("memory", {}))
    if streams:
        lines += ["", *streams_markdown(streams)]
    if given:
        lines += ["", f"Reproduce: `python benchmarks/run.py {' '.join(sys.argv[1:])}`; the videos: "
                      + ", ".join(str(p) for p in given) + "."]
    else:
        lines += ["", "Reproduce: `make bench` (corpus generated into benchmarks/corpus/, real videos from "
                      "../shared/data/videos)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    """Measure each model in-process, then on a stack of its own; write and print the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help=f"comma-separated models to measure (default {','.join(MODELS)}); "
                                         f"all but {DEFAULT_MODEL} get the short corpus and one run")
    parser.add_argument("--quick", action="store_true",
                        help=f"a smoke run: the short corpus, one run, no memory measurement, {DEFAULT_MODEL} "
                             "unless --models is given; prints the table, writes no files")
    parser.add_argument("--no-metrics-off", action="store_true",
                        help="skip the bulk path on a stack without metrics (REELFLOW_METRICS=0)")
    parser.add_argument("--streams-only", action="store_true", help="only the live-streams measurement (printed)")
    parser.add_argument("--stream-counts", metavar="N,N...", help="with --streams-only: the steps (default 8,16,...,48)")
    parser.add_argument("--stream-sizes", metavar="WxH,...", help=f"with --streams-only: of {', '.join(SIZES)}")
    parser.add_argument("--camera", metavar="VIDEO", type=Path,
                        help="with --streams-only: every camera plays this video (looped, in real time) instead "
                             "of the generated camera files; a camera's own recording, say")
    parser.add_argument("--stream-stride", metavar="SECONDS", type=float,
                        help="with --streams-only: a window every so many seconds per camera (`watch --stride`; "
                             "default: windows back to back)")
    parser.add_argument("--corpus", metavar="DIR_OR_VIDEO", nargs="+", type=Path,
                        help="measure on these videos (a directory: every video file in it) instead of the "
                             "generated and shared corpus; prints the table, writes no files")
    args = parser.parse_args(argv)
    try:
        given = given_corpus(args.corpus) if args.corpus else None
        camera = given_corpus([args.camera])[0] if args.camera else None
    except ValueError as e:
        parser.exit(2, f"run.py: error: {e}\n")
    if args.streams_only:
        if args.stream_counts or args.stream_sizes or camera or args.stream_stride:
            counts = tuple(int(n) for n in (args.stream_counts or "8,16,24,32,40,48").split(","))
            sizes = [None] if camera else args.stream_sizes.split(",") if args.stream_sizes else SIZES
            results = [measure_streams(size, DEFAULT_MODEL, counts=counts, video=camera, stride_s=args.stream_stride)
                       for size in sizes]
        else:
            results = run_streams(args.quick)
        print("\n".join(streams_markdown(results)))
        return
    models = args.models.split(",") if args.models else [DEFAULT_MODEL] if args.quick else list(MODELS)
    for model in models:
        get_spec(model)  # an unknown model fails now, not after the first one's measurements
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the stacks' clean-up on SIGTERM too
    # The stacks' replicas keep their batch-size timings in $XDG_CACHE_HOME/reelflow: start from an
    # empty one, so a model's first stack here pays for timing them as on a new machine...
    cache = tempfile.TemporaryDirectory(prefix="reelflow-bench-cache-")
    os.environ["XDG_CACHE_HOME"] = cache.name
    # ... and the same for models converted for a runtime: the first stack converts, later ones reuse
    os.environ["REELFLOW_MODEL_CACHE"] = os.path.join(cache.name, "models")
    torch.set_num_threads(os.cpu_count() or 1)
    memory_videos = {} if args.quick or given else {k: long_video(s) for k, s in MEMORY_VIDEOS.items()}
    rows, stacks = [], {}
    for model in models:
        profile, plan = corpora(model, args.quick, given)
        # Rounds of (in-process measurements, then a stack's bulk runs), best of each piece across the
        # rounds: this machine drifts by tens of percent over minutes, so measurements minutes apart
        # are compared only when taken in turns.
        rounds: list[list[dict]] = []
        for k in range(profile.rounds):
            tutorials = [None] * len(plan) if not rounds else [(r["clips"], r["tutorial_s"]) for r in rounds[0]]
            model_rows = [measure(model, paths, label, profile, tut)
                          for (label, paths), tut in zip(plan, tutorials)]
            last = k == profile.rounds - 1
            startups = stacks.get(model, {}).get("startups", [])
            # the first corpus again on stacks with one setting changed (VARIANTS): before the default
            # stack in odd rounds, after it in even ones, so drift does not favour either
            variants = [(v, env) for v, env in VARIANTS if v not in DEFAULT_MODEL_ONLY or
                        (model == DEFAULT_MODEL and not (v == "metrics_off" and args.no_metrics_off))]
            if k % 2:
                for variant, env in variants:
                    model_rows[0].update(_or_failed(measure_variant, model, plan[0][1], profile, variant, env))
            try:
                stacks[model] = measure_bulk(model, plan, model_rows, profile,
                                             memory_videos if model == DEFAULT_MODEL and last else {})
                stacks[model]["startups"] = startups + [stacks[model]["startup_s"]]
            except StackError as e:
                print(f"[bulk] {model}: FAILED: {e}", file=sys.stderr, flush=True)
                stacks[model] = {"error": str(e).splitlines()[0] + " (details in the run's output)", "startups": startups}
            if not k % 2:
                for variant, env in variants:
                    model_rows[0].update(_or_failed(measure_variant, model, plan[0][1], profile, variant, env))
            rounds.append(model_rows)
        rows += [best_of(list(row_rounds)) for row_rounds in zip(*rounds)]
    classify_mb = {k: peak_rss_mb(DEFAULT_MODEL, p) for k, p in memory_videos.items()}
    streams = run_streams(args.quick) if DEFAULT_MODEL in models and not given else None
    info, settings = machine(), stack_settings()
    markdown = write_markdown(info, rows, stacks, settings, classify_mb, streams, given)
    if not args.quick and not given:  # the project's own results: the generated corpus only
        (HERE / "results.json").write_text(json.dumps(
            {"machine": info, "stack_settings": settings, "rows": rows, "stacks": stacks,
             "classify_peak_rss_mb": classify_mb, "streams": streams}, indent=2))
        (HERE / "results.md").write_text(markdown)
        update_readme(markdown)
    print(markdown)


def given_corpus(paths: list[Path]) -> list[Path]:
    """`--corpus`'s videos: files as given, directories as every video file in them (sorted); each one
    opened, so a file that is not a video fails now, in one line, not after an hour of measuring."""
    videos = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
            if not found:
                raise ValueError(f"{path} holds no video files ({', '.join(sorted(VIDEO_SUFFIXES))})")
            videos += found
        elif path.is_file():
            videos.append(path)
        else:
            raise ValueError(f"{path}: no such file or directory")
    for video in videos:
        try:
            open_container(video)[0].close()
        except VideoError as e:
            raise ValueError(one_line(e)) from None
    return [v.resolve() for v in videos]


def _or_failed(measure_fn, *args) -> dict:
    """`measure_fn(*args)`, or nothing (said on stderr) when its stack fails."""
    try:
        return measure_fn(*args)
    except StackError as e:
        print(f"[bulk] FAILED: {e}", file=sys.stderr, flush=True)
        return {}


def run_streams(quick: bool) -> list[dict]:
    """Concurrent real-time cameras on one stack, 640x360 and 340x256 (benchmarks/streams.py)."""
    if quick:
        return [measure_streams("640x360", DEFAULT_MODEL, counts=(8,), seconds=15)]
    return [measure_streams(size, DEFAULT_MODEL) for size in SIZES]


def update_readme(markdown: str) -> None:
    """Put the latest table into the README, between its bench markers."""
    readme = HERE.parent / "README.md"
    text = readme.read_text()
    start, end = "<!-- bench:start -->", "<!-- bench:end -->"
    if start in text and end in text:
        body = "\n".join(markdown.splitlines()[2:]).strip()  # without the title
        head, rest = text.split(start, 1)
        readme.write_text(f"{head}{start}\n{body}\n{end}{rest.split(end, 1)[1]}")


if __name__ == "__main__":
    main()
