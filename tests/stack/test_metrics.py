"""Prometheus metrics (issue 19, part 1; the in-process stack so far): `reelflow up --metrics-port`
scraped by a real Prometheus server, read back through its query API."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import redis
import yaml

from pipelines.synthetic import make_video
from services.metrics import METRICS, markdown_table
from support.receivers import Prometheus
from support.rtsp_camera import Camera
from support.stack_process import UpProcess, free_port, run, stack_env, wait_until

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MONITORING = ROOT / "k8s" / "monitoring"
NAMES = {m.name for m in METRICS}


def _names_in(expression: str) -> set[str]:
    """The reelflow metrics a PromQL expression reads (a histogram's by its name)."""
    return {re.sub(r"_(bucket|count|sum)$", "", n) for n in re.findall(r"\breelflow_[a-z_]+", expression)}


def _dashboard_expressions() -> list[str]:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_the_alert_rules_pass_promtool_and_the_operator_gets_the_same_rules():
    check = subprocess.run(["promtool", "check", "rules", str(MONITORING / "alerts.rules.yaml")], capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    plain = yaml.safe_load((MONITORING / "alerts.rules.yaml").read_text())["groups"]
    operator = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    assert operator["kind"] == "PrometheusRule" and operator["spec"]["groups"] == plain
    for rule in (r for g in plain for r in g["rules"]):  # reelflow's metrics, or Ray Serve's (replica health)
        assert _names_in(rule["expr"]) <= NAMES, rule["alert"]
        assert _names_in(rule["expr"]) or "ray_serve_deployment_replica" in rule["expr"], rule["alert"]


def test_the_dashboard_loads_and_reads_only_metrics_of_the_table():
    expressions = _dashboard_expressions()
    assert len(expressions) >= 10
    read = set().union(*map(_names_in, expressions))
    assert read == NAMES, NAMES ^ read  # every metric on a panel, and no panel on a metric that does not exist


def test_the_readme_lists_every_metric_and_names_follow_the_conventions():
    assert markdown_table() in README.read_text(), "README's metrics table is stale: python -m services.metrics"
    for m in METRICS:
        assert m.name.startswith("reelflow_") and m.name == m.name.lower()
        assert m.name.endswith("_total") == (m.kind == "counter"), m.name
        assert "job_id" not in m.labels and "id" not in m.labels  # bounded label values only
        if m.kind == "histogram":  # in base units: seconds, or a count of things named by the unit
            assert m.name.endswith(("_seconds", "_clips")) and list(m.buckets) == sorted(m.buckets), m.name


@pytest.mark.slow  # `make test` stays under 15 minutes (21 min before): `make test-slow`
def test_prometheus_scrapes_jobs_queue_and_a_live_cameras_counters(tmp_path, video_dir):
    video = video_dir / "metrics_3s.mp4"
    make_video(video, seconds=3.0, fps=15, size=(160, 120))
    camera_video = video_dir / "metrics_camera.mp4"
    make_video(camera_video, seconds=4.0, fps=25, size=(160, 120))
    home = tmp_path / "home"
    env = stack_env(home, REELFLOW_SINKS=f"file://{tmp_path / 'sink'}")
    port = free_port()
    camera = Camera(camera_video).start()
    up = UpProcess(home, env, "--no-ray", "--weights", "none", "--metrics-port", str(port))
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            assert 'reelflow_queue_jobs{state="waiting"} 0.0' in r.read().decode()
        with Prometheus(tmp_path, [f"127.0.0.1:{port}"]) as prom:
            out = run(env, "submit", *[video] * 3, "--weights", "none", "--stride", "0.5", "--wait", "--json").stdout
            job_ids = [line["job_id"] for line in map(json.loads, out.splitlines()) if "created" in line]
            client = redis.Redis.from_url((home / "redis" / "url").read_text().strip())
            stored = sum(client.hlen(f"reelflow:job:{j}:segments") for j in job_ids)
            wait_until(lambda: prom.value("sum(reelflow_segments_stored_total)") == stored, 60,
                       "Prometheus does not see every stored segment", up)
            assert prom.value('reelflow_jobs_ended_total{state="done"}') == 3
            assert prom.value("sum(reelflow_job_duration_seconds_count)") == 3
            assert prom.value('reelflow_queue_jobs{state="waiting"}') == 0

            run(env, "watch", camera.url, "--name", "cam", "--weights", "none")
            frames = wait_until(lambda: prom.value('reelflow_stream_frames_total{stream="cam"}'), 60,
                                "no frames counted", up)
            wait_until(lambda: prom.value('reelflow_stream_frames_total{stream="cam"}') > frames + 25, 30,
                       "the frames counter does not move", up)
            wait_until(lambda: (prom.value('reelflow_stream_latency_seconds_count{stream="cam"}') or 0) >= 2, 30,
                       "no latency observed", up)
            assert prom.value('reelflow_stream_up{stream="cam"}') == 1
            reconnects = prom.value('reelflow_stream_reconnects_total{stream="cam"}') or 0
            camera.stop()  # an outage: the stream goes stale, reconnects when the camera is back
            time.sleep(8)
            camera.start()
            wait_until(lambda: (prom.value('reelflow_stream_reconnects_total{stream="cam"}') or 0) > reconnects, 60,
                       "the reconnect counter did not rise after the outage", up)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
                text = r.read().decode()
            scraped = set(re.findall(r"^(reelflow_[a-z_]+?)(?:_bucket|_count|_sum|_created)?[{ ]", text, re.M))
            later = {"reelflow_sink_failures_total", "reelflow_sink_dead_lettered_total",
                     "reelflow_stream_dropped_total", "reelflow_jobs_retried_total",
                     "reelflow_stream_cheap_gops_total"}  # with a first failure, drop, or reader behind
            on_ray = {m.name for m in METRICS if m.name.startswith(("reelflow_replica_", "reelflow_model_",
                                                                    "reelflow_decode_"))}
            used = set().union(*map(_names_in, _dashboard_expressions())) - later - on_ray
            assert used <= scraped, used - scraped
    finally:
        up.stop()
        camera.stop()


@pytest.mark.slow  # a Ray stack: `make test-slow`
def test_on_ray_one_scrape_of_up_has_the_stream_hosts_metrics_and_rays(tmp_path, video_dir):
    camera_video = video_dir / "metrics_ray_camera.mp4"
    make_video(camera_video, seconds=4.0, fps=25, size=(160, 120))
    home = tmp_path / "home"
    env = stack_env(home)
    port = free_port()
    camera = Camera(camera_video).start()
    up = UpProcess(home, env, "--weights", "none", "--metrics-port", str(port), ready_within=180)
    try:
        with Prometheus(tmp_path, [f"127.0.0.1:{port}"]) as prom:
            run(env, "watch", camera.url, "--name", "cam", "--weights", "none")
            frames = wait_until(lambda: prom.value('sum(reelflow_stream_frames_total{stream="cam"})'), 120,
                                "the stream host's frames are not in up's scrape", up)
            wait_until(lambda: prom.value('sum(reelflow_stream_frames_total{stream="cam"})') > frames, 60,
                       "the frames counter does not move", up)
            assert prom.value('sum(reelflow_stream_windows_total{stream="cam"})') > 0
            video = video_dir / "metrics_ray_job.mp4"
            make_video(video, seconds=3.0, fps=15, size=(160, 120))
            run(env, "submit", video, "--weights", "none", "--wait")
            for name in ("reelflow_replica_batch_clips_count", "reelflow_replica_forward_seconds_count",
                         "reelflow_decode_seconds_count"):  # the model replica's, from its Ray worker
                wait_until(lambda n=name: prom.value(f"sum({n})"), 60, f"{name} is not in up's scrape", up)
            wait_until(lambda: prom.value('max(reelflow_model_replicas{model="x3d_xs"})') == 1, 30,
                       "the replica count is not in up's scrape", up)
            assert prom.query('{__name__=~"ray_serve_.+"}'), "Ray Serve's own metrics are missing"
            # the replica alerts' series, by the names and labels the shipped rules use
            healthy = prom.query("ray_serve_deployment_replica_healthy")
            assert healthy and all({"application", "deployment"} <= set(s["metric"]) for s in healthy), healthy
            assert prom.query('{__name__=~"ray_serve_deployment_replica_starts(_total)?"}')
            assert not prom.query('{__name__=~"ray_reelflow_.+"}')  # served under their own names
    finally:
        up.stop()
        camera.stop()
