"""The ray backend refuses, in one line, a layout the cluster cannot place (Ray would wait forever)."""

import dataclasses

import pytest

from asyncvla.config import ConfigError, TrainConfig, load_preset
from asyncvla.runtime.backends import ray as ray_backend
from asyncvla.runtime.plan import make_plan


def _cfg(**runtime):  # emulated-e2e: 2 env managers (pipeline stages), 1 rollout server
    cfg = load_preset(TrainConfig, "emulated-e2e")
    return dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime, **runtime))


@pytest.mark.parametrize("runtime, cluster, message", [
    (dict(rollout_gpus=1.0), {"CPU": 8.0}, "needs 1 GPU (env managers x runtime.env_gpus + servers x runtime.rollout_gpus"
                                           " + extra trainers x runtime.trainer_gpus) but the Ray cluster has 0"),
    (dict(num_trainers=3, trainer_gpus=1.0), {"CPU": 8.0, "GPU": 1.0}, "needs 2 GPU"),
    (dict(num_trainers=2, trainer_resources={"node_b": 1.0}), {"CPU": 8.0}, "needs 1 node_b"),
    (dict(env_cpus=4.0), {"CPU": 2.0}, "needs 9 CPU"),
    (dict(env_resources={"node_a": 1.0}), {"CPU": 8.0}, "needs 2 node_a (env managers x runtime.env_resources + servers x runtime.rollout_resources"
     " + extra trainers x runtime.trainer_resources) but the Ray cluster has 0"),
    (dict(env_resources={"node_a": 1.0}, rollout_resources={"node_a": 2.0}), {"CPU": 8.0, "node_a": 2.0}, "needs 4 node_a"),
])
def test_layouts_the_cluster_cannot_place_are_refused(monkeypatch, runtime, cluster, message):
    cfg = _cfg(**runtime)
    monkeypatch.setattr(ray_backend.ray, "cluster_resources", lambda: cluster)
    with pytest.raises(ConfigError, match="lower them or add nodes") as e:
        ray_backend.check_resources(make_plan(cfg), cfg)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_layout_the_cluster_can_place_passes(monkeypatch):
    cfg = _cfg(env_resources={"node_a": 1.0}, rollout_resources={"node_b": 0.5})
    monkeypatch.setattr(ray_backend.ray, "cluster_resources", lambda: {"CPU": 8.0, "node_a": 2.0, "node_b": 1.0})
    ray_backend.check_resources(make_plan(cfg), cfg)
