"""Real RTSP cameras for tests: tests/support/rtsp_server.py (GStreamer's RTSP server) on loopback."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from support.stack_process import free_port

SERVER = Path(__file__).with_name("rtsp_server.py")
SYSTEM_PYTHON = "/usr/bin/python3"


class Camera:
    """A looping video served at rtsp://127.0.0.1:PORT/cam; `stop()` and `start()` again make an outage."""

    def __init__(self, video: Path, port: int | None = None, protocols: str = "both"):
        self.video, self.port, self.protocols = video, port or free_port(), protocols
        self.url = f"rtsp://127.0.0.1:{self.port}/cam"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Camera:
        check = subprocess.run([SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0')"],
                               capture_output=True)
        if check.returncode != 0:  # fail, never skip: `make test` installs it
            pytest.fail("needs GStreamer's RTSP server for Debian's python3: run `make system-deps`")
        self.proc = subprocess.Popen([SYSTEM_PYTHON, str(SERVER), str(self.video), "--port", str(self.port),
                                      "--mount", "/cam", "--protocols", self.protocols], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().strip()
        if not line.startswith("READY "):
            self.stop()
            raise AssertionError(f"RTSP server did not start: {line} {self.proc.stderr.read()[-2000:]}")
        return self

    def stop(self) -> None:
        """Stops the server; fails the test if it had died on its own (the test's outage was not its own)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
            return
        raise AssertionError(f"the RTSP test server had died on its own (exit {proc.returncode}): "
                             f"{proc.stderr.read()[-2000:].strip()}")
