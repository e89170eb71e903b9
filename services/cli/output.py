"""Everything the CLI writes that is not a one-off line: segment results as JSON lines or CSV (one
writer for `classify --json`, `results` and `process`), output files that never replace an earlier
run's by accident and never stay half-written, and the file names `process` gives each video.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

from pipelines.errors import ReelflowError, one_line

CSV_COLUMNS = ["job_id", "index", "start_s", "end_s", "frames", "model", "weights", "labels", "scores"]


class SegmentWriter:
    """Segment result dicts to `out`, as JSON lines (`jsonl`) or CSV with a header (`csv`: labels and
    scores joined with `|`)."""

    def __init__(self, out: IO[str], format: str = "jsonl", job_id: str | None = None):
        if format not in ("jsonl", "csv"):
            raise ValueError(f"unknown format {format!r}; use jsonl or csv")
        self.out, self.format, self.job_id = out, format, job_id
        self._csv = None
        if format == "csv":
            self._csv = csv.writer(out)
            self._csv.writerow(CSV_COLUMNS)

    def write(self, segment: dict) -> None:
        if self._csv is None:
            self.out.write(json.dumps(segment) + "\n")
        else:
            self._csv.writerow([segment.get("job_id", self.job_id), segment["index"], segment["start_s"],
                                segment["end_s"], segment["frames"], segment["model"], segment["weights"],
                                "|".join(segment["labels"]), "|".join(f"{x:.6g}" for x in segment["scores"])])
        if self.out is sys.stdout:
            self.out.flush()  # a reader of a pipe sees each segment as it comes

    def write_all(self, segments) -> int:
        """Write each segment (a list, or an iterator that yields them as they come); how many."""
        count = 0
        for count, segment in enumerate(segments, 1):
            self.write(segment)
        return count


def refuse_existing(paths: list[Path], overwrite: bool, option: str = "-o") -> None:
    """A one-line error if any output file exists already, unless `overwrite`; checked before any work."""
    for path in paths:
        if path.is_dir():
            raise ReelflowError(f"{path} is a directory; give a file name")
    existing = [p for p in paths if p.exists()]
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise ReelflowError(f"{existing[0]} exists already{more}, from an earlier run?; pass --overwrite to "
                            f"replace it, or choose another {option}")


def check_output(path: str | os.PathLike, overwrite: bool) -> Path:
    """One output file, checked before any work: its folder exists, and it does not (unless `overwrite`)."""
    target = Path(path)
    if not target.parent.is_dir():
        raise ReelflowError(f"cannot write {str(target)!r}: no such directory")
    refuse_existing([target], overwrite)
    return target


@contextmanager
def output_file(path: str | os.PathLike, overwrite: bool = False, binary: bool = False) -> Iterator[IO]:
    """Write `path` whole or not at all: into `<path>.part`, renamed over `path` when the block ends
    without an error. Refuses an existing `path` unless `overwrite`."""
    target = check_output(path, overwrite)
    part = target.with_name(target.name + ".part")
    try:
        with open(part, "wb" if binary else "w", **({} if binary else {"newline": "", "encoding": "utf-8"})) as f:
            yield f
        os.replace(part, target)
    except OSError as e:
        part.unlink(missing_ok=True)
        raise ReelflowError(f"cannot write {str(target)!r} ({one_line(e)})") from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def result_names(sources: list[str]) -> list[str]:
    """The results file name of each video `process` runs, in order, never two alike:

    - `<stem>.jsonl` (`videos/door.mp4` -> `door.jsonl`) while no other input has that stem;
    - inputs that share a stem keep their extension (`door.mp4.jsonl`, `door.avi.jsonl`);
    - those that still share a name get their parent folders in front, as many as tell them apart
      (`cam1/door.mp4` -> `cam1_door.mp4.jsonl`, `cam2/door.mp4` -> `cam2_door.mp4.jsonl`);
    - the same video given twice: `~2`, `~3`... before `.jsonl` for the repeats.

    >>> result_names(["a/clip.mp4", "b/clip.mp4", "c/clip.avi", "d/other.mp4"])
    ['a_clip.mp4.jsonl', 'b_clip.mp4.jsonl', 'clip.avi.jsonl', 'other.jsonl']
    """
    parts = [_name_parts(s) for s in sources]
    stems = [p[-1].rsplit(".", 1)[0] if "." in p[-1] else p[-1] for p in parts]
    names = list(stems)

    def clashing() -> list[int]:  # the same video twice is not a clash of names
        return [i for i, n in enumerate(names) if any(names[j] == n and parts[j] != parts[i] for j in range(len(names)))]

    for i in clashing():
        names[i] = parts[i][-1]
    for depth in range(2, 1 + max(len(p) for p in parts)):
        for i in clashing():
            names[i] = "_".join(parts[i][-depth:])
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            names[i] = f"{name}~{seen[name]}"
    return [f"{n}.jsonl" for n in names]


def _name_parts(source: str) -> list[str]:
    """A source's path as folder names and the file name: an absolute local path, or a URL's host
    and path."""
    if "://" in source:
        url = urlsplit(source)
        pieces = [url.hostname or url.scheme] + [p for p in url.path.split("/") if p]
    else:
        pieces = [p for p in Path(source).expanduser().resolve().parts if p not in ("/", "")]
    return [_safe(p) for p in pieces] or ["video"]


def _safe(piece: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.," else "_" for c in piece).lstrip(".") or "_"
