"""A video's segment embeddings for a search (`--like VIDEO`, `--duplicates-of VIDEO`, and the
HTTP API's `video` / `duplicates_of`): `reelflow classify --json --embeddings` in a child process,
which checks the path, loads the model lazily and survives a decoder crash, and whose embeddings
are exactly those a stack stores for the same model and weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from pipelines.errors import ReelflowError
from services.index.search import Query, SearchError, like_video


def embed_video(path: str, model: str, weights: str, *, at: float | None = None, runtime: str | None = None,
                flag: str = "--like", timeout_s: float | None = None) -> Query:
    """The query of video `path` (a file or URL): the segment covering `at` seconds, or every segment.
    `flag` names the option in errors (a one-line ReelflowError each)."""
    if "://" not in path and not os.path.exists(path):
        raise SearchError(f"{flag} {path!r}: no such file, and not JOB:SEGMENT; pass a video file or a job's segment")
    command = [sys.executable, "-m", "services", "classify", path, "--json", "--embeddings", "--model", model,
               "--weights", weights, "--topk", "1"] + (["--runtime", runtime] if runtime else [])
    try:
        done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise ReelflowError(f"{flag} {path}: not classified within {timeout_s:g} s; pass a shorter video "
                            "or a segment (--at)") from None
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        errors = [line for line in lines if line.startswith("reelflow: error: ")] or lines[-1:]
        reason = errors[-1] if errors else f"exit status {done.returncode}"
        raise ReelflowError(f"{flag} {path}: {reason.removeprefix('reelflow: error: ')}")
    segments = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    weights_id = segments[0]["weights"] if segments else weights  # the id the index keys its tables by
    return like_video([{"start_s": s["start_s"], "end_s": s["end_s"], "embedding": s["embedding"]} for s in segments],
                      model, weights_id, path, at)
