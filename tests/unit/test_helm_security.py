"""The chart's production gateway (issue 12): API keys required by default and read from a
Secret mounted as a directory, TLS and mTLS (with an optional cert-manager Certificate and
probes that work under TLS), Redis AUTH and TLS, admission and slow-client limits, takeover
timing, the gateway's KEDA scaler and the NetworkPolicies. Rendered with the real Helm engine,
as tests/unit/test_helm_chart.py does; what the gateway would load is checked by loading
avatarflow.runtime.settings.Settings from the rendered environment."""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any

import pytest
import yaml

from avatarflow.runtime.registry import STAGE_NAMES
from avatarflow.runtime.settings import SERVICES, Settings
from tests.unit import test_helm_chart as chart

helm, kv = chart.helm, chart.kv
PREFIX, NAMESPACE, GATEWAY = chart.PREFIX, chart.NAMESPACE, f"{chart.PREFIX}-gateway"
Doc = dict[str, Any]
NEW_VALUES = ("gateway", "takeover", "networkPolicy", "redis.auth", "redis.external.tls",
              "autoscaling.redisAuthenticationRef")
EVERYTHING: dict[str, Any] = {
    "gateway": {"auth": {"existingSecret": "tenant-keys"},
                "tls": {"enabled": True, "clientAuth": True,
                        "certManager": {"enabled": True, "issuerRef": {"name": "corp-ca"},
                                        "dnsNames": ["avatars.example.com"]}},
                "autoscaling": {"enabled": True}},
    "redis": {"enabled": False, "auth": {"existingSecret": "redis-auth"},
              "external": {"url": "rediss://redis.data.svc:6380/2",
                           "tls": {"existingSecret": "redis-ca", "clientCert": True}}},
    "networkPolicy": {"enabled": True},
    "triton": {"enabled": True},
}


def objects(values: dict[str, Any]) -> list[Doc]:
    return [d for path, text in sorted(chart.render(values).items())
            if not path.endswith("NOTES.txt") for d in yaml.safe_load_all(text) if d]


def find(docs: list[Doc], kind: str, name: str | None = None) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]


def pod(docs: list[Doc], name: str, kind: str = "Deployment") -> Doc:
    (d,) = find(docs, kind, name)
    return dict(d["spec"]["template"]["spec"])


def gateway(values: dict[str, Any]) -> tuple[Doc, Doc]:
    """The gateway's pod spec and its one container."""
    spec = pod(objects(values), GATEWAY)
    (c,) = spec["containers"]
    return spec, c


def settings(service: str, c: Doc) -> Settings:
    """The settings ``service`` loads from the container's literal environment."""
    env = {k: e["value"] for k, e in chart.env_of(c).items() if "value" in e}
    return Settings.load(service, env)


def mount(spec: Doc, c: Doc, path: str) -> tuple[Doc, Doc]:
    """The container's mount at ``path`` and the pod's volume behind it."""
    (m,) = [m for m in c["volumeMounts"] if m["mountPath"] == path]
    (v,) = [v for v in spec["volumes"] if v["name"] == m["name"]]
    return m, v


# -- the values --------------------------------------------------------------------------

def test_every_new_value_is_in_the_schema_with_a_description() -> None:
    schema = json.loads((chart.CHART / "values.schema.json").read_text())
    with helm.Chart.load(chart.CHART) as c:
        values = c.values

    def walk(node: Doc, value: Any, path: str) -> None:
        node = schema["definitions"][node["$ref"].rsplit("/", 1)[1]] if "$ref" in node else node
        if node.get("type") != "object" or "properties" not in node:
            return
        assert set(value) <= set(node["properties"]), path  # every default is declared
        for name, prop in node["properties"].items():
            assert prop.get("description"), f"{path}.{name}"
            assert name in value, f"{path}.{name} has no default in values.yaml"
            walk(prop, value[name], f"{path}.{name}")

    for dotted in NEW_VALUES:
        node, value = schema, values
        for part in dotted.split("."):
            node, value = node["properties"][part], value[part]
        assert node.get("description"), dotted
        walk(node, value, dotted)


@pytest.mark.parametrize("profile", chart.PROFILES)
def test_profiles_require_keys(profile: str) -> None:
    (c,) = pod(list(chart.objects(profile)), GATEWAY)["containers"]
    assert settings("gateway", c).auth == "required"


# -- API keys -----------------------------------------------------------------------------

def test_rendering_without_a_keys_secret_fails_with_how_to_make_one() -> None:
    with helm.Chart.load(chart.CHART) as c, pytest.raises(helm.HelmError) as err:
        c.render({}, name=chart.RELEASE, namespace=NAMESPACE)
    message = str(err.value)
    for needed in ("gateway.auth", "avatarflow keys new --tenant",
                   f"kubectl -n {NAMESPACE} create secret generic", "--from-file=keys.yaml",
                   "gateway.auth.existingSecret=", "gateway.auth.enabled=false"):
        assert needed in message, needed


def test_keys_secret_is_mounted_as_a_directory_and_named_by_the_env() -> None:
    spec, c = gateway({"gateway": {"auth": {"existingSecret": "tenant-keys",
                                            "secretKey": "acme.yaml"}}})
    m, v = mount(spec, c, "/etc/avatarflow/keys")
    # No subPath: Kubernetes then swaps the files in place when the Secret changes.
    assert m["readOnly"] is True and "subPath" not in m
    assert v["secret"]["secretName"] == "tenant-keys"
    assert v["secret"]["items"] == [{"key": "acme.yaml", "path": "keys.yaml"}]
    loaded = settings("gateway", c)
    assert (loaded.auth, loaded.api_keys_file) == ("required", "/etc/avatarflow/keys/keys.yaml")
    assert loaded.keys_reload_s == 5.0
    docs = objects({})
    for stage in STAGE_NAMES:  # the keys reach the gateway only
        assert not [v for v in pod(docs, f"{PREFIX}-{stage}")["volumes"] if "secret" in v]


def test_auth_switched_off_is_explicit() -> None:
    spec, c = gateway({"gateway": {"auth": {"enabled": False}}})
    assert settings("gateway", c).auth == "off"
    assert "AVATARFLOW_GATEWAY_API_KEYS_FILE" not in chart.env_of(c)
    assert not [v for v in spec["volumes"] if "secret" in v]


# -- TLS ------------------------------------------------------------------------------------

def test_tls_mounts_the_certificate_and_probes_a_plaintext_health_port() -> None:
    spec, c = gateway({"gateway": {"tls": {"enabled": True, "secretName": "gw-cert"}}})
    loaded = settings("gateway", c)
    assert (loaded.tls_cert, loaded.tls_key) == ("/etc/avatarflow/tls/tls.crt",
                                                 "/etc/avatarflow/tls/tls.key")
    assert loaded.tls_client_ca == ""
    m, v = mount(spec, c, "/etc/avatarflow/tls")
    assert m["readOnly"] is True and "subPath" not in m
    assert v["secret"]["secretName"] == "gw-cert"
    assert {i["key"] for i in v["secret"]["items"]} == {"tls.crt", "tls.key"}
    # kubelet's gRPC probe cannot do TLS: it checks health on the plaintext port.
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["health"] == loaded.health_port == 50052 != ports["grpc"]
    assert c["startupProbe"]["grpc"] == c["readinessProbe"]["grpc"] == {"port": 50052}
    assert c["livenessProbe"]["tcpSocket"] == {"port": "health"}


def test_a_full_gateway_is_not_ready_but_never_restarted() -> None:
    """Readiness follows grpc.health.v1 (NOT_SERVING while full); liveness must not, or
    kubelet would restart a gateway for being full."""
    _, c = gateway({})
    assert c["readinessProbe"]["grpc"] == {"port": 50051}
    assert c["livenessProbe"]["tcpSocket"] == {"port": "grpc"} and "grpc" not in c[
        "livenessProbe"]


@pytest.mark.parametrize(("tls", "ca_path", "secrets"), [
    ({"secretName": "gw-cert"}, "/etc/avatarflow/tls/ca.crt", {"gw-cert"}),
    ({"secretName": "gw-cert", "clientCaSecret": "partners-ca"},
     "/etc/avatarflow/tls-client-ca/ca.crt", {"gw-cert", "partners-ca"}),
])
def test_mtls_names_the_client_ca(tls: Doc, ca_path: str, secrets: set[str]) -> None:
    spec, c = gateway({"gateway": {"tls": {"enabled": True, "clientAuth": True, **tls}}})
    assert settings("gateway", c).tls_client_ca == ca_path
    _, v = mount(spec, c, ca_path.rsplit("/", 1)[0])
    assert {"key": "ca.crt", "path": "ca.crt"} in v["secret"]["items"]
    assert {v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v} == (
        secrets | {"avatarflow-api-keys"})


def test_cert_manager_writes_the_secret_the_gateway_mounts() -> None:
    docs = objects(EVERYTHING)
    (cert,) = find(docs, "Certificate", GATEWAY)
    assert cert["apiVersion"] == "cert-manager.io/v1"
    assert cert["metadata"]["namespace"] == NAMESPACE
    spec = cert["spec"]
    _, v = mount(pod(docs, GATEWAY), pod(docs, GATEWAY)["containers"][0], "/etc/avatarflow/tls")
    assert spec["secretName"] == v["secret"]["secretName"] == f"{GATEWAY}-tls"
    assert spec["issuerRef"] == {"name": "corp-ca", "kind": "ClusterIssuer",
                                 "group": "cert-manager.io"}
    assert spec["dnsNames"] == [GATEWAY, f"{GATEWAY}.{NAMESPACE}", f"{GATEWAY}.{NAMESPACE}.svc",
                                f"{GATEWAY}.{NAMESPACE}.svc.cluster.local", "avatars.example.com"]
    assert "server auth" in spec["usages"]
    assert spec["privateKey"]["rotationPolicy"] == "Always"
    assert not find(objects({"gateway": {"tls": {"enabled": True, "secretName": "x"}}}),
                    "Certificate")


@pytest.mark.parametrize(("bad", "message"), [
    ({"tls": {"enabled": True}}, "gateway.tls.secretName is required"),
    ({"tls": {"enabled": True, "certManager": {"enabled": True}}}, "issuerRef.name is required"),
    ({"tls": {"certManager": {"enabled": True, "issuerRef": {"name": "ca"}}}},
     "needs gateway.tls.enabled=true"),
    ({"tls": {"enabled": True, "secretName": "x", "healthPort": 50051}}, "healthPort must differ"),
    ({"tls": {"enabled": True, "secretName": "x", "clientCaSecret": "ca"}}, "clientAuth=true"),
])
def test_inconsistent_gateway_values_fail_with_a_message(bad: Doc, message: str) -> None:
    with pytest.raises(helm.HelmError, match=message):
        chart.render({"gateway": bad})


# -- Redis AUTH and TLS -------------------------------------------------------------------

def test_redis_password_comes_from_the_secret_on_every_service_and_the_server() -> None:
    docs = objects({"redis": {"auth": {"existingSecret": "redis-auth"}}})
    ref = {"secretKeyRef": {"name": "redis-auth", "key": "redis-password"}}
    for svc in SERVICES:
        (c,) = pod(docs, f"{PREFIX}-{svc}")["containers"]
        env = chart.env_of(c)
        assert env["AVATARFLOW_REDIS_PASSWORD"]["valueFrom"] == ref, svc
        assert "@" not in env["AVATARFLOW_REDIS_URL"]["value"], svc  # no credentials in it
    (server,) = pod(docs, f"{PREFIX}-redis", "StatefulSet")["containers"]
    env = chart.env_of(server)
    assert env["REDIS_PASSWORD"]["valueFrom"] == env["REDISCLI_AUTH"]["valueFrom"] == ref
    args = server["args"]
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    assert server["readinessProbe"]["exec"]["command"][0] == "redis-cli"  # reads REDISCLI_AUTH
    for so in find(docs, "ScaledObject"):
        (target,) = pod(docs, so["spec"]["scaleTargetRef"]["name"])["containers"]
        for t in so["spec"]["triggers"]:
            # KEDA resolves the variable from the scaled Deployment's container.
            assert t["metadata"]["passwordFromEnv"] in chart.env_of(target)


def test_rediss_mounts_the_ca_and_client_certificate_on_every_service() -> None:
    docs = objects(EVERYTHING)
    for svc in SERVICES:
        spec = pod(docs, f"{PREFIX}-{svc}")
        (c,) = spec["containers"]
        loaded = settings(svc, c)
        assert loaded.redis_url == "rediss://redis.data.svc:6380/2"
        assert (loaded.redis_tls_ca, loaded.redis_tls_cert, loaded.redis_tls_key) == tuple(
            f"/etc/avatarflow/redis-tls/{f}" for f in ("ca.crt", "tls.crt", "tls.key"))
        m, v = mount(spec, c, "/etc/avatarflow/redis-tls")
        assert m["readOnly"] is True and v["secret"]["secretName"] == "redis-ca"
    for so in find(docs, "ScaledObject"):
        for t in so["spec"]["triggers"]:
            if t["type"] == "redis-streams":
                assert t["metadata"]["enableTLS"] == "true"
                assert t["metadata"]["address"] == "redis.data.svc:6380"


def test_a_keda_trigger_authentication_replaces_the_chart_settings() -> None:
    docs = objects({**EVERYTHING, "autoscaling": {"redisAuthenticationRef": "redis-keda"}})
    for so in find(docs, "ScaledObject"):
        for t in so["spec"]["triggers"]:
            if t["type"] == "redis-streams":
                assert t["authenticationRef"] == {"name": "redis-keda"}
                assert not {"passwordFromEnv", "enableTLS"} & set(t["metadata"])


@pytest.mark.parametrize(("bad", "message"), [
    ({"redis": {"external": {"tls": {"existingSecret": "ca"}}}}, "the in-chart Redis has no TLS"),
    ({"redis": {"enabled": False, "external": {"url": "redis://r:6379/0",
                                               "tls": {"existingSecret": "ca"}}}}, "rediss://"),
    ({"redis": {"enabled": False, "auth": {"existingSecret": "a"},
                "external": {"url": "redis://r:6379/0", "existingSecret": "b"}}},
     "set one of redis.auth.existingSecret"),
    ({"takeover": {"heartbeatMs": 300, "claimIdleMs": 500}}, "at least 2 x takeover.heartbeatMs"),
    ({"gateway": {"limits": {"maxSessions": 0}, "autoscaling": {"enabled": True}}},
     "needs gateway.limits.maxSessions set"),
])
def test_inconsistent_values_fail(bad: Doc, message: str) -> None:
    with pytest.raises(helm.HelmError, match=message):
        chart.render(bad)


# -- admission, slow clients, takeover --------------------------------------------------------

def test_quotas_and_slow_client_limits_reach_the_gateway() -> None:
    _, c = gateway({"gateway": {
        # A large count stays an integer on its way (not "2e+06", which no int setting parses).
        "limits": {"maxSessions": 40, "tenantMaxSessions": 5, "tenantMaxAvatars": 2_000_000,
                   "registerPerMinute": 12},
        "slowClients": {"maxLagMs": 250, "outFrames": 15, "outMb": 8, "evictSeconds": 3,
                        "idleSeconds": 0}},
        "components": {"gateway": {"config": {"grace_s": 20}}}})
    loaded = settings("gateway", c)
    assert (loaded.max_sessions, loaded.tenant_max_sessions, loaded.tenant_max_avatars,
            loaded.register_per_minute) == (40, 5, 2_000_000, 12.0)
    assert (loaded.max_lag_ms, loaded.out_frames, loaded.out_mb, loaded.evict_s,
            loaded.idle_s) == (250.0, 15, 8.0, 3.0, 0.0)
    assert loaded.grace_s == 20.0


def test_takeover_timing_reaches_every_service_once() -> None:
    docs = objects({"takeover": {"heartbeatMs": 200, "claimIdleMs": 1000},
                    "config": {"claim_idle_ms": 1500}})
    for svc in SERVICES:
        (c,) = pod(docs, f"{PREFIX}-{svc}")["containers"]
        names = [e["name"] for e in c["env"]]
        assert len(names) == len(set(names)), svc  # `config` wins without a second entry
        loaded = settings(svc, c)
        assert (loaded.heartbeat_ms, loaded.claim_idle_ms) == (200, 1500), svc


# -- the gateway's autoscaler ----------------------------------------------------------------

def test_gateway_scales_on_open_sessions_per_pod() -> None:
    docs = objects({**EVERYTHING, "gateway": {**EVERYTHING["gateway"], "limits": {
        "maxSessions": 40}, "autoscaling": {"enabled": True, "targetPercent": 75}},
        "monitoring": {"serviceMonitor": {"enabled": True}}})
    (so,) = find(docs, "ScaledObject", GATEWAY)
    assert so["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                            "name": GATEWAY}
    assert "replicas" not in find(docs, "Deployment", GATEWAY)[0]["spec"]  # KEDA owns it
    assert (so["spec"]["minReplicaCount"], so["spec"]["maxReplicaCount"]) == (2, 10)
    (t,) = so["spec"]["triggers"]
    assert (t["type"], t["metricType"]) == ("prometheus", "AverageValue")
    meta = t["metadata"]
    assert all(isinstance(v, str) for v in meta.values())
    assert meta["threshold"] == "30"  # 75 % of 40
    assert meta["serverAddress"] == "http://prometheus-operated.monitoring.svc:9090"
    # The gauge the gateway exports, as scraped through the gateway's Service.
    assert "avatarflow_active_sessions" in chart.METRICS
    assert meta["query"] == (f'sum(avatarflow_active_sessions{{namespace="{NAMESPACE}",'
                             f'service="{GATEWAY}"}})')
    (monitor,) = find(docs, "ServiceMonitor", GATEWAY)
    (service,) = find(docs, "Service", GATEWAY)
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"][
        "labels"].items()


@pytest.mark.parametrize("values", [
    {"gateway": {"autoscaling": {"enabled": False}}},
    {"autoscaling": {"enabled": False}, "gateway": {"autoscaling": {"enabled": True}}},
])
def test_gateway_keeps_its_replicas_without_its_autoscaler(values: Doc) -> None:
    docs = objects(values)
    assert not find(docs, "ScaledObject", GATEWAY)
    assert find(docs, "Deployment", GATEWAY)[0]["spec"]["replicas"] == 2


# -- isolation -------------------------------------------------------------------------------

def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def test_network_policies_open_only_the_gateway_port_outside_the_release() -> None:
    docs = objects(EVERYTHING | {"redis": {"auth": {"existingSecret": "redis-auth"}}})
    policies = find(docs, "NetworkPolicy")
    pods = {d["metadata"]["name"]: d["spec"]["template"] for d in docs
            if d["kind"] in ("Deployment", "StatefulSet")}
    release = {"app.kubernetes.io/name": "avatarflow", "app.kubernetes.io/instance": "af"}
    assert {p["metadata"]["name"] for p in policies} == set(pods)  # one per component
    assert all(selects(release, t["metadata"]["labels"]) for t in pods.values())
    for policy in policies:
        name, spec = policy["metadata"]["name"], policy["spec"]
        kv.validate(policy, chart.KUBE_VERSION, strict=True)
        assert spec["policyTypes"] == ["Ingress"]
        (selected,) = [n for n, t in pods.items()
                       if selects(spec["podSelector"]["matchLabels"], t["metadata"]["labels"])]
        assert selected == name
        (c,) = pods[name]["spec"]["containers"]
        named = {p["name"] for p in c["ports"]}
        for rule in spec["ingress"]:
            ports = {p["port"] for p in rule["ports"]}
            assert ports <= named, (name, ports)
            if "from" not in rule:  # open to anyone: only the public API
                assert (name, ports) == (GATEWAY, {"grpc"})
                continue
            assert {"podSelector": {"matchLabels": release}} in rule["from"], name
        if name == f"{PREFIX}-redis":
            (rule,) = spec["ingress"]
            keda = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}}}
            assert keda in rule["from"]
    assert not find(objects({}), "NetworkPolicy")


def test_gateway_clients_can_be_limited_too() -> None:
    peers = [{"ipBlock": {"cidr": "10.0.0.0/8"}}]
    docs = objects({"networkPolicy": {"enabled": True, "gatewayFrom": peers}})
    (policy,) = find(docs, "NetworkPolicy", GATEWAY)
    (api,) = [r for r in policy["spec"]["ingress"] if {"port": "grpc", "protocol": "TCP"} in r[
        "ports"]]
    assert api["from"] == peers


# -- everything on: valid, lint-clean, and every variable a setting -------------------------

def test_everything_on_is_valid_kubernetes_and_lints_clean() -> None:
    report = helm.lint(chart.CHART, chart.merged(chart.DEFAULT_VALUES, EVERYTHING), strict=True,
                       kube_version=f"v{chart.KUBE_VERSION}")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []
    for d in objects(EVERYTHING):
        assert d["metadata"]["namespace"] == NAMESPACE or d["kind"] == "ConfigMap"
        if (d["apiVersion"], d["kind"]) not in chart.CRDS:
            kv.validate(d, chart.KUBE_VERSION, strict=True)


def test_environment_names_are_settings() -> None:
    known = {f.name for f in fields(Settings)}
    docs = objects(EVERYTHING)
    for svc in SERVICES:
        (c,) = pod(docs, f"{PREFIX}-{svc}")["containers"]
        own = "AVATARFLOW_" + svc.upper().replace("-", "_") + "_"
        for name in chart.env_of(c):
            if name.startswith("AVATARFLOW_"):
                field = name.removeprefix(own if name.startswith(own) else "AVATARFLOW_")
                assert field.lower() in known, f"{svc}: {name} is not a setting"
