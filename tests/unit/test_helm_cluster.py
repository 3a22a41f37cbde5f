"""The chart pointed at an external Redis Cluster, rendered with the real Helm engine: the
services get the cluster URL (and the shard count when set), and KEDA watches the join stream
of every bus shard through its redis-cluster-streams scaler, summed into one metric per stage,
under the names avatarflow.bus.keys gives the streams."""

from __future__ import annotations

import re
from typing import Any

import yaml

from avatarflow.bus import keys
from avatarflow.runtime.registry import PIPELINE
from avatarflow.runtime.settings import Settings
from tests.unit import test_helm_chart as chart

PREFIX = chart.PREFIX
NODES = "redis-0.redis.data.svc:6379,redis-1.redis.data.svc:6379,redis-2.redis.data.svc:6379"
CLUSTER = {"redis": {"enabled": False, "external": {"url": f"redis+cluster://{NODES}"}}}
Doc = dict[str, Any]


def objects(values: dict[str, Any]) -> list[Doc]:
    return [d for path, text in sorted(chart.render(values).items())
            if not path.endswith("NOTES.txt") for d in yaml.safe_load_all(text) if d]


def scaled(docs: list[Doc], stage: str) -> Doc:
    (so,) = [d for d in docs if d["kind"] == "ScaledObject"
             and d["metadata"]["name"] == f"{PREFIX}-{stage}"]
    return so


def env(docs: list[Doc], component: str) -> dict[str, str]:
    (d,) = [d for d in docs if d["kind"] == "Deployment"
            and d["metadata"]["name"] == f"{PREFIX}-{component}"]
    (c,) = d["spec"]["template"]["spec"]["containers"]
    return {k: e["value"] for k, e in chart.env_of(c).items() if "value" in e}


def test_every_service_gets_the_cluster_url_and_loads_it() -> None:
    docs = objects(CLUSTER)
    for service in ("gateway", *(s.name for s in PIPELINE)):
        e = env(docs, service)
        assert e["AVATARFLOW_REDIS_URL"] == f"redis+cluster://{NODES}"
        assert "AVATARFLOW_BUS_SHARDS" not in e  # 16, the cluster default, in every process
        assert Settings.load(service, e).redis_url.startswith("redis+cluster://")


def test_keda_watches_every_shard_of_every_stage_through_the_cluster_scaler() -> None:
    docs = objects(CLUSTER)
    for spec in PIPELINE:
        so = scaled(docs, spec.name)
        triggers = so["spec"]["triggers"]
        streams = [t["metadata"]["stream"] for t in triggers if "lagCount" in t["metadata"]]
        assert streams == [keys.join(spec.input, shard) for shard in range(16)]
        for t in triggers:
            assert t["type"] == "redis-cluster-streams"
            assert t["metadata"]["addresses"] == NODES.replace(",", ", ")
            assert "address" not in t["metadata"] and "databaseIndex" not in t["metadata"]
            assert t["metadata"]["consumerGroup"] == spec.group
        # One metric for the HPA: every trigger summed, against the sessions per replica.
        modifiers = so["spec"]["advanced"]["scalingModifiers"]
        names = {t["name"] for t in triggers}
        used = set(re.findall(r"[a-z_]+_\d+", modifiers["formula"]))
        assert used == names and len(names) == 32
        with chart.helm.Chart.load(chart.CHART) as c:
            per = c.values["components"][spec.name]["autoscaling"]
        assert modifiers["target"] == str(per["sessionsPerReplica"])


def test_an_explicit_shard_count_reaches_the_services_and_keda() -> None:
    docs = objects(chart.merged(CLUSTER, {"bus": {"shards": 4}}))
    assert env(docs, "gateway")["AVATARFLOW_BUS_SHARDS"] == "4"
    assert Settings.load("renderer", env(docs, "renderer")).bus_shards == 4
    lags = [t for t in scaled(docs, "renderer")["spec"]["triggers"] if "lagCount" in t["metadata"]]
    assert [t["metadata"]["stream"] for t in lags] == [keys.join("motion", s) for s in range(4)]


def test_a_tls_cluster_url_turns_tls_on_for_keda() -> None:
    docs = objects(chart.merged(CLUSTER, {"redis": {"external": {
        "url": f"rediss+cluster://{NODES}"}}}))
    for t in scaled(docs, "audio-encoder")["spec"]["triggers"]:
        assert t["metadata"]["enableTLS"] == "true"


def test_a_single_redis_keeps_one_shard_and_the_plain_scaler() -> None:
    docs = objects({})
    so = scaled(docs, "motion-gen")
    assert "scalingModifiers" not in so["spec"]["advanced"]
    assert {t["type"] for t in so["spec"]["triggers"]} == {"redis-streams"}
    assert [t["metadata"]["stream"] for t in so["spec"]["triggers"]
            if "lagCount" in t["metadata"]] == [keys.join("features")]
