"""The Ray pipeline: decoder actors feed Ray Serve model replicas that batch clips dynamically.

    job consumer --(job spec)--> Decoder actor --(clip, via the object store)--> ModelReplica (batching)
         ^                            |  decode, sample, transform           forward: probabilities + embeddings
         +----(small result dicts)----+  top-k, result records

Clip tensors go from a decoder straight to a replica through Ray's object store; the consumer only
sees the small per-segment results. A dead decoder or replica surfaces as an exception in the job's
result stream: the worker retries the job, which resumes after its stored segments.

    >>> pipeline = RayPipeline(Settings.from_env()); pipeline.start()        # doctest: +SKIP
    >>> Worker(queue, pipeline).run()
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue as queue_lib
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import ray
from opentelemetry import propagate
from ray import serve

from pipelines.errors import ReelflowError, WeightsError, one_line
from pipelines.models import get_spec, model_slug
from pipelines.models.weight_files import check_weights
from pipelines.sources import SourcePolicy
from services import metrics, telemetry
from services.ray_backend.in_flight import in_order
from services.ray_backend.job_plan import JobPlan
from services.ray_backend.replica import REPLICA, ModelReplica, payload_for
from services.ray_backend.startup import init_ray
from services.ray_backend.stream_host import RayStreamHandle, StreamHost
from services.settings import Settings
from services.store.jobs import JobSpec
from services.store.streams import StreamSpec

log = logging.getLogger("reelflow.ray")

# Model replicas scale on the job backlog in Redis as well as on their ongoing requests.
BACKLOG_POLICY = {"policy_function": "services.ray_backend.autoscale:backlog_policy"}
CAPACITY_REFRESH_S = 2.0  # how often the consumer re-reads the running replica count
HANDLES_STOP_S = 12.0  # Serve stops a handle's metrics pusher within 10 s
GCS_TRIES = 6  # probes of a joined cluster's GCS (one per 2 s, 5 s each) that may go unanswered


@dataclass(frozen=True)
class Target:
    """Where a model's replicas are: a Serve application and the deployment in it."""

    app: str
    deployment: str = REPLICA

    def handle(self):
        return serve.get_deployment_handle(self.deployment, app_name=self.app)


@ray.remote
class Decoder:
    """Decodes jobs (a few at once, one per thread) and sends their clips to the model's replicas:
    two batches' worth in flight per job, so the replicas' batches fill while it decodes on."""

    def __init__(self, telemetry_env: dict[str, str] | None = None):
        telemetry.setup_from(telemetry_env, "reelflow-decoder")

    def pid(self) -> int:
        return os.getpid()

    def node(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def run(self, target: Target, spec_json: str, skip: list[int], sources: SourcePolicy, threads: int = 0
            ) -> Iterator[int | dict]:
        handle = target.handle()
        info = handle.describe.remote().result()
        in_flight = 2 * info["batch_size"]  # per job: with REELFLOW_JOBS_PER_DECODER (4) jobs, 8 batches in all
        plan = JobPlan.open(spec_json, sources, info["num_classes"], info["weights_id"], info.get("classes"))
        yield plan.total

        def send(clip):
            if clip.frames is None:
                return None
            payload = plan.transform(clip, lambda frames: payload_for(frames, plan.model, info["clip_format"]))
            parent = plan.batch_parent(clip)
            return handle.remote(payload) if parent is None else handle.remote(payload, _carried(parent))

        for clip, output in in_order(plan.clips(set(skip), threads), send, in_flight):
            yield plan.result(clip, output)


def _carried(parent: tuple) -> tuple:
    """A clip's trace parent (context, attributes) as plain data, for a call to another process."""
    context, attributes = parent
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=context)
    return carrier, attributes


def app_name(model: str, weights: str, settings: Settings, runtime: str = "auto") -> str:
    """The Serve application of a model: one per weights, runtime and replica configuration."""
    variant = f"{model}|{weights}|{settings.clip_format}|{settings.precision}|{settings.runtime_for(runtime)}"
    return f"{model_slug(model)}-{hashlib.sha1(variant.encode()).hexdigest()[:8]}"


class RayPipeline:
    """Decoder actors and Serve replicas on a local Ray (or RAY_ADDRESS's cluster).

    By default each model is deployed as a Serve application of its own on its first job. Inside a
    Serve application that binds its model replicas itself (`services.app`), `served` names them
    instead, and a job for any other model is refused.
    """

    def __init__(self, settings: Settings, device: str = "cpu", served: dict[tuple[str, str], Target] | None = None):
        self.settings = settings
        self.device = device
        # fused: replicas decode their jobs themselves (CPU); split: decoder actors feed them (GPU replicas)
        self.mode = settings.pipeline if settings.pipeline != "auto" else ("fused" if device == "cpu" else "split")
        self._free: queue_lib.Queue = queue_lib.Queue()
        self.decoders: list = []
        self._served = dict(served or {})
        self._apps: dict[Target, tuple[str, str]] = {t: mw for mw, t in self._served.items()}  # -> (model, weights)
        self._runtimes: dict[Target, dict] = {}  # -> {runtime, runtime_note, runtime_origin}, as its replica said
        self._deploy_lock = threading.Lock()
        self._stream_host = None
        self._replicas, self._replicas_read_at = 1, 0.0
        self.started_ray = False  # this process started the local Ray (and can start it again)
        self._unanswered = 0  # GCS probes in a row that got no answer (a joined cluster)

    @property
    def capacity(self) -> int:
        """Jobs to run at once: per decoder (split), or per running model replica (fused), so that the
        consumer takes more jobs as the replicas scale out."""
        if self.mode == "split":
            return self.settings.decoders * self.settings.jobs_per_decoder
        if self._apps and time.monotonic() - self._replicas_read_at > CAPACITY_REFRESH_S:
            self._replicas_read_at = time.monotonic()
            try:
                described = self.describe()
                self._replicas = max(1, sum(m["replicas"] for m in described))
                for m in described:
                    metrics.set_gauge("reelflow_model_replicas", m["replicas"], model=m["model"])
            except Exception:  # Serve's controller briefly away: keep the last count
                log.debug("cannot read the replica count", exc_info=True)
        return self.settings.jobs_per_decoder * self._replicas

    def start(self, http: tuple[str, int] | None = None) -> None:
        """Join (or start) Ray and Serve; `http` (host, port) starts Serve's HTTP proxy there."""
        # Ray's auto-init off in this process: a Serve thread left over from a Ray that died or was shut
        # down must not start a new local Ray (whose processes would outlive `up`) by calling into it
        ray._private.auto_init_hook.enable_auto_connect = False
        if not ray.is_initialized():
            self.started_ray = init_ray(self.settings.ray_start_timeout_s)
        if self._served:  # inside a Serve application, Serve is running already
            pass
        elif http:
            serve.start(proxy_location="HeadOnly", http_options={"host": http[0], "port": http[1]})
        else:
            serve.start(proxy_location="Disabled")
        if self.mode == "fused":
            return
        for _ in range(self.settings.decoders):  # restarted by Ray if their process dies; spread over the nodes
            decoder = Decoder.options(max_restarts=-1, num_cpus=self.settings.decoder_cpus, scheduling_strategy="SPREAD",
                                      max_concurrency=self.settings.jobs_per_decoder).remote(telemetry.exporter_env())
            self.decoders.append(decoder)
            for _ in range(self.settings.jobs_per_decoder):  # a slot per job it may run at once
                self._free.put(decoder)

    def prepare(self, model: str, weights: str, runtime: str = "auto") -> Target:
        """Deploy the model's replicas once (on `runtime`; `auto`: the settings'); a deployment that
        cannot start is a bad job."""
        if self._served:  # the application's replicas run the application's runtime
            if (model, weights) not in self._served:
                served = ", ".join(f"{m} (weights {w})" for m, w in self._served)
                raise WeightsError(f"{model} with weights {weights!r} is not served by this application "
                                   f"(it serves {served}); add it to the application's models")
            return self._served[model, weights]
        target = Target(app_name(model, weights, self.settings, runtime))
        with self._deploy_lock:
            if target not in self._apps:
                self.settings.sources.check_model(model)
                check_weights(get_spec(model), weights)  # the common failures, in a second
                app = replica_deployment(self.settings).bind(
                    model, weights, **replica_options(self.settings, self.device, runtime))
                self._deploy(target.app, app, model, weights)
                self._apps[target] = (model, weights)
                self._runtimes[target] = _runtime_of(target, 10)
        return target

    def _deploy(self, name: str, app, model: str, weights: str) -> None:
        error = _run_app(app, name, None, self.settings.deploy_timeout_s, f"{model} replicas")
        if error is not None:
            raise WeightsError(f"cannot start {model} replicas with weights {weights!r}: {one_line(error, limit=300)}") from None

    def segments(self, spec: JobSpec, skip: set[int]) -> Iterator[int | dict]:
        target = self.prepare(spec.model, spec.weights, spec.runtime)
        if telemetry.enabled():  # the actors' spans become children of the job's span (the current one)
            spec = spec.model_copy(update={"trace": telemetry.current_context()})
        if self.mode == "fused":
            yield from self._fused_segments(target, spec, skip)
            return
        decoder = self._free.get()
        stream = None
        try:
            _wait_alive(decoder, self.settings.deploy_timeout_s)
            stream = decoder.run.options(num_returns="streaming").remote(
                target, spec.model_dump_json(), sorted(skip), self.settings.sources, self.settings.decoder_threads)
            for ref in stream:
                yield ray.get(ref)
        finally:
            if stream is not None:
                ray.cancel(stream)
            self._free.put(decoder)

    def _fused_segments(self, target: Target, spec: JobSpec, skip: set[int]) -> Iterator[int | dict]:
        handle = target.handle().options(stream=True)
        results = handle.classify_job.remote(spec.model_dump_json(), sorted(skip), self.settings.sources,
                                             self.settings.decoder_threads)
        try:
            yield from results
        finally:
            results.cancel()

    def serve_api(self, redis_url: str, http: tuple[str, int]) -> None:
        """Run the HTTP API (`services.ray_backend.http.Api`) on Serve's proxy, at /; returns once it answers."""
        from services.ray_backend.http import Api  # FastAPI: only in a stack that serves HTTP, not in every Ray worker

        error = _run_app(Api.bind(redis_url=redis_url), "reelflow-api", "/", self.settings.deploy_timeout_s, "the HTTP API")
        if error is not None:
            raise ReelflowError(f"cannot start the HTTP API: {one_line(error, limit=300)}") from None
        host = "127.0.0.1" if http[0] in ("0.0.0.0", "::", "") else http[0]
        deadline = time.monotonic() + 30
        while True:  # the proxy learns the new route a moment after serve.run returns
            try:
                with urllib.request.urlopen(f"http://{host}:{http[1]}/v1/health", timeout=2):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise ReelflowError(f"the HTTP API does not answer on {host}:{http[1]}; is the port free?") from None
                time.sleep(0.1)

    def is_permanent(self, error: BaseException) -> bool:
        return isinstance(error, ReelflowError) or isinstance(getattr(error, "cause", None), ReelflowError)

    def start_stream(self, spec: StreamSpec, redis_url: str, owner: str) -> RayStreamHandle:
        """Run a live stream on this pipeline's StreamHost actor (started on first use)."""
        self.settings.sources.for_streams().check(spec.url)  # refuse before deploying anything
        target = self.prepare(spec.model, spec.weights)
        if self._stream_host is None:  # restarted by Ray if its process dies; the manager restarts its streams
            # a thread per stream (and a few for stop calls): Ray starts them all up front
            self._stream_host = StreamHost.options(max_restarts=-1, max_concurrency=self.settings.max_streams + 8,
                                                   num_cpus=self.settings.stream_cpus).remote(self.settings.metrics)
        ref = self._stream_host.run.remote(target, spec.model_dump_json(), redis_url, owner, self.settings.sources)
        return RayStreamHandle(self._stream_host, spec.name, ref)

    def describe(self) -> list[dict]:
        """The deployed models and their running replicas (shared by every worker on this Ray cluster)."""
        applications = serve.status().applications
        cluster = ray.get_runtime_context().gcs_address
        described = []
        for target, (model, weights) in sorted(self._apps.items(), key=lambda item: item[1]):
            app = applications.get(target.app)
            deployment = app.deployments.get(target.deployment) if app else None
            counts = deployment.replica_states if deployment else {}
            states = {getattr(state, "value", str(state)): n for state, n in counts.items()}
            if target not in self._runtimes and states.get("RUNNING"):  # an application's own replicas
                self._runtimes[target] = _runtime_of(target, 5)
            described.append({"model": model, "weights": weights, "replicas": states.get("RUNNING", 0),
                              "replica_states": states, **(self._runtimes.get(target) or {}),
                              "serving": f"ray:{cluster}/{target.app}/{target.deployment}"})
        return described

    def batch_size_counts(self, model: str, weights: str) -> dict[int, int]:
        return self.prepare(model, weights).handle().batch_size_counts.remote().result()

    def lost(self) -> str | None:
        """Why this pipeline can serve nothing any more, or None. A Ray this process started: its
        raylet or GCS process exited (OOM-killed, say; the raylet also exits with its agents). A
        cluster it joined: the GCS says this machine's node is dead, or does not answer."""
        if self.started_ray:
            node = ray._private.worker._global_node
            dead = [(name, proc.pid) for name, proc in (node.dead_processes() if node else [])
                    if name in ("raylet", "gcs_server")]
            return ("Ray's " + " and ".join(f"{name} (pid {pid})" for name, pid in dead) + " exited") if dead else None
        answer = _try_within(5.0, _own_node_alive)
        if not isinstance(answer, BaseException):
            self._unanswered = 0
            return None if answer else "this machine's Ray node is dead"
        self._unanswered += 1  # a GCS restarting (fault-tolerant) or a busy head: a few tries first
        if self._unanswered < GCS_TRIES:
            return None
        return f"Ray's GCS did not answer {GCS_TRIES} times in a row ({one_line(answer, limit=200)})"

    @property
    def restartable(self) -> bool:
        return self.started_ray

    def metrics_url(self) -> str | None:
        """This machine's Ray node's metrics agent: the stream host's and the replicas' metrics."""
        node = ray._private.worker._global_node
        port = getattr(node, "metrics_export_port", None) if node is not None else None
        return f"http://127.0.0.1:{port}/metrics" if port else None

    def shutdown(self) -> None:
        """Leave Ray: a local cluster goes down with it; a shared one (RAY_ADDRESS) keeps its apps."""
        _drop_serve_handles()
        ray.shutdown()


def _drop_serve_handles() -> None:
    """Stop the routers behind this process's Serve handles: each pushes metrics to Serve's
    controller every few seconds, for as long as the process lives, and logs a traceback each time
    once that Ray is gone (shut down, or its node dead)."""
    client = serve.context._global_client
    if client is None:
        return
    outcome = _try_within(HANDLES_STOP_S, client.shutdown_cached_handles)
    if isinstance(outcome, BaseException):
        log.debug("Serve's handles did not stop: %s", one_line(outcome))
    serve.context._set_global_client(None)


def _own_node_alive() -> bool:
    node_id = ray.get_runtime_context().get_node_id()
    return any(n["NodeID"] == node_id and n["Alive"] for n in ray.nodes())


def _try_within(timeout_s: float, fn):
    """fn()'s value, or the exception it raised, or TimeoutError if it took longer than `timeout_s`."""
    outcome: list = []
    thread = threading.Thread(target=lambda: outcome.append(_try(fn)), daemon=True, name="reelflow-probe")
    thread.start()
    thread.join(timeout_s)
    return outcome[0] if outcome else TimeoutError(f"no answer within {timeout_s:.0f} s")


def replica_deployment(settings: Settings, name: str = REPLICA, autoscaling: dict | None = None):
    """The model replica deployment with the settings' resources and autoscaling (min 1, max
    REELFLOW_MAX_REPLICAS, on ongoing requests and on the Redis backlog)."""
    # No runtime_env: an actor with one gets a process of its own started for it (a second more),
    # where without one it takes a worker process Ray started ahead (services.ray_backend.replica sets its env).
    from services.worker.stream_runner import SENT_AT_ONCE

    actor_options = {"num_cpus": settings.replica_cpus}
    if settings.replica_gpus:
        actor_options["num_gpus"] = settings.replica_gpus  # fractional GPUs share one device
    return ModelReplica.options(
        name=name,
        max_constructor_retry_count=2,  # a replica that cannot load fails the deploy
        # every live window sent goes into the replica's batcher, which drops those past their
        # deadline: windows queued in Serve's router instead would wait there unseen (seconds, with
        # 24 cameras on one replica)
        max_ongoing_requests=4 * settings.batch_limit + SENT_AT_ONCE * settings.max_streams,
        ray_actor_options=actor_options,
        autoscaling_config=autoscaling or {"min_replicas": settings.min_replicas, "max_replicas": settings.max_replicas,
                                           "target_ongoing_requests": 2 * settings.batch_limit,
                                           "upscale_delay_s": 3, "downscale_delay_s": 30,
                                           "policy": BACKLOG_POLICY},
    )


def replica_options(settings: Settings, device: str, runtime: str = "auto") -> dict:
    """The keyword arguments a ModelReplica is built with (`runtime`: a job's, `auto` for the settings')."""
    return dict(device=device, runtime=settings.runtime_for(runtime), model_cache=str(settings.model_cache_dir),
                batch_size=settings.batch_size, batch_wait_s=settings.batch_wait_s,
                threads=settings.replica_threads, forward_threads=settings.forward_threads,
                clip_format=settings.clip_format, precision=settings.precision,
                telemetry_env=telemetry.exporter_env(), record_metrics=settings.metrics,
                stream_latency_s=settings.stream_latency_s)


def _runtime_of(target: Target, timeout_s: float) -> dict | None:
    """Which runtime the target's replicas run, and why not the one asked for (their describe());
    None when they do not answer in time (asked again at the next describe)."""
    info = _try_within(timeout_s, lambda: target.handle().describe.remote().result(timeout_s=timeout_s))
    if not isinstance(info, dict):
        return None
    return {"runtime": info.get("runtime", "torch"), "runtime_note": info.get("runtime_note"),
            "runtime_origin": info.get("runtime_origin")}


def _wait_alive(actor, timeout_s: float) -> None:
    """Wait for an actor Ray is restarting (its process died): a job sent to it meanwhile would fail
    at once, and its retries would be spent before the actor is back."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            ray.get(actor.pid.remote(), timeout=10)
            return
        except (ray.exceptions.ActorUnavailableError, ray.exceptions.GetTimeoutError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _run_app(app, name: str, route_prefix: str | None, timeout_s: float, what: str) -> BaseException | None:
    """serve.run with a deadline (deployments that never get resources must not hang the caller):
    None when running, or the error it failed with (the application is then deleted)."""
    outcome: list = []
    thread = threading.Thread(target=lambda: outcome.append(_try(serve.run, app, name=name, route_prefix=route_prefix)),
                              daemon=True, name="reelflow-deploy")
    thread.start()
    thread.join(timeout_s)
    if not outcome:
        serve.delete(name, _blocking=False)
        raise TimeoutError(f"{what} were not running after {timeout_s:.0f} s (not enough free CPUs or memory?)")
    if isinstance(outcome[0], BaseException):
        cause = _replica_error(name)
        serve.delete(name, _blocking=False)
        return RuntimeError(cause) if cause else outcome[0]
    return None


def _replica_error(app: str) -> str | None:
    """What a replica that failed to start raised, as "Type: message" (Serve's own error says only
    that the deployment failed; the replica's traceback is in the deployment's status)."""
    try:
        status = serve.status().applications.get(app)
        messages = [d.message for d in status.deployments.values() if d.message] if status else []
    except Exception:  # only the error's detail
        return None
    for message in messages:
        last = [line for line in message.strip().splitlines() if line.strip()]
        if last and "Traceback" in message:
            kind, _, text = last[-1].strip().partition(": ")
            # reelflow's own errors read on their own; others keep their type (FileNotFoundError: ...)
            return text if text and kind.startswith(("pipelines.", "services.")) else last[-1].strip()
    return None


def _try(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # handed to the caller's thread
        return e
