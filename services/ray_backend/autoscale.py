"""Model replicas that scale on the job backlog: a Ray Serve autoscaling policy reading Redis.

Serve's own policy scales on ongoing requests, which a queue of whole jobs does not show: the
consumers take only as many jobs as the replicas can run. This policy also looks at the backlog in
Redis (jobs waiting, claimed or due for a retry) and asks for one replica per
`REELFLOW_JOBS_PER_REPLICA` jobs of it; Serve clamps the answer to min/max replicas and applies its
up/down-scale delays. On Kubernetes, replicas that fit on no node make the KubeRay autoscaler add
one. It runs in Serve's controller, which reads the same REELFLOW_* environment as every process.

    autoscaling_config={"min_replicas": 1, "max_replicas": 4,
                        "policy": {"policy_function": "services.ray_backend.autoscale:backlog_policy"}}
"""

from __future__ import annotations

import math

from ray.serve.autoscaling_policy import default_autoscaling_policy
from ray.serve.config import AutoscalingContext


def backlog_policy(ctx: AutoscalingContext) -> tuple[float, dict]:
    """The larger of Serve's request-based answer and the backlog's.

    Serve pickles this function by value with its module, so the module keeps no state: the Redis
    connection and its cache live in services.store.backlog, imported where the policy runs."""
    from services.store.backlog import job_backlog, jobs_per_replica  # where the policy runs (see above)

    by_requests, state = default_autoscaling_policy(ctx)
    backlog = job_backlog()
    if backlog is None:
        return by_requests, state
    return max(by_requests, math.ceil(backlog / jobs_per_replica())), state
