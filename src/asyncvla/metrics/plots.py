"""Gantt chart of a Chrome trace: one lane per worker, one colour per span kind.

Used to compare sync and async timelines side by side (bubbles show as white gaps).
"""

from __future__ import annotations

from pathlib import Path

from asyncvla.metrics.spans import Span, load_chrome_trace

# Stable colours per kind, so two plots compare at a glance.
COLORS = {
    "env_step": "#4c72b0", "env_reset": "#8172b2", "infer": "#55a868", "train": "#c44e52",
    "advantage": "#dd8452", "weight_sync": "#937860", "eval": "#da8bc3", "checkpoint": "#8c8c8c",
    "wait": "#e5e5e5",
}


def gantt_png(trace: str | Path | list[Span], out_png: str | Path, title: str | None = None,
              window_s: tuple[float, float] | None = None) -> Path:
    """Draws `trace` (a trace.json path or spans) to `out_png`; `window_s` crops to [a, b] s from the start."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    spans = load_chrome_trace(trace) if isinstance(trace, (str, Path)) else list(trace)
    t0 = min((s.start for s in spans), default=0.0)
    lanes = sorted({(s.role, s.worker) for s in spans})
    row = {lane: i for i, lane in enumerate(lanes)}
    fig, ax = plt.subplots(figsize=(12, 0.45 * max(len(lanes), 1) + 1.2))
    by_kind: dict[str, list[tuple[int, float, float]]] = {}
    for s in spans:
        a, b = s.start - t0, s.end - t0
        if window_s is not None and (b < window_s[0] or a > window_s[1]):
            continue
        by_kind.setdefault(s.kind, []).append((row[(s.role, s.worker)], a, b - a))
    for kind, bars in by_kind.items():
        color = COLORS.get(kind, "#bbbbbb")
        for r, a, w in bars:
            ax.broken_barh([(a, w)], (r - 0.4, 0.8), facecolors=color, linewidth=0)
    ax.set_yticks(range(len(lanes)), [f"{r}-{w}" for r, w in lanes])
    ax.invert_yaxis()
    ax.set_xlabel("seconds since start")
    if window_s is not None:
        ax.set_xlim(*window_s)
    ax.legend(handles=[Patch(color=COLORS.get(k, "#bbbbbb"), label=k) for k in sorted(by_kind)],
              loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png
