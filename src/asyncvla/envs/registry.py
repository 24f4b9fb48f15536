"""Backends by name: `metaworld/reach-v3` → the `metaworld` backend, task `reach-v3`."""

from __future__ import annotations

import importlib
import itertools
from dataclasses import dataclass
from typing import Callable, Protocol

from asyncvla import plugins
from asyncvla.config import ConfigError, EnvConfig
from asyncvla.envs.base import Env


class Backend(Protocol):
    """A simulator family. Modules import their simulator lazily so listing never fails."""

    name: str
    description: str
    config: type[EnvConfig]
    """The env config class of this backend's ids (its own fields on top of EnvConfig's)."""

    def available(self) -> tuple[bool, str]:
        """(installed and usable, why not)."""
        ...

    def tasks(self) -> list[str]:
        """Task names accepted after `name/`."""
        ...

    def make(self, task: str, cfg: EnvConfig, index: int) -> Env:
        """Builds env number `index` of a worker."""
        ...

    # Optional: `check(cfg)` raises a one-line ConfigError for settings the backend cannot run
    # (called by validate_env_id, before anything starts).


# name -> module that defines BACKEND; imported on first use.
_MODULES = {
    "metaworld": "asyncvla.envs.metaworld",
    "libero": "asyncvla.envs.libero",
    "maniskill": "asyncvla.envs.maniskill",
    "emulated": "asyncvla.envs.emulated",
}


def _modules() -> dict[str, str]:
    """The built-in backends, then those installed packages declare (`asyncvla.plugins`)."""
    found = plugins.env_modules()
    if clash := sorted(set(found) & set(_MODULES)):
        raise ConfigError(f"env plugin {clash[0]!r} is invalid: the name is a built-in backend's; rename its entry point")
    return {**_MODULES, **found}


def backend_names() -> list[str]:
    return list(_modules())


def get_backend(name: str) -> Backend:
    modules = _modules()
    if name not in modules:
        raise ConfigError(f"env.id backend {name!r} is invalid: allowed: {', '.join(modules)}")
    return importlib.import_module(modules[name]).BACKEND


@dataclass
class BackendInfo:
    backend: str
    available: bool
    reason: str
    tasks: list[str]
    description: str


def describe_backends() -> list[BackendInfo]:
    out = []
    for name in _modules():
        b = get_backend(name)
        ok, why = b.available()
        try:
            tasks = b.tasks()
        except Exception as e:  # a broken install must not break the listing
            tasks, ok, why = [], False, f"{type(e).__name__}: {e}"
        out.append(BackendInfo(name, ok, why, tasks, b.description))
    return out


def validate_env_id(cfg: EnvConfig) -> Backend:
    """Fails with one line when the backend is unknown or unusable or the task does not exist."""
    backend = get_backend(cfg.backend)
    ok, why = backend.available()
    if not ok:
        raise ConfigError(f"env.id={cfg.id!r} is unusable: backend {backend.name} is not available ({why})")
    tasks = backend.tasks()
    if cfg.task not in tasks:
        shown = ", ".join(tasks[:8]) + (f", ... ({len(tasks)} in all; see `asyncvla envs`)" if len(tasks) > 8 else "")
        raise ConfigError(f"env.id={cfg.id!r} is invalid: unknown {backend.name} task; allowed: {shown}")
    check = getattr(backend, "check", None)  # the backend's own limits (e.g. MetaWorld's 500-step episodes)
    if check is not None:
        check(cfg)
    return backend


def make_env(cfg: EnvConfig, index: int = 0, backend: Backend | None = None, incarnation: int = 0) -> Env:
    """One env with the configured wrappers (resize to env.image_size when a backend renders at
    another size, reward, latency, faults) around it.

    `incarnation` counts the rebuilds of env `index`: each gets its own wrapper random streams, so
    a rebuilt env does not replay its predecessor's injected faults step for step.
    """
    from asyncvla.envs.wrappers import wrap

    backend = backend or get_backend(cfg.backend)
    seed = cfg.seed * 1_000_003 + index + 104_729 * incarnation
    return wrap(backend.make(cfg.task, cfg, index), cfg.wrappers, seed=seed, index=index, image_size=cfg.image_size)


def _builder(cfg: EnvConfig, index: int, backend: Backend) -> Callable[[], Env]:
    """Builds env `index`; each call is the next incarnation (VectorEnv calls it again to rebuild)."""
    incarnations = itertools.count()
    return lambda: make_env(cfg, index, backend, next(incarnations))


def env_fns(cfg: EnvConfig, worker_index: int = 0, first_env: int | None = None) -> list[Callable[[], Env]]:
    """Builders of envs `first_env .. first_env + num_envs - 1` (default: worker_index * num_envs)."""
    backend = validate_env_id(cfg)
    base = worker_index * cfg.num_envs if first_env is None else first_env
    return [_builder(cfg, base + i, backend) for i in range(cfg.num_envs)]


def env_seed(cfg: EnvConfig, env_id: int) -> int:
    """Reset-seed stream of global env `env_id`: a function of env.seed and the id only."""
    return (cfg.seed * 1_000_003 + env_id) * 7919 + 17


def make_vector_env(cfg: EnvConfig, worker_index: int = 0):
    """The `VectorEnv` of env worker `worker_index`, seeded from (cfg.seed, worker_index)."""
    from asyncvla.envs.vector import VectorEnv

    return VectorEnv(
        env_fns(cfg, worker_index),
        seed=cfg.seed * 7919 + worker_index,
        max_episode_steps=cfg.max_episode_steps,
        end_on_success=cfg.end_on_success,
        executor=cfg.executor,
        step_timeout_s=cfg.step_timeout_s,
        reset_timeout_s=cfg.reset_timeout_s,
    )
