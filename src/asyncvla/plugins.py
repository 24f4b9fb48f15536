"""Third-party env backends and policy families, found through Python entry points.

A package adds its own backend or VLA without editing asyncvla by declaring, in its
pyproject.toml:

    [project.entry-points."asyncvla.envs"]
    toy = "toy_asyncvla.env"        # backend `toy`: a module that defines BACKEND

    [project.entry-points."asyncvla.policies"]
    linear = "toy_asyncvla.policy"  # a module whose import registers the policy and its config

After `pip install` of that package, `asyncvla envs` lists `toy`, `--env.id toy/TASK` and
`--policy.type linear` work on the command line, and Ray workers (which run in the same
environment) find them the same way.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata

ENVS = "asyncvla.envs"
POLICIES = "asyncvla.policies"


def _module(ep: importlib.metadata.EntryPoint) -> str:
    return ep.value.partition(":")[0].strip()


@functools.cache
def env_modules() -> dict[str, str]:
    """Backend name -> the module that defines its BACKEND, from every installed package."""
    return {ep.name: _module(ep) for ep in importlib.metadata.entry_points(group=ENVS)}


@functools.cache
def load_policies() -> tuple[str, ...]:
    """Imports every installed policy plugin (each registers itself); returns their modules."""
    mods = tuple(_module(ep) for ep in importlib.metadata.entry_points(group=POLICIES))
    for mod in mods:
        importlib.import_module(mod)
    return mods


def refresh() -> None:
    """Forgets what was found (after installing a plugin into a running interpreter; tests)."""
    env_modules.cache_clear()
    load_policies.cache_clear()
