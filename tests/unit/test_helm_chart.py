"""The Helm chart in deploy/helm/avatarflow, rendered by the real Helm engine (helm-python-sdk,
no helm binary) for every profile under ci/: it lints clean, every built-in object is valid
Kubernetes 1.30, and what it deploys agrees with the code it deploys (service names, ports,
settings, and the stream and consumer-group names KEDA watches)."""

from __future__ import annotations

import functools
import json
import re
import tomllib
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import yaml

from avatarflow.bus import keys
from avatarflow.runtime import registry
from avatarflow.runtime.registry import PIPELINE
from avatarflow.runtime.settings import DEFAULT_PORTS, SERVICES, Settings

helm = pytest.importorskip("helm_python", reason="pip install helm-python-sdk (the Helm engine)")
kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "avatarflow"
PROFILES = sorted(p.name.removesuffix("-values.yaml") for p in (CHART / "ci").glob("*-values.yaml"))
RELEASE, NAMESPACE = "af", "avatars"
PREFIX = f"{RELEASE}-avatarflow"  # resource names are <release>-avatarflow-<component>
KUBE_VERSION = "1.30.0"
CRDS = {("keda.sh/v1alpha1", "ScaledObject"), ("monitoring.coreos.com/v1", "ServiceMonitor"),
        ("monitoring.coreos.com/v1", "PrometheusRule"), ("cert-manager.io/v1", "Certificate")}
# Settings the services are about to read but avatarflow.runtime.settings does not define yet.
# The metric names the services export, from the metrics module itself (counters with the
# ``_total`` suffix Prometheus sees); the chart README lists them.
def _exported() -> set[str]:
    from prometheus_client import REGISTRY

    import avatarflow.telemetry.metrics  # noqa: F401 - registers the metrics

    return {f.name + ("_total" if f.type == "counter" else "") for f in REGISTRY.collect()
            if f.name.startswith("avatarflow_")}


METRICS = _exported()
Doc = dict[str, Any]


def test_profiles_are_the_five_expected() -> None:
    assert PROFILES == ["autoscaling-off", "cpu", "external-redis", "gpu-joyvasa", "gpu-triton"]


# What a default install must name: the API keys Secret (without one, rendering fails:
# the gateway requires keys by default).
DEFAULT_VALUES: dict[str, Any] = {"gateway": {"auth": {"existingSecret": "avatarflow-api-keys"}}}


@functools.cache
def profile_values(profile: str) -> dict[str, Any]:
    if profile == "default":
        return DEFAULT_VALUES
    return helm.values_from_yaml((CHART / "ci" / f"{profile}-values.yaml").read_text())


def merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` deep-merged onto ``base``, as Helm merges values files."""
    out = dict(base)
    for key, value in over.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = merged(out[key], value) if both else value
    return out


def render(values: dict[str, Any]) -> dict[str, str]:
    """Renders ``values`` over DEFAULT_VALUES (what every install must name)."""
    with helm.Chart.load(CHART) as chart:
        return chart.render(merged(DEFAULT_VALUES, values), name=RELEASE, namespace=NAMESPACE)


@functools.cache
def objects(profile: str) -> tuple[Doc, ...]:
    out = render(profile_values(profile))
    docs = [d for path, text in sorted(out.items()) if not path.endswith("NOTES.txt")
            for d in yaml.safe_load_all(text) if d]
    return tuple(docs)


def find(profile: str, kind: str, name: str | None = None) -> list[Doc]:
    return [d for d in objects(profile) if d["kind"] == kind
            and (name is None or d["metadata"]["name"] == name)]


def one(profile: str, kind: str, name: str) -> Doc:
    found = find(profile, kind, name)
    assert len(found) == 1, f"{profile}: expected one {kind} {name}, found {len(found)}"
    return found[0]


def pod_specs(profile: str) -> Iterator[tuple[str, Doc]]:
    for d in objects(profile):
        if d["kind"] in ("Deployment", "StatefulSet"):
            yield d["metadata"]["name"], d["spec"]["template"]["spec"]


def container(profile: str, component: str) -> Doc:
    spec = one(profile, "Deployment", f"{PREFIX}-{component}")["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    return c


def env_of(c: Doc) -> dict[str, Doc]:
    return {e["name"]: e for e in c.get("env", [])}


def app_version() -> str:
    with helm.Chart.load(CHART) as chart:
        return str(chart.metadata["appVersion"])


# -- Helm: lint, schema, render -------------------------------------------------------------

def test_chart_metadata_matches_the_package() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    with helm.Chart.load(CHART) as chart:
        meta = chart.metadata
        assert chart.values["components"].keys() == set(SERVICES)
        assert {s: chart.values["components"][s]["port"] for s in SERVICES} == DEFAULT_PORTS
    assert meta["apiVersion"] == "v2" and meta["name"] == "avatarflow"
    assert meta["appVersion"] == version


def test_values_declare_the_services_of_the_registry() -> None:
    """One declaration per service (avatarflow/runtime/registry.py): the chart's components,
    their ports and default replica counts, and the stream and consumer group each stage's
    autoscaler watches are the registry's."""
    with helm.Chart.load(CHART) as chart:
        values = chart.values
    assert set(values["components"]) == set(registry.NAMES)
    for spec in registry.SERVICES:
        component = values["components"][spec.name]
        assert (component["port"], component["replicas"]) == (spec.port, spec.replicas)
        assert ("autoscaling" in component) == isinstance(spec, registry.StageSpec), spec.name
    assert values["streams"] == {spec.name: {"stream": keys.join(spec.input), "group": spec.group}
                                 for spec in registry.PIPELINE}
    schema = json.loads((CHART / "values.schema.json").read_text())["properties"]
    assert set(schema["components"]["properties"]) == set(schema["components"]["required"]) == (
        set(registry.NAMES))
    assert set(schema["streams"]["properties"]) == set(registry.STAGE_NAMES)


@pytest.mark.parametrize("profile", ["default", *PROFILES])
def test_lint_is_clean(profile: str) -> None:
    report = helm.lint(CHART, profile_values(profile), strict=True, kube_version=f"v{KUBE_VERSION}")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize(("bad", "where"), [
    ({"components": {"renderer": {"replicas": -1}}}, "/components/renderer/replicas"),
    ({"replicaCount": 3}, "replicaCount"),
    ({"components": {"refiner": {"autoscaling": {"maxReplica": 4}}}}, "maxReplica"),
    ({"redis": {"external": {"url": "http://redis:6379"}}}, "/redis/external/url"),
    ({"triton": {"startupProbe": {"failureThreshold": 0}}}, "/triton/startupProbe"),
    ({"components": {"renderer": {"weights": {"subPath": "/weights"}}}},
     "/components/renderer/weights/subPath"),
])
def test_schema_rejects_bad_values(bad: dict[str, Any], where: str) -> None:
    with pytest.raises(helm.HelmValuesError, match="schema") as err:
        render(bad)
    assert where in str(err.value)


@pytest.mark.parametrize(("bad", "message"), [
    ({"redis": {"enabled": False}}, "redis.external.url"),
    ({"redis": {"external": {"url": "redis://r:6379/0"}}}, "redis.enabled=false"),
    # null drops the key (the defaults hold a volume): the schema requires one.
    ({"triton": {"enabled": True, "modelRepository": {"volume": None}}},
     "'/triton/modelRepository': missing property 'volume'"),
    ({"components": {"renderer": {"weights": {"enabled": True}}}}, "weights.volume"),
    ({"profile": {"name": "liveportrait-joyvasa"}}, "profile.weights.volume"),
])
def test_inconsistent_values_fail_with_a_message(bad: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmError, match=re.escape(message)):
        render(bad)


def test_schema_describes_every_property() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    missing: list[str] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for name, prop in node.get("properties", {}).items():
                if "description" not in prop:
                    missing.append(f"{path}.{name}")
            for key, value in node.items():
                walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for k, value in enumerate(node):
                walk(value, f"{path}[{k}]")

    walk(schema, "$")
    assert missing == []
    # The settings the chart can set are fields of avatarflow.runtime.settings.Settings.
    settable = set(schema["definitions"]["config"]["properties"])
    assert settable <= {f.name for f in fields(Settings)}


# -- Kubernetes validity --------------------------------------------------------------------

@pytest.mark.parametrize("profile", PROFILES)
def test_objects_are_valid_kubernetes(profile: str) -> None:
    errors = []
    for d in objects(profile):
        assert d["metadata"]["namespace"] == NAMESPACE or d["kind"] == "ConfigMap"
        if (d["apiVersion"], d["kind"]) in CRDS:
            continue  # checked by the CRD tests below
        try:
            kv.validate(d, KUBE_VERSION, strict=True)
        except kv.ValidationError as exc:
            errors.append(f"{d['kind']}/{d['metadata']['name']}: "
                          f"{'.'.join(map(str, exc.path))}: {exc.message}")
    assert errors == []


@pytest.mark.parametrize("profile", PROFILES)
def test_crd_objects_are_well_formed(profile: str) -> None:
    deployments = {d["metadata"]["name"] for d in find(profile, "Deployment")}
    services = {d["metadata"]["name"]: d for d in find(profile, "Service")}
    for d in objects(profile):
        if (d["apiVersion"], d["kind"]) not in CRDS:
            continue
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", d["metadata"]["name"])
        spec = d["spec"]
        if d["kind"] == "ScaledObject":
            assert spec["scaleTargetRef"]["name"] in deployments
            assert 0 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
            assert spec["triggers"]
            for t in spec["triggers"]:
                assert t["type"] in ("redis-streams", "prometheus")
                assert all(isinstance(v, str) for v in t["metadata"].values()), t
        elif d["kind"] == "ServiceMonitor":
            selector = spec["selector"]["matchLabels"]
            matched = [s for s in services.values()
                       if selector.items() <= s["metadata"]["labels"].items()]
            assert len(matched) == 1, d["metadata"]["name"]
            ports = {p["name"] for p in matched[0]["spec"]["ports"]}
            assert all(e["port"] in ports and e["path"] == "/metrics" for e in spec["endpoints"])
        else:
            rules = [r for g in spec["groups"] for r in g["rules"]]
            assert rules and all(r["alert"] and r["expr"] and r["labels"]["severity"]
                                 for r in rules)


# -- What the chart deploys -----------------------------------------------------------------

@pytest.mark.parametrize("profile", PROFILES)
def test_every_component_has_deployment_service_and_pdb(profile: str) -> None:
    for svc in SERVICES:
        name = f"{PREFIX}-{svc}"
        pod = one(profile, "Deployment", name)["spec"]["template"]
        labels = pod["metadata"]["labels"]
        service = one(profile, "Service", name)["spec"]
        pdb = one(profile, "PodDisruptionBudget", name)["spec"]
        assert service["selector"].items() <= labels.items()
        assert pdb["selector"]["matchLabels"].items() <= labels.items()
        assert labels["app.kubernetes.io/component"] == svc
        assert {p["name"]: p["port"] for p in service["ports"]} == {
            "grpc": DEFAULT_PORTS[svc], "metrics": 9090}


@pytest.mark.parametrize("profile", PROFILES)
def test_gateway_reaches_every_renderer_pod(profile: str) -> None:
    """The renderer Service is headless and the gateway is told its name: with round_robin
    the gateway's channel spreads portrait analyses over all renderer pods."""
    name = f"{PREFIX}-renderer"
    assert one(profile, "Service", name)["spec"]["clusterIP"] == "None"
    assert one(profile, "Service", f"{PREFIX}-gateway")["spec"].get("clusterIP") != "None"
    pod = one(profile, "Deployment", f"{PREFIX}-gateway")["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["AVATARFLOW_RENDERER_TARGET"] == f"{name}:{DEFAULT_PORTS['renderer']}"


@pytest.mark.parametrize("profile", PROFILES)
def test_components_serve_and_probe_the_grpc_health_service(profile: str) -> None:
    for svc in SERVICES:
        c = container(profile, svc)
        port = DEFAULT_PORTS[svc]
        assert c["command"] == ["avatarflow", "serve", svc]
        assert {p["name"]: p["containerPort"] for p in c["ports"]} == {
            "grpc": port, "metrics": 9090}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if (svc, probe) == ("gateway", "livenessProbe"):
                continue  # TCP: a full gateway is NOT_SERVING but alive (test_helm_security)
            assert c[probe]["grpc"] == {"port": port}, (svc, probe)
        env = env_of(c)
        assert env["AVATARFLOW_PORT"]["value"] == str(port)
        assert env["AVATARFLOW_METRICS_PORT"]["value"] == "9090"
    gateway = env_of(container(profile, "gateway"))
    assert gateway["AVATARFLOW_RENDERER_TARGET"]["value"] == (
        f"{PREFIX}-renderer:{DEFAULT_PORTS['renderer']}")


@pytest.mark.parametrize("profile", PROFILES)
def test_environment_names_are_settings(profile: str) -> None:
    known = {f.name for f in fields(Settings)}
    for svc in SERVICES:
        own = "AVATARFLOW_" + svc.upper().replace("-", "_") + "_"
        for name in env_of(container(profile, svc)):
            if not name.startswith("AVATARFLOW_"):
                continue
            field = name.removeprefix(own if name.startswith(own) else "AVATARFLOW_").lower()
            assert field in known, f"{svc}: {name} is not a setting"


@pytest.mark.parametrize("profile", PROFILES)
def test_every_container_is_sized_and_locked_down(profile: str) -> None:
    for owner, spec in pod_specs(profile):
        assert spec["enableServiceLinks"] is False, owner
        assert spec["automountServiceAccountToken"] is False, owner
        assert spec["securityContext"]["runAsNonRoot"] is True, owner
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        mounts_tmp = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
        for c in spec["containers"]:
            where = f"{owner}/{c['name']}"
            assert c["resources"]["requests"] and c["resources"]["limits"], where
            sec = c["securityContext"]
            assert sec["runAsNonRoot"] is True, where
            assert sec["readOnlyRootFilesystem"] is True, where
            assert sec["allowPrivilegeEscalation"] is False, where
            assert sec["capabilities"] == {"drop": ["ALL"]}, where
            writable = {m["mountPath"] for m in c["volumeMounts"] if m["name"] in mounts_tmp}
            assert "/tmp" in writable or owner.endswith("-redis"), where


def test_gpu_profile_runs_triton_on_gpu_nodes() -> None:
    name = f"{PREFIX}-triton"
    spec = one("gpu-triton", "Deployment", name)["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    # avatarflow's own Triton image (deploy/triton/Dockerfile), named and tagged as the
    # service images are: the plain NVIDIA image lacks the avatarflow and torch model.py need.
    assert c["image"] == f"avatarflow-triton:{app_version()}"
    assert c["args"][0] == "tritonserver" and "--model-repository=/models" in c["args"]
    assert {"--load-model=renderer", "--load-model=refiner"} <= set(c["args"])
    assert int(c["resources"]["requests"]["nvidia.com/gpu"]) >= 1
    assert int(c["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert spec["nodeSelector"] and spec["runtimeClassName"] == "nvidia"
    assert any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    startup = c["startupProbe"]
    assert startup["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    models = next(v for v in spec["volumes"] if v["name"] == "models")
    assert "persistentVolumeClaim" in models
    service = one("gpu-triton", "Service", name)["spec"]
    assert {p["name"]: p["port"] for p in service["ports"]} == ports
    assert one("gpu-triton", "ServiceMonitor", name)
    for stage in ("renderer", "refiner"):
        env = env_of(container("gpu-triton", stage))
        assert env[f"AVATARFLOW_{stage.upper()}_TRITON_URL"]["value"] == f"{name}:8001"
        triggers = one("gpu-triton", "ScaledObject", f"{PREFIX}-{stage}")["spec"]["triggers"]
        (prom,) = [t for t in triggers if t["type"] == "prometheus"]
        assert f'model="{stage}"' in prom["metadata"]["query"]


def test_triton_image_follows_the_service_images() -> None:
    values = {"image": {"registry": "ghcr.io/acme/", "tag": "1.2.3"}, "triton": {"enabled": True}}
    (deployment,) = [d for path, text in render(values).items()
                     if path.endswith("deployment-triton.yaml")
                     for d in yaml.safe_load_all(text) if d]
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    assert c["image"] == "ghcr.io/acme/avatarflow-triton:1.2.3"
    with helm.Chart.load(CHART) as chart:
        assert chart.values["triton"]["image"]["repository"] == ""
        assert chart.values["triton"]["image"]["tag"] == ""


def test_gpu_profile_runs_the_neural_engines_on_triton() -> None:
    """Renderer and refiner run `neural` with the chart's Triton Service as their server, and
    read the same weights directory of the same claim that Triton loads the networks from."""
    triton_name = f"{PREFIX}-triton"
    service = one("gpu-triton", "Service", triton_name)
    grpc_port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc")
    triton_pod = one("gpu-triton", "Deployment", triton_name)["spec"]["template"]["spec"]
    (triton,) = triton_pod["containers"]
    triton_env = env_of(triton)
    repo_mount = next(m for m in triton["volumeMounts"] if m["name"] == "models")
    repo_claim = next(v for v in triton_pod["volumes"] if v["name"] == "models")
    for stage in ("renderer", "refiner"):
        prefix = f"AVATARFLOW_{stage.upper()}_"
        spec = one("gpu-triton", "Deployment", f"{PREFIX}-{stage}")["spec"]["template"]["spec"]
        (c,) = spec["containers"]
        env = env_of(c)
        assert env[prefix + "ENGINE"]["value"] == "neural"
        assert env[prefix + "TRITON_URL"]["value"] == f"{service['metadata']['name']}:{grpc_port}"
        weights = env[prefix + "WEIGHTS"]["value"]
        (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == weights]
        assert mount["readOnly"] is True
        (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
        assert volume["persistentVolumeClaim"] == repo_claim["persistentVolumeClaim"]
        # Triton's copy of the stage's weights (its config.pbtxt parameter, overridden).
        served = triton_env[f"AVATARFLOW_TRITON_{stage.upper()}_WEIGHTS"]["value"]
        assert served == f"{repo_mount['mountPath']}/{mount['subPath']}"
    renderer = env_of(container("gpu-triton", "renderer"))
    assert "arch=liveportrait" in renderer["AVATARFLOW_RENDERER_ENGINE_OPTIONS"]["value"]


def test_cpu_profile_has_no_triton_and_no_gpu() -> None:
    assert not [d for d in objects("cpu") if "triton" in d["metadata"]["name"]]
    for owner, spec in pod_specs("cpu"):
        for c in spec["containers"]:
            assert "nvidia.com/gpu" not in json.dumps(c["resources"]), owner
            assert not any(e["name"].endswith("_TRITON_URL") for e in c.get("env", []))
    for so in find("cpu", "ScaledObject"):
        assert {t["type"] for t in so["spec"]["triggers"]} == {"redis-streams"}


def test_in_chart_redis_serves_the_components() -> None:
    name = f"{PREFIX}-redis"
    sts = one("cpu", "StatefulSet", name)
    assert sts["spec"]["serviceName"] == name
    (c,) = sts["spec"]["template"]["spec"]["containers"]
    assert c["image"] == "redis:7"
    assert one("cpu", "Service", name)["spec"]["clusterIP"] == "None"
    for svc in SERVICES:
        env = env_of(container("cpu", svc))
        assert env["AVATARFLOW_REDIS_URL"]["value"] == f"redis://{name}:6379/0"
        assert "REDIS_PASSWORD" not in env


def test_external_redis_profile_reads_the_password_from_the_secret() -> None:
    assert not find("external-redis", "StatefulSet")
    assert not [d for d in objects("external-redis") if d["metadata"]["name"].endswith("-redis")]
    for svc in SERVICES:
        env = container("external-redis", svc)["env"]
        names = [e["name"] for e in env]
        # $(REDIS_PASSWORD) expands only from a variable defined earlier in the list.
        assert names.index("REDIS_PASSWORD") < names.index("AVATARFLOW_REDIS_URL")
        by_name = env_of({"env": env})
        assert by_name["REDIS_PASSWORD"]["valueFrom"] == {
            "secretKeyRef": {"name": "avatarflow-redis", "key": "redis-password"}}
        assert by_name["AVATARFLOW_REDIS_URL"]["value"] == (
            "redis://:$(REDIS_PASSWORD)@redis-master.data.svc:6379/0")
    for so in find("external-redis", "ScaledObject"):
        for t in so["spec"]["triggers"]:
            assert t["metadata"]["address"] == "redis-master.data.svc:6379"
            assert t["metadata"]["passwordFromEnv"] == "REDIS_PASSWORD"


def test_autoscaling_off_profile_fixes_the_replica_counts() -> None:
    assert not find("autoscaling-off", "ScaledObject")
    values = profile_values("autoscaling-off")["components"]
    for svc in SERVICES:
        deployment = one("autoscaling-off", "Deployment", f"{PREFIX}-{svc}")
        assert deployment["spec"]["replicas"] == values[svc]["replicas"]


@pytest.mark.parametrize("profile", [p for p in PROFILES if p != "autoscaling-off"])
def test_scaled_objects_watch_the_streams_the_services_consume(profile: str) -> None:
    """KEDA watches the join stream of each stage's input topic with the stage's group, named
    exactly as avatarflow.bus.keys and avatarflow.runtime.registry name them."""
    expected = {spec.name: (keys.join(spec.input), spec.group) for spec in PIPELINE}
    assert {spec.group for spec in PIPELINE} == set(keys.STAGE_GROUPS)
    assert all(keys.GROUP_OF[spec.input] == spec.group for spec in PIPELINE)
    with helm.Chart.load(CHART) as chart:
        streams = chart.values["streams"]
    assert {k: (v["stream"], v["group"]) for k, v in streams.items()} == expected
    scaled = {so["spec"]["scaleTargetRef"]["name"]: so for so in find(profile, "ScaledObject")}
    assert set(scaled) - {f"{PREFIX}-triton"} == {f"{PREFIX}-{s}" for s in expected}
    for stage, (stream, group) in expected.items():
        triggers = scaled[f"{PREFIX}-{stage}"]["spec"]["triggers"]
        redis_triggers = [t["metadata"] for t in triggers if t["type"] == "redis-streams"]
        assert redis_triggers
        for meta in redis_triggers:
            assert (meta["stream"], meta["consumerGroup"]) == (stream, group)
        (lag,) = [m for m in redis_triggers if "lagCount" in m]
        assert int(lag["activationLagCount"]) >= 0 and int(lag["lagCount"]) >= 1
        # KEDA's operator resolves the address from its own namespace.
        if profile != "external-redis":
            assert lag["address"] == f"{PREFIX}-redis.{NAMESPACE}.svc:6379"
        # KEDA owns the replica count of a scaled stage.
        assert "replicas" not in one(profile, "Deployment", f"{PREFIX}-{stage}")["spec"]
    assert one(profile, "Deployment", f"{PREFIX}-gateway")["spec"]["replicas"] >= 1


def metric_names(text: str) -> set[str]:
    return set(re.findall(r"\b(avatarflow_[a-z_]+?)(?:_bucket)?\b(?=[{\[(\s])", text))


def test_alerts_cover_late_frames_unavailable_stages_and_growing_lag() -> None:
    (rule,) = find("cpu", "PrometheusRule")
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    late = alerts["AvatarflowLateFrames"]
    assert "avatarflow_stage_late_frames_total" in late["expr"]
    assert "avatarflow_stage_frames_total" in late["expr"]
    assert late["expr"].rstrip().endswith("> 0.01") and late["for"] == "5m"
    assert "kube_deployment_status_replicas_available" in alerts[
        "AvatarflowStageUnavailable"]["expr"]
    lag = alerts["AvatarflowStreamLagGrowing"]["expr"]
    assert "deriv(avatarflow_stage_stream_lag" in lag and "[5m]) > 0" in lag
    used = set().union(*(metric_names(r["expr"]) for r in alerts.values()))
    assert used <= METRICS, used - METRICS


def test_dashboard_has_the_pipeline_panels() -> None:
    (cm,) = find("cpu", "ConfigMap", f"{PREFIX}-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(cm["data"]["avatarflow.json"])
    panels = {p["title"]: p for p in dashboard["panels"]}
    latency = next(p for t, p in panels.items() if t.startswith("Stage frame latency"))
    exprs = " ".join(t["expr"] for t in latency["targets"])
    assert "histogram_quantile(0.5," in exprs and "histogram_quantile(0.99," in exprs
    steps = latency["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert any(s["value"] == pytest.approx(1 / 30, abs=1e-4) for s in steps)
    for wanted in ("Late frames", "Active sessions", "Stream lag", "Gateway fps"):
        assert any(t.startswith(wanted) for t in panels), wanted
    used = set().union(*(metric_names(t["expr"]) for p in panels.values() for t in p["targets"]))
    assert used <= METRICS, used - METRICS
    readme = (CHART / "README.md").read_text()
    assert all(m in readme for m in METRICS)


def test_notes_name_the_gateway() -> None:
    notes = render(profile_values("cpu"))["avatarflow/templates/NOTES.txt"]
    assert f"{PREFIX}-gateway.{NAMESPACE}.svc:{DEFAULT_PORTS['gateway']}" in notes


def test_joyvasa_profile_gives_every_stage_the_one_weights_root(tmp_path: Path) -> None:
    """Every stage (not the gateway) selects the profile and mounts the same root read-only
    from the claim Triton reads; the settings the stages load from that environment are the
    profile's engines; motion-gen runs on a GPU node; the refiner stays off Triton."""
    from avatarflow.runtime.profiles import PROFILES as ENGINE_PROFILES

    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["properties"]["profile"]["properties"]["name"]["enum"] == ["", *ENGINE_PROFILES]
    profile = "gpu-joyvasa"
    triton_pod = one(profile, "Deployment", f"{PREFIX}-triton")["spec"]["template"]["spec"]
    (triton,) = triton_pod["containers"]
    claim = next(v for v in triton_pod["volumes"] if v["name"] == "models")
    repo = next(m for m in triton["volumeMounts"] if m["name"] == "models")["mountPath"]
    assert "--load-model=renderer" in triton["args"]
    assert "--load-model=refiner" not in triton["args"]
    engines = {}
    for stage in registry.STAGE_NAMES:
        spec = one(profile, "Deployment", f"{PREFIX}-{stage}")["spec"]["template"]["spec"]
        (c,) = spec["containers"]
        env = {k: e["value"] for k, e in env_of(c).items() if "value" in e}
        assert env["AVATARFLOW_PROFILE"] == "liveportrait-joyvasa"
        (mount,) = [m for m in c["volumeMounts"]
                    if m["mountPath"] == env["AVATARFLOW_WEIGHTS_ROOT"]]
        assert mount["readOnly"] is True and mount["subPath"] == "pretrained_weights"
        (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
        assert volume["persistentVolumeClaim"] == claim["persistentVolumeClaim"]
        env["AVATARFLOW_WEIGHTS_ROOT"] = str(tmp_path)  # the mount, here
        engines[stage] = Settings.load(stage, env).engine
    assert engines == {"audio-encoder": "pcm", "motion-gen": "joyvasa",
                       "renderer": "neural", "refiner": ""}
    assert "AVATARFLOW_PROFILE" not in env_of(container(profile, "gateway"))
    served = env_of(triton)["AVATARFLOW_TRITON_RENDERER_WEIGHTS"]["value"]
    assert served == f"{repo}/pretrained_weights/liveportrait"
    renderer = env_of(container(profile, "renderer"))
    assert "AVATARFLOW_RENDERER_TRITON_URL" in renderer
    assert "AVATARFLOW_REFINER_TRITON_URL" not in env_of(container(profile, "refiner"))
    motion = container(profile, "motion-gen")
    assert env_of(motion)["AVATARFLOW_MOTION_GEN_DEVICE"]["value"] == "cuda"
    assert int(motion["resources"]["limits"]["nvidia.com/gpu"]) == 1
