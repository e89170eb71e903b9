"""The Serve application as a cluster runs it: `serve run` on the repository's Serve config.

The same config KubeRay deploys (k8s/serve-config.yaml), adjusted only to fit this machine: random
weights, half a CPU per replica, the HTTP proxy on a free loopback port. Everything else — the API
ingress, the job consumer inside Serve, the model replica — is the application as shipped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from services.store.embedded import EmbeddedRedis
from support.stack_process import free_port

ROOT = Path(__file__).resolve().parents[2]
SERVE = str(Path(sys.executable).parent / "serve")
TOKEN = "serve-run-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def local_config(tmp_path: Path, port: int) -> Path:
    config = yaml.safe_load((ROOT / "k8s" / "serve-config.yaml").read_text())
    config.update(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
    app = config["applications"][0]
    app["args"]["weights"] = "none"
    for deployment in app.get("deployments", []):
        deployment.setdefault("ray_actor_options", {})["num_cpus"] = 0.5
    path = tmp_path / "serve-config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow  # about a minute or more: `make test-slow`
def test_serve_run_on_the_shipped_config_takes_jobs_over_http(tmp_path, clip_10s):
    redis = EmbeddedRedis(tmp_path / "home")
    url = redis.start()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a local Ray of its own
    env.update(REELFLOW_REDIS_URL=url, REELFLOW_API_TOKEN=TOKEN, REELFLOW_ALLOWED_ROOTS=str(clip_10s.parent))
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen([SERVE, "run", str(local_config(tmp_path, port))], env=env, cwd=tmp_path,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                if requests.get(f"{base}/v1/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:  # refused, or held while the application starts
                pass
            assert time.monotonic() < deadline, "serve run never answered /v1/health"
            time.sleep(1)
        assert requests.get(f"{base}/v1/jobs", timeout=10).status_code == 401
        refused = requests.post(f"{base}/v1/jobs", json={"source": "/etc/passwd"}, headers=AUTH, timeout=10)
        assert refused.status_code == 403
        job = requests.post(f"{base}/v1/jobs", json={"source": str(clip_10s), "weights": "none"}, headers=AUTH,
                            timeout=10).json()
        deadline = time.monotonic() + 180
        while (record := requests.get(f"{base}/v1/jobs/{job['job_id']}", headers=AUTH, timeout=10).json()
               )["state"] not in ("done", "failed"):
            assert time.monotonic() < deadline, record
            time.sleep(0.5)
        assert record["state"] == "done" and record["segments_done"] == 7, record
        # a model the application does not serve is a clear failure, not a hang
        other = requests.post(f"{base}/v1/jobs", json={"source": str(clip_10s), "weights": "none",
                                                        "model": "x3d_s"}, headers=AUTH, timeout=10).json()
        deadline = time.monotonic() + 60
        while (record := requests.get(f"{base}/v1/jobs/{other['job_id']}", headers=AUTH, timeout=10).json()
               )["state"] != "failed":
            assert time.monotonic() < deadline, record
            time.sleep(0.5)
        assert "not served by this application" in record["error"]
        deadline = time.monotonic() + 20  # the consumer announces what it serves every 2 s
        while not (status := requests.get(f"{base}/v1/status", headers=AUTH, timeout=10).json())["models"] or \
                not status["models"][0]["replicas"]:
            assert time.monotonic() < deadline, status
            time.sleep(1)
        assert [(m["name"], m["replicas"] >= 1) for m in status["models"]] == [("x3d_xs", True)], status["workers"]
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # serve run shuts its application and local Ray down
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        redis.stop()


def test_gpu_replicas_request_their_share_of_a_gpu():
    """REELFLOW_REPLICA_GPUS reaches the replica's Ray resources; fractions let replicas share a device."""
    
    from services.ray_backend.pipeline import replica_deployment
    from services.settings import Settings

    cpu_only = Settings.from_env()
    assert "num_gpus" not in replica_deployment(cpu_only).ray_actor_options
    half = replica_deployment(cpu_only.replace(replica_gpus=0.5), name="ModelReplica-x3d_xs")
    assert half.ray_actor_options["num_gpus"] == 0.5 and half.name == "ModelReplica-x3d_xs"
