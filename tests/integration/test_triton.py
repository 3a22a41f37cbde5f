"""A real Triton server (the one nvidia-pytriton ships) serving the renderer and refiner
networks on the CPU from deploy/triton/model_repository, with small random weights."""

from __future__ import annotations

import asyncio
import re
import time

import numpy as np
import pytest

from avatarflow.contracts.errors import InvalidInput, NotFound, Unavailable
from avatarflow.dev.net import free_port
from avatarflow.dev.triton_server import (
    REPOSITORY,
    TritonNotInstalled,
    TritonServer,
    find_tritonserver,
    write_repository,
)
from avatarflow.triton.backend import model_parameters

try:
    find_tritonserver()
except TritonNotInstalled as exc:
    pytest.skip(f"no tritonserver binary: {exc}", allow_module_level=True)

import torch  # noqa: E402 - after the skip: the neural extra comes with triton-server

from avatarflow.triton.client import TritonNetwork  # noqa: E402
from avatarflow_refiner.engines.neural import RefinerNetwork  # noqa: E402
from avatarflow_refiner.models import preset  # noqa: E402
from avatarflow_renderer.engines.neural import RendererNetwork  # noqa: E402
from avatarflow_renderer.engines.neural_net import UpperBodyNetwork  # noqa: E402
from avatarflow_renderer.models.upperbody import UpperBodyConfig, UpperBodyRenderer  # noqa: E402

# Long enough that two requests sent together on a busy 2-core machine always meet in the
# queue; a batch reaching a preferred size (2) leaves at once, so no test waits for it.
QUEUE_DELAY_US = 500_000
TOL = 1e-4


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread here and in the stubs: the same kernels on both sides, and no
    oversubscription of a small machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def networks(tmp_path_factory):
    """In-process networks and their saved weights: the refiner's small preset and the
    renderer's upper-body small preset (liveportrait at full size is too slow on a CPU)."""
    refiner = RefinerNetwork.create(preset("small"), seed=11)
    refiner_dir = refiner.save(tmp_path_factory.mktemp("refiner"))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(12)
        model = UpperBodyRenderer(UpperBodyConfig.preset("small"))
    renderer_dir = UpperBodyNetwork.save(model, tmp_path_factory.mktemp("renderer"))
    renderer = RendererNetwork.load(renderer_dir, "upperbody")
    return {"refiner": (refiner, refiner_dir), "renderer": (renderer, renderer_dir)}


@pytest.fixture(scope="module")
def server(networks):
    with TritonServer(weights={m: d for m, (_, d) in networks.items()},
                      parameters={"renderer": {"arch": "upperbody"}}, device="cpu",
                      max_queue_delay_us=QUEUE_DELAY_US,
                      env={"OMP_NUM_THREADS": "1"}) as srv:  # as one_thread
        yield srv


@pytest.fixture(scope="module")
def clients(server):
    nets = {m: TritonNetwork(server.url, m, timeout_s=60) for m in ("renderer", "refiner")}
    yield nets
    for n in nets.values():
        n.close()


def frames(model: str, net, b: int, seed: int) -> list[np.ndarray]:
    """``b`` sessions' inputs for ``model``: (source, kp_source, kp_driving, hand | context)."""
    rng = np.random.default_rng(seed)
    if model == "refiner":
        h = w = net.config.image_size
        k = net.config.num_kp
    else:
        (w, h), k = net.source_size, net.num_kp
    kp = rng.uniform(-0.8, 0.8, (b, k, 3)).astype(np.float32)
    return [rng.random((b, 3, h, w), np.float32), kp,
            (kp + rng.normal(0, 0.03, kp.shape)).astype(np.float32),
            rng.random((b, 3, h, w), np.float32)]


def local(net, x: list[np.ndarray]) -> np.ndarray:
    return net.forward_batch(*(torch.from_numpy(a) for a in x)).numpy()


def delta(client: TritonNetwork, before: dict[str, int], requests: int) -> dict[str, int]:
    """The model's counters since ``before``, once Triton has counted ``requests`` requests
    (it updates them just after answering)."""
    deadline = time.monotonic() + 5.0
    while True:
        d = {k: v - before[k] for k, v in client.statistics().items()}
        if d["success_count"] + d["fail_count"] >= requests or time.monotonic() > deadline:
            return d
        time.sleep(0.02)


MODELS = ["refiner", "renderer"]


@pytest.mark.parametrize("model", MODELS)
def test_one_request_carries_two_sessions(networks, clients, model):
    net, client = networks[model][0], clients[model]
    x = frames(model, net, 2, seed=1)
    before = client.statistics()
    out = client.forward_batch(*x)
    assert delta(client, before, 1) == {"inference_count": 2, "execution_count": 1,
                                     "success_count": 1, "fail_count": 0}
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_allclose(out, local(net, x), atol=TOL, rtol=0)
    # Torch tensors in, a torch tensor out.
    t = client.forward_batch(*(torch.from_numpy(a) for a in x))
    assert isinstance(t, torch.Tensor)
    np.testing.assert_allclose(t.numpy(), out, atol=TOL, rtol=0)


@pytest.mark.parametrize("model", MODELS)
def test_dynamic_batcher_merges_two_sessions_requests(networks, clients, model):
    net, client = networks[model][0], clients[model]
    x = frames(model, net, 2, seed=2)
    want = local(net, x)
    before = client.statistics()

    async def both():
        return await asyncio.gather(*(client.forward_batch_async(*(a[i:i + 1] for a in x))
                                      for i in range(2)))

    got = asyncio.run(both())
    stats = delta(client, before, 2)
    assert (stats["inference_count"], stats["execution_count"]) == (2, 1)
    for i, out in enumerate(got):
        np.testing.assert_allclose(out, want[i:i + 1], atol=TOL, rtol=0)


def _nan(x):
    x[2][0, 3, 1] = np.nan
    return x, "KP_DRIVING has 1 non-finite values"


def _wrong_k(x):
    x[2] = x[2][:, :-1]
    return x, r"KP_DRIVING has shape \[1, \d+, 3\], expected \[B, \d+, 3\]"


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("corrupt", [_nan, _wrong_k])
def test_a_malformed_request_fails_alone(networks, clients, model, corrupt):
    net, client = networks[model][0], clients[model]
    good = frames(model, net, 1, seed=3)
    bad, message = corrupt(frames(model, net, 1, seed=4))
    before = client.statistics()

    async def both():
        return await asyncio.gather(client.forward_batch_async(*good),
                                    client.forward_batch_async(*bad), return_exceptions=True)

    ok, err = asyncio.run(both())
    stats = delta(client, before, 2)
    assert stats["execution_count"] == 1  # one execution held both requests
    assert (stats["success_count"], stats["fail_count"]) == (1, 1)
    np.testing.assert_allclose(ok, local(net, good), atol=TOL, rtol=0)
    assert isinstance(err, InvalidInput)
    assert err.category == "invalid_argument"
    assert f"triton model '{model}'" in err.message
    assert re.search(message, err.message), err.message


def test_triton_itself_rejects_inputs_of_unequal_batch(networks, clients):
    """Triton checks that a request's inputs agree on the batch size before queueing it."""
    net, client = networks["refiner"][0], clients["refiner"]
    x = frames("refiner", net, 1, seed=6)
    x[1] = np.concatenate([x[1], x[1]])
    with pytest.raises(InvalidInput, match="'KP_SOURCE' batch size does not match"):
        client.forward_batch(*x)


def test_renderer_without_a_hand_image_renders_too(networks, clients):
    net, client = networks["renderer"][0], clients["renderer"]
    x = frames("renderer", net, 1, seed=5)[:3]
    out = client.forward_batch(*x)
    np.testing.assert_allclose(out, net.forward_batch(*map(torch.from_numpy, x)).numpy(),
                               atol=TOL, rtol=0)


def test_unknown_model_is_not_found(server):
    client = TritonNetwork(server.url, "no-such-model")
    with pytest.raises(NotFound, match="no-such-model"):
        client.forward_batch(*frames("refiner", RefinerNetwork.create(preset("small")), 1, 0))
    client.close()


def test_triton_down_is_unavailable():
    client = TritonNetwork(f"127.0.0.1:{free_port()}", "refiner", timeout_s=5)
    with pytest.raises(Unavailable) as info:
        client.forward_batch(np.zeros((1, 3, 64, 64), np.float32), None, None)
    assert info.value.retryable
    assert not client.ready()
    client.close()


def test_a_model_that_fails_to_load_stops_the_start_with_its_log(tmp_path):
    srv = TritonServer(models=["refiner"], weights={"refiner": tmp_path / "missing"},
                       work_dir=tmp_path / "triton")
    with pytest.raises(Unavailable) as info:
        srv.start(timeout=120)
    assert "weights directory" in info.value.message and "missing" in info.value.message
    assert not srv.alive()


def test_round_trip_bench_runs(networks, server):
    """Prints Triton's round trip next to the in-process forward; speed is not asserted.
    Batch 2 is a preferred batch size: it does not wait out this server's long queue delay."""
    from bench.triton_overhead import measure

    result = measure(server.url, networks["refiner"][0], repeats=30, batch=2)
    print(f"refiner small B=2: in-process median {result['in_process_ms']['median']:.2f} ms, "
          f"triton median {result['triton_ms']['median']:.2f} ms "
          f"p99 {result['triton_ms']['p99']:.2f} ms")
    assert result["triton_ms"]["median"] > 0


def test_the_run_time_copy_runs_on_the_cpu_with_the_parameters_filled_in(tmp_path):
    write_repository(REPOSITORY, tmp_path, ["renderer", "refiner"], "cpu",
                     {"renderer": {"weights": "/w/r", "arch": "upperbody"}}, 1234)
    text = (tmp_path / "renderer" / "config.pbtxt").read_text()
    assert "KIND_CPU" in text and "KIND_GPU" not in text
    assert 'string_value: "/w/r"' in text and 'string_value: "upperbody"' in text
    assert "max_queue_delay_microseconds: 1234" in text
    assert (tmp_path / "refiner" / "1" / "model.py").is_file()
    production = (REPOSITORY / "renderer" / "config.pbtxt").read_text()
    assert "KIND_GPU" in production and "/weights/renderer" in production


def test_the_environment_overrides_a_models_parameters():
    config = {"name": "renderer", "parameters": {"weights": {"string_value": "/weights/r"},
                                                 "arch": {"string_value": "liveportrait"}}}
    env = {"AVATARFLOW_TRITON_RENDERER_ARCH": "upperbody",
           "AVATARFLOW_TRITON_REFINER_WEIGHTS": "/elsewhere"}
    assert model_parameters(config, env) == {"weights": "/weights/r", "arch": "upperbody"}


def test_the_refiner_stage_batches_two_sessions_through_triton(networks, server, clients):
    """The refiner service's path: RefinerStage with the neural engine and ``triton_url``
    refines two sessions' frames in one Triton request, as the in-process network would."""
    import io

    import skimage.data
    from PIL import Image

    from avatarflow.avatars.store import AvatarStore
    from avatarflow.contracts import messages as m
    from avatarflow.contracts.picture import Picture
    from avatarflow.dev.testing import of_type, run_test
    from avatarflow.runtime.stage import run_batch
    from avatarflow_refiner import build_stage
    from avatarflow_renderer import build_stage as build_renderer

    store = AvatarStore()
    renderer = build_renderer(store=store)
    buf = io.BytesIO()
    Image.fromarray(skimage.data.astronaut()).save(buf, format="PNG")
    starts = [m.SessionStart(session_id=sid, avatar_id="astro", image=buf.getvalue(),
                             mode="head", width=256, height=256) for sid in ("s1", "s2")]
    weights = str(networks["refiner"][1])
    remote = build_stage("neural", store=store, weights=weights, triton_url=server.url)
    here = build_stage("neural", store=store, weights=weights)
    rendered = []
    for start in starts:
        run_test(renderer, [start])
        run_test(remote, [start])
        run_test(here, [start])
        (frame,) = of_type(run_test(renderer, [_motion(start.session_id)]), m.RenderedFrame)
        rendered.append(frame)
    before = clients["refiner"].statistics()
    outs = run_batch(remote, rendered)
    assert delta(clients["refiner"], before, 1)["inference_count"] == 2
    for frame, out, expected in zip(rendered, outs, run_batch(here, rendered), strict=True):
        (final,) = out
        assert isinstance(final, m.FinalFrame) and final.refined
        assert final.session_id == frame.session_id
        diff = np.abs(final.image.rgb().astype(np.int16) - expected[0].image.rgb())
        assert diff.max() <= 1, diff.max()
        assert isinstance(final.image, Picture)
    for stage in (remote, here, renderer):
        stage.close()


def _motion(sid: str):
    from avatarflow.contracts import messages as m
    from avatarflow.contracts import motion as mo

    expression = np.zeros(len(mo.EXPRESSIONS), np.float32)
    expression[mo.EXPR["jaw_open"]] = 0.5
    return m.MotionFrame(
        session_id=sid, index=0, rotation=np.array([0, 0.1, 0], np.float32),
        translation=np.zeros(3, np.float32), scale=1.0, expression=expression,
        head_template=mo.head_template(expression), head_offset=np.zeros((mo.K, 3), np.float32),
        body=mo.BODY_CANONICAL.copy(), hands=np.zeros((2, mo.HAND_JOINTS, 3), np.float32))


# The renderer engine with ``triton_url``: the generator on Triton, appearance volumes cached
# there by avatar key, keypoints computed here.


@pytest.fixture(scope="module")
def lp_weights(tmp_path_factory):
    """Tiny LivePortrait weights in the published layout, from our modules (their parameter
    names are the published ones), randomised as the renderer's test kit does."""
    import yaml

    from avatarflow_renderer.engines import neural_weights as cw
    from avatarflow_renderer.engines.neural_net import LivePortraitNetwork
    from services.renderer.tests.neural_testkit import TINY_INPUT, TINY_PARAMS, randomise

    root = tmp_path_factory.mktemp("liveportrait")
    modules = LivePortraitNetwork.build(TINY_PARAMS)
    for i, module in enumerate(modules.values()):
        randomise(module, seed=20 + i)
    for name, rel in cw.BASE_MODELS.items():
        cw.save_module(modules[name], root / rel)
    (root / cw.RETARGETING_FILE).parent.mkdir(parents=True)
    torch.save({key: {f"module.{k}": v for k, v in modules[name].state_dict().items()}
                for name, key in cw.RETARGETING_KEYS.items()}, root / cw.RETARGETING_FILE)
    (root / "models.yaml").write_text(yaml.safe_dump({"model_params": TINY_PARAMS,
                                                      "input_shape": list(TINY_INPUT)}))
    return root


LP_CACHE = 2  # avatars the liveportrait server keeps: a third evicts one


@pytest.fixture(scope="module")
def lp_server(lp_weights):
    with TritonServer(models=["renderer"], weights={"renderer": lp_weights},
                      parameters={"renderer": {"arch": "liveportrait",
                                               "avatar_cache": str(LP_CACHE)}},
                      device="cpu", max_queue_delay_us=QUEUE_DELAY_US,
                      env={"OMP_NUM_THREADS": "1"}) as srv:
        yield srv


@pytest.fixture(scope="module")
def lp_client(lp_server):
    client = TritonNetwork(lp_server.url, "renderer", timeout_s=60)
    yield client
    client.close()


def recorded(engine) -> list[set[str]]:
    """The inputs each Triton request of ``engine`` carries, request by request."""
    sent: list[set[str]] = []
    client = engine.generator.client
    infer = client.infer

    def spy(inputs):
        sent.append({name for name, x in inputs.items() if x is not None})
        return infer(inputs)

    client.infer = spy
    return sent


def grey_levels(got: list[np.ndarray], want: list[np.ndarray]) -> int:
    assert [g.shape for g in got] == [w.shape for w in want]
    return max(int(np.abs(g.astype(np.int16) - w).max()) for g, w in zip(got, want,
                                                                           strict=True))


def test_the_liveportrait_engine_renders_on_triton_with_avatars_cached_there(
        lp_weights, lp_server, lp_client):
    """Two sessions' frames (two avatars) go as one request and match the in-process engine;
    only the first request carries the source images. When the server has evicted an avatar
    the engine resends it without its caller noticing."""
    from avatarflow_renderer.engines import create
    from services.renderer.tests.neural_testkit import motion, synthetic_avatar

    remote = create("neural", weights=str(lp_weights), triton_url=lp_server.url)
    here = create("neural", weights=str(lp_weights))
    sent = recorded(remote)
    a, b, c = (synthetic_avatar(n, "head", 256, 256, seed=s) for n, s in (("a", 1), ("b", 2),
                                                                            ("c", 3)))

    def frames(x, y, i):
        return [(x, motion("s1", i, {"jaw_open": 0.4 * i}, rotation=(0.0, 0.1 * i, 0.0))),
                (y, motion("s2", i, {"blink_left": 0.5}, translation=(0.1 * i, 0.0, 0.0)))]

    for i in range(3):
        items = frames(a, b, i)
        before = lp_client.statistics()
        got = remote.render_batch(items)
        assert delta(lp_client, before, 1) == {"inference_count": 2, "execution_count": 1,
                                               "success_count": 1, "fail_count": 0}
        assert grey_levels(got, here.render_batch(items)) <= 1
    assert sent == [{"AVATAR", "SOURCE", "KP_SOURCE", "KP_DRIVING"}] + [
        {"AVATAR", "KP_SOURCE", "KP_DRIVING"}] * 2
    assert remote.generator.sources_sent == 2 and remote.generator.resends == 0

    # A third avatar evicts the least recently used one (a) from the server's cache.
    remote.render_batch(frames(c, b, 3))
    items = frames(a, b, 4)
    before = lp_client.statistics()
    got = remote.render_batch(items)
    stats = delta(lp_client, before, 2)  # refused without the image, then rendered with it
    assert (stats["success_count"], stats["fail_count"]) == (1, 1)
    assert remote.generator.resends == 1
    assert [("SOURCE" in r) for r in sent[3:]] == [True, False, True]
    assert grey_levels(got, here.render_batch(items)) <= 1

    # The asyncio path: the same request, in flight while the event loop runs.
    items = frames(a, b, 5)
    got = asyncio.run(remote.render_batch_async(items))
    assert grey_levels(got, here.render_batch(items)) <= 1
    remote.close()
    here.close()


def _keyed(client: TritonNetwork, keys: list[bytes], kp: np.ndarray, source=None):
    array = np.empty((len(keys), 1), dtype=object)
    array[:, 0] = keys
    return client.infer_async({"AVATAR": array, "SOURCE": source, "KP_SOURCE": kp,
                               "KP_DRIVING": kp + np.float32(0.02)})


@pytest.mark.parametrize("bad", ["unknown key", "wrong K", "NaN"])
def test_a_malformed_keyed_request_fails_alone(lp_client, bad):
    """Requests by avatar key: the bad one gets its own error, the good one its frame, both
    in one execution."""
    rng = np.random.default_rng(7)
    kp = rng.uniform(-0.5, 0.5, (1, 21, 3)).astype(np.float32)
    asyncio.run(_keyed(lp_client, [b"known"], kp, rng.random((1, 3, 64, 64), np.float32)))
    bad_kp, key, message = kp.copy(), b"known", None
    if bad == "unknown key":
        key, message = b"never-sent", "AVATAR 'never-sent' not cached on this server"
    elif bad == "wrong K":
        bad_kp, message = kp[:, :-1], r"KP_SOURCE has shape \[1, 20, 3\]"
    else:
        bad_kp[0, 2, 1], message = np.nan, "KP_SOURCE has 1 non-finite values"
    before = lp_client.statistics()

    async def both():
        return await asyncio.gather(_keyed(lp_client, [b"known"], kp),
                                    _keyed(lp_client, [key], bad_kp), return_exceptions=True)

    ok, err = asyncio.run(both())
    stats = delta(lp_client, before, 2)
    assert stats["execution_count"] == 1
    assert (stats["success_count"], stats["fail_count"]) == (1, 1)
    assert isinstance(ok, np.ndarray) and ok.shape == (1, 3, 128, 128)
    assert isinstance(err, InvalidInput), err
    assert re.search(message, err.message), err.message


def test_the_renderer_stage_batches_two_sessions_through_triton(networks, server, clients):
    """The renderer service's path, arch upperbody: RendererStage with the neural engine and
    ``triton_url`` renders two sessions' frames (two avatars, hands included) in one Triton
    request, as the in-process engine would; later frames send no images."""
    from avatarflow.avatars.store import AvatarStore
    from avatarflow.contracts import messages as m
    from avatarflow.dev.testing import run_test
    from avatarflow.runtime.stage import run_batch
    from avatarflow_renderer import build_stage
    from services.renderer.tests.neural_testkit import motion, synthetic_avatar

    store = AvatarStore()
    for name, seed in (("ua", 1), ("ub", 2)):
        store.put(synthetic_avatar(name, "upper-body", 256, 384, seed=seed))
    weights = str(networks["renderer"][1])
    remote = build_stage("neural", store=store, weights=weights, arch="upperbody",
                         triton_url=server.url)
    here = build_stage("neural", store=store, weights=weights, arch="upperbody")
    sent = recorded(remote.engine)
    for stage in (remote, here):
        run_test(stage, [m.SessionStart(session_id=f"s-{name}", avatar_id=name,
                                        mode="upper-body", width=256, height=384)
                         for name in ("ua", "ub")])
    for i in range(2):
        frames = [motion("s-ua", i, {"jaw_open": 0.5 * i}, hand_shift=(0.0, -0.8)),
                  motion("s-ub", i, rotation=(0.0, 0.0, 0.1 * i), hand_shift=(0.1, -0.6))]
        before = clients["renderer"].statistics()
        outs = run_batch(remote, frames)
        assert delta(clients["renderer"], before, 1)["inference_count"] == 2
        got = [out[0].image.rgb() for out in outs]
        want = [out[0].image.rgb() for out in run_batch(here, frames)]
        assert [out[0].session_id for out in outs] == ["s-ua", "s-ub"]
        assert grey_levels(got, want) <= 1
    assert ["SOURCE" in r for r in sent] == [True, False]
    assert all("HAND" in r for r in sent)
    remote.close()
    here.close()
