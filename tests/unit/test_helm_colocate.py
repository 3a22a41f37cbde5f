"""The chart's co-location switches (colocate.rendererRefiner, colocate.audioMotion), rendered
with the real Helm engine as tests/unit/test_helm_chart.py does: off, the guest stage (refiner,
motion-gen) has its own objects; on, it has none and its host's pods (renderer, audio-encoder)
run it with the guest's own settings, weights, Triton model, nodes and start-up budget and
with both stages' resources; both on is the fused layout. What the services would load is
checked by loading Settings from the rendered environment."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from avatarflow.runtime.settings import Settings
from tests.unit import test_helm_chart as chart

helm, kv = chart.helm, chart.kv
PREFIX = chart.PREFIX
RENDERER, REFINER = f"{PREFIX}-renderer", f"{PREFIX}-refiner"
ON = {"colocate": {"rendererRefiner": True}}
AUDIO_MOTION = {"colocate": {"audioMotion": True}}
FUSED = {"colocate": {"rendererRefiner": True, "audioMotion": True}}
# Each switch: its values, the host and the guest.
PAIRS = [(ON, "renderer", "refiner"), (AUDIO_MOTION, "audio-encoder", "motion-gen")]
# Every optional object of a component switched on, so none can slip through.
EVERYTHING = {"networkPolicy": {"enabled": True},
              "monitoring": {"serviceMonitor": {"enabled": True},
                             "prometheusRule": {"enabled": True}}}
Doc = dict[str, Any]


def objects(values: dict[str, Any]) -> list[Doc]:
    return [d for path, text in sorted(chart.render(values).items())
            if not path.endswith("NOTES.txt") for d in yaml.safe_load_all(text) if d]


def of_component(docs: list[Doc], component: str) -> list[tuple[str, str]]:
    return sorted((d["kind"], d["metadata"]["name"]) for d in docs
                  if d["metadata"].get("labels", {}).get("app.kubernetes.io/component")
                  == component)


def renderer(docs: list[Doc], component: str = "renderer") -> tuple[Doc, Doc]:
    """The pod spec of a component's Deployment (the renderer's) and its one container."""
    name = f"{PREFIX}-{component}"
    (d,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == name]
    spec = d["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    return spec, c


def env(c: Doc) -> dict[str, str]:
    return {k: e["value"] for k, e in chart.env_of(c).items() if "value" in e}


def milli(q: Any) -> int:
    s = str(q)
    return int(s[:-1]) if s.endswith("m") else round(float(s) * 1000)


def mib(q: str) -> int:
    units = {"Mi": 1, "Gi": 1024}
    return int(q[:-2]) * units[q[-2:]]


def valid(docs: list[Doc]) -> None:
    for d in docs:
        if (d["apiVersion"], d["kind"]) not in chart.CRDS:
            kv.validate(d, chart.KUBE_VERSION, strict=True)


def test_off_by_default_the_refiner_has_its_own_objects() -> None:
    docs = objects(EVERYTHING)
    kinds = {k for k, _ in of_component(docs, "refiner")}
    assert {"Deployment", "Service", "ScaledObject", "PodDisruptionBudget", "NetworkPolicy",
            "ServiceMonitor"} <= kinds
    _, c = renderer(docs)
    assert Settings.load("renderer", env(c)).colocate == ""
    with helm.Chart.load(chart.CHART) as ch:
        assert c["resources"] == ch.values["components"]["renderer"]["resources"]


def test_on_the_refiner_renders_nothing_and_runs_in_the_renderer_pods() -> None:
    docs = objects(chart.merged(EVERYTHING, ON))
    valid(docs)
    assert of_component(docs, "refiner") == []
    assert not [d for d in docs if REFINER in json.dumps(d)]  # no rule or object names it
    _, c = renderer(docs)
    assert Settings.load("renderer", env(c)).colocate == "refiner"
    assert c["command"] == ["avatarflow", "serve", "renderer"]
    # The rest of the pipeline is untouched: the gateway still talks to the renderer.
    assert {"Deployment", "Service", "ScaledObject"} <= {k for k, _ in of_component(docs,
                                                                                  "renderer")}


def test_the_renderer_gets_the_sum_of_both_stages_resources() -> None:
    docs = objects(ON)
    _, c = renderer(docs)
    with helm.Chart.load(chart.CHART) as ch:
        comps = ch.values["components"]
    for kind in ("requests", "limits"):
        a, b = comps["renderer"]["resources"][kind], comps["refiner"]["resources"][kind]
        got = c["resources"][kind]
        assert milli(got["cpu"]) == milli(a["cpu"]) + milli(b["cpu"])
        assert mib(got["memory"]) == mib(a["memory"]) + mib(b["memory"])


def test_explicit_colocate_resources_win() -> None:
    mine = {"requests": {"cpu": "3", "memory": "4Gi"}, "limits": {"cpu": "6", "memory": "8Gi"}}
    _, c = renderer(objects(chart.merged(ON, {"colocate": {"resources": mine}})))
    assert c["resources"] == mine


def test_the_co_located_refiner_keeps_its_engine_weights_triton_and_settings() -> None:
    values = chart.merged(chart.profile_values("gpu-triton"), chart.merged(ON, {"components": {
        "refiner": {"config": {"threads": 2}, "engineOptions": "refine_margin_s=0.02",
                    "resources": {"limits": {"nvidia.com/gpu": 1}}},
        "renderer": {"resources": {"limits": {"nvidia.com/gpu": 1}}}}}))
    docs = objects(values)
    valid(docs)
    spec, c = renderer(docs)
    e = env(c)
    refiner, own = Settings.load("refiner", e), Settings.load("renderer", e)
    assert (refiner.engine, refiner.threads) == ("neural", 2)
    assert refiner.engine_kwargs() == {"weights": "/weights-refiner",
                                       "triton_url": f"{PREFIX}-triton:8001",
                                       "refine_margin_s": 0.02}
    assert (own.engine, own.weights, own.colocate) == ("neural", "/weights", "refiner")
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/weights"]["subPath"] == "weights/renderer"
    assert mounts["/weights-refiner"]["subPath"] == "weights/refiner"
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes[mounts["/weights-refiner"]["name"]]["persistentVolumeClaim"]["claimName"] \
        == "avatarflow-models"
    # One GPU the two engines share, not two.
    assert str(c["resources"]["limits"]["nvidia.com/gpu"]) == "1"


def test_a_refiner_weights_path_on_the_renderers_own_is_refused() -> None:
    values = chart.merged(chart.profile_values("gpu-triton"), chart.merged(ON, {
        "colocate": {"refinerWeightsMountPath": "/weights"}}))
    with pytest.raises(helm.HelmError) as err:
        chart.render(values)
    assert "colocate.refinerWeightsMountPath" in str(err.value)


def test_the_new_values_are_in_the_schema_with_descriptions() -> None:
    schema = json.loads((chart.CHART / "values.schema.json").read_text())
    node = schema["properties"]["colocate"]
    with helm.Chart.load(chart.CHART) as ch:
        defaults = ch.values["colocate"]
    assert node["description"] and set(node["properties"]) == set(defaults)
    assert all(p["description"] for p in node["properties"].values())
    assert defaults == {"rendererRefiner": False, "resources": {},
                        "refinerWeightsMountPath": "/weights-refiner",
                        "audioMotion": False, "audioMotionResources": {},
                        "motionGenWeightsMountPath": "/weights-motion-gen"}
    for switch in ("rendererRefiner", "audioMotion"):
        with pytest.raises(helm.HelmError):
            chart.render({"colocate": {switch: "yes"}})


# -- the light half (colocate.audioMotion) and the fused layout ------------------------------

AUDIO = f"{PREFIX}-audio-encoder"
STAGES = ("audio-encoder", "motion-gen", "renderer", "refiner")


@pytest.mark.parametrize(("values", "host", "guest"), PAIRS)
def test_a_guest_renders_nothing_and_runs_in_its_hosts_pods(values: dict, host: str,
                                                             guest: str) -> None:
    off = objects(EVERYTHING)
    assert {"Deployment", "Service", "ScaledObject", "PodDisruptionBudget", "NetworkPolicy",
            "ServiceMonitor"} <= {k for k, _ in of_component(off, guest)}
    docs = objects(chart.merged(EVERYTHING, values))
    valid(docs)
    assert of_component(docs, guest) == []
    assert not [d for d in docs if f"{PREFIX}-{guest}" in json.dumps(d)]
    _, c = renderer(docs, host)
    assert Settings.load(host, env(c)).colocate == guest
    assert c["command"] == ["avatarflow", "serve", host]
    # The other pair is untouched.
    other = next(g for _, _, g in PAIRS if g != guest)
    assert {"Deployment", "Service", "ScaledObject"} <= {k for k, _ in of_component(docs, other)}


def test_fused_runs_four_stages_in_two_deployments() -> None:
    docs = objects(chart.merged(EVERYTHING, FUSED))
    valid(docs)
    deployments = {d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"}
    assert deployments == {f"{PREFIX}-{s}" for s in ("gateway", "audio-encoder", "renderer")}
    for host, guest in (("audio-encoder", "motion-gen"), ("renderer", "refiner")):
        _, c = renderer(docs, host)
        assert Settings.load(host, env(c)).colocate == guest
    # The "no ready replica" alert watches the Deployments there are.
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    text = json.dumps(rule)
    assert "audio-encoder|renderer" in text and "motion-gen" not in text
    notes = chart.render(FUSED)["avatarflow/templates/NOTES.txt"]
    assert ("gateway -> audio-encoder+motion-gen (one pod, features in memory) -> "
            "renderer+refiner (one pod, frames in memory) -> gateway") in notes


def test_the_audio_encoder_gets_the_sum_of_both_stages_resources() -> None:
    _, c = renderer(objects(AUDIO_MOTION), "audio-encoder")
    with helm.Chart.load(chart.CHART) as ch:
        comps = ch.values["components"]
    for kind in ("requests", "limits"):
        a, b = comps["audio-encoder"]["resources"][kind], comps["motion-gen"]["resources"][kind]
        got = c["resources"][kind]
        assert milli(got["cpu"]) == milli(a["cpu"]) + milli(b["cpu"])
        assert mib(got["memory"]) == mib(a["memory"]) + mib(b["memory"])
    mine = {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}}
    _, c = renderer(objects(chart.merged(AUDIO_MOTION, {
        "colocate": {"audioMotionResources": mine}})), "audio-encoder")
    assert c["resources"] == mine
    _, r = renderer(objects(chart.merged(FUSED, {"colocate": {"audioMotionResources": mine}})))
    assert r["resources"] != mine  # each host has its own value


def test_a_gpu_motion_gen_brings_its_node_budget_and_settings_into_the_audio_encoder() -> None:
    """gpu-joyvasa runs JoyVASA on a GPU node with a long start-up: co-located, the
    audio-encoder pods must land there and wait as long."""
    values = chart.merged(chart.profile_values("gpu-joyvasa"), chart.merged(AUDIO_MOTION, {
        "components": {"motion-gen": {"config": {"threads": 2}, "engineOptions": "steps=4"}}}))
    docs = objects(values)
    valid(docs)
    spec, c = renderer(docs, "audio-encoder")
    e = env(c)
    assert (e["AVATARFLOW_AUDIO_ENCODER_COLOCATE"], e["AVATARFLOW_PROFILE"]) == \
        ("motion-gen", "liveportrait-joyvasa")
    plain = {k: v for k, v in e.items() if k not in ("AVATARFLOW_PROFILE",
                                                     "AVATARFLOW_WEIGHTS_ROOT")}
    motion = Settings.load("motion-gen", plain)
    assert (motion.device, motion.threads, motion.engine_options) == ("cuda", 2, "steps=4")
    assert Settings.load("audio-encoder", plain).device == ""  # its own stay its own
    with helm.Chart.load(chart.CHART) as ch:
        gpu = chart.merged(ch.values["components"]["motion-gen"],
                           values["components"]["motion-gen"])
    assert spec["runtimeClassName"] == "nvidia"
    assert spec["nodeSelector"] == gpu["nodeSelector"]
    assert spec["tolerations"] == gpu["tolerations"]
    assert str(c["resources"]["limits"]["nvidia.com/gpu"]) == "1"
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] == 600
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert "/weights-root" in mounts  # the profile's root, which both stages read


def test_motion_gens_own_weights_are_mounted_apart() -> None:
    pvc = {"persistentVolumeClaim": {"claimName": "models", "readOnly": True}}
    weights = {"enabled": True, "mountPath": "/weights", "volume": pvc}
    values = chart.merged(AUDIO_MOTION, {"components": {
        "motion-gen": {"engine": "diffusion", "weights": {**weights, "subPath": "motion"}},
        "audio-encoder": {"weights": {**weights, "subPath": "audio"}}}})
    spec, c = renderer(objects(values), "audio-encoder")
    motion = Settings.load("motion-gen", env(c))
    assert (motion.engine, motion.weights) == ("diffusion", "/weights-motion-gen")
    assert Settings.load("audio-encoder", env(c)).weights == "/weights"
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert (mounts["/weights"]["subPath"], mounts["/weights-motion-gen"]["subPath"]) == \
        ("audio", "motion")
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes[mounts["/weights-motion-gen"]["name"]]["persistentVolumeClaim"] == \
        pvc["persistentVolumeClaim"]
    with pytest.raises(helm.HelmError) as err:
        chart.render(chart.merged(values, {"colocate": {"motionGenWeightsMountPath": "/weights"}}))
    assert "colocate.motionGenWeightsMountPath" in str(err.value)
