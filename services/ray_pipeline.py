"""The Ray pipeline: decoder actors feed Ray Serve model replicas that batch clips dynamically.

    job consumer --(job spec)--> Decoder actor --(clip, via the object store)--> ModelReplica (@serve.batch)
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
from collections import deque
from collections.abc import Iterator

import ray
from ray import serve

from pipelines.errors import ReelflowError, WeightsError
from pipelines.sources import SourcePolicy
from services.job_plan import JobPlan
from services.jobs import JobSpec
from services.replica import REPLICA, ModelReplica, payload_for
from services.settings import Settings

log = logging.getLogger("reelflow.ray")

NAMESPACE = "reelflow"
# OpenMP threads that spin while they wait burn the core a decoder needs: a replica's torch threads
# sleep instead (measured: a third less CPU per clip when a decoder shares the machine).
REPLICA_ENV = {"env_vars": {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}}


@ray.remote
class Decoder:
    """Decodes jobs (a few at once, one per thread) and sends their clips to the model's replicas:
    two batches' worth in flight per job, so the replicas' batches fill while it decodes on."""

    def pid(self) -> int:
        return os.getpid()

    def node(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def run(self, app_name: str, spec_json: str, skip: list[int], sources: SourcePolicy, threads: int = 0
            ) -> Iterator[int | dict]:
        handle = serve.get_deployment_handle(REPLICA, app_name=app_name)
        info = handle.describe.remote().result()
        in_flight = 4 * info["batch_size"]
        plan = JobPlan.open(spec_json, sources, info["num_classes"], info["weights_id"])
        yield plan.total

        def result(clip, response) -> dict:
            return plan.result(clip, None if response is None else response.result())

        pending: deque = deque()
        for clip in plan.clips(set(skip), threads):
            response = None
            if clip.frames is not None:
                response = handle.remote(payload_for(clip.frames, plan.model, info["clip_format"]))
            pending.append((clip, response))
            while len(pending) > in_flight:
                yield result(*pending.popleft())
        while pending:
            yield result(*pending.popleft())


def app_name(model: str, weights: str, settings: Settings) -> str:
    """The Serve application of a model: one per weights and replica configuration."""
    variant = f"{weights}|{settings.clip_format}|{settings.precision}"
    return f"{model}-{hashlib.sha1(variant.encode()).hexdigest()[:8]}"


class RayPipeline:
    """Decoder actors and Serve replicas on a local Ray (or RAY_ADDRESS's cluster)."""

    def __init__(self, settings: Settings, device: str = "cpu"):
        self.settings = settings
        self.capacity = settings.decoders * settings.jobs_per_decoder
        self.device = device
        # fused: replicas decode their jobs themselves (CPU); split: decoder actors feed them (GPU replicas)
        self.mode = settings.pipeline if settings.pipeline != "auto" else ("fused" if device == "cpu" else "split")
        self._free: queue_lib.Queue = queue_lib.Queue()
        self.decoders: list = []
        self._apps: dict[str, tuple[str, str]] = {}  # Serve app -> (model, weights)
        self._deploy_lock = threading.Lock()
        self._stream_host = None

    def start(self) -> None:
        if not ray.is_initialized():
            ray.init(address=os.environ.get("RAY_ADDRESS") or None, namespace=NAMESPACE,
                     include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        serve.start(proxy_location="Disabled")
        if self.mode == "fused":
            return
        for _ in range(self.settings.decoders):  # restarted by Ray if their process dies; spread over the nodes
            decoder = Decoder.options(max_restarts=-1, num_cpus=self.settings.decoder_cpus, scheduling_strategy="SPREAD",
                                      max_concurrency=self.settings.jobs_per_decoder).remote()
            self.decoders.append(decoder)
            for _ in range(self.settings.jobs_per_decoder):  # a slot per job it may run at once
                self._free.put(decoder)

    def prepare(self, model: str, weights: str) -> str:
        """Deploy the model's replicas once; a deployment that cannot start is a bad job."""
        name = app_name(model, weights, self.settings)
        with self._deploy_lock:
            if name not in self._apps:
                from pipelines.models import get_spec
                from pipelines.weights import check_weights

                check_weights(get_spec(model), weights)  # the common failures, in a second
                replica = ModelReplica.options(
                    max_constructor_retry_count=2,  # a replica that cannot load fails the deploy
                    max_ongoing_requests=4 * self.settings.batch_limit,
                    ray_actor_options={"num_cpus": self.settings.replica_cpus, "runtime_env": REPLICA_ENV},
                    autoscaling_config={"min_replicas": 1, "max_replicas": self.settings.max_replicas,
                                        "target_ongoing_requests": 2 * self.settings.batch_limit},
                )
                options = dict(device=self.device, batch_size=self.settings.batch_size,
                               batch_wait_s=self.settings.batch_wait_s, threads=self.settings.replica_threads,
                               clip_format=self.settings.clip_format, precision=self.settings.precision)
                self._deploy(name, replica.bind(model, weights, **options), model, weights)
                self._apps[name] = (model, weights)
        return name

    def _deploy(self, name: str, app, model: str, weights: str) -> None:
        """serve.run with a deadline: replicas that never get resources must not hang the job."""
        outcome: list = []
        thread = threading.Thread(target=lambda: outcome.append(_try(serve.run, app, name=name, route_prefix=None)),
                                  daemon=True, name="reelflow-deploy")
        thread.start()
        thread.join(self.settings.deploy_timeout_s)
        if not outcome:
            serve.delete(name, _blocking=False)
            raise TimeoutError(f"{model} replicas were not running after {self.settings.deploy_timeout_s:.0f} s "
                               "(not enough free CPUs or memory?)")
        if isinstance(outcome[0], BaseException):
            serve.delete(name, _blocking=False)
            raise WeightsError(f"cannot start {model} replicas with weights {weights!r}: "
                               f"{_first_line(outcome[0])}") from None

    def segments(self, spec: JobSpec, skip: set[int]) -> Iterator[int | dict]:
        name = self.prepare(spec.model, spec.weights)
        if self.mode == "fused":
            yield from self._fused_segments(name, spec, skip)
            return
        decoder = self._free.get()
        stream = None
        try:
            stream = decoder.run.options(num_returns="streaming").remote(
                name, spec.model_dump_json(), sorted(skip), self.settings.sources, self.settings.decoder_threads)
            for ref in stream:
                yield ray.get(ref)
        finally:
            if stream is not None:
                ray.cancel(stream)
            self._free.put(decoder)

    def _fused_segments(self, name: str, spec: JobSpec, skip: set[int]) -> Iterator[int | dict]:
        handle = serve.get_deployment_handle(REPLICA, app_name=name).options(stream=True)
        results = handle.classify_job.remote(spec.model_dump_json(), sorted(skip), self.settings.sources,
                                             self.settings.decoder_threads)
        try:
            yield from results
        finally:
            results.cancel()

    def is_permanent(self, error: BaseException) -> bool:
        return isinstance(error, ReelflowError) or isinstance(getattr(error, "cause", None), ReelflowError)

    def start_stream(self, spec, redis_url: str, owner: str):
        """Run a live stream on this pipeline's StreamHost actor (started on first use)."""
        from services.stream_host import RayStreamHandle, StreamHost

        self.settings.sources.for_streams().check(spec.url)  # refuse before deploying anything
        name = self.prepare(spec.model, spec.weights)
        if self._stream_host is None:  # restarted by Ray if its process dies; the manager restarts its streams
            self._stream_host = StreamHost.options(max_restarts=-1, max_concurrency=1000,
                                                   num_cpus=self.settings.stream_cpus).remote()
        ref = self._stream_host.run.remote(name, spec.model_dump_json(), redis_url, owner, self.settings.sources)
        return RayStreamHandle(self._stream_host, spec.name, ref)

    def describe(self) -> list[dict]:
        """The deployed models and their running replicas (shared by every worker on this Ray cluster)."""
        applications = serve.status().applications
        cluster = ray.get_runtime_context().gcs_address
        described = []
        for name, (model, weights) in sorted(self._apps.items()):
            app = applications.get(name)
            deployment = app.deployments.get(REPLICA) if app else None
            counts = deployment.replica_states if deployment else {}
            states = {getattr(state, "value", str(state)): n for state, n in counts.items()}
            described.append({"model": model, "weights": weights, "replicas": states.get("RUNNING", 0),
                              "replica_states": states, "serving": f"ray:{cluster}/{name}"})
        return described

    def batch_size_counts(self, model: str, weights: str) -> dict[int, int]:
        handle = serve.get_deployment_handle(REPLICA, app_name=app_name(model, weights, self.settings))
        return handle.batch_size_counts.remote().result()

    def shutdown(self) -> None:
        """Leave Ray: a local cluster goes down with it; a shared one (RAY_ADDRESS) keeps its apps."""
        ray.shutdown()


def _try(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # handed to the caller's thread
        return e


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    for line in text.splitlines():
        if "Error" in line or "error" in line:
            return line.strip()[:300]
    return (text.splitlines() or [type(error).__name__])[0][:300]
