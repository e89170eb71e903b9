"""The dashboard at `/` as a new user meets it: `reelflow up --http-port P` with REELFLOW_API_TOKEN set,
a job submitted with the CLI and a camera watched with the CLI, the page in a real headless browser.
The page runs under its own Content-Security-Policy (no eval), so the tests wait on locators, not on
JavaScript predicates.
"""

from __future__ import annotations

import json
import re
import time
from urllib.parse import urlparse

import pytest
import requests
from playwright.sync_api import expect

from support.browser import blank_share, chromium_page, distinct_colours
from support.stack_process import http_stack, run

# a stack and a browser, about 70 s: `make test` stays under 15 minutes (21 min before)
pytestmark = pytest.mark.slow

TOKEN = "dashboard-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, clip_10s):
    with http_stack(tmp_path_factory.mktemp("dashboard"), clip_10s, TOKEN) as stack:
        yield stack


def wait_until(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_the_page_needs_no_token_but_its_data_does(stack):
    url = stack["url"]
    page = requests.get(f"{url}/", timeout=10)
    assert page.status_code == 200 and "dashboard.js" in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]  # the browser may fetch from here only
    assert "connect-src 'self'" in page.headers["content-security-policy"]
    assert requests.get(f"{url}/dashboard.js", timeout=10).headers["content-type"].startswith("text/javascript")
    for path, headers in [("/v1/dashboard", {}), ("/v1/dashboard?token=" + TOKEN, {}),  # JSON: the header only
                          ("/v1/dashboard/events", {}), ("/v1/dashboard/events?token=wrong", {}),
                          ("/v1/dashboard/events?token=", {}),
                          ("/v1/dashboard/events", {"Authorization": "Bearer wrong"})]:
        response = requests.get(f"{url}{path}", headers=headers, timeout=10)
        assert response.status_code == 401, (path, response.text)
    assert requests.get(f"{url}/v1/dashboard", headers=AUTH, timeout=10).json()["jobs"] == []


@pytest.mark.parametrize("credentials", [{"params": {"token": TOKEN}}, {"headers": AUTH}])
def test_the_events_start_with_the_whole_state(stack, credentials):
    with requests.get(f"{stack['url']}/v1/dashboard/events", stream=True, timeout=30, **credentials) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines(decode_unicode=True)
        event = next(line for line in lines if line.startswith("event: "))
        data = next(line for line in lines if line.startswith("data: "))
    assert event == "event: state"
    assert set(json.loads(data[len("data: "):])) >= {"jobs", "cameras", "queue", "workers", "models"}


def test_a_job_submitted_with_the_cli_appears_on_the_page_and_finishes_there(stack, tmp_path):
    origin = stack["url"]
    with chromium_page() as (page, requested):
        page.goto(f"{origin}/?token={TOKEN}")
        page.wait_for_selector("#board:not([hidden])")
        assert TOKEN not in page.url  # taken into sessionStorage, out of the address bar (and of history)
        submitted = run(stack["env"], "submit", stack["videos"] / "a.mp4", "--weights", "none")
        job_id = submitted.stdout.split()[0]
        row = page.locator(f'tr[data-job="{job_id}"]')
        row.wait_for(timeout=30_000)  # pushed by the server: the page is never reloaded
        assert job_id in row.inner_text() and "a.mp4" in row.inner_text()
        row.locator(".badge.done").wait_for(timeout=120_000)
        assert "7/7" in row.inner_text()
        page.reload()  # the token survives a reload (sessionStorage), and the job is still there
        page.locator(f'tr[data-job="{job_id}"] .badge.done').wait_for(timeout=30_000)
    assert {urlparse(u).netloc for u in requested} == {urlparse(origin).netloc}, requested

    # the same job makes a report straight from the stack
    report = tmp_path / "job.html"
    run(stack["env"], "report", job_id, "-o", report)
    assert f"from job {job_id}" in report.read_text()


def test_without_a_token_the_page_asks_for_one(stack):
    with chromium_page() as (page, _):
        page.goto(stack["url"] + "/")
        page.locator("#login").wait_for()
        assert page.locator("#board").is_hidden()
        page.fill("#token", "wrong")
        page.click("#login button")
        expect(page.locator("#login-error")).to_contain_text("refused")
        page.fill("#token", TOKEN)
        page.click("#login button")
        page.wait_for_selector("#board:not([hidden])")
        page.locator("#connection.live").wait_for(timeout=15_000)


def test_a_camera_shows_its_smoothed_label_latency_and_a_timeline_that_grows_live(stack, tmp_path):
    run(stack["env"], "watch", stack["videos"] / "a.mp4", "--name", "lobby", "--weights", "none")
    try:
        with chromium_page() as (page, _):
            page.goto(f"{stack['url']}/?token={TOKEN}")
            card = page.locator('article[data-camera="lobby"]')
            card.wait_for(timeout=30_000)
            def bands() -> int:
                return int(card.locator(".timeline").get_attribute("data-segments"))

            wait_until(lambda: bands() >= 2, timeout=60)
            before = bands()
            wait_until(lambda: bands() > before, timeout=30)  # new segments arrive by server-sent events
            text = card.inner_text()
            assert "smoothed" in text and "latency p50" in text and "dropped" in text
            # the camera's reader publishes its latency every second
            expect(card.locator(".metrics b").first).to_have_text(re.compile(r"^\d+ ms$"))
            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
        assert distinct_colours(shot) > 200 and blank_share(shot) < 0.95
    finally:
        run(stack["env"], "streams", "stop", "lobby")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # the stopped camera leaves the page's data
        if not requests.get(f"{stack['url']}/v1/dashboard", headers=AUTH, timeout=10).json()["cameras"]:
            return
        time.sleep(0.5)
    raise AssertionError("a stopped camera is still listed")
