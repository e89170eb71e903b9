"""Evidence clips' memory over time (issue 22): one live stream recording clips (pre 5 s, post 5 s,
a clip every CLIP_EVERY_S), its packet ring's bytes and packets and this process's RSS sampled
every SAMPLE_S for --minutes, the camera a 640x360 25 fps file played in real time and looped.

    $ .venv/bin/python benchmarks/clips_memory.py --minutes 10     # writes benchmarks/clips.md
"""

from __future__ import annotations

import argparse
import datetime
import tempfile
import threading
import time
from pathlib import Path

from pipelines.live import LiveSource
from pipelines.recording import ClipWriter, PacketRing

HERE = Path(__file__).parent
CAMERA = HERE / "corpus" / "camera_640x360_25fps.mp4"
PRE_S, POST_S, WINDOW_S, LATENCY_S = 5.0, 5.0, 2.13, 1.0
CLIP_EVERY_S = 30.0
SAMPLE_S = 10.0


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--camera", default=str(CAMERA), help="a video played live and looped (default: the bench's "
                                                              "640x360 camera; `make bench` generates it)")
    parser.add_argument("--out", default=str(HERE / "clips.md"))
    args = parser.parse_args(argv)
    if not Path(args.camera).exists():
        raise SystemExit(f"{args.camera} is missing; run `make bench` once (it generates the corpus) or pass --camera")
    ring = PacketRing(keep_s=PRE_S + WINDOW_S + LATENCY_S + 1.0)  # as services.worker.recorder sizes it
    source = LiveSource(args.camera, ring=ring)
    stop = threading.Event()
    out_dir = Path(tempfile.mkdtemp(prefix="reelflow-clips-bench-"))
    samples, clips = [], []
    started = time.monotonic()
    next_sample = next_clip = started + SAMPLE_S
    for live in source.frames(stop):
        now = time.monotonic()
        if now >= next_clip:
            clips.append(ClipWriter(ring, out_dir / f"c{len(clips)}.mp4", live.time_s - PRE_S,
                                    live.time_s + POST_S).start())
            next_clip = now + CLIP_EVERY_S
        if now >= next_sample:
            samples.append((now - started, ring.bytes, len(ring.held), rss_mib()))
            print(f"{samples[-1][0]:6.0f} s  ring {ring.bytes / 2**20:6.2f} MiB  {len(ring.held):4d} packets  "
                  f"RSS {samples[-1][3]:7.1f} MiB  clips {len(clips)}", flush=True)
            next_sample = now + SAMPLE_S
        if now - started >= args.minutes * 60:
            break
    stop.set()
    for clip in clips:
        clip.wait(30)
    ready = sum(c.state == "ready" for c in clips)
    reasons = sorted({c.reason for c in clips if c.state != "ready"})
    first, last = samples[len(samples) // 10], samples[-1]  # after warm-up, and at the end
    ring_max = max(s[1] for s in samples) / 2**20
    lines = [
        f"# Evidence clips: memory over {args.minutes:g} minutes",
        "",
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}; camera {Path(args.camera).name} played "
        f"live and looped; ring keeps {ring.keep_s:.2f} s (pre {PRE_S:g} + a window + the latency target + 1); "
        f"a clip (pre {PRE_S:g} s, post {POST_S:g} s) every {CLIP_EVERY_S:g} s: {ready} of {len(clips)} ready"
        + (f" (failed: {'; '.join(reasons)})" if reasons else "") + ". The file loops: the source reconnects at its "
        "end and the ring starts over (the small samples).",
        "",
        "| | at {:.0f} s | at {:.0f} s | max |".format(first[0], last[0]),
        "|---|---|---|---|",
        f"| ring bytes (MiB) | {first[1] / 2**20:.2f} | {last[1] / 2**20:.2f} | {ring_max:.2f} |",
        f"| ring packets | {first[2]} | {last[2]} | {max(s[2] for s in samples)} |",
        f"| process RSS (MiB) | {first[3]:.1f} | {last[3]:.1f} | {max(s[3] for s in samples):.1f} |",
        "",
        "Reproduce: `.venv/bin/python benchmarks/clips_memory.py --minutes 10`.",
    ]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
