"""Where workers run: one process (`local`), Ray colocated, or Ray disaggregated.

Every worker is a plain class; a *handle* calls it as `h.method.remote(*args) -> ref` and
`get(ref)` waits, whether the handle is a Ray actor or a `LocalHandle` (which runs the call
at once in this process). So pipeline.py reads the same in all three layouts:

- local: all workers are objects of this process (Sample Factory's serial mode).
- colocated: env workers are actors; inference and training share one actor
  (`ColocatedWorker`) and its device, each model offloaded to CPU while the other works
  (RLinf's colocated mode on a GPU; on a CPU there is nothing to offload).
- disaggregated: env workers, inference workers and the trainer are separate actors with
  their own `num_cpus` / `num_gpus` from `runtime.*_cpus` / `*_gpus`.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable

from asyncvla.config import TrainConfig
from asyncvla.metrics.spans import Span
from asyncvla.runtime.env.worker import EnvWorker
from asyncvla.runtime.rollout import RolloutWorker
from asyncvla.runtime.learner.trainer import Trainer


# -- handles -------------------------------------------------------------------------------

class _Done:
    """A finished local call (stands in for an ObjectRef)."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value


def _resolve(x: Any) -> Any:
    return x.value if isinstance(x, _Done) else x


class _LocalMethod:
    def __init__(self, fn: Callable):
        self._fn = fn

    def remote(self, *args, **kwargs) -> _Done:
        # Like Ray, refs passed as top-level arguments arrive as values.
        return _Done(self._fn(*map(_resolve, args), **{k: _resolve(v) for k, v in kwargs.items()}))


class LocalHandle:
    """Calls a plain object with Ray's actor syntax, synchronously in this process."""

    def __init__(self, obj: Any):
        self._obj = obj

    def __getattr__(self, name: str) -> _LocalMethod:
        return _LocalMethod(getattr(self._obj, name))

    @property
    def obj(self) -> Any:
        return self._obj


def local_get(refs: Any) -> Any:
    return [_resolve(r) for r in refs] if isinstance(refs, list) else _resolve(refs)


# -- the colocated inference + training worker ----------------------------------------------

class ColocatedWorker:
    """Inference and training in one process on one device; the idle model is offloaded.

    Exposes the RolloutWorker and Trainer methods the pipeline calls, so it serves as
    both the `rollouts[0]` and the `trainer` handle.
    """

    def __init__(self, cfg: TrainConfig, action_dim: int, proprio_dim: int):
        trace = cfg.runtime.trace
        self.trainer = Trainer(cfg.policy, cfg.algo, action_dim, proprio_dim, seed=cfg.run.seed, trace=trace)
        self.rollout = RolloutWorker(cfg.policy, action_dim, proprio_dim, seed=cfg.run.seed, trace=trace)
        self.offload = cfg.run.device.startswith("cuda")

    def act(self, obs, deterministic: bool = False):
        return self.rollout.act(obs, deterministic)

    def train(self, *rollouts):
        self._swap(train=True)
        try:
            return self.trainer.train(*rollouts)
        finally:
            self._swap(train=False)

    def sync_local(self) -> int:
        """Copies the trainer's weights into the inference policy (same process: no serialisation)."""
        with self.rollout.rec.span("weight_sync"):
            self.rollout.policy.load_state_dict(self.trainer.policy.state_dict())
            self.rollout.policy.version = self.trainer.version
        return self.rollout.version

    def _swap(self, train: bool) -> None:
        # Only one model needs the accelerator at a time (RLinf offloads the same way).
        if self.offload:
            device = self.trainer.device
            self.rollout.policy.to("cpu" if train else device)
            self.trainer.policy.to(device if train else "cpu")

    # Explicit delegation (not __getattr__): Ray only exposes methods defined on the class.
    def get_weights(self):
        return self.trainer.get_weights()

    def save(self, out_dir, extra=None):
        return self.trainer.save(out_dir, extra)

    def load(self, ckpt_dir) -> int:
        version = self.trainer.load(ckpt_dir)
        self.sync_local()
        return version

    def drain_spans(self) -> list[Span]:
        return self.trainer.drain_spans() + self.rollout.drain_spans()


# -- building the workers -------------------------------------------------------------------

@dataclass
class Workers:
    """Handles of one run's workers and the `get` that waits on their results."""

    envs: list[Any]
    rollouts: list[Any]
    trainer: Any
    get: Callable[[Any], Any]
    colocated: bool
    spec: dict = field(default_factory=dict)
    """action_dim, proprio_dim, num_envs, instructions (from env worker 0)."""

    def all_handles(self) -> list[Any]:
        seen, out = set(), []
        for h in [*self.envs, *self.rollouts, self.trainer]:
            if id(h) not in seen:
                seen.add(id(h))
                out.append(h)
        return out


def _env_worker_args(cfg: TrainConfig, w: int) -> tuple:
    grpo = cfg.algo.name == "grpo"
    return (cfg.env, w, cfg.runtime.pipeline_stages, grpo, cfg.algo.group_size if grpo else 1, cfg.runtime.trace)


def build_local(cfg: TrainConfig) -> Workers:
    """Every worker in this process; inference and training share one policy-sized footprint."""
    envs = [LocalHandle(EnvWorker(*_env_worker_args(cfg, w))) for w in range(cfg.runtime.num_env_workers)]
    spec = envs[0].obj.spec()
    colo = LocalHandle(ColocatedWorker(cfg, spec["action_dim"], spec["proprio_dim"]))
    return Workers(envs, [colo], colo, local_get, colocated=True, spec=spec)


def build_ray(cfg: TrainConfig) -> Workers:
    """Ray actors for the configured placement (Ray must be initialised)."""
    import ray

    check_resources(cfg)
    rt = cfg.runtime
    env_cls = ray.remote(EnvWorker).options(num_cpus=rt.env_cpus, num_gpus=rt.env_gpus)
    envs = [env_cls.remote(*_env_worker_args(cfg, w)) for w in range(rt.num_env_workers)]
    spec = ray.get(envs[0].spec.remote())
    a, p = spec["action_dim"], spec["proprio_dim"]
    if rt.placement == "colocated":
        colo = ray.remote(ColocatedWorker).options(num_cpus=rt.rollout_cpus, num_gpus=rt.rollout_gpus).remote(cfg, a, p)
        return Workers(envs, [colo], colo, ray.get, colocated=True, spec=spec)
    roll_cls = ray.remote(RolloutWorker).options(num_cpus=rt.rollout_cpus, num_gpus=rt.rollout_gpus)
    rollouts = [roll_cls.remote(cfg.policy, a, p, cfg.run.seed, i, rt.trace) for i in range(rt.num_rollout_servers)]
    trainer = ray.remote(Trainer).options(num_cpus=rt.trainer_cpus, num_gpus=rt.trainer_gpus).remote(
        cfg.policy, cfg.algo, a, p, cfg.run.seed, rt.trace)
    return Workers(envs, rollouts, trainer, ray.get, colocated=False, spec=spec)


def required_resources(cfg: TrainConfig) -> dict[str, float]:
    """CPUs and GPUs the actors of `cfg` reserve (what the Ray cluster must offer)."""
    rt = cfg.runtime
    cpus = rt.num_env_workers * rt.env_cpus + rt.rollout_cpus
    gpus = rt.num_env_workers * rt.env_gpus + rt.rollout_gpus
    if rt.placement == "disaggregated":
        cpus += (rt.num_rollout_servers - 1) * rt.rollout_cpus + rt.trainer_cpus
        gpus += (rt.num_rollout_servers - 1) * rt.rollout_gpus + rt.trainer_gpus
    return {"CPU": cpus, "GPU": gpus}


def check_resources(cfg: TrainConfig) -> None:
    """Fails with one line when the cluster cannot place every actor (Ray would wait forever)."""
    import ray

    from asyncvla.config import ConfigError

    total = ray.cluster_resources()
    for res, need in required_resources(cfg).items():
        if need > total.get(res, 0.0) + 1e-9:
            raise ConfigError(f"runtime placement needs {need:g} {res} but the Ray cluster has {total.get(res, 0.0):g}: "
                              f"lower runtime.*_{res.lower()}s or add nodes")


WORKER_NICENESS = 0
"""Niceness of the local Ray's workers. Ray's default (15) suits workers that run beside
a busy driver; here the workers (envs, inference) do the run's work while the driver
trains, so at 15 the driver (nice 0) and every other process of the machine pre-empt them
(a nice-15 process gets ~1/28 of a nice-0 one's share of a contended core)."""


def init_ray(address: str | None, cfg: TrainConfig | None = None, min_cpus: float = 0) -> None:
    """Joins `address`, or starts a local Ray sized to this machine with a per-run temp dir.

    CPU reservations are scheduling labels, not pinning: a local Ray advertises at least
    what the configured actors reserve, so a 2-core laptop still runs the 3-actor
    disaggregated layout (oversubscribed, which the utilization metrics then show).
    """
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # Workers inherit these: headless rendering and no hub access in every actor.
    env_vars = {k: os.environ[k] for k in ("MUJOCO_GL", "HF_HUB_OFFLINE", "RAY_AUTH_MODE", "TOKENIZERS_PARALLELISM") if k in os.environ}
    runtime_env = {"env_vars": env_vars}
    if address:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
        return
    # Ray's socket paths must stay short (107 bytes): a short temp dir, not the run dir.
    tmp = tempfile.mkdtemp(prefix="ray_", dir="/tmp")
    need = max(required_resources(cfg)["CPU"] if cfg is not None else 0, min_cpus)  # min_cpus: the async actors
    ray.init(num_cpus=max(os.cpu_count() or 1, int(-(-need // 1))), include_dashboard=False, _temp_dir=tmp, runtime_env=runtime_env,
             log_to_driver=False, _system_config={"worker_niceness": WORKER_NICENESS})


def build_workers(cfg: TrainConfig) -> Workers:
    """The workers for `cfg.runtime` (local or Ray, colocated or disaggregated)."""
    return build_local(cfg) if cfg.runtime.local else build_ray(cfg)


def shutdown_workers(workers: Workers | None) -> None:
    """Closes env workers (simulators hold renderer contexts) and kills actors."""
    if workers is None:
        return
    try:
        workers.get([e.close.remote() for e in workers.envs])
    except Exception:  # shutting down must not mask the error that got us here
        pass
