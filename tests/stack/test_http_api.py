"""The HTTP API as a new user meets it: `reelflow up --http-port P` with REELFLOW_API_TOKEN set.

One stack for the module, started in a directory of videos with no REELFLOW_ALLOWED_ROOTS: the
default policy (the stack's working directory) applies.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest
import requests

from pipelines.synthetic import make_video
from support.stack_process import REELFLOW, http_stack, run

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, clip_10s):
    base = tmp_path_factory.mktemp("http")
    (base / "videos").mkdir()
    make_video(base / "videos" / "long.mp4", seconds=30.0, fps=30)
    with http_stack(base, clip_10s, TOKEN, default_roots=True) as stack:
        yield stack


def wait_job(stack, job_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = requests.get(f"{stack['url']}/v1/jobs/{job_id}", headers=AUTH, timeout=10).json()
        if job["state"] in ("done", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not end: {job}")


def test_without_the_token_every_route_but_health_is_401(stack):
    url = stack["url"]
    assert requests.get(f"{url}/v1/health", timeout=10).json() == {"status": "ok"}
    for method, path in [("get", "/v1/jobs"), ("post", "/v1/jobs"), ("get", "/v1/status"), ("get", "/v1/streams"),
                         ("delete", "/v1/jobs/x")]:
        response = getattr(requests, method)(f"{url}{path}", json={"source": "x"}, timeout=10)
        assert response.status_code == 401, (method, path, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
    wrong = requests.get(f"{url}/v1/jobs", headers={"Authorization": "Bearer nope"}, timeout=10)
    assert wrong.status_code == 401 and "REELFLOW_API_TOKEN" in wrong.json()["detail"]


def test_a_job_posted_with_the_token_completes_and_its_segments_page_over_http(stack):
    url = stack["url"]
    body = {"source": str(stack["videos"] / "a.mp4"), "weights": "none", "topk": 3}
    created = requests.post(f"{url}/v1/jobs", json=body, headers=AUTH, timeout=10)
    assert created.status_code == 201, created.text
    job_id = created.json()["job_id"]
    assert wait_job(stack, job_id)["state"] == "done"
    segments, offset = [], 0
    while offset is not None:
        page = requests.get(f"{url}/v1/jobs/{job_id}/segments", params={"offset": offset, "limit": 3},
                            headers=AUTH, timeout=10).json()
        segments += page["segments"]
        offset = page["next_offset"]
    assert [s["index"] for s in segments] == list(range(7))
    assert all(len(s["labels"]) == 3 and "embedding_b64" not in s for s in segments)
    with_embeddings = requests.get(f"{url}/v1/jobs/{job_id}/segments", params={"embeddings": "true", "limit": 1},
                                   headers=AUTH, timeout=10).json()
    assert "embedding_b64" in with_embeddings["segments"][0]
    # the CLI sees the same job
    status = json.loads(run(stack["env"], "status", job_id, "--json").stdout)
    assert status["segments_done"] == 7 and status["state"] == "done"


@pytest.mark.parametrize("body, status, words", [
    ({"source": "/etc/passwd"}, 403, "outside the allowed roots"),
    ({"source": "{videos}/" + "../" * 12 + "etc/passwd"}, 403, "outside the allowed roots"),
    ({"source": "{videos}/a.mp4", "model": "resnet9000"}, 422, "unknown model"),
    ({"source": "{videos}/missing.mp4"}, 400, "no such file"),
    ({"source": "gopher://127.0.0.1/x"}, 403, "not allowed"),
    ({"source": "{videos}/a.mp4", "shell": "rm -rf /"}, 422, "shell: Extra inputs are not permitted"),
    ({"model": "x3d_xs"}, 422, "source: Field required"),
    ({"source": "{videos}/a.mp4", "topk": 0}, 422, "topk"),
    ({"source": "{videos}/a.mp4", "sinks": ["kafka://broker:9092"]}, 400, "unknown sink kind 'kafka'"),
    ({"source": "{videos}/a.mp4", "sinks": ["http://169.254.169.254/x"]}, 400, "metadata address"),
    ({"source": "{videos}/a.mp4", "sinks": ["not a url"]}, 422, "sinks.0"),
])
def test_bad_jobs_are_refused_with_a_readable_reason(stack, body, status, words):
    body = {k: v.format(videos=stack["videos"]) if isinstance(v, str) else v for k, v in body.items()}
    response = requests.post(f"{stack['url']}/v1/jobs", json=body, headers=AUTH, timeout=10)
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]
    assert "Traceback" not in response.text


def test_oversized_bodies_and_unknown_jobs(stack):
    url = stack["url"]
    huge = {"source": "x" * 100_000}
    assert requests.post(f"{url}/v1/jobs", json=huge, headers=AUTH, timeout=10).status_code == 413
    missing = requests.get(f"{url}/v1/jobs/nope", headers=AUTH, timeout=10)
    assert missing.status_code == 404 and "no job 'nope'" in missing.json()["detail"]
    assert requests.delete(f"{url}/v1/jobs/nope", headers=AUTH, timeout=10).status_code == 404


def test_openapi_lists_the_routes(stack):
    spec = requests.get(f"{stack['url']}/openapi.json", timeout=10).json()
    for path in ("/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/segments", "/v1/streams",
                 "/v1/streams/{name}/results", "/v1/health", "/v1/status"):
        assert path in spec["paths"], path
    assert "source" in spec["components"]["schemas"]["JobSpec"]["properties"]


def test_a_stream_registered_over_http_is_followed_with_server_sent_events_and_stopped(stack):
    url = stack["url"]
    body = {"name": "lobby", "url": str(stack["videos"] / "a.mp4"), "weights": "none"}
    assert requests.post(f"{url}/v1/streams", json=body, headers=AUTH, timeout=10).status_code == 201
    assert requests.post(f"{url}/v1/streams", json=body, headers=AUTH, timeout=10).status_code == 409
    events = []
    with requests.get(f"{url}/v1/streams/lobby/results", params={"count": 2}, headers=AUTH, stream=True,
                      timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines(decode_unicode=True):
            if line.startswith("data: "):
                events.append(json.loads(line[len("data: "):]))
    assert [e["stream"] for e in events] == ["lobby", "lobby"]
    assert events[1]["index"] > events[0]["index"] and all(e["published_at"] >= e["captured_at"] for e in events)
    deadline = time.monotonic() + 20  # the reader publishes its counters every few seconds
    while time.monotonic() < deadline:
        rows = requests.get(f"{url}/v1/streams", headers=AUTH, timeout=10).json()
        if (rows[0]["segments"] or 0) >= 2:
            break
        time.sleep(0.5)
    assert [r["name"] for r in rows] == ["lobby"] and rows[0]["segments"] >= 2, rows
    kept = requests.get(f"{url}/v1/streams/lobby/results", params={"follow": "false", "count": 2}, headers=AUTH,
                        timeout=10).json()
    assert len(kept) == 2 and kept[0]["index"] < kept[1]["index"]  # the latest two, oldest first
    assert requests.delete(f"{url}/v1/streams/lobby", headers=AUTH, timeout=10).json()["stopped"] is True
    assert requests.get(f"{url}/v1/streams", headers=AUTH, timeout=10).json() == []


def test_a_job_followed_over_sse_and_with_results_follow_gives_every_segment_once_then_its_end(stack):
    url = stack["url"]
    body = {"source": str(stack["videos"] / "long.mp4"), "weights": "none", "stride_s": 0.5}
    job_id = requests.post(f"{url}/v1/jobs", json=body, headers=AUTH, timeout=10).json()["job_id"]
    followed = subprocess.Popen([REELFLOW, "results", job_id, "--follow"], env=stack["env"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # from the start, alongside the SSE reader
    events = []
    with requests.get(f"{url}/v1/jobs/{job_id}/segments", params={"follow": "true"}, headers=AUTH, stream=True,
                      timeout=120) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in response.iter_lines(decode_unicode=True):
            if line.startswith("event: "):
                kind = line[len("event: "):]
            elif line.startswith("data: "):
                events.append((kind, json.loads(line[len("data: "):])))
    out, err = followed.communicate(timeout=60)
    assert followed.returncode == 0, err
    *segments, (last_kind, end) = events
    assert last_kind == "end" and end["state"] == "done", events[-3:]
    assert [s["index"] for _, s in segments] == list(range(end["segments_total"])) and end["segments_total"] > 10
    assert all(kind == "segment" and "embedding" not in s for kind, s in segments)  # asked for with embeddings=true
    printed = [json.loads(line) for line in out.splitlines()]
    assert printed == [json.loads(line) for line in run(stack["env"], "results", job_id).stdout.splitlines()]


@pytest.mark.slow  # about a minute or more: `make test-slow`
def test_a_flood_of_jobs_scales_the_model_replicas_out_and_an_idle_stack_back_in(stack):
    env, long_video = stack["env"], stack["videos"] / "long.mp4"
    run(env, "submit", *[long_video] * 40, "--weights", "none")

    def replicas() -> int:
        status = json.loads(run(env, "status", "--json").stdout)
        return max((m["replicas"] for m in status["models"] if m["name"] == "x3d_xs"), default=0)

    deadline, most = time.monotonic() + 240, 0
    while time.monotonic() < deadline and most < 2:
        most = max(most, replicas())
        time.sleep(1)
    assert most >= 2, f"replicas never rose above {most} with 40 jobs queued"
    status = json.loads(run(env, "status", "--json").stdout)
    assert sum(status["queue"].values()) > 0 or status["jobs"].get("done", 0) >= 40
    deadline = time.monotonic() + 300  # the jobs finish, then 30 s of idle before scaling in
    while time.monotonic() < deadline and replicas() > 1:
        time.sleep(2)
    assert replicas() == 1, "an idle stack kept its extra replicas"
    status = json.loads(run(env, "status", "--json").stdout)
    assert status["jobs"].get("done", 0) >= 40 and sum(status["queue"].values()) == 0
