"""The file sink: JSON lines appended to `<dir>/reelflow.jsonl`, for people who tail logs.

`file:///var/log/reelflow` (an absolute directory; made if missing). The file is rotated as
logrotate would: at ROTATE_BYTES it becomes `reelflow.jsonl.1` (the older ones `.2` ... up to
KEEP, the oldest deleted) and a new one starts. Each batch is written and flushed to the disk
before it counts as delivered.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pipelines.errors import one_line
from services.sinks.base import DeliveryError, Sink, SinkError, kind

FILE_NAME = "reelflow.jsonl"
ROTATE_BYTES = 64 * 2**20
KEEP = 5


def _directory(url: str) -> Path:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
        raise SinkError(f"file sink {url!r}: give an absolute directory with three slashes, file:///var/log/reelflow")
    return Path(unquote(parts.path))


@kind("file")
class FileSink(Sink):
    name = "file"

    def __init__(self, url, settings):
        super().__init__(url, settings)
        self.dir = _directory(url)

    @classmethod
    def check_url(cls, url, settings) -> None:
        directory = _directory(url)
        try:
            is_file = directory.exists() and not directory.is_dir()
        except OSError:  # not ours to look into here: the stack, which writes it, checks it at `up`
            return
        if is_file:
            raise SinkError(f"file sink {url!r}: {directory} is a file, not a directory; name a directory")

    @classmethod
    def check_stack(cls, url, settings) -> None:
        """At `up`, on the machine that writes it: the directory made, and writable."""
        directory = _directory(url)
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SinkError(f"file sink {url!r}: cannot make {directory} ({one_line(e)}); "
                            "choose a directory the stack may write") from None
        if not os.access(directory, os.W_OK):
            raise SinkError(f"file sink {url!r}: {directory} is not writable; choose a directory the stack may write")

    def send(self, messages: list[dict]) -> None:
        path = self.dir / FILE_NAME
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            if path.exists() and path.stat().st_size >= ROTATE_BYTES:
                self._rotate(path)
            with open(path, "a", encoding="utf-8") as f:
                start = f.tell()
                try:
                    f.write("".join(json.dumps(m) + "\n" for m in messages))
                    f.flush()
                    os.fsync(f.fileno())
                except OSError:
                    f.truncate(start)  # no half-written line for the next try to append to
                    raise
        except OSError as e:  # a full disk, a directory made read-only: tried again later
            raise DeliveryError(f"cannot write {path} ({one_line(e)})") from None

    @staticmethod
    def _rotate(path: Path) -> None:
        for n in range(KEEP, 0, -1):
            older = path.with_name(f"{path.name}.{n}")
            if older.exists():
                if n == KEEP:
                    older.unlink()
                else:
                    older.rename(path.with_name(f"{path.name}.{n + 1}"))
        path.rename(path.with_name(f"{path.name}.1"))
