"""The co-located renderer and refiner (avatarflow.runtime.chain) on the CPU engines: what comes
out of the chain is what the two stages give one after the other, control reaches both parts,
a session moves to another replica with both parts' state, and load shedding keeps each
stage's behaviour. Plus the renderer service's switch (``colocate``) and its checks. The same
for the light half, the audio-encoder running motion-gen (mel and signal engines): motion
identical to the two stages one after the other, however many features a chunk makes, its
history carried across a takeover, interrupts and errors as with separate processes, and
each part's own metrics."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import time
from typing import Any

import numpy as np
import pytest
import skimage.data
from PIL import Image

from avatarflow.avatars.store import AvatarStore
from avatarflow.bus.base import Delivery
from avatarflow.bus.memory import MemoryBus
from avatarflow.contracts import messages as m
from avatarflow.contracts import motion as mo
from avatarflow.contracts.errors import AvatarflowError, InvalidInput
from avatarflow.dev.net import free_port
from avatarflow.dev.testing import DictBacking, of_type, run_test
from avatarflow.runtime import registry, stage_service, state
from avatarflow.runtime.build import build_stage
from avatarflow.runtime.chain import Chain
from avatarflow.runtime.runner import StageRunner
from avatarflow.runtime.settings import Settings
from avatarflow.runtime.stage import Stage, run_batch, session_ended
from avatarflow.telemetry import tracing
from avatarflow_refiner.stage import RefinerStage
from avatarflow_renderer.stage import RendererStage

FAR = 4102444800.0  # 2100-01-01: in time, so every frame is refined
BUDGET_S = 0.5
SPEC = registry.stage("renderer")


def motion(index: int, session: str = "s", deadline: float = FAR) -> m.MotionFrame:
    e = np.zeros(len(mo.EXPRESSIONS), np.float32)
    e[mo.EXPR["jaw_open"]] = 0.1 * (index % 6)
    wrists = mo.BODY_CANONICAL[[mo.BODY["wrist_l"], mo.BODY["wrist_r"]]]
    return m.MotionFrame(
        session_id=session, index=index, pts=index / 30, deadline=deadline,
        rotation=np.array([0.0, 0.03 * index, 0.0], np.float32),
        translation=np.zeros(3, np.float32), scale=1.0, expression=e,
        head_template=mo.head_template(e), head_offset=np.zeros((mo.K, 3), np.float32),
        body=mo.BODY_CANONICAL.copy(), hands=(mo.HAND_REST + wrists[:, None]).astype(np.float32))


def start(session: str = "s") -> m.SessionStart:
    return m.SessionStart(session_id=session, avatar_id="astro")


@pytest.fixture(scope="module")
def backing() -> DictBacking:
    """The astronaut, analysed once, where every replica's avatar store finds it."""
    b = DictBacking()
    buf = io.BytesIO()
    Image.fromarray(skimage.data.astronaut()).save(buf, format="PNG")
    renderer = build_stage("renderer", store=AvatarStore(backing=b))
    run_test(renderer, [m.SessionStart(session_id="prep", avatar_id="astro",
                                       image=buf.getvalue())])
    renderer.close()
    return b


def pair(backing: DictBacking, batches: bool = False) -> tuple[Stage, Stage]:
    """A renderer and a refiner sharing one store, as one replica (process) has them."""
    store = AvatarStore(backing=backing)
    parts = build_stage("renderer", store=store), build_stage("refiner", store=store)
    for p in parts:
        p.batches = batches
    return parts


def chain(backing: DictBacking, **kw: Any) -> Chain:
    kw.setdefault("budget_s", BUDGET_S)
    return Chain(*pair(backing, kw.pop("batches", False)), **kw)


def separately(backing: DictBacking, msgs: list[m.Message]) -> list[m.Message]:
    renderer, refiner = pair(backing)
    return run_test(refiner, run_test(renderer, msgs))


def same_output(got: list[m.Message], want: list[m.Message]) -> None:
    assert [(type(x).__name__, x.session_id, x.index) for x in got] == \
        [(type(x).__name__, x.session_id, x.index) for x in want]
    for a, b in zip(of_type(got, m.FinalFrame), of_type(want, m.FinalFrame), strict=True):
        assert a.refined and b.refined and (a.pts, a.deadline) == (b.pts, b.deadline)
        assert np.array_equal(a.image.rgb(), b.image.rgb())


def test_frames_out_equal_the_two_stages_one_after_the_other(backing) -> None:
    msgs = [start(), *[motion(i) for i in range(4)], m.EndOfAudio(session_id="s", index=4)]
    c = chain(backing)
    got = run_test(c, msgs)
    same_output(got, separately(backing, msgs))
    assert len(of_type(got, m.FinalFrame)) == 4
    # Each part timed on its own, as its own runner would.
    assert c.stats["renderer"].frames == c.stats["refiner"].frames == 4
    assert c.session_count == 0  # the end of audio ended the session in both parts


def test_batches_of_several_sessions_give_the_same_frames(backing) -> None:
    starts = [start("a"), start("b")]
    frames = [motion(i, sid) for i in range(3) for sid in ("a", "b")]
    c = chain(backing, batches=True)
    assert c.batches
    got = [o for outs in run_batch(c, [*starts, *frames]) for o in outs]
    same_output(got, separately(backing, [*starts, *frames]))


def test_urgent_control_reaches_both_parts_as_it_would_separately(backing) -> None:
    c = chain(backing)
    seen: list[str] = []

    def spy(part: Stage, hook: str) -> None:
        real = getattr(part, hook)

        def recorded(s: Any, msg: m.Message) -> None:
            seen.append(f"{part.name}.{hook}")
            real(s, msg)
        setattr(part, hook, recorded)

    for part in (c.first, c.second):
        for hook in ("interrupt", "control"):
            spy(part, hook)
    msgs = [start(), motion(0), m.Interrupt(session_id="s", index=1),
            m.ControlUpdate(session_id="s", index=1, controls=m.Controls(pose_amplitude=0.5)),
            motion(1), m.EndOfAudio(session_id="s", index=2)]
    got = run_test(c, msgs)
    assert seen == ["renderer.interrupt", "refiner.interrupt", "renderer.control",
                    "refiner.control"]
    same_output(got, separately(backing, msgs))
    assert len(of_type(got, m.Interrupt)) == len(of_type(got, m.ControlUpdate)) == 1


def test_a_session_moves_to_another_replica_with_both_parts_state(backing) -> None:
    msgs = [start(), *[motion(i) for i in range(5)], m.EndOfAudio(session_id="s", index=5)]
    whole = run_test(chain(backing), msgs)
    a = chain(backing)
    out = run_test(a, msgs[:3])
    assert a.state_changed_by(msgs[0]) and not a.state_changed_by(msgs[1])
    data = a.snapshot("s")
    assert data is not None
    b = chain(backing)  # another replica: its own stores, the same Redis behind them
    b.restore("s", data)
    assert b.first.session_count == b.second.session_count == 1
    assert b.snapshot("s") == data
    out += run_test(b, msgs[3:])
    same_output(out, whole)
    assert a.snapshot("unknown") is None


def test_a_restore_that_fails_in_one_part_leaves_neither_holding_the_session(backing) -> None:
    a = chain(backing)
    run_test(a, [start()])
    renderer_state = a.first.snapshot("s")
    b = chain(backing)
    with pytest.raises(AvatarflowError):
        b.restore("s", state.dumps((renderer_state, state.dumps("avatar:expired"))))
    assert b.first.session_count == b.second.session_count == 0
    with pytest.raises(state.StateError):
        b.restore("s", state.dumps("not a pair"))


def test_a_part_that_rejects_the_session_is_named_in_the_error(backing) -> None:
    renderer = build_stage("renderer", store=AvatarStore(backing=backing))
    refiner = build_stage("refiner", store=AvatarStore())  # never sees the analysis
    (err,) = run_test(Chain(renderer, refiner), [start()])
    assert isinstance(err, m.SessionError)
    assert (err.stage, err.category) == ("refiner", "not_found")


def test_a_frame_late_after_rendering_is_dropped_before_the_refiner(backing) -> None:
    c = chain(backing)
    run_test(c, [start()])
    assert c.process(motion(0, deadline=time.time() - 1.0)) == []
    assert c.dropped == 1 and c.stats["renderer"].frames == 1
    assert c.stats["refiner"].frames == 0


def _shed_run(c: Chain, behind_s: float) -> tuple[StageRunner, list[m.FinalFrame]]:
    """Two frames of one session, both ``behind_s`` past due, handed to a runner at once:
    the older is shed (a newer one waits), the newer runs."""
    bus = MemoryBus()
    bus.subscribe(registry.FRAMES, "sink")
    spec = SPEC.__class__(SPEC.name, SPEC.package, SPEC.input, registry.FRAMES)
    runner = StageRunner(spec, c, bus, batch=2, budget_s=BUDGET_S, shed_after_s=0.1)
    now = time.time()
    batch = [Delivery(motion(i, deadline=now - behind_s + BUDGET_S), registry.MOTION,
                      spec.group) for i in range(2)]

    async def main() -> list[m.FinalFrame]:
        await runner.handle(batch)
        q = bus._queue(registry.FRAMES, "sink")
        return [await q.get() for _ in range(len(q))]

    return runner, asyncio.run(main())


def test_a_shed_frame_is_rendered_and_goes_on_unrefined(backing) -> None:
    c = chain(backing, drop_behind_s=0.2)
    run_test(c, [start()])
    runner, out = _shed_run(c, behind_s=0.15)
    assert [(f.index, f.refined) for f in out] == [(0, False), (1, True)]
    assert runner.stats.shed == 1 and runner.stats.dropped == 0
    assert c.degraded == 1 and c.stats["renderer"].frames == 2


def test_a_shed_frame_far_behind_is_skipped_as_the_renderer_would(backing) -> None:
    c = chain(backing, drop_behind_s=0.2)
    run_test(c, [start()])
    runner, out = _shed_run(c, behind_s=0.3)
    assert [(f.index, f.refined) for f in out] == [(1, True)]
    assert runner.stats.shed == 1 and runner.stats.dropped == 1
    assert c.stats["renderer"].frames == 1


def test_each_part_has_its_own_span_and_the_refine_span_follows_the_render_span(
        backing) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    c = chain(backing)
    run_test(c, [start()])
    tracing.enable(provider)
    try:
        (final,) = run_test(c, [motion(0)])
    finally:
        tracing.disable()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    render, refine = spans["render"], spans["refine"]
    assert refine.parent is not None and refine.parent.span_id == render.context.span_id
    assert refine.context.trace_id == render.context.trace_id
    # The next service's span is the refine span's child.
    assert final.traceparent.split("-")[2] == f"{refine.context.span_id:016x}"


# -- the renderer service's switch ----------------------------------------------------------

@pytest.mark.parametrize("service", ["audio-encoder", "motion-gen", "refiner"])
def test_only_the_renderer_can_run_the_refiner(service: str) -> None:
    with pytest.raises(InvalidInput) as err:
        stage_service.colocated(Settings(service=service, colocate="refiner"))
    assert "AVATARFLOW_RENDERER_COLOCATE=refiner" in err.value.message


def test_the_renderer_service_chains_the_refiner_with_its_own_settings(monkeypatch) -> None:
    monkeypatch.setenv("AVATARFLOW_REFINER_ENGINE_OPTIONS", "refine_margin_s=0.25")
    settings = Settings(service="renderer", colocate="refiner", redis_url="redis://127.0.0.1:1/0")
    stage, backing = stage_service.build(settings)
    try:
        assert isinstance(stage, Chain)
        assert (stage.first.name, stage.second.name) == ("renderer", "refiner")
        assert isinstance(stage.first, RendererStage) and isinstance(stage.second, RefinerStage)
        assert stage.second.refine_margin_s == 0.25
        assert stage.first.store is stage.second.store
    finally:
        stage.close()
        if backing is not None:
            backing.close()


def test_serve_stops_with_a_clear_message_when_colocate_is_set_for_every_service() -> None:
    env = {**os.environ, "AVATARFLOW_COLOCATE": "refiner", "AVATARFLOW_LISTEN_HOST": "127.0.0.1"}
    proc = subprocess.run([sys.executable, "-m", "avatarflow.cli.main", "serve", "motion-gen",
                           "--port", str(free_port()), "--metrics-port", "-1",
                           "--redis", "redis://127.0.0.1:1/0"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode != 0
    assert "AVATARFLOW_RENDERER_COLOCATE=refiner" in proc.stderr, proc.stderr


# -- the light half: the audio-encoder with motion-gen (AVATARFLOW_AUDIO_ENCODER_COLOCATE) ----

RATE = 16000


def _speech(seconds: float) -> np.ndarray:
    """Syllables of a voiced tone with pauses between them: the mouth opens and closes."""
    t = np.arange(int(RATE * seconds)) / RATE
    voiced = np.sin(2 * np.pi * 3 * t) > 0
    return (8000 * np.sin(2 * np.pi * 150 * t) * voiced).astype(np.int16)


def audio(seconds: float, session: str = "s", first: int = 0) -> list[m.AudioChunk]:
    """20 ms chunks: fewer than one video frame each, so some make no features at all."""
    pcm, step = _speech(seconds), RATE // 50
    return [m.AudioChunk(session_id=session, index=first + k, pts=i / RATE, sample_rate=RATE,
                         pcm=pcm[i:i + step], deadline=FAR)
            for k, i in enumerate(range(0, pcm.size, step))]


def talk(session: str = "s", controls: m.Controls | None = None) -> m.SessionStart:
    return m.SessionStart(session_id=session, sample_rate=RATE, fps=30.0,
                          controls=controls or m.Controls(seed=3))


def light() -> Chain:
    return Chain(build_stage("audio-encoder"), build_stage("motion-gen"), budget_s=BUDGET_S)


def light_separately(msgs: list[m.Message]) -> list[m.Message]:
    return run_test(build_stage("motion-gen"), run_test(build_stage("audio-encoder"), msgs))


def identical(got: list[m.Message], want: list[m.Message]) -> None:
    """The same messages, every field (arrays element for element)."""
    assert [type(x) for x in got] == [type(x) for x in want]
    for a, b in zip(got, want, strict=True):
        for name in a.__dataclass_fields__:
            u, v = getattr(a, name), getattr(b, name)
            same = np.array_equal(u, v) if isinstance(u, np.ndarray) else u == v
            assert same, (type(a).__name__, a.index, name)


def test_motion_out_of_the_light_chain_equals_the_two_stages_one_after_the_other() -> None:
    chunks = audio(3.0)
    msgs = [talk(), *chunks, m.EndOfAudio(session_id="s", index=len(chunks))]
    c = light()
    per_chunk = [c.process(msgs[0]), *(c.process(x) for x in chunks)]
    # 20 ms of audio makes no video frame or one: the chain passes on what there is.
    assert {len(o) for o in per_chunk[1:]} == {0, 1}
    got = [o for outs in per_chunk for o in outs] + c.process(msgs[-1])
    c.end("s")
    want = light_separately(msgs)
    identical(got, want)
    frames = of_type(got, m.MotionFrame)
    assert [f.index for f in frames] == list(range(90))
    assert max(f.expression[mo.EXPR["jaw_open"]] for f in frames) > 0.2  # it talks
    end = got[-1]
    assert isinstance(end, m.EndOfAudio) and end.index == 90  # counted in frames, as before
    assert c.stats["audio-encoder"].frames == c.stats["motion-gen"].frames == 90
    assert c.session_count == 0


def test_a_light_session_moves_to_another_replica_with_its_motion_history() -> None:
    chunks = audio(3.0)
    msgs = [talk(), *chunks[:40], m.Interrupt(session_id="s", index=0), *chunks[40:],
            m.EndOfAudio(session_id="s", index=len(chunks))]
    whole = run_test(light(), msgs)
    # Saved after every message, as the runner saves it: motion-gen's part always current,
    # though it is pickled again only after motion-gen's state changed.
    c = light()
    for msg in msgs[:-1]:
        run_test(c, [msg])
        saved = state.loads(c.snapshot("s"))
        assert saved == (c.first.snapshot("s"), c.second.snapshot("s"))
    for k in (1, 17, 41, 42, 100):
        a = light()
        out = run_test(a, msgs[:k])
        data = a.snapshot("s")
        assert data is not None
        b = light()  # another replica: its own engines, nothing shared
        b.restore("s", data)
        assert b.first.session_count == b.second.session_count == 1
        out += run_test(b, msgs[k:])
        identical(out, whole)


def test_interrupt_and_controls_reach_both_light_parts_as_they_would_separately() -> None:
    chunks = audio(2.0)
    msgs = [talk(), *chunks[:30],
            m.Interrupt(session_id="s", index=12),
            m.ControlUpdate(session_id="s", index=12,
                            controls=m.Controls(seed=3, pose_amplitude=0.2, emotion="happy")),
            *audio(1.0, first=30), m.EndOfAudio(session_id="s", index=80)]
    got = run_test(light(), msgs)
    identical(got, light_separately(msgs))
    (cut,) = [i for i, x in enumerate(got) if isinstance(x, m.Interrupt)]
    before, after = of_type(got[:cut], m.MotionFrame), of_type(got[cut:], m.MotionFrame)
    # The interrupt moves the frame count back to its index; each part saw it once, in order.
    assert [f.index for f in before] == list(range(len(before))) and len(before) > 12
    assert [f.index for f in after] == list(range(12, 12 + len(after))) and after
    assert len(of_type(got, m.Interrupt)) == len(of_type(got, m.ControlUpdate)) == 1


def test_a_bad_chunk_ends_the_light_session_with_the_audio_encoders_error() -> None:
    bad = m.AudioChunk(session_id="s", index=3, sample_rate=RATE,
                       pcm=np.zeros(320, np.float32))
    c = light()
    run_test(c, [talk(), *audio(0.1)])
    (err,) = c.process(bad)
    assert isinstance(err, m.SessionError) and err.stage == "audio-encoder"
    assert err.category == "invalid_argument" and "int16" in err.message
    assert session_ended(bad, [err])  # the runner ends it in both parts (Chain.end)
    # An upstream error travels through untouched, as it would through a separate motion-gen.
    upstream = m.SessionError(session_id="s", stage="gateway", category="internal",
                              message="x")
    assert c.process(upstream) == [upstream]


@pytest.mark.parametrize("service", ["motion-gen", "renderer", "refiner"])
def test_only_the_audio_encoder_can_run_motion_gen(service: str) -> None:
    with pytest.raises(InvalidInput) as err:
        stage_service.colocated(Settings(service=service, colocate="motion-gen"))
    assert "AVATARFLOW_AUDIO_ENCODER_COLOCATE=motion-gen" in err.value.message


def test_the_audio_encoder_service_chains_motion_gen_with_its_own_settings(monkeypatch) -> None:
    monkeypatch.setenv("AVATARFLOW_MOTION_GEN_ENGINE_OPTIONS", "jaw_max=0.5")
    monkeypatch.setenv("AVATARFLOW_AUDIO_ENCODER_ENGINE_OPTIONS", "n_mels=32")
    settings = Settings.load("audio-encoder", colocate="motion-gen")
    stage, backing = stage_service.build(settings)
    try:
        assert backing is None  # neither part works on portraits: no Redis avatar store
        assert isinstance(stage, Chain)
        assert (stage.first.name, stage.second.name) == ("audio-encoder", "motion-gen")
        assert stage.first.engine.n_mels == 32 and stage.second.engine.params.jaw_max == 0.5
        assert not (stage.drops_late or stage.batches)  # motion-gen sees every frame
    finally:
        stage.close()


def test_each_light_part_reports_its_own_sessions_and_frames() -> None:
    from prometheus_client import REGISTRY

    from avatarflow.telemetry import metrics

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    c = light()
    runner = StageRunner(registry.stage("audio-encoder"), c, MemoryBus())
    stage_service._report_per_part(c, runner)
    before = {s: sample("avatarflow_stage_frames_total", stage=s) for s in c.stats}
    metrics.record(True)
    try:
        run_test(c, [talk("a"), talk("b"), *audio(0.5, "a")])
        c.end("b")
        c.second.end("a")  # as if motion-gen alone had let it go
    finally:
        metrics.record(False)
    assert sample("avatarflow_active_sessions", service="audio-encoder") == 1
    assert sample("avatarflow_active_sessions", service="motion-gen") == 0
    assert runner.span_name == "features+motion"
    for part, stats in c.stats.items():
        assert stats.frames > 10
        assert sample("avatarflow_stage_frames_total", stage=part) - before[part] == stats.frames
