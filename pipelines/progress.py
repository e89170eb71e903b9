"""The one progress bar of reelflow (tqdm's), for every long task: jobs waited on, a video being
annotated, a model being trained. On a terminal it is a live bar on stderr; elsewhere (a log
file, CI) it prints one plain line when it closes, and lines written through it stay plain.

    >>> bar = Bar("annotating", total=100, unit="frame")          # doctest: +SKIP
    >>> bar.update(10); bar.close()
"""

from __future__ import annotations

import os
import sys

PREFIX = "reelflow"


class Bar:
    def __init__(self, desc: str, total: int | None = None, unit: str = "it", quiet: bool = False):
        self.desc, self.total, self.unit, self.quiet = desc, total, unit, quiet
        self.done, self.stats = 0, {}
        self.live = not quiet and sys.stderr.isatty()
        self._tqdm = None
        if self.live:  # a terminal that does not know its width (a fresh pty) gets 80 columns
            from tqdm import tqdm  # only for a live bar: ~40 ms of start-up that plain output does without

            width = {} if _columns() else {"ncols": 80, "nrows": 24}
            self._tqdm = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=not width, **width)

    def update(self, n: int = 1, **stats: float) -> None:
        """`n` more done; `stats` (say, loss=0.31) shown beside the bar."""
        self.set(self.done + n, **stats)

    def set(self, done: int, total: int | None = None, **stats: float) -> None:
        """Where the task is now: `done` of `total` (the total may become known or change on the way)."""
        self.stats = stats or self.stats
        if total is not None:
            self.total = total
        if self._tqdm is not None:
            if total is not None and self._tqdm.total != total:
                self._tqdm.total = total
            if stats:
                self._tqdm.set_postfix({k: f"{v:.3f}" for k, v in stats.items()}, refresh=False)
            self._tqdm.update(done - self.done)
        self.done = done

    def write(self, line: str, err: bool = False) -> None:
        """A line of output (stdout, or stderr with `err`) above the bar."""
        out = sys.stderr if err else sys.stdout
        if self._tqdm is not None:
            self._tqdm.write(line, file=out)
        else:
            print(line, file=out, flush=True)

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
        elif not self.quiet:
            stats = "".join(f", {k} {v:.3f}" for k, v in self.stats.items())
            total = f"/{self.total}" if self.total else ""
            print(f"{PREFIX}: {self.desc}: {self.done}{total} {self.unit}s{stats}", file=sys.stderr, flush=True)

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is not None:  # the task failed: its error says so, not a closing tally
            self.quiet = True
        self.close()


def _columns() -> int:
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns
    except (OSError, ValueError):
        return 0
