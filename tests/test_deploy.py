"""The container and deployment files, checked offline (no Docker engine or cluster runs here).

- deploy/kubernetes/*.yaml: every built-in kind validates, strictly (no unknown field), against the
  Kubernetes JSON schemas that the `kubernetes-validate` package ships, for an older and the newest
  Kubernetes it knows; the KEDA ScaledObject (a CRD, not in those schemas) against the part of
  KEDA's CRD it uses, and against the worker it scales: its consumer group and topic are the ones the
  worker's command line makes, its brokers the log URL's.
- References hold: ConfigMaps, Secrets and their keys, Service selectors and ports, probe ports.
- deploy/compose.yaml: it parses; services, dependencies, volumes and the health checks that
  `depends_on` waits for exist; the MinIO bucket is the archive's.
- Every `visionlake` command line in both parses with the real CLI (its Typer app, with the
  environment the container gets), names an installed detector, and listens where its probe looks.
- Dockerfile: a slim base, a non-root user, a health check, `visionlake` as the entry point, the
  server extras, and no sample media: only pyproject.toml, README.md and src/ reach the image.
"""

from __future__ import annotations

import copy
import os
import re
import shlex
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import click
import jsonschema
import kubernetes_validate
import pytest
import typer
import yaml

from visionlake.cli import app
from visionlake.detectors import load_detector
from visionlake.workers.worker import default_group

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"

#: The oldest Kubernetes the manifests target, and the newest the package has schemas for.
K8S_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
WORKLOADS = ("Deployment", "Job", "StatefulSet", "DaemonSet")
#: API groups of custom resources (KEDA's); any other kind must be in the Kubernetes schemas.
CRD_GROUPS = ("keda.sh/",)
SERVER_EXTRAS = {"kafka", "postgres", "s3", "dashboard", "metrics"}


# ---------------------------------------------------------------------------------------------------
# Loading


def manifests() -> list[tuple[str, dict]]:
    """(file name, resource) of every document under deploy/kubernetes."""
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((path.name, doc))
    return out


def by_kind(kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for _, d in manifests() if d["kind"] == kind}


def pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


COMPOSE_VAR = re.compile(r"\$\$|\$\{(\w+)(?:(:?[-?])([^}]*))?\}|\$(\w+)")


def interpolate(value: object, env: dict[str, str]) -> object:
    """Compose's variable interpolation: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error},
    ${VAR?error}, $VAR and $$ (a literal $), applied to every string in `value`."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, arg = m.group(1) or m.group(4), m.group(2), m.group(3)
        have = env.get(name)
        unset = have is None or (have == "" and op is not None and op.startswith(":"))
        if op and op.endswith("?") and unset:
            raise KeyError(f"{name}: {arg}")
        if op and op.endswith("-") and unset:
            return arg
        return have or ""

    return COMPOSE_VAR.sub(sub, value)


#: What a user sets before `docker compose up` (docs/deploy.md); everything else takes its default.
COMPOSE_ENV = {"VISIONLAKE_TOKEN": "0123456789abcdef0123456789abcdef"}


def compose_services(profiles: bool = True) -> dict[str, dict]:
    """Services after interpolation with COMPOSE_ENV (YAML anchors and merge keys already applied)."""
    services = interpolate(compose()["services"], COMPOSE_ENV)
    assert isinstance(services, dict)
    return {n: s for n, s in services.items() if profiles or not s.get("profiles")}


def env_dict(environment: object) -> dict[str, str]:
    """A compose `environment` (mapping or KEY=VALUE list) as a dict of strings."""
    if isinstance(environment, list):
        return dict(item.split("=", 1) for item in environment)
    return {k: "" if v is None else str(v) for k, v in (environment or {}).items()}


def k8s_env(container: dict) -> dict[str, str]:
    """A container's environment as Kubernetes builds it: envFrom first, then env; values of
    ConfigMaps and Secrets read from the manifests."""
    maps, secrets = by_kind("ConfigMap"), by_kind("Secret")

    def source(ref: dict, kind: str) -> dict[str, str]:
        found = (maps if kind == "ConfigMap" else secrets).get(ref["name"])
        assert found is not None, f"{container['name']}: no {kind} {ref['name']!r} in deploy/kubernetes"
        return {**found.get("data", {}), **found.get("stringData", {})}

    env: dict[str, str] = {}
    for item in container.get("envFrom", []):
        if "configMapRef" in item:
            env.update(source(item["configMapRef"], "ConfigMap"))
        if "secretRef" in item:
            env.update(source(item["secretRef"], "Secret"))
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        ref = item["valueFrom"]
        for key, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
            if key in ref:
                values = source(ref[key], kind)
                assert ref[key]["key"] in values, (
                    f"{container['name']}: {kind} {ref[key]['name']} has no key {ref[key]['key']!r}"
                )
                env[item["name"]] = values[ref[key]["key"]]
    return env


def k8s_expand(arg: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion of command and args ($$(VAR) stays literal)."""
    return re.sub(r"\$\$\(|\$\((\w+)\)", lambda m: "$(" if m.group(0) == "$$(" else env[m.group(1)], arg)


# ---------------------------------------------------------------------------------------------------
# The CLI, as the image runs it: ENTRYPOINT ["visionlake"] plus the service's command / the pod's args


def _usage_errors() -> tuple[type[Exception], ...]:
    """Click's UsageError, and the one of the click Typer carries inside itself (typer._click)."""
    found: list[type[Exception]] = [click.UsageError]
    try:
        from typer._click.exceptions import UsageError

        found.append(UsageError)
    except ImportError:
        pass
    return tuple(found)


USAGE_ERRORS = _usage_errors()


def parse_cli(args: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, dict]:
    """Parse `visionlake ARGS` with the real Typer app under the container's environment (options
    with an env var read it, as they would there). Returns {command path: its parameters}; a usage
    error (unknown command or option, bad value, missing argument) fails the test."""
    for name in [n for n in os.environ if n.startswith("VISIONLAKE_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    cmd = typer.main.get_command(app)
    parsed: dict[str, dict] = {}
    try:
        ctx = cmd.make_context("visionlake", list(args))
        parsed[""] = ctx.params
        path = []
        while hasattr(cmd, "resolve_command"):  # a group: resolve its command
            rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
            assert rest, f"visionlake {shlex.join(args)}: no command"
            name, cmd, rest = cmd.resolve_command(ctx, rest)
            assert cmd is not None and name is not None
            path.append(name)
            ctx = cmd.make_context(name, rest, parent=ctx)
            parsed[" ".join(path)] = ctx.params
    except USAGE_ERRORS as e:
        raise AssertionError(f"visionlake {shlex.join(args)}: {e.format_message()}") from None
    return parsed


def command_params(parsed: dict[str, dict]) -> tuple[str, dict]:
    """(the leaf command, its parameters) of a parse."""
    leaf = max(parsed, key=len)
    return leaf, parsed[leaf]


def visionlake_commands() -> list[tuple[str, list[str], dict[str, str]]]:
    """(where, args after `visionlake`, environment) of every visionlake command in deploy/."""
    out = []
    for name, svc in compose_services().items():
        if _runs_visionlake(svc):
            command = svc["command"]
            args = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
            out.append((f"compose.yaml:{name}", args, env_dict(svc.get("environment"))))
    for fname, doc in manifests():
        if doc["kind"] not in WORKLOADS:
            continue
        for c in pod_spec(doc)["containers"]:
            if c["image"].split(":")[0].endswith("visionlake"):
                env = k8s_env(c)
                assert "command" not in c, f"{fname}: {c['name']}: the image's entry point is visionlake"
                out.append((f"{fname}:{c['name']}", [k8s_expand(str(a), env) for a in c["args"]], env))
    return out


def _runs_visionlake(svc: dict) -> bool:
    build = svc.get("build")
    return isinstance(build, dict) and build.get("dockerfile", "Dockerfile") == "Dockerfile"


COMMANDS = visionlake_commands()


# ---------------------------------------------------------------------------------------------------
# Kubernetes


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kubernetes_manifests_match_the_schemas(version):
    checked = []
    for fname, doc in manifests():
        if doc["apiVersion"].startswith(CRD_GROUPS):
            continue  # not in the Kubernetes schemas: checked below
        kubernetes_validate.validate(doc, version, strict=True)
        checked.append(f"{fname}:{doc['kind']}/{doc['metadata']['name']}")
    kinds = {c.split(":")[1].split("/")[0] for c in checked}
    assert {"Deployment", "Service", "ConfigMap", "Secret", "Job"} <= kinds, checked


def test_the_schema_check_refuses_unknown_fields_and_wrong_types():
    """The validation above is not vacuous: a misspelt field or a wrong type fails it."""
    worker = by_kind("Deployment")["visionlake-worker"]
    typo = copy.deepcopy(worker)
    typo["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    wrong = copy.deepcopy(worker)
    wrong["spec"]["replicas"] = "two"
    for bad in (typo, wrong):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(bad, K8S_VERSIONS[-1], strict=True)


def test_every_workload_runs_as_non_root_with_resources_and_probes():
    workloads = {n: d for _, d in manifests() if d["kind"] in WORKLOADS for n in [d["metadata"]["name"]]}
    assert {"visionlake-worker", "visionlake-serve", "visionlake-topics"} <= set(workloads)
    assert any(n.startswith("visionlake-ingest") for n in workloads)
    for name, w in workloads.items():
        pod = pod_spec(w)
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"].get("runAsUser", 1) != 0, name
        if w["kind"] == "Deployment":
            labels = w["spec"]["template"]["metadata"]["labels"]
            assert w["spec"]["selector"]["matchLabels"].items() <= labels.items(), name
        mounts_ok = {v["name"] for v in pod.get("volumes", [])}
        for c in pod["containers"]:
            where = f"{name}/{c['name']}"
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"], where
            assert sc.get("runAsUser", 1) != 0 and sc.get("privileged") is not True, where
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][part]), f"{where}: {part}"
            assert {m["name"] for m in c.get("volumeMounts", [])} <= mounts_ok, where
            if sc.get("readOnlyRootFilesystem"):  # the lake directory and /tmp stay writable
                paths = {m["mountPath"] for m in c.get("volumeMounts", [])}
                assert {"/tmp", "/var/lib/visionlake"} <= paths, where
            ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            if w["kind"] == "Deployment":
                assert ports and "livenessProbe" in c, f"{where}: a long-running process needs a probe"
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                if probe in c:
                    port = c[probe]["httpGet"]["port"]
                    assert port in ports or port in ports.values(), f"{where}: {probe} port {port}"
    assert "readinessProbe" in pod_spec(workloads["visionlake-serve"])["containers"][0]


def test_the_service_selects_the_dashboard_and_targets_its_port():
    service = by_kind("Service")["visionlake-serve"]
    serve = by_kind("Deployment")["visionlake-serve"]
    labels = serve["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    ports = {p["name"]: p["containerPort"] for p in pod_spec(serve)["containers"][0]["ports"]}
    for p in service["spec"]["ports"]:
        assert p["targetPort"] in ports or p["targetPort"] in ports.values(), p


def test_urls_live_in_the_configmap_and_credentials_in_secrets():
    (config,) = by_kind("ConfigMap").values()
    data = config["data"]
    assert data["VISIONLAKE_LOG"].startswith("kafka://")
    assert data["VISIONLAKE_CATALOG"].startswith("postgresql://")
    assert data["VISIONLAKE_ARCHIVE"].startswith("s3://")
    for key, value in data.items():  # no password in a ConfigMap, not even inside a URL
        assert not re.search(r"PASSWORD|SECRET|TOKEN", key), key
        assert urlsplit(value).password is None, key
    secrets = {k for s in by_kind("Secret").values() for k in s.get("stringData", {})}
    assert {"PGPASSWORD", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "VISIONLAKE_TOKEN"} <= secrets
    for _, doc in manifests():  # every reference resolves (k8s_env asserts it)
        if doc["kind"] in WORKLOADS:
            for c in pod_spec(doc)["containers"]:
                k8s_env(c)


#: The part of KEDA's ScaledObject CRD (keda.sh/v1alpha1) the manifest uses, with the Kafka
#: scaler's metadata: unknown fields are refused, as the API server's structural schema would.
SCALED_OBJECT = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "name": {"type": "string"},
                        "envSourceContainerName": {"type": "string"},
                    },
                },
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "initialCooldownPeriod": {"type": "integer", "minimum": 0},
                "idleReplicaCount": {"type": "integer", "minimum": 0},
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "fallback": {"type": "object"},
                "advanced": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "restoreToOriginalReplicaCount": {"type": "boolean"},
                        "horizontalPodAutoscalerConfig": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {"name": {"type": "string"}, "behavior": {"type": "object"}},
                        },
                        "scalingModifiers": {"type": "object"},
                    },
                },
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["type", "metadata"],
                        "additionalProperties": False,
                        "properties": {
                            "type": {"type": "string"},
                            "name": {"type": "string"},
                            "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                            "useCachedMetrics": {"type": "boolean"},
                            "authenticationRef": {"type": "object", "required": ["name"]},
                            "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                        },
                    },
                },
            },
        },
    },
}

#: The Kafka scaler's metadata (keda.sh/docs/latest/scalers/apache-kafka); all values are strings.
KAFKA_TRIGGER_KEYS = {
    "bootstrapServers", "bootstrapServersFromEnv", "consumerGroup", "consumerGroupFromEnv", "topic",
    "topicFromEnv", "lagThreshold", "activationLagThreshold", "offsetResetPolicy", "allowIdleConsumers",
    "scaleToZeroOnInvalidOffset", "excludePersistentLag", "version", "partitionLimitation", "sasl",
    "tls", "unsafeSsl", "limitToPartitionsWithLag", "ensureEvenDistributionOfPartitions",
}  # fmt: skip


def _worker_command() -> tuple[dict, dict, dict[str, str]]:
    """(global options, worker options, environment) of the worker Deployment's command line."""
    worker = by_kind("Deployment")["visionlake-worker"]
    (c,) = pod_spec(worker)["containers"]
    env = k8s_env(c)
    mp = pytest.MonkeyPatch()
    try:
        parsed = parse_cli([k8s_expand(a, env) for a in c["args"]], env, mp)
    finally:
        mp.undo()
    assert "worker" in parsed
    return parsed[""], parsed["worker"], env


def _topic_partitions() -> int:
    (job,) = by_kind("Job").values()
    args = pod_spec(job)["containers"][0]["args"]
    assert args[:3] == ["log", "create", "frames"], args
    return int(args[args.index("--partitions") + 1])


def test_keda_scaledobject_scales_the_worker_on_its_consumer_groups_lag():
    (scaled,) = by_kind("ScaledObject").values()
    jsonschema.validate(scaled, SCALED_OBJECT)
    spec = scaled["spec"]
    target = spec["scaleTargetRef"]
    assert (
        target.get("kind", "Deployment") == "Deployment" and target.get("apiVersion", "apps/v1") == "apps/v1"
    )
    assert target["name"] in by_kind("Deployment") and target["name"] == "visionlake-worker"
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= _topic_partitions()

    (trigger,) = spec["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert set(meta) <= KAFKA_TRIGGER_KEYS, set(meta) - KAFKA_TRIGGER_KEYS
    assert int(meta["lagThreshold"]) > 0 and int(meta.get("activationLagThreshold", "0")) >= 0

    # the group, topic and brokers the worker really uses: its --group or <detector>.<version>, and
    # the log URL's topic_prefix in front of both (as the Kafka log does)
    top, opts, env = _worker_command()
    url = urlsplit(top["log"] or env["VISIONLAKE_LOG"])
    assert url.scheme == "kafka"
    prefix = dict(parse_qsl(url.query)).get("topic_prefix", "")
    detector = load_detector(opts["detector"])
    group = opts["group"] or default_group(detector.name, detector.version)
    assert meta["consumerGroup"] == prefix + group == "hog-person.2"
    assert meta["topic"] == prefix + opts["topic"]
    assert meta["bootstrapServers"].split(",") == url.netloc.split(",")
    assert meta.get("offsetResetPolicy", "latest") == opts["start"]  # where a new group starts


def test_the_keda_structure_check_refuses_a_misspelt_field():
    (scaled,) = by_kind("ScaledObject").values()
    bad = copy.deepcopy(scaled)
    bad["spec"]["maxReplicas"] = bad["spec"].pop("maxReplicaCount")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, SCALED_OBJECT)


# ---------------------------------------------------------------------------------------------------
# Compose


def test_compose_runs_kafka_kraft_postgres_minio_ingest_workers_and_the_dashboard():
    data = compose()
    assert set(data) <= {"name", "services", "volumes", "networks", "configs", "secrets"} | {
        k for k in data if k.startswith("x-")
    }
    services = compose_services()
    assert {"kafka", "postgres", "minio", "minio-init", "topics", "ingest", "worker", "dashboard"} <= set(
        services
    )
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, name
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    kenv = env_dict(kafka["environment"])
    assert set(kenv["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "CONTROLLER" in kenv["KAFKA_CONTROLLER_LISTENER_NAMES"] and not any("ZOOKEEPER" in k for k in kenv)
    assert services["worker"]["deploy"]["replicas"] >= 2
    assert services["worker"]["command"][:1] == ["worker"]
    assert services["dashboard"]["command"][:1] == ["serve"]
    assert "ingest" in services["ingest"]["command"]


def test_compose_dependencies_volumes_and_health_checks_exist():
    services = compose_services()
    declared_volumes = set(compose().get("volumes") or {})
    dockerfile_health = any(i.startswith("HEALTHCHECK ") for i in final_stage(dockerfile_instructions()))
    for name, svc in services.items():
        deps = svc.get("depends_on", {})
        for dep, cond in deps.items() if isinstance(deps, dict) else ((d, {}) for d in deps):
            assert dep in services and dep != name, f"{name} depends on missing {dep}"
            condition = cond.get("condition", "service_started")
            assert condition in {"service_started", "service_healthy", "service_completed_successfully"}
            if condition == "service_healthy":  # a health check to wait for: its own or the image's
                assert "healthcheck" in services[dep] or (
                    _runs_visionlake(services[dep]) and dockerfile_health
                ), f"{name} waits for {dep} to be healthy, which has no health check"
            if condition == "service_completed_successfully":
                assert services[dep].get("restart", "no") == "no", f"{dep} is one-shot: restart 'no'"
            assert not services[dep].get("profiles") or svc.get("profiles"), (
                f"{name} needs {dep}, off by default"
            )
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if source and not source.startswith((".", "/", "~")):
                assert source in declared_volumes, f"{name}: volume {source} is not declared"
        check = svc.get("healthcheck")
        if check:
            assert check["test"][0] in {"CMD", "CMD-SHELL", "NONE"}, name


def test_compose_needs_the_dashboard_token_and_fills_in_defaults():
    with pytest.raises(KeyError, match="VISIONLAKE_TOKEN"):
        interpolate(compose()["services"], {})
    services = compose_services()
    left = [s for s in re.findall(r"\$\{[^}]*\}", str(services)) if s]
    assert not left, left
    assert (
        env_dict(services["dashboard"]["environment"])["VISIONLAKE_TOKEN"] == COMPOSE_ENV["VISIONLAKE_TOKEN"]
    )


def test_compose_makes_the_archives_bucket_and_points_every_visionlake_service_at_the_servers():
    services = compose_services()
    init = " ".join(map(str, services["minio-init"]["command"]))
    buckets = re.findall(r"mc mb (?:--ignore-existing )?local/([\w.-]+)", init)
    assert "$MINIO_ROOT_USER" in init  # $$ in the file: the shell's variable, not compose's
    for name, svc in services.items():
        if not _runs_visionlake(svc):
            continue
        env = env_dict(svc["environment"])
        assert urlsplit(env["VISIONLAKE_LOG"]).hostname == "kafka", name
        assert urlsplit(env["VISIONLAKE_CATALOG"]).hostname == "postgres", name
        archive = urlsplit(env["VISIONLAKE_ARCHIVE"])
        assert archive.scheme == "s3" and archive.hostname in buckets, name
        assert urlsplit(env["AWS_ENDPOINT_URL"]).hostname == "minio", name
        assert env["PGPASSWORD"] == env_dict(services["postgres"]["environment"])["POSTGRES_PASSWORD"]
        minio = env_dict(services["minio"]["environment"])
        assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == (
            minio["MINIO_ROOT_USER"],
            minio["MINIO_ROOT_PASSWORD"],
        )


# ---------------------------------------------------------------------------------------------------
# Every visionlake command in deploy/


@pytest.mark.parametrize("where,args,env", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_every_visionlake_command_parses_with_the_real_cli(where, args, env, monkeypatch):
    parsed = parse_cli(args, env, monkeypatch)
    leaf, params = command_params(parsed)
    top = parsed[""]
    for key in ("log", "catalog", "archive"):  # URLs from the environment, in the documented forms
        url = top[key] or env.get(f"VISIONLAKE_{key.upper()}")
        assert url, f"{where}: no {key} URL"
        assert url.split("://")[0] in {"log": {"kafka"}, "catalog": {"postgresql"}, "archive": {"s3"}}[key]
    if "detector" in params:
        load_detector(params["detector"])  # an installed detector
    if params.get("metrics_port"):
        assert params["metrics_host"] == "0.0.0.0", f"{where}: metrics only on the container's localhost"
    if leaf == "serve":
        assert params["host"] == "0.0.0.0", where
        assert params["token"], f"{where}: serve refuses 0.0.0.0 without a token"


def test_the_deployments_run_ingest_workers_serve_and_the_topic(monkeypatch):
    leaves = {where: command_params(parse_cli(args, env, monkeypatch))[0] for where, args, env in COMMANDS}
    for place in ("compose.yaml", "worker.yaml", "serve.yaml", "ingest.yaml", "topics-job.yaml"):
        assert any(w.startswith(place) for w in leaves), place
    assert {"worker", "serve", "log create"} <= set(leaves.values())
    assert {"ingest video", "ingest camera"} <= set(leaves.values())


def test_probes_and_health_checks_look_where_the_commands_listen(monkeypatch):
    from visionlake.web.auth import OPEN_PATHS  # the dashboard's paths open without its token

    listens: list[tuple[str, int, str]] = []  # (where, port, path probed)
    for name, svc in compose_services().items():
        if not _runs_visionlake(svc):
            continue
        url = env_dict(svc["environment"]).get("HEALTHCHECK_URL")
        if url:
            parts = urlsplit(url)
            assert parts.hostname == "127.0.0.1", name
            listens.append((f"compose.yaml:{name}", parts.port, parts.path))
    for fname, doc in manifests():
        if doc["kind"] == "Deployment":
            for c in pod_spec(doc)["containers"]:
                ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
                for probe in ("livenessProbe", "readinessProbe"):
                    if probe in c:
                        get = c[probe]["httpGet"]
                        listens.append(
                            (f"{fname}:{c['name']}", ports.get(get["port"], get["port"]), get["path"])
                        )
    assert len(listens) >= 6, listens
    commands = {where: (args, env) for where, args, env in COMMANDS}
    for where, port, path in listens:
        args, env = commands[where]
        leaf, params = command_params(parse_cli(args, env, monkeypatch))
        if leaf == "serve":
            assert port == params["port"] and path in OPEN_PATHS, f"{where}: {port}{path}"
        else:
            assert port == params["metrics_port"] and path == "/metrics", f"{where}: {port}{path}"


# ---------------------------------------------------------------------------------------------------
# Dockerfile and .dockerignore


def dockerfile_instructions() -> list[str]:
    """Instructions with continuations joined and comments dropped."""
    out, pending = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or (line.startswith("#") and not pending) or (pending and line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        out.append(" ".join((pending + line).split()))
        pending = ""
    return out


def final_stage(instructions: list[str]) -> list[str]:
    starts = [i for i, x in enumerate(instructions) if x.upper().startswith("FROM ")]
    return instructions[starts[-1] :]


def test_dockerfile_slim_base_non_root_user_health_check_and_entry_point():
    instructions = dockerfile_instructions()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", "\n".join(instructions), re.M))
    bases = [
        re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], x.split()[1])
        for x in instructions
        if x.upper().startswith("FROM ")
    ]
    assert bases and all(re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", b) for b in bases), bases
    final = final_stage(instructions)
    users = [x.split()[1] for x in final if x.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in {"root", "0"}, users
    health = [x for x in final if x.startswith("HEALTHCHECK ")]
    assert len(health) == 1 and " CMD " in health[0] and "NONE" not in health[0], health
    assert "visionlake --version" in health[0] and "HEALTHCHECK_URL" in health[0]
    entry = [x for x in final if x.startswith("ENTRYPOINT ")]
    assert entry and entry[-1] == 'ENTRYPOINT ["visionlake"]', entry


def test_dockerfile_installs_the_server_extras_and_headless_opencv_4():
    text = "\n".join(dockerfile_instructions())
    extras = re.search(r'pip install "\.\[([\w,]+)\]"', text)
    assert extras, "the package is installed with its extras"
    wanted = set(extras.group(1).split(","))
    assert wanted >= SERVER_EXTRAS
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert wanted <= set(project["optional-dependencies"])
    opencv = [d for d in project["dependencies"] if d.startswith("opencv")]
    assert opencv and opencv[0].startswith("opencv-python-headless") and "<5" in opencv[0]
    assert re.search(r"pip install (?!.*--no-deps)[^\n&]*\bopencv-python\b", text) is None
    # the tracking packages: without their dependencies, at the versions scripts/setup.sh installs
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    pins = set(re.findall(r'"((?:trackers|supervision|pydeprecate)==[\w.]+)"', setup))
    no_deps = re.search(r"pip install --no-deps ([^\n&]+)", text)
    assert pins and no_deps and set(re.findall(r'"([^"]+)"', no_deps.group(1))) == pins
    assert "! /opt/visionlake/bin/pip show -q opencv-python" in text  # OpenCV 5 did not come in


def test_no_sample_media_reaches_the_image():
    instructions = dockerfile_instructions()
    sources = []
    for x in instructions:
        words = shlex.split(x)
        if words[0] in {"COPY", "ADD"}:
            assert words[0] == "COPY", f"{x}: ADD fetches URLs and unpacks archives; COPY only copies"
            flags = [w for w in words[1:] if w.startswith("--")]
            if not any(f.startswith("--from") for f in flags):
                sources += [w for w in words[1:-1] if not w.startswith("--")]
    assert sources and set(sources) <= {"pyproject.toml", "README.md", "src"}, sources
    text = "\n".join(instructions)
    assert not re.search(r"opencv-doc|dataset-fashion-mnist|\.(avi|mp4|mkv|jpe?g|png|idx)\b|tests/data", text)
    # the build context: everything left out, then only what the package is built from let in
    ignore = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()]
    ignore = [ln for ln in ignore if ln and not ln.startswith("#")]
    assert ignore[0] == "*"
    assert {ln[1:].rstrip("/") for ln in ignore if ln.startswith("!")} == {
        "pyproject.toml",
        "README.md",
        "src",
    }
