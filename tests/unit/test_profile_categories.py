"""The profile benchmark's categoriser: known py-spy frames land in the right category."""

from __future__ import annotations

from bench.profile_cluster import (
    categorise_frame,
    categorise_stack,
    flamegraph_svg,
    parse_collapsed,
    summarise_stacks,
)

LOOP = ["run (asyncio/runners.py:118)", "run_forever (asyncio/base_events.py:607)",
        "_run_once (asyncio/base_events.py:1922)", "_run (asyncio/events.py:80)"]


def test_frames_by_file() -> None:
    cases = {
        "encode (avatarflow_audio_encoder/stage.py:40)": "own work",
        "step (/work/main/services/motion-gen/avatarflow_motion_gen/engines/procedural.py:9)":
            "own work",
        "process (avatarflow/runtime/stage.py:210)": "runtime",
        "decode_tensor (avatarflow/contracts/tensor.py:33)": "codec",
        "SerializeToString (google/protobuf/internal/python_message.py:1100)": "codec",
        "xreadgroup (avatarflow/bus/streams/consumer.py:77)": "bus",
        "read_response (redis/_parsers/hiredis.py:190)": "bus",
        "observe (prometheus_client/metrics.py:600)": "telemetry",
        "start_span (opentelemetry/sdk/trace/__init__.py:1000)": "telemetry",
        "_handle_stream (grpc/aio/_server.py:50)": "grpc",
        "select (selectors.py:468)": "asyncio",
        "mean (numpy/core/_methods.py:118)": "other",
        "<module> (<string>:1)": "other",
    }
    for frame, want in cases.items():
        assert categorise_frame(frame) == want, frame


def test_stack_goes_to_the_leafmost_specific_frame() -> None:
    engine = LOOP + ["__step (asyncio/tasks.py:267)", "run (avatarflow/runtime/stage.py:200)",
                     "step (avatarflow_motion_gen/stage.py:50)",
                     "mean (numpy/core/_methods.py:118)"]
    assert categorise_stack(engine) == "own work"
    bus_write = LOOP + ["publish (avatarflow/bus/streams/producer.py:60)",
                        "execute_command (redis/asyncio/client.py:600)",
                        "write (asyncio/selector_events.py:1050)"]
    assert categorise_stack(bus_write) == "bus"
    loop_only = LOOP + ["__step (asyncio/tasks.py:267)"]
    assert categorise_stack(loop_only) == "asyncio"
    thread = ["_bootstrap (threading.py:995)", "run (threading.py:975)"]
    assert categorise_stack(thread) == "other"


def test_summary_and_svg() -> None:
    text = ";".join(LOOP + ["encode (avatarflow/contracts/codec.py:12)"]) + " 3\n" + \
        ";".join(LOOP + ["__step (asyncio/tasks.py:267)"]) + " 1\n"
    stacks = parse_collapsed(text)
    s = summarise_stacks(stacks)
    assert s["samples"] == 4
    assert s["categories"]["codec"] == 3 and s["categories"]["asyncio"] == 1
    assert s["top_self"][0] == ("encode (avatarflow/contracts/codec.py)", 3)
    assert dict(s["top_inclusive"])["_run_once (asyncio/base_events.py)"] == 4
    svg = flamegraph_svg(stacks, "t")
    assert svg.startswith("<svg") and "encode" in svg


def test_waits_are_set_apart() -> None:
    from bench.profile_cluster import is_wait

    assert is_wait("EpollSelector.select (selectors.py:468)")
    assert is_wait("Thread.run (threading.py:975)")
    assert is_wait("Runner.run (asyncio/runners.py:118)")  # in uvloop's C loop (libuv)
    assert not is_wait("encode (avatarflow/contracts/codec.py:12)")
    stacks = parse_collapsed(";".join(LOOP + ["EpollSelector.select (selectors.py:468)"]) + " 5")
    s = summarise_stacks(stacks)
    assert s["samples"] == 0 and s["waiting"] == 5
