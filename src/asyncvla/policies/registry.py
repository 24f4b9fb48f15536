"""Policy registry: `policy.type` picks a class, LeRobot style (`--policy.type tiny`).

Policy modules register themselves on import; `make_policy` imports the built-in ones
first so a registered name always resolves, with no `if type == ...` chain.
"""

from __future__ import annotations

import importlib
from typing import Callable, TypeVar

from asyncvla import plugins
from asyncvla.config import ConfigError, PolicyConfig
from asyncvla.policies.base import Policy

P = TypeVar("P", bound=type)

_REGISTRY: dict[str, type] = {}
# Modules whose import registers the built-in policies.
_BUILTIN_MODULES = ("asyncvla.policies.tiny.model", "asyncvla.policies.oft.model", "asyncvla.policies.flow.model")


def register(name: str) -> Callable[[P], P]:
    """Class decorator: `@register("tiny")` makes `policy.type=tiny` build that class.

    The class is built as `cls(cfg, action_dim, proprio_dim)`, where cfg is of the config class
    registered under the same name with `asyncvla.config.register_policy_config`.
    """

    def deco(cls: P) -> P:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"policy type {name!r} is already registered by {_REGISTRY[name].__qualname__}")
        _REGISTRY[name] = cls
        return cls

    return deco


def _load_builtins() -> None:
    """The built-in families, then those installed packages declare (`asyncvla.plugins`)."""
    for mod in _BUILTIN_MODULES:
        importlib.import_module(mod)
    plugins.load_policies()


def policy_types() -> list[str]:
    """Every registered `policy.type`."""
    _load_builtins()
    return sorted(_REGISTRY)


def make_policy(cfg: PolicyConfig, action_dim: int, proprio_dim: int) -> Policy:
    """Builds the policy `cfg.type` for an env with these action and proprio sizes, on cfg.device."""
    types = policy_types()
    if cfg.type not in _REGISTRY:
        raise ConfigError(f"policy.type={cfg.type!r} is invalid: no model registered; allowed: {', '.join(types)}")
    if action_dim < 1 or proprio_dim < 1:
        raise ConfigError(f"policy action_dim={action_dim}, proprio_dim={proprio_dim} are invalid: both must be >= 1")
    return _REGISTRY[cfg.type](cfg, action_dim, proprio_dim).to(cfg.device)


def check_init(cfg: PolicyConfig, saved_type: str, saved_cameras: tuple[str, ...]) -> None:
    """One-line ConfigError when the checkpoint `cfg.init` (of `saved_type`, reading `saved_cameras`) cannot
    start this run: the checkpoint fixes the architecture, so the type and the cameras must match."""
    if saved_type != cfg.type:
        raise ConfigError(f"policy.type={cfg.type!r} is invalid: policy.init {cfg.init} holds a {saved_type!r} policy")
    if tuple(saved_cameras) != cfg.cameras:
        raise ConfigError(f"env.cameras={list(cfg.cameras)} is invalid: policy.init {cfg.init} reads cameras "
                          f"{list(saved_cameras)}; render those")


def build_policy(cfg: PolicyConfig, action_dim: int, proprio_dim: int, seed: int) -> Policy:
    """The RL policy of `cfg`, from `cfg.init` (e.g. an SFT checkpoint) when set, else freshly seeded,
    prepared with the run's RL settings (`Policy.prepare_rl`)."""
    import torch

    torch.manual_seed(seed)
    if cfg.init:
        from asyncvla.policies.checkpoint import load_policy

        policy = load_policy(cfg.init, device=cfg.device)
        check_init(cfg, policy.cfg.type, policy.cfg.cameras)
        # The checkpoint fixes the architecture; the run's sampling temperature still applies.
        policy.temperature = cfg.temperature
    else:
        policy = make_policy(cfg, action_dim, proprio_dim)
    policy.prepare_rl(cfg)
    return policy
