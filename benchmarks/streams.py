"""Live streams in `make bench`: how many real-time 360p cameras one stack keeps up with.

Cameras are real RTSP servers (tests/support/rtsp_server.py, GStreamer) each looping a 360p video at its
own frame rate. On one `reelflow up` stack, 4, 8, 12, 16... streams are watched at once; after a
warm-up, each step counts over `seconds`: segments per stream per second (real time is one per clip
length), clips dropped because the model fell behind, and the latency `published_at - captured_at`
(p50, p95). A count is sustained when every stream keeps real time with zero drops.
"""

from __future__ import annotations

import time
from pathlib import Path

import redis

from bulk import Stack
from pipelines.models import get_spec
from support.rtsp_camera import Camera
from services.store.streams import StreamRegistry, StreamSpec

WARMUP_S = 8.0


def percentile(values: list[float], q: float) -> float | None:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else None


def step(registry: StreamRegistry, names: list[str], seconds: float) -> dict:
    """Counts over `seconds` of every stream's results (after its warm-up)."""
    marks = {n: _last_id(registry, n) for n in names}
    dropped_before = {n: registry.status(n).get("dropped", 0) or 0 for n in names}
    time.sleep(seconds)
    latencies, segments = [], {}
    for name in names:
        results = [r for _, r in registry.results(name, after=marks[name], count=100_000)]
        segments[name] = len(results)
        latencies += [r["published_at"] - r["captured_at"] for r in results]
    dropped = sum((registry.status(n).get("dropped", 0) or 0) - dropped_before[n] for n in names)
    return {"segments_per_stream_s": min(segments.values()) / seconds, "dropped": dropped,
            "latency_p50_s": percentile(latencies, 0.5), "latency_p95_s": percentile(latencies, 0.95)}


def _last_id(registry: StreamRegistry, name: str) -> str:
    from services.store import keys

    last = registry.r.xrevrange(keys.stream_results(name), count=1)
    return last[0][0].decode() if last else "0-0"


def measure_streams(video: Path, model: str, counts=(4, 8, 16, 24, 32), seconds: float = 30.0) -> dict:
    """Steps of more and more cameras on one stack, until one cannot keep real time."""
    clip_s = get_spec(model).clip_seconds
    rows, cameras = [], []
    with Stack(model) as stack:
        registry = StreamRegistry(redis.Redis.from_url((stack.home / "redis" / "url").read_text().strip()))
        try:
            for count in counts:
                while len(cameras) < count:
                    cameras.append(Camera(video).start())
                    name = f"cam{len(cameras)}"
                    registry.register(StreamSpec(name=name, url=cameras[-1].url, model=model, weights="none"))
                time.sleep(WARMUP_S)  # new streams connect and fill their first windows
                row = {"streams": count, **step(registry, [f"cam{i + 1}" for i in range(count)], seconds)}
                row["real_time"] = row["segments_per_stream_s"] >= 0.9 / clip_s and row["dropped"] == 0
                rows.append(row)
                print(f"[streams] {count}: {row}", flush=True)
                if not row["real_time"]:
                    break
        finally:
            for camera in cameras:
                camera.stop()
    sustained = max((r["streams"] for r in rows if r["real_time"]), default=0)
    return {"model": model, "clip_s": clip_s, "seconds": seconds, "rows": rows, "sustained": sustained}


def markdown(result: dict) -> list[str]:
    """Lines for results.md."""
    def ms(v):
        return f"{v * 1000:.0f} ms" if v is not None else "-"

    lines = [f"Live streams ({result['model']}, 360p RTSP cameras in real time, one `reelflow up`; "
             f"{result['seconds']:.0f} s per step; real time is one segment per {result['clip_s']} s per stream):",
             "", "| streams | segments/s per stream (slowest) | dropped | latency p50 | latency p95 | keeps up |",
             "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['streams']} | {r['segments_per_stream_s']:.3f} | {r['dropped']} | {ms(r['latency_p50_s'])} "
                     f"| {ms(r['latency_p95_s'])} | {'yes' if r['real_time'] else 'no'} |")
    lines += ["", f"Sustained with zero drops: **{result['sustained']} streams**."]
    return lines
