"""The vector index at archive scale: build time, memory, disk and query latency at N segments.

Loads N synthetic segment embeddings (2048 values, as x3d's; "videos" of 100 segments drifting
around a random direction, so that neighbours exist as in real footage) into a fresh index with the
same code the indexer uses, trains the ANN index, then times queries: an indexed segment (which must
come back first) and a perturbed copy of one (noise at 10% of its norm), each with and without a
filter. Writes benchmarks/search.md.

    python benchmarks/search.py --rows 1000000            # ~15 minutes here
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from services.index.vectors import VectorIndex  # noqa: E402

DIM, PER_VIDEO, CHUNK = 2048, 100, 50_000


def vectors(lo: int, hi: int) -> np.ndarray:
    """Rows lo..hi of the synthetic archive, the same on every call."""
    out = np.empty((hi - lo, DIM), np.float32)
    for video in range(lo // PER_VIDEO, (hi - 1) // PER_VIDEO + 1):
        rng = np.random.default_rng(video)
        base = rng.standard_normal(DIM).astype(np.float32)
        walk = np.cumsum(rng.standard_normal((PER_VIDEO, DIM)).astype(np.float32) * 0.15, axis=0)
        rows = base + walk
        a, b = max(lo, video * PER_VIDEO), min(hi, (video + 1) * PER_VIDEO)
        out[a - lo:b - lo] = rows[a - video * PER_VIDEO:b - video * PER_VIDEO]
    return out


def rows(lo: int, hi: int) -> list[dict]:
    v = vectors(lo, hi)
    return [{"id": f"job:v{i // PER_VIDEO}:{i % PER_VIDEO}", "kind": "job", "job": f"v{i // PER_VIDEO}", "stream": "",
             "source": f"/archive/{i // PER_VIDEO}.mp4", "segment": i % PER_VIDEO, "start_s": 1.6 * (i % PER_VIDEO),
             "end_s": 1.6 * (i % PER_VIDEO) + 1.6, "label": f"label{i % 400}", "score": 0.5, "at": 1.7e9 + i,
             "model": "x3d_xs", "weights": "bench", "vector": v[i - lo]} for i in range(lo, hi)]


def timed_queries(index: VectorIndex, n: int, total: int, noise: float, filtered: bool) -> tuple[list, float]:
    rng = np.random.default_rng(1)
    latencies, hits = [], 0
    for i in rng.integers(0, total, n):
        v = vectors(int(i), int(i) + 1)[0]
        if noise:
            v = v + rng.standard_normal(DIM).astype(np.float32) * noise * np.linalg.norm(v) / np.sqrt(DIM)
        started = time.perf_counter()
        where = f"label = 'label{i % 400}'" if filtered else None  # the segment's own label: 1 row in 400
        found = index.search("x3d_xs", "bench", v, top=10, where=where)
        latencies.append(time.perf_counter() - started)
        hits += bool(found) and found[0].row["id"] == f"job:v{i // PER_VIDEO}:{i % PER_VIDEO}"
    return latencies, hits / n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--dir", default=None, help="where to build the index (default: a temporary directory)")
    parser.add_argument("--out", default=str(Path(__file__).with_name("search.md")))
    args = parser.parse_args()
    root = Path(args.dir or tempfile.mkdtemp(prefix="reelflow-search-bench-"))
    shutil.rmtree(root, ignore_errors=True)
    index = VectorIndex(root)
    started = time.perf_counter()
    for lo in range(0, args.rows, CHUNK):
        index.add(rows(lo, min(args.rows, lo + CHUNK)))
        print(f"\r{min(args.rows, lo + CHUNK):>9} rows added", end="", file=sys.stderr, flush=True)
    added = time.perf_counter() - started
    started = time.perf_counter()
    index.maintain()
    built = time.perf_counter() - started
    print(file=sys.stderr)
    [stats] = index.stats()
    index.search("x3d_xs", "bench", vectors(0, 1)[0], top=10)  # warm: the index's first read
    results = {}
    for name, noise, filtered in [("an indexed segment", 0.0, False), ("a perturbed segment (10% noise)", 0.1, False),
                                  ("an indexed segment, filtered by label (1 row in 400)", 0.0, True)]:
        latencies, hit_rate = timed_queries(index, args.queries, args.rows, noise, filtered)
        ms = np.array(latencies) * 1000
        results[name] = (np.percentile(ms, 50), np.percentile(ms, 95), hit_rate)
        print(f"{name}: p50 {results[name][0]:.1f} ms, p95 {results[name][1]:.1f} ms, found itself first "
              f"{hit_rate:.0%}", file=sys.stderr)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lines = [
        "# The vector index at archive scale", "",
        f"`python benchmarks/search.py --rows {args.rows}` on this machine ({time.strftime('%Y-%m-%d')}): "
        f"{args.rows:,} synthetic segments of {DIM} values, one LanceDB table, IVF index with RaBitQ codes; "
        f"{args.queries} top-10 queries of each kind, one at a time, from one process.", "",
        "| | value |", "|---|---|",
        f"| rows added (in batches of {CHUNK:,}) | {added:.0f} s ({args.rows / added:,.0f} rows/s) |",
        f"| ANN index trained | {built:.0f} s |",
        f"| on disk | {stats['bytes'] / 2**30:.2f} GiB |",
        f"| peak memory of the process (adding, training, querying) | {rss / 1024:.2f} GiB |", "",
        "| query | p50 | p95 | the segment itself first |", "|---|---|---|---|",
        *(f"| {name} | {p50:.1f} ms | {p95:.1f} ms | {hit:.0%} |" for name, (p50, p95, hit) in results.items()),
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out}", file=sys.stderr)
    if not args.dir:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
