"""`asyncvla bench timeline`: sync and async Gantt charts side by side, on one time scale.

Each panel shows one lane per worker (env shards, rollout servers, the trainer), one colour
per span kind (the colours of `metrics/plots.py`); white gaps are bubbles. Both panels show
a window of the same length taken from the middle of each run, so warm-up is left out and
the two compare at a glance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from asyncvla.config import ConfigError
from asyncvla.metrics.plots import COLORS
from asyncvla.metrics.spans import Span, load_chrome_trace, utilization


def middle_window(spans: Sequence[Span], length_s: float) -> tuple[float, float]:
    """[a, b] seconds since the first span: `length_s` long, centred in the run (clipped to it)."""
    if not spans:
        return 0.0, length_s
    t0 = min(s.start for s in spans)
    total = max(s.end for s in spans) - t0
    a = max(0.0, total / 2 - length_s / 2)
    return a, min(total, a + length_s)


def busy_fractions(spans: Sequence[Span], window: tuple[float, float]) -> dict[str, float]:
    """Utilization per role inside `window` (seconds since the first span)."""
    if not spans:
        return {}
    t0 = min(s.start for s in spans)
    util = utilization(spans, t0 + window[0], t0 + window[1])
    return {k.split("/", 1)[1]: v for k, v in util.items() if k.startswith("util/")}


def _panel(ax, spans: Sequence[Span], window: tuple[float, float], title: str) -> set[str]:
    t0 = min((s.start for s in spans), default=0.0)
    lanes = sorted({(s.role, s.worker) for s in spans}, key=lambda x: (("env", "rollout", "trainer").index(x[0])
                                                                      if x[0] in ("env", "rollout", "trainer") else 9, x[1]))
    row = {lane: i for i, lane in enumerate(lanes)}
    kinds = set()
    for s in spans:
        a, b = s.start - t0, s.end - t0
        if b < window[0] or a > window[1]:
            continue
        kinds.add(s.kind)
        ax.broken_barh([(a - window[0], b - a)], (row[(s.role, s.worker)] - 0.4, 0.8),
                       facecolors=COLORS.get(s.kind, "#bbbbbb"), linewidth=0)
    ax.set_yticks(range(len(lanes)), [f"{r}-{w}" for r, w in lanes])
    ax.invert_yaxis()
    ax.set_xlim(0, window[1] - window[0])
    busy = busy_fractions(spans, window)
    ax.set_title(title + "  (busy: " + ", ".join(f"{k} {v:.0%}" for k, v in sorted(busy.items())) + ")", fontsize=9)
    return kinds


def side_by_side_gantt(traces: Sequence[tuple[str, str | Path | Sequence[Span]]], out_png: str | Path,
                       window_s: float = 6.0) -> Path:
    """Draws one Gantt panel per (title, trace) under each other, sharing the x scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    loaded = []
    for title, trace in traces:
        if isinstance(trace, (str, Path)) and not Path(trace).exists():
            raise ConfigError(f"trace={str(trace)!r} is invalid: no such file (write one with `bench ablation --out DIR`)")
        loaded.append((title, load_chrome_trace(trace) if isinstance(trace, (str, Path)) else list(trace)))
    heights = [max(len({(s.role, s.worker) for s in sp}), 1) for _, sp in loaded]
    fig, axes = plt.subplots(len(loaded), 1, figsize=(12, 0.5 * sum(heights) + 1.5 * len(loaded)),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    kinds: set[str] = set()
    for ax, (title, spans) in zip(axes[:, 0], loaded):
        kinds |= _panel(ax, spans, middle_window(spans, window_s), title)
    axes[-1, 0].set_xlabel(f"seconds (a {window_s:g} s window from the middle of each run)")
    fig.legend(handles=[Patch(color=COLORS.get(k, "#bbbbbb"), label=k) for k in sorted(kinds)],
               loc="upper right", fontsize=8, ncol=len(kinds))
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png
