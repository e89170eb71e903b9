"""The HTTP API (`/v1`): jobs and live streams over HTTP, on the same Redis as the CLI.

A FastAPI app, served by Ray Serve's `Api` ingress (`services.ray_backend.http`) or by `reelflow up --http-port`.
It talks only to Redis: the consumers and model replicas do the work. With `REELFLOW_API_TOKEN`
set, every route but `/v1/health` and the dashboard's page (`/`, which holds no data: it asks for
it with the token) needs `Authorization: Bearer <token>`.

    $ curl -H "Authorization: Bearer $TOKEN" -d '{"source": "/videos/a.mp4"}' localhost:8000/v1/jobs
    {"job_id": "3f0c9a1e2b7d4c55", "created": true, "state": "queued"}
"""

from __future__ import annotations

import asyncio
import json

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipelines.errors import ReelflowError, SourceNotAllowed, one_line, validation_problems
from pipelines.models import DEFAULT_MODEL, DEFAULT_WEIGHTS
from services.api.dashboard import data as dashboard_data, events as dashboard_events, pages as dashboard_pages
from services.api.deps import STACK, authorized, authorized_header_or_query
from services.sinks import check_sink_urls
from services.store.clips import ClipStore
from services.store.jobs import JobSpec, ModelName, check_job_source
from services.store.outage import StoreUnavailable
from services.store.overview import stack_overview, stream_rows
from services.store.results import follow_job
from services.store.streams import StreamSpec

class Problem(BaseModel):
    """Every error: one sentence saying what is wrong and what to do; `errors` itemizes a 422."""

    detail: str
    errors: list[dict] | None = None


ERRORS = {code: {"model": Problem, "description": what} for code, what in {
    400: "the source cannot be used (no such file, unresolvable host)",
    401: "missing or wrong bearer token (when REELFLOW_API_TOKEN is set)",
    403: "the source is not allowed (outside REELFLOW_ALLOWED_ROOTS, a URL scheme or address not allowed)",
    404: "no such job or stream (or not in the vector index)",
    409: "a stream of that name is watched already",
    413: "request body over REELFLOW_API_MAX_BODY",
    422: "the body or a parameter does not fit the schema",
    503: "Redis is not reachable",
}.items()}

api = FastAPI(title="reelflow", version="1", summary="Action labels, scores and embeddings for video segments",
              description="Submit video jobs, page through their segments, watch live streams.", responses=ERRORS)


# -- cross-cutting: body size, auth, readable validation errors --

@api.middleware("http")
async def limit_body(request: Request, call_next):
    """Refuse bodies over REELFLOW_API_MAX_BODY before reading them (413)."""
    limit = STACK.settings.api_max_body
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        return JSONResponse({"detail": f"request body over {limit} bytes (REELFLOW_API_MAX_BODY)"}, status_code=413)
    if declared is None and request.method in ("POST", "PUT", "PATCH"):
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                return JSONResponse({"detail": f"request body over {limit} bytes (REELFLOW_API_MAX_BODY)"},
                                    status_code=413)
        request._body = body  # read once; the route reads it from here
    return await call_next(request)


@api.exception_handler(RequestValidationError)
async def readable_validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    return JSONResponse({"detail": "; ".join(validation_problems(error, whole="body")), "errors": [{"loc": e["loc"], "msg": e["msg"]}
                                                                   for e in error.errors()]}, status_code=422)


async def store_unavailable(request: Request, error: Exception) -> JSONResponse:
    return JSONResponse({"detail": "Redis is not reachable; try again shortly"}, status_code=503)


for _unavailable in StoreUnavailable:  # Redis away (a restart, a failover): 503, never a 500
    api.add_exception_handler(_unavailable, store_unavailable)


@api.exception_handler(ReelflowError)
async def reelflow_error(request: Request, error: ReelflowError) -> JSONResponse:
    from services.index.search import NotInIndex

    status = 403 if isinstance(error, SourceNotAllowed) else 404 if isinstance(error, NotInIndex) else 400
    return JSONResponse({"detail": str(error)}, status_code=status)


# -- jobs --

@api.get("/v1/health", tags=["stack"])
def health() -> dict:
    """Liveness and Redis reachability; needs no token."""
    try:
        STACK.queue.ping()
    except Exception:
        raise HTTPException(503, "Redis is not reachable") from None
    return {"status": "ok"}


@api.get("/v1/status", tags=["stack"], dependencies=[Depends(authorized)])
def status() -> dict:
    """What `reelflow status --json` shows: queue depth, jobs by state, models and replicas, workers."""
    return stack_overview(STACK.queue)


@api.post("/v1/jobs", status_code=201, tags=["jobs"], dependencies=[Depends(authorized)])
def submit_job(spec: JobSpec) -> dict:
    """Queue a video (a path the workers can read, or an http(s) URL). Same body as the Redis message."""
    spec = spec.model_copy(update={"source": check_job_source(STACK.settings.sources, spec.source)})
    check_sink_urls(spec.sinks, STACK.settings, connect=True)
    job_id, created = STACK.queue.submit(spec)
    return {"job_id": job_id, "created": created, "state": STACK.queue.state(job_id)}


@api.get("/v1/jobs", tags=["jobs"], dependencies=[Depends(authorized)])
def list_jobs(limit: int = Query(100, ge=1, le=1000)) -> list[dict]:
    """The latest jobs first."""
    queue = STACK.queue
    records = queue.records(queue.job_ids(limit=limit))
    return [r.summary() for r in records.values() if r is not None]


@api.get("/v1/jobs/{job_id}", tags=["jobs"], dependencies=[Depends(authorized)])
def get_job(job_id: str) -> dict:
    return _record(job_id).summary()


@api.delete("/v1/jobs/{job_id}", tags=["jobs"], dependencies=[Depends(authorized)])
def cancel_job(job_id: str) -> dict:
    """Cancel a job that has not ended (its stored segments are kept)."""
    _record(job_id)
    state = STACK.queue.cancel(job_id)
    return {"job_id": job_id, "state": state}


@api.get("/v1/jobs/{job_id}/segments", tags=["jobs"], dependencies=[Depends(authorized)])
def job_segments(job_id: str, offset: int = Query(0, ge=0), limit: int = Query(100, ge=1, le=1000),
                 embeddings: bool = False, follow: bool = False):
    """A page of a job's stored segments, in index order; `next_offset` is null on the last page.
    With `follow`: server-sent events instead — every segment (those stored already first) as an
    event `segment` as it is stored, then one event `end` with the job's summary."""
    record = _record(job_id)
    if follow:
        return StreamingResponse(_followed(job_id, embeddings), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})
    segments = STACK.queue.segments(job_id)
    page = segments[offset:offset + limit]
    if not embeddings:
        page = [{k: v for k, v in s.items() if not k.startswith("embedding")} for s in page]
    more = offset + limit < len(segments)
    return {"job_id": job_id, "state": record.state, "segments_total": record.segments_total,
            "offset": offset, "count": len(page), "next_offset": offset + limit if more else None, "segments": page}


async def _followed(job_id: str, embeddings: bool):
    """A job's segments as server-sent events, then its end (`follow_job` runs off the event loop)."""
    segments = follow_job(STACK.queue, job_id, block_ms=1000)
    loop = asyncio.get_running_loop()
    while (segment := await loop.run_in_executor(None, next, segments, None)) is not None:
        if not embeddings:
            segment = {k: v for k, v in segment.items() if not k.startswith("embedding")}
        yield f"id: {segment['index']}\nevent: segment\ndata: {json.dumps(segment)}\n\n"
    record = STACK.queue.record(job_id)
    summary = record.summary() if record else {"job_id": job_id, "state": "expired"}
    yield f"event: end\ndata: {json.dumps(summary)}\n\n"


def _record(job_id: str):
    record = STACK.queue.record(job_id)
    if record is None:
        raise HTTPException(404, f"no job {job_id!r} (finished jobs expire after REELFLOW_RESULT_TTL_S)")
    return record


# -- the dashboard: the page at / (no data in it), its data with the token --

api.include_router(dashboard_pages)
api.include_router(dashboard_data, dependencies=[Depends(authorized)])
api.include_router(dashboard_events, dependencies=[Depends(authorized_header_or_query)])


# -- live streams --

@api.post("/v1/streams", status_code=201, tags=["streams"], dependencies=[Depends(authorized)])
def watch_stream(spec: StreamSpec) -> dict:
    """Watch a live source (rtsp(s), http(s) live, udp, rtp) continuously."""
    STACK.settings.sources.for_streams().check(spec.url)
    check_sink_urls(spec.sinks, STACK.settings, connect=True)
    if not STACK.streams.register(spec):
        raise HTTPException(409, f"a stream named {spec.name!r} is already watched; stop it first or pick another name")
    return {"name": spec.name, "url": spec.url, "model": spec.model}


@api.get("/v1/streams", tags=["streams"], dependencies=[Depends(authorized)])
def list_streams() -> list[dict]:
    """What `reelflow streams list --json` shows."""
    return stream_rows(STACK.streams)


@api.delete("/v1/streams/{name}", tags=["streams"], dependencies=[Depends(authorized)])
def stop_stream(name: str) -> dict:
    if not STACK.streams.stop(name):
        raise HTTPException(404, f"no stream named {name!r} is watched")
    return {"name": name, "stopped": True}


class RecordingRules(BaseModel):
    """A stream's evidence-clip rules: which labels' enter events record a clip (["*"]: every one,
    []: none), and its seconds before and after the event."""

    model_config = ConfigDict(extra="forbid")

    record: list[str] = Field(max_length=64)
    pre_s: float = Field(5.0, ge=0, le=60)
    post_s: float = Field(5.0, ge=0, le=300)
    max_clip_s: float = Field(60.0, ge=1, le=600)


@api.put("/v1/streams/{name}/recording", tags=["clips"], dependencies=[Depends(authorized)])
def set_recording(name: str, rules: RecordingRules) -> dict:
    """Change what a watched stream records (its worker applies it within 10 s)."""
    try:
        spec = STACK.streams.set_recording(name, rules.record, rules.pre_s, rules.post_s, rules.max_clip_s)
    except ValidationError as e:
        raise HTTPException(422, one_line(e)) from None
    if spec is None:
        raise HTTPException(404, f"no stream named {name!r} is watched")
    return {"name": name, "record": spec.record, "pre_s": spec.pre_s, "post_s": spec.post_s,
            "max_clip_s": spec.max_clip_s}


@api.get("/v1/clips", tags=["clips"], dependencies=[Depends(authorized)])
def list_clips(stream: str | None = None, limit: int = Query(50, ge=1, le=1000)) -> list[dict]:
    """Evidence clips, the latest first (what `reelflow clips list --json` shows): id, stream, label,
    path, start (`start_s` stream time, `started_at` Unix time), duration, state, reason."""
    return ClipStore(STACK.queue.r).list(stream, limit)


@api.get("/v1/clips/{clip_id}", tags=["clips"], dependencies=[Depends(authorized)])
def get_clip(clip_id: str) -> dict:
    return _clip(clip_id)


@api.get("/v1/clips/{clip_id}/video", tags=["clips"], dependencies=[Depends(authorized_header_or_query)],
         response_class=FileResponse)
def clip_video(clip_id: str):
    """The clip's file (MP4, or Matroska for codecs MP4 does not take), with range requests: a
    `<video>` can play it (`?token=` when the API has a token)."""
    record = _clip(clip_id)
    if record["state"] != "ready":
        raise HTTPException(409, f"clip {clip_id} is {record['state']}"
                            + (f": {record['reason']}" if record.get("reason") else "; try again when it is ready"))
    path = record["path"]
    return FileResponse(path, media_type="video/mp4" if path.endswith(".mp4") else "video/x-matroska",
                        filename=path.rsplit("/", 1)[-1])


def _clip(clip_id: str) -> dict:
    record = ClipStore(STACK.queue.r).get(clip_id)
    if record is None:
        raise HTTPException(404, f"no clip {clip_id!r} (expired, or never recorded); GET /v1/clips lists them")
    return record


@api.get("/v1/streams/{name}/results", tags=["streams"], dependencies=[Depends(authorized)])
async def stream_results(name: str, follow: bool = True, from_start: bool = False,
                         count: int | None = Query(None, ge=1, le=100000)):
    """A stream's segments: with `follow` (default) as server-sent events, as they are published;
    otherwise the kept ones as a JSON list (the latest `count`, default 100)."""
    registry = STACK.streams
    if registry.spec(name) is None and not registry.results(name, count=1):
        raise HTTPException(404, f"no stream named {name!r}")
    if not follow:
        return [result for _, result in registry.recent(name, count or 100)]

    async def events():
        after, sent = ("0-0" if from_start else registry.last_result_id(name)), 0
        loop = asyncio.get_running_loop()
        while count is None or sent < count:
            # a short block, off the event loop, so a closed connection is noticed within a second
            batch = await loop.run_in_executor(None, lambda: registry.results(name, after=after, block_ms=1000))
            for entry_id, result in batch:
                after, sent = entry_id, sent + 1
                yield f"id: {entry_id}\nevent: segment\ndata: {json.dumps(result)}\n\n"
                if count is not None and sent >= count:
                    return
            if not batch:
                yield ": keep-alive\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


# -- search (the vector index of segment embeddings) --

class VectorQuery(BaseModel):
    """Search with an embedding of your own (e.g. a segment's `embedding_b64`, decoded, from a job's
    results or `reelflow classify --json --embeddings`), of the model and weights it came from."""

    vector: list[float] = Field(min_length=1, max_length=65536)
    model: str
    weights: str
    top: int = Field(10, ge=1, le=1000)
    source: str | None = None
    job: str | None = None
    stream: str | None = None
    label: str | None = None
    since: str | None = None
    until: str | None = None
    min_similarity: float | None = Field(None, ge=-1, le=1)
    thumbnails: bool = False


VIDEO_EMBED_TIMEOUT_S = 600.0  # a video to search with is classified by the API process, in a child


@api.get("/v1/search", tags=["search"], dependencies=[Depends(authorized)])
def search_like(like: str | None = Query(None, description="JOB:SEGMENT, an indexed segment of a job"),
                like_stream: str | None = Query(None, description="a stream's name: its latest indexed window"),
                video: str | None = Query(None, description="a video the stack can read (a path inside "
                                          "REELFLOW_ALLOWED_ROOTS or a URL), classified here with `model`/`weights`"),
                at: float | None = Query(None, ge=0, description="with `video`: the segment covering this time "
                                         "(default: every segment)"),
                model: ModelName = DEFAULT_MODEL, weights: str = DEFAULT_WEIGHTS,
                top: int = Query(10, ge=1, le=1000), source: str | None = None, job: str | None = None,
                stream: str | None = None, label: str | None = None,
                since: str | None = Query(None, description="2026-11-30, 2026-11-30T08:00, or an age: 15m, 2h, 7d"),
                until: str | None = None, min_similarity: float | None = Query(None, ge=-1, le=1),
                thumbnails: bool = Query(False, description="a JPEG data: URI per match whose video is readable")
                ) -> dict:
    """What `reelflow search --like JOB:SEGMENT|VIDEO` / `--like-stream NAME --json` gives: the
    matches grouped by video or stream, best first, with times and cosine similarity."""
    from services.index.search import SearchError, answer, filters, like_segment, like_stream as latest_of

    if sum(x is not None for x in (like, like_stream, video)) != 1:
        raise SearchError("give one of `like` (JOB:SEGMENT), `like_stream` (a stream's name) or `video` (a path or URL)")
    if at is not None and video is None:
        raise SearchError("`at` goes with `video` (a time in that video)")
    index = _index()
    if video is not None:
        query = _video_query(video, model, weights, at, "video")
    elif like is not None:
        query = like_segment(index, like)
    else:
        query = latest_of(index, like_stream)
    return answer(index, query, top, filters(source, job, stream, label, since, until), min_similarity, thumbnails)


@api.get("/v1/search/duplicates", tags=["search"], dependencies=[Depends(authorized)])
def search_duplicates(video: str = Query(description="a video the stack can read (a path inside "
                                         "REELFLOW_ALLOWED_ROOTS or a URL)"),
                      model: ModelName = DEFAULT_MODEL, weights: str = DEFAULT_WEIGHTS,
                      top: int = Query(10, ge=1, le=1000), source: str | None = None, job: str | None = None,
                      stream: str | None = None, label: str | None = None, since: str | None = None,
                      until: str | None = None, min_similarity: float = Query(0.8, ge=-1, le=1)) -> dict:
    """What `reelflow search --duplicates-of VIDEO --json` gives: indexed videos whose segments match
    this one's in order (re-encodes, crops, trims), with a score and the time offset in them."""
    from services.index.search import duplicates, filters

    query = _video_query(video, model, weights, None, "video")
    where = filters(source, job, stream, label, since, until)
    found = duplicates(_index(), query, where, min_score=min_similarity)[:top]
    return {"query": {"what": query.what, "model": query.model, "weights": query.weights}, "filter": where,
            "min_score": min_similarity, "duplicates": found}


def _video_query(video: str, model: str, weights: str, at: float | None, flag: str):
    """A video to search with: checked against the source policy as a job's would be, then embedded."""
    from services.index.embed import embed_video

    checked = check_job_source(STACK.settings.sources, video)
    return embed_video(checked, model, weights, at=at, flag=flag, timeout_s=VIDEO_EMBED_TIMEOUT_S)


@api.post("/v1/search", tags=["search"], dependencies=[Depends(authorized)])
def search_vector(body: VectorQuery) -> dict:
    """The same, for an embedding of your own."""
    import numpy as np

    from services.index.search import Query as VectorSearch, answer, filters

    with np.errstate(over="ignore"):  # too large for float32: infinite, refused with its one-line reason
        vector = np.asarray(body.vector, np.float32)
    query = VectorSearch(body.model, body.weights, [vector], "the vector given")
    where = filters(body.source, body.job, body.stream, body.label, body.since, body.until)
    return answer(_index(), query, body.top, where, body.min_similarity, body.thumbnails)


_INDEXES: dict[str, object] = {}  # location -> its VectorIndex, whose open tables are kept between requests


def _index():
    from services.index.vectors import VectorIndex

    location = STACK.settings.index_location
    if location not in _INDEXES:
        _INDEXES[location] = VectorIndex(location)
    return _INDEXES[location]
