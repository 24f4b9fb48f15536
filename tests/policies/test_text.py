"""The frozen instruction embedding: offline, DIM-sized, cached per string."""

from __future__ import annotations

import os

import numpy as np

from asyncvla.policies import text


def test_embed_shapes_norms_and_cache():
    out = text.embed(["reach the goal", "push the puck", "reach the goal"])
    assert out.shape == (3, text.DIM) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(out[0], out[2])
    assert not np.allclose(out[0], out[1])
    assert "reach the goal" in text._cache and os.environ["HF_HUB_OFFLINE"] == "1"
    assert text.embed([]).shape == (0, text.DIM)


def test_similar_instructions_are_closer_than_unrelated_ones():
    a, b, c = text.embed(["open the drawer", "pull the drawer open", "kick the ball into the goal"])
    assert a @ b > a @ c
