import json

import pytest

from asyncvla.metrics.writer import MetricsWriter, check_key, read_metrics


def test_jsonl_records_are_namespaced_and_flushed(tmp_path):
    w = MetricsWriter(tmp_path, tensorboard=True)
    w.write(1, {"perf/env_steps_per_s": 12.5, "loss/policy": float("nan"), "rollout/success": 0.25})
    # Flushed per write: readable before close, as after a crash.
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    assert rec["step"] == 1 and rec["wall_s"] >= 0
    assert rec["loss/policy"] is None and rec["perf/env_steps_per_s"] == 12.5
    for k in rec:
        assert k in ("step", "wall_s") or "/" in k
    w.write(2, {"util/env": 0.5})
    w.close()
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2]
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_resumed_writer_appends(tmp_path):
    with MetricsWriter(tmp_path, tensorboard=False) as w:
        w.write(1, {"perf/x": 1})
    with MetricsWriter(tmp_path, tensorboard=False, wall_offset_s=100.0) as w:
        rec = w.write(2, {"perf/x": 2})
    assert rec["wall_s"] >= 100.0
    assert len(read_metrics(tmp_path / "metrics.jsonl")) == 2


@pytest.mark.parametrize("key", ["loss", "nope/x", "perf/", "/x"])
def test_bad_keys_rejected(key):
    with pytest.raises(ValueError, match="namespace"):
        check_key(key)


def test_torn_last_line_is_skipped(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text('{"step": 1, "wall_s": 0.1}\n{"step": 2, "wa')
    assert [r["step"] for r in read_metrics(p)] == [1]
