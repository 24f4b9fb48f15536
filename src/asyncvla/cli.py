"""`asyncvla` — one entry point; each subcommand is a typed dataclass parsed by tyro.

Subcommands stay thin: parse, then call one function that lives with the code it drives.
A `ConfigError` anywhere becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Union

import tyro

from asyncvla.config import ConfigError, EnvConfig
from asyncvla.sim.model import SimConfig

Positional = tyro.conf.Positional


def _print_json(obj) -> None:
    """The last stdout line of a --json command is one JSON object."""
    sys.stdout.flush()
    print(json.dumps(obj), flush=True)


@dataclass
class Envs:
    """List every simulator backend, whether it is installed, and its tasks."""

    json: bool = False
    """Print a JSON list of {backend, available, reason, tasks} instead of a table."""

    def run(self) -> None:
        from asyncvla.envs.registry import describe_backends

        infos = describe_backends()
        if self.json:
            _print_json([{"backend": i.backend, "available": i.available, "reason": i.reason, "tasks": i.tasks} for i in infos])
            return
        from rich.console import Console
        from rich.table import Table

        table = Table("backend", "available", "tasks", "notes")
        for i in infos:
            shown = ", ".join(i.tasks[:6]) + (f" … ({len(i.tasks)})" if len(i.tasks) > 6 else "")
            table.add_row(i.backend, "yes" if i.available else "no", shown, i.reason or i.description)
        Console().print(table)


@dataclass
class EnvBench:
    """Measure env steps/s through the asyncvla protocol and stepping the simulator directly."""

    env_id: Positional[str]
    """Env id, e.g. metaworld/reach-v3."""
    num_envs: int = 4
    steps: int = 400
    """Env steps in all (across the envs) for each measurement."""
    image_size: int = 64
    chunk: int = 1
    """Actions per send (action-chunk execution)."""
    executor: str = "inline"
    fast_render: bool = True
    seed: int = 0
    json: bool = False

    def run(self) -> None:
        from asyncvla.bench.envs import env_bench

        cfg = EnvConfig(id=self.env_id, num_envs=self.num_envs, image_size=self.image_size, executor=self.executor,
                        fast_render=self.fast_render, seed=self.seed)
        result = env_bench(cfg, steps=self.steps, chunk=self.chunk)
        if self.json:
            _print_json(result)
        else:
            for k, v in result.items():
                print(f"{k:>20}: {v}")


@dataclass
class Demos:
    """Record scripted-expert demonstrations as a LeRobot-v3-style dataset."""

    env_id: Positional[str]
    episodes: int = 40
    out: Path = Path("demos")
    image_size: int = 64
    seed: int = 0
    json: bool = False

    def run(self) -> None:
        from asyncvla.data.demos import record_demos

        cfg = EnvConfig(id=self.env_id, num_envs=1, image_size=self.image_size, seed=self.seed)
        summary = record_demos(cfg, episodes=self.episodes, out=self.out, progress=not self.json)
        if self.json:
            _print_json(summary)
        else:
            for k, v in summary.items():
                print(f"{k:>14}: {v}")


@dataclass
class Simulate:
    """Project sync and async throughput to many GPUs with the discrete-event model (simpy)."""

    gpus: tuple[int, ...] = (8, 16, 32, 64)
    """GPU counts to simulate."""
    modes: tuple[str, ...] = ("sync", "async")
    model: SimConfig = field(default_factory=SimConfig)
    """Deployment and stage costs (calibrate from a trace or published figures)."""
    json: bool = False

    def run(self) -> None:
        from asyncvla.sim.model import scaling_sweep

        for m in self.modes:
            if m not in ("sync", "async"):
                raise ConfigError(f"modes={m!r} is invalid: allowed: sync, async")
        rows = [dataclasses.asdict(r) for r in scaling_sweep(self.model, list(self.gpus), list(self.modes))]
        for r in rows:
            print(json.dumps(r)) if self.json else print(f"{r['num_gpus']:>5} GPUs {r['mode']:>5}: {r['env_steps_per_s']:>10.0f} env steps/s, busy {r['busy']}")
        if self.json:
            _print_json({"runs": rows})


Command = Union[
    Annotated[Envs, tyro.conf.subcommand("envs")],
    Annotated[EnvBench, tyro.conf.subcommand("env-bench")],
    Annotated[Demos, tyro.conf.subcommand("demos")],
    Annotated[Simulate, tyro.conf.subcommand("simulate")],
]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        cmd = tyro.cli(Command, args=argv, prog="asyncvla", description=__doc__.splitlines()[0])
        cmd.run()
    except ConfigError as e:
        print(f"asyncvla: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
