from asyncvla.metrics.plots import gantt_png
from asyncvla.metrics.spans import Span, write_chrome_trace


def test_gantt_png_from_trace_file(tmp_path):
    spans = [Span("env", 0, "env_step", 10.0, 10.2), Span("rollout", 0, "infer", 10.2, 10.3), Span("trainer", 0, "train", 10.3, 11.0)]
    trace = write_chrome_trace(tmp_path / "trace.json", spans)
    out = gantt_png(trace, tmp_path / "gantt.png", title="sync")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
