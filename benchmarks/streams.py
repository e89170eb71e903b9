"""Live streams in `make bench`: how many real-time cameras one stack keeps up with, and how it
behaves past that.

Each camera is a camera-like file (25 fps, H.264 without B-frames, a keyframe every 2 s) that
`reelflow watch FILE` plays in real time, looping — as the issue measuring this did, so that the
cameras' own servers do not take the machine's cores (tests/support/rtsp_server.py is the real RTSP
server of the tests). On one `reelflow up` stack, more and more streams are watched at once; after
a warm-up, each step counts over `seconds`: segments per stream per second (real time is one per
clip length; the slowest stream's), windows dropped (in all, and the fewest and most of one
stream: drops spread evenly or not), and the latency `published_at - captured_at` (p50, p95)
against the stack's target (REELFLOW_STREAM_LATENCY_S). A count is sustained when every stream
keeps real time with no window dropped. Steps go on past the first count that is not sustained
(overload: latency must stay near the target, drops spread over the streams), and stop at the
second.
"""

from __future__ import annotations

import time
from pathlib import Path

import redis

from bulk import Stack
from corpus import CORPUS_DIR
from pipelines.decode import Video
from pipelines.models import get_spec
from pipelines.synthetic import make_video
from services.settings import Settings
from services.store.streams import StreamRegistry, StreamSpec

WARMUP_S = 10.0
FIRST_WARMUP_S = 20.0  # before a stack's first step: it has just started (replica warm-up, the first opens)
SIZES = {"640x360": (640, 360), "340x256": (340, 256)}


def camera_video(size: tuple[int, int], seconds: float = 20.0) -> Path:
    """A camera-like video: 25 fps, no B-frames (cameras' low-latency profiles), a keyframe every 2 s
    (x264's default is every 10 s; cameras send one every 1-4 s), cached in the corpus."""
    CORPUS_DIR.mkdir(exist_ok=True)
    path = CORPUS_DIR / f"camera_{size[0]}x{size[1]}_25fps_gop50.mp4"
    if not path.exists():
        tmp = path.with_suffix(".part.mp4")
        make_video(tmp, seconds=seconds, fps=25, size=size, bframes=False, noise=True, seed=3, preset="veryfast",
                   gop=50)
        tmp.rename(path)
    return path


def percentile(values: list[float], q: float) -> float | None:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else None


def step(registry: StreamRegistry, names: list[str], seconds: float) -> dict:
    """Counts over `seconds` of every stream's results (after its warm-up)."""
    marks = {n: _last_id(registry, n) for n in names}
    dropped_before = {n: registry.status(n).get("dropped", 0) or 0 for n in names}
    reasons_before = {n: registry.status(n).get("drop_reasons") or {} for n in names}
    time.sleep(seconds)
    latencies, segments = [], {}
    for name in names:
        results = [r for _, r in registry.results(name, after=marks[name], count=100_000)]
        segments[name] = len(results)
        latencies += [r["published_at"] - r["captured_at"] for r in results]
    dropped = {n: (registry.status(n).get("dropped", 0) or 0) - dropped_before[n] for n in names}
    reasons: dict[str, int] = {}  # why, over all streams (the stream runner's drop_reasons)
    for n in names:
        for reason, count in (registry.status(n).get("drop_reasons") or {}).items():
            reasons[reason] = reasons.get(reason, 0) + count - reasons_before[n].get(reason, 0)
    return {"segments_per_stream_s": min(segments.values()) / seconds,
            "segments_per_stream_s_max": max(segments.values()) / seconds,
            "dropped": sum(dropped.values()), "dropped_min": min(dropped.values()),
            "dropped_max": max(dropped.values()), "drop_reasons": {k: v for k, v in reasons.items() if v},
            "latency_p50_s": percentile(latencies, 0.5), "latency_p95_s": percentile(latencies, 0.95)}


def _last_id(registry: StreamRegistry, name: str) -> str:
    from services.store import keys

    last = registry.r.xrevrange(keys.stream_results(name), count=1)
    return last[0][0].decode() if last else "0-0"


def measure_streams(size: str | None, model: str, counts=(8, 16, 24, 32, 40, 48), seconds: float = 30.0,
                    video: Path | None = None, stride_s: float | None = None) -> dict:
    """Steps of more and more cameras on one stack, until a second count cannot keep real time.
    `video`: what every camera plays (looped, in real time) instead of the generated camera file of `size`;
    `stride_s`: a window every so many seconds per camera (`watch --stride`; default: back to back)."""
    clip_s = get_spec(model).clip_seconds
    every_s = stride_s or clip_s
    if video is None:
        video = camera_video(SIZES[size])
    else:
        with Video(str(video)) as opened:
            size = f"{opened.info.width}x{opened.info.height} ({video.name})"
    rows, watched, failures = [], 0, 0
    # one `up` reads every camera of the largest step (REELFLOW_MAX_STREAMS would leave the rest waiting)
    with Stack(model, env={"REELFLOW_MAX_STREAMS": str(max(counts))}) as stack:
        registry = StreamRegistry(redis.Redis.from_url((stack.home / "redis" / "url").read_text().strip()))
        for count in counts:
            while watched < count:
                watched += 1
                registry.register(StreamSpec(name=f"cam{watched}", url=str(video), model=model, weights="none",
                                             stride_s=stride_s))
            time.sleep(WARMUP_S if rows else FIRST_WARMUP_S)  # new streams open and fill their first windows
            row = {"streams": count, **step(registry, [f"cam{i + 1}" for i in range(count)], seconds)}
            # (one window fewer than the step's length holds: a stride of seconds meets the step's ends unevenly)
            least = min(0.9 / every_s, (seconds / every_s - 1) / seconds)
            row["real_time"] = row["segments_per_stream_s"] >= least and row["dropped"] == 0
            rows.append(row)
            print(f"[streams] {size} {count}: {row}", flush=True)
            failures += not row["real_time"]
            if failures == 2:
                break
    sustained = max((r["streams"] for r in rows if r["real_time"]), default=0)
    return {"model": model, "size": size, "clip_s": clip_s, "every_s": every_s, "seconds": seconds, "rows": rows,
            "sustained": sustained,
            "target_s": Settings.from_env().stream_latency_s}


def markdown(results: list[dict]) -> list[str]:
    """Lines for results.md: a table per camera size."""
    def ms(v):
        return f"{v * 1000:.0f} ms" if v is not None else "-"

    lines = []
    for result in results:
        lines += [f"Live streams ({result['model']}, {result['size']} 25 fps cameras played in real time, one "
                  f"`reelflow up`; {result['seconds']:.0f} s per step; real time is one segment per "
                  f"{result.get('every_s', result['clip_s'])} s per stream; latency target {ms(result['target_s'])}):", "",
                  "| streams | segments/s per stream (slowest, fastest) | dropped (per stream: fewest, most) "
                  "| latency p50 | latency p95 | keeps up |", "|---|---|---|---|---|---|"]
        for r in result["rows"]:
            lines.append(f"| {r['streams']} | {r['segments_per_stream_s']:.3f}, {r['segments_per_stream_s_max']:.3f} "
                         f"| {r['dropped']} ({r['dropped_min']}, {r['dropped_max']}){_why(r)} | {ms(r['latency_p50_s'])} "
                         f"| {ms(r['latency_p95_s'])} | {'yes' if r['real_time'] else 'no'} |")
        lines += ["", f"Sustained at {result['size']} with no window dropped: **{result['sustained']} streams**.", ""]
    return lines[:-1]


def _why(row: dict) -> str:
    """The drops' reasons, for the table: "; skipped 20, late 3" (rows measured before they were kept: "")."""
    reasons = row.get("drop_reasons") or {}
    return "; " + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])) if reasons else ""
