"""bench timeline: the window and busy fractions, and the side-by-side PNG."""

import pytest

from asyncvla.bench.timeline import busy_fractions, middle_window, side_by_side_gantt
from asyncvla.config import ConfigError
from asyncvla.metrics.spans import Span, write_chrome_trace


def _spans(busy_env: float):
    # 10 s run: env busy the first busy_env of each second, trainer the rest.
    out = []
    for i in range(10):
        out.append(Span("env", 0, "env_chunk", i, i + busy_env))
        out.append(Span("trainer", 0, "train", i + busy_env, i + 1))
    return out


def test_middle_window_and_busy_fractions():
    spans = _spans(0.25)
    assert middle_window(spans, 4.0) == (3.0, 7.0)
    assert middle_window(spans, 40.0) == (0.0, 10.0)
    busy = busy_fractions(spans, (3.0, 7.0))
    assert busy["env"] == pytest.approx(0.25) and busy["trainer"] == pytest.approx(0.75)


def test_side_by_side_png_from_trace_files(tmp_path):
    a, b = write_chrome_trace(tmp_path / "a.json", _spans(0.3)), write_chrome_trace(tmp_path / "b.json", _spans(0.9))
    png = side_by_side_gantt([("sync", a), ("async", b)], tmp_path / "t.png", window_s=4)
    assert png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ConfigError, match="trace="):
        side_by_side_gantt([("sync", tmp_path / "missing.json")], tmp_path / "x.png")
