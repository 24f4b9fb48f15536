import json

import pytest

from asyncvla.metrics.spans import Span, SpanRecorder, load_chrome_trace, phase_times, to_chrome_trace, utilization, write_chrome_trace


def test_recorder_records_block_even_when_it_raises():
    rec = SpanRecorder("env", 3)
    with rec.span("env_step"):
        pass
    with pytest.raises(RuntimeError):
        with rec.span("infer"):
            raise RuntimeError("boom")
    spans = rec.drain()
    assert [(s.role, s.worker, s.kind) for s in spans] == [("env", 3, "env_step"), ("env", 3, "infer")]
    assert all(s.end >= s.start for s in spans)
    assert rec.drain() == []


def test_recorder_disabled_and_capped():
    off = SpanRecorder("env", enabled=False)
    with off.span("x"):
        pass
    assert len(off) == 0
    capped = SpanRecorder("env", max_spans=2)
    for _ in range(5):
        capped.add("x", 0.0, 1.0)
    assert len(capped) == 2 and capped.dropped == 3


def test_chrome_trace_is_valid_json_with_complete_events(tmp_path):
    spans = [Span("env", 0, "env_step", 100.0, 100.5), Span("rollout", 1, "infer", 100.25, 100.75)]
    path = write_chrome_trace(tmp_path / "trace.json", spans)
    data = json.loads(path.read_text())
    xs = [e for e in data["traceEvents"] if e["ph"] == "X"]
    assert len(xs) == 2
    for e in xs:
        assert {"name", "ph", "pid", "tid", "ts", "dur"} <= e.keys()
    env, inf = xs
    assert env["ts"] == 0.0 and env["dur"] == 500000.0
    assert inf["ts"] == 250000.0 and inf["tid"] == 1
    assert env["pid"] != inf["pid"]  # one process row per role
    names = {e["args"]["name"] for e in data["traceEvents"] if e["ph"] == "M" and e["name"] == "process_name"}
    assert names == {"env", "rollout"}
    back = load_chrome_trace(path)
    assert [(s.role, s.worker, s.kind) for s in back] == [("env", 0, "env_step"), ("rollout", 1, "infer")]
    assert back[1].end - back[1].start == pytest.approx(0.5)


def test_empty_trace():
    assert [e for e in to_chrome_trace([])["traceEvents"] if e["ph"] == "X"] == []


def test_phase_times_sum_per_kind():
    spans = [Span("env", 0, "env_step", 0, 1), Span("env", 1, "env_step", 0, 2), Span("trainer", 0, "train", 1, 4)]
    assert phase_times(spans) == {"time/env_step_s": 3, "time/train_s": 3}


def test_utilization_counts_union_excludes_waits_and_clips():
    spans = [
        Span("env", 0, "env_step", 0, 4),
        Span("env", 0, "env_step", 2, 6),   # overlaps the first: union is [0, 6]
        Span("env", 0, "wait", 6, 10),      # waiting is not busy
        Span("trainer", 0, "train", 8, 12),  # clipped to the window end (10)
    ]
    u = utilization(spans, 0, 10, workers={"env": 2, "trainer": 1})
    assert u["util/env"] == pytest.approx(6 / 20)  # the second env worker did nothing
    assert u["util/trainer"] == pytest.approx(2 / 10)
    assert u["time/idle_s"] == pytest.approx((20 - 6) + (10 - 2))
