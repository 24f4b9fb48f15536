"""Observability: spans -> Chrome trace, phase times, utilization, JSONL/TensorBoard, plots."""

from asyncvla.metrics.spans import Span, SpanRecorder, phase_times, to_chrome_trace, utilization, write_chrome_trace
from asyncvla.metrics.writer import MetricsWriter, read_metrics

__all__ = ["MetricsWriter", "Span", "SpanRecorder", "phase_times", "read_metrics", "to_chrome_trace", "utilization", "write_chrome_trace"]
