"""Feature statistics as LeRobot v3 keeps them (`meta/stats.json`, `stats/<feature>/<stat>` per episode).

Per feature: min, max, mean, std (population), count ([1]: frames) and the quantiles q01..q99, each
with the feature's shape: `[D]` for a vector, `[1]` for a scalar, and `[3, 1, 1]` for an image
(per channel, channel first, on pixels scaled to [0, 1]), which is what LeRobot's normalisers read.
Episodes are reduced first; the dataset's statistics aggregate them as LeRobot's
`aggregate_stats` does (count-weighted mean, pooled variance, weighted mean of the quantiles).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}
STATS = ("min", "max", "mean", "std", "count", *QUANTILES)


def feature_stats(x: np.ndarray, image: bool = False) -> dict[str, np.ndarray]:
    """Statistics of one episode's frames of one feature.

    x: `[N, ...]` frames; an image feature is `[N, H, W, 3]` uint8 (reduced per channel, scaled
    to [0, 1]); a vector `[N, D]`; a scalar `[N]`.
    """
    x = np.asarray(x)
    if len(x) == 0:
        raise ValueError("feature_stats: no frames")
    if image:
        values = x.reshape(-1, x.shape[-1]).astype(np.float64) / 255.0  # [N*H*W, 3]
        shape: tuple[int, ...] = (x.shape[-1], 1, 1)
    else:
        values = x.reshape(len(x), -1).astype(np.float64)  # [N, D] (D = 1 for a scalar)
        shape = (values.shape[1],)
    out = {"min": values.min(0), "max": values.max(0), "mean": values.mean(0), "std": values.std(0)}
    out |= {k: np.quantile(values, q, axis=0) for k, q in QUANTILES.items()}
    out = {k: v.reshape(shape) for k, v in out.items()}
    out["count"] = np.array([len(x)], np.int64)
    return out


def aggregate_stats(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One feature's statistics over several episodes' (`feature_stats` outputs)."""
    if not parts:
        raise ValueError("aggregate_stats: nothing to aggregate")
    counts = np.array([int(p["count"][0]) for p in parts], np.float64)
    w = (counts / counts.sum()).reshape(-1, *([1] * parts[0]["mean"].ndim))  # [E, 1, ...]
    means = np.stack([p["mean"] for p in parts])
    mean = (w * means).sum(0)
    var = (w * (np.stack([p["std"] for p in parts]) ** 2 + (means - mean) ** 2)).sum(0)
    out = {"min": np.stack([p["min"] for p in parts]).min(0), "max": np.stack([p["max"] for p in parts]).max(0),
           "mean": mean, "std": np.sqrt(var)}
    out |= {k: (w * np.stack([p[k] for p in parts])).sum(0) for k in QUANTILES}
    out["count"] = np.array([int(counts.sum())], np.int64)
    return out


def to_json(stats: dict[str, dict[str, np.ndarray]]) -> dict:
    """{feature: {stat: nested list}}, as stats.json holds them."""
    return {f: {k: v.tolist() for k, v in s.items()} for f, s in stats.items()}
