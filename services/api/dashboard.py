"""The live dashboard the HTTP API serves at `/`: jobs with their progress, cameras with their
current (smoothed) label, latency, drops, a timeline, their latest evidence clips (playable) and
their recording rules (editable) — updated by server-sent events.

The page (`static/dashboard.html` + `static/dashboard.js`, plain DOM, no framework) holds no data;
it asks for it with the API token, the same one every `/v1` route needs:

    GET /v1/dashboard                    the whole picture once (Authorization: Bearer <token>)
    GET /v1/dashboard/events?token=...   the same as server-sent events: `state` when anything
                                         changes, `segments` as cameras publish results

EventSource cannot send headers, hence `?token=` on the events route (services.api checks it in
constant time). The page takes the token from its own `?token=` once, keeps it in sessionStorage
and drops it from the address bar.
"""

from __future__ import annotations

import asyncio
import json
import time
from importlib import resources

from fastapi import APIRouter, HTTPException
from fastapi.responses import Response, StreamingResponse

from services.api.deps import STACK
from services.store.clips import ClipStore
from services.store.outage import StoreUnavailable
from services.store.overview import models_served, stream_rows
from services.store.streams import StreamRegistry

JOBS_SHOWN = 50  # latest jobs on the page
TIMELINE_KEPT = 90  # results per camera sent when the page connects (~2.5 min at one per 1.6 s)
STATE_EVERY_S = 1.0  # how often the events route looks for changes
KEEP_ALIVE_S = 15.0  # a comment line when nothing changed, so proxies keep the connection
RECONNECT_MS = 2000  # EventSource's retry delay after a dropped connection
CLIPS_PER_CAMERA = 3  # its latest evidence clips, playable in the page
CLIPS_LISTED = 200

ASSETS = {"dashboard.html": "text/html; charset=utf-8", "dashboard.js": "text/javascript; charset=utf-8"}
# The page may talk to its own origin only: no script, style, font or fetch from anywhere else.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; connect-src 'self'; img-src 'self' data:; "
                               "media-src 'self'; "
                               "style-src 'self' 'unsafe-inline'; base-uri 'none'; form-action 'self'; "
                               "frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}

pages = APIRouter(include_in_schema=False)  # the page and its script: no data, no token
data = APIRouter(tags=["dashboard"])  # services.api.routes adds the token check: the bearer header
events = APIRouter(tags=["dashboard"])  # ... the bearer header or `?token=`


@pages.get("/")
def dashboard_page() -> Response:
    return _asset("dashboard.html")


@pages.get("/dashboard.js")
def dashboard_script() -> Response:
    return _asset("dashboard.js")


def _asset(name: str) -> Response:
    body = resources.files("services.api").joinpath("static", name).read_bytes()
    return Response(body, media_type=ASSETS[name], headers=SECURITY_HEADERS)


# -- the data --

def snapshot(queue, registry: StreamRegistry) -> dict:
    """Everything the page shows but the camera timelines: the latest jobs, the cameras with their
    current label, the queue depth, workers and models."""
    records = queue.records(queue.job_ids(limit=JOBS_SHOWN))
    jobs = [r.summary() for r in records.values() if r is not None]
    workers = queue.workers()
    cameras = []
    clips: dict[str, list[dict]] = {}
    for clip in ClipStore(registry.r).list(limit=CLIPS_LISTED):
        clips.setdefault(clip["stream"], []).append(clip)
    for row in stream_rows(registry):
        latest = registry.recent(row["name"], 1)
        current = compact(latest[-1][1]) if latest else None
        cameras.append({**row, "current": current, "clips": clips.get(row["name"], [])[:CLIPS_PER_CAMERA]})
    return {"queue": queue.depth(), "jobs": jobs, "cameras": cameras, "workers": len(workers),
            "models": [{"name": m["name"], "weights": m["weights"], "replicas": m["replicas"]}
                       for m in models_served(workers)]}


def compact(result: dict) -> dict:
    """What a camera's timeline needs of one result: its window, the smoothed top label, the latency."""
    smoothed = result.get("smoothed") or {}
    labels, scores = smoothed.get("labels") or result["labels"], smoothed.get("scores") or result["scores"]
    latency = result.get("published_at", 0) - result.get("captured_at", 0) if "captured_at" in result else None
    return {"index": result["index"], "start_s": result["start_s"], "end_s": result["end_s"],
            "label": labels[0] if labels else None, "score": scores[0] if scores else None,
            "raw_label": result["labels"][0] if result["labels"] else None,
            "latency_s": round(latency, 4) if latency is not None else None}


def _stack():
    """The API's queue and stream registry (services.api.configure sets them; under Ray Serve,
    `request.app` is Serve's wrapper, not the API's FastAPI app)."""
    return STACK.queue, STACK.streams


@data.get("/v1/dashboard")
def dashboard_state() -> dict:
    """What the dashboard shows, once: jobs, cameras (with their current smoothed label), queue, workers."""
    try:
        return snapshot(*_stack())
    except StoreUnavailable as e:  # Redis away: say so in one line, the page retries
        raise HTTPException(503, f"Redis is not reachable ({type(e).__name__})") from None


@events.get("/v1/dashboard/events")
async def dashboard_events() -> StreamingResponse:
    """Server-sent events: `state` (as GET /v1/dashboard) whenever it changes, and `segments`
    ({camera, results}) with each camera's recent results at first, then its new ones as they come.
    Takes the token as `?token=` too: EventSource cannot send headers."""
    queue, registry = _stack()
    loop = asyncio.get_running_loop()

    def off_loop(fn, *args):
        return loop.run_in_executor(None, fn, *args)

    async def stream():
        after: dict[str, str] = {}  # camera -> id of the last result sent
        last_state, next_state, quiet_since = None, 0.0, time.monotonic()
        yield f"retry: {RECONNECT_MS}\n\n"
        while True:
            if time.monotonic() >= next_state:
                state = await off_loop(snapshot, queue, registry)
                next_state = time.monotonic() + STATE_EVERY_S
                encoded = json.dumps(state)
                if encoded != last_state:
                    last_state, quiet_since = encoded, time.monotonic()
                    yield f"event: state\ndata: {encoded}\n\n"
                names = {camera["name"] for camera in state["cameras"]}
                after = {camera: entry for camera, entry in after.items() if camera in names}  # stopped: forget
                for camera in state["cameras"]:
                    if camera["name"] not in after:  # a camera new to this page: its recent past first
                        recent, after[camera["name"]] = await off_loop(_recent, registry, camera["name"])
                        yield _segments(camera["name"], recent)
            if not after:
                await asyncio.sleep(STATE_EVERY_S)
            else:
                # a short block, off the event loop, so a closed connection is noticed within a second
                fresh = await off_loop(registry.newer_results, dict(after), int(STATE_EVERY_S * 1000))
                for camera, entries in fresh.items():
                    after[camera] = entries[-1][0]
                    quiet_since = time.monotonic()
                    yield _segments(camera, [compact(result) for _, result in entries])
            if time.monotonic() - quiet_since > KEEP_ALIVE_S:
                quiet_since = time.monotonic()
                yield ": keep-alive\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _recent(registry: StreamRegistry, camera: str) -> tuple[list[dict], str]:
    entries = registry.recent(camera, TIMELINE_KEPT)
    return [compact(result) for _, result in entries], entries[-1][0] if entries else "0-0"


def _segments(camera: str, results: list[dict]) -> str:
    return f"event: segments\ndata: {json.dumps({'camera': camera, 'results': results})}\n\n"
