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
from typing import Annotated, Literal, Union

import tyro

from asyncvla.bench.baselines import DEFAULT_TOLERANCE
from asyncvla.config import ConfigError, EnvConfig, PolicyConfig, TrainConfig, env_config, from_dict, load_preset, policy_config
from asyncvla.runtime.signals import EXIT_SIGINT, EXIT_SIGTERM, Terminated, install_sigterm
from asyncvla.sim.model import SimConfig

Positional = tyro.conf.Positional

# Flags that pick a config class (tyro builds the options of the default's class), so they must be
# read before parsing, like `--preset`.
CHOICE_FLAGS = {"--policy.type": ("policy", "type"), "--env.id": ("env", "id")}
_argv_policy_type = PolicyConfig.type


def _argv_policy() -> PolicyConfig:
    """Default of a command's `policy` field: the class `--policy.type` names."""
    return policy_config(_argv_policy_type)


def _print_json(obj) -> None:
    """The last stdout line of a --json command is one JSON object."""
    sys.stdout.flush()
    print(json.dumps(obj), flush=True)


def _report(summary: dict, as_json: bool) -> None:
    """A command's result: one JSON line with --json, else one aligned `key: value` per line."""
    if as_json:
        _print_json(summary)
        return
    width = max(map(len, summary), default=0)
    for k, v in summary.items():
        print(f"{k:>{width}}: {v}")


def _bench_done(result: dict, out: Path, as_json: bool) -> None:
    """A benchmark's end: the whole result as the last JSON line, or its report's table and notes."""
    if as_json:
        _print_json(result)
    else:
        print((Path(out) / "report.md").read_text().rstrip())
        print(f"\n(results.json, report.md and plots in {out})")


@dataclass
class Envs:
    """List every simulator backend, whether it is installed, and its tasks (`asyncvla envs metaworld`: all of one's)."""

    backend: Positional[str | None] = None
    """Only this backend, with every task id in full."""
    json: bool = False
    """Print a JSON list of {backend, available, reason, tasks} instead of a table."""

    def run(self) -> None:
        from asyncvla.envs.registry import describe_backends

        infos = describe_backends()
        if self.backend is not None:
            names = [i.backend for i in infos]
            if self.backend not in names:
                raise ConfigError(f"backend={self.backend!r} is invalid: allowed: {', '.join(names)}")
            infos = [i for i in infos if i.backend == self.backend]
        if self.json:
            _print_json([{"backend": i.backend, "available": i.available, "reason": i.reason, "tasks": i.tasks} for i in infos])
            return
        if self.backend is not None:
            i = infos[0]
            print(f"{i.backend}: {'available' if i.available else 'not available: ' + i.reason}; {len(i.tasks)} tasks")
            print("\n".join(f"{i.backend}/{t}" for t in i.tasks))
            return
        from rich.console import Console
        from rich.table import Table

        table = Table("backend", "available", "notes")
        table.add_column("tasks", overflow="fold", ratio=1)  # fold long task ids, never cut them
        for i in infos:
            shown = ", ".join(i.tasks[:6]) + (f" … ({len(i.tasks)}: asyncvla envs {i.backend})" if len(i.tasks) > 6 else "")
            table.add_row(i.backend, "yes" if i.available else "no", i.reason or i.description, shown)
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
    fast_render: bool | None = None
    """Rendering backends only (env.fast_render); null: the backend's default."""
    seed: int = 0
    json: bool = False

    def run(self) -> None:
        from asyncvla.bench.envs import env_bench

        render = {} if self.fast_render is None else {"fast_render": self.fast_render}
        cfg = env_config(id=self.env_id, num_envs=self.num_envs, image_size=self.image_size, executor=self.executor,
                         seed=self.seed, **render)
        result = env_bench(cfg, steps=self.steps, chunk=self.chunk)
        _report(result, self.json)


@dataclass
class Demos:
    """Record scripted-expert demonstrations as a LeRobot-v3-style dataset."""

    env_id: Positional[str]
    episodes: int = 40
    out: Path = Path("demos")
    image_size: int = 64
    cameras: tuple[str, ...] = ("main",)
    """Cameras to record (env.cameras), e.g. `--cameras main wrist`."""
    seed: int = 0
    action_noise: float = 0.3
    """Std of Gaussian noise added to the actions the env executes (the dataset keeps the
    expert's clean actions): DART, demos of recovering from the drift of a cloned policy; 0: clean demos."""
    video: bool = False
    """Store the cameras as mp4 video features (AV1, as LeRobot does; lossy; 2 reach-v3 episodes with 2 cameras: 296 KB instead of 1.4 MB) instead of inline PNG."""
    json: bool = False

    def run(self) -> None:
        from asyncvla.data.demos import record_demos

        cfg = env_config(id=self.env_id, num_envs=1, image_size=self.image_size, cameras=self.cameras, seed=self.seed)
        summary = record_demos(cfg, episodes=self.episodes, out=self.out, progress=not self.json, action_noise=self.action_noise,
                               video=self.video)
        _report(summary, self.json)


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
            busy = ", ".join(f"{k} {v:.0%}" for k, v in r["busy"].items())
            print(json.dumps(r) if self.json else f"{r['num_gpus']:>5} GPUs {r['mode']:>5}: {r['env_steps_per_s']:>10.0f} env steps/s  busy: {busy}")
        if self.json:
            _print_json({"runs": rows})


@dataclass
class Sft:
    """Behaviour-clone a policy on recorded demos (SFT warm start); writes a checkpoint."""

    env: str
    """Env id the demos come from (recorded in the checkpoint; `eval` defaults to it)."""
    demos: Path
    """Demo dataset directory (from `asyncvla demos`)."""
    out: Path
    """Checkpoint directory to write (model.safetensors, config.yaml, metrics.jsonl)."""
    steps: int = 1500
    """Optimizer steps."""
    batch_size: int = 64
    lr: float = 1e-3
    """Peak learning rate (linear warm-up, cosine decay)."""
    image_dropout: float = 0.0
    """Probability that a training sample's image is blacked out (modality dropout), so the
    policy also learns to act from language + proprio alone. Off by default: no gain measured
    on MetaWorld reach (SFT seed 2, clean demos: 0.63 success at 0.3 vs 0.67 at 0)."""
    proprio_noise: float = 0.0
    """Std of Gaussian noise added to training proprio, in units of each dim's demo std
    (targets stay the expert's clean actions). Off by default: no gain measured on MetaWorld
    reach (0.60 at 0.1 vs 0.67); DART demos (`asyncvla demos --action-noise`) fixed it instead."""
    seed: int = 0
    image_key: tuple[str, ...] = ()
    """Camera to image feature, CAMERA=FEATURE each, for a dataset recorded elsewhere (LeRobot's LIBERO:
    `main=observation.images.image wrist=observation.images.wrist_image`); default: main is
    observation.image and observation.images.NAME is camera NAME."""
    policy: PolicyConfig = field(default_factory=_argv_policy)
    """The policy to train (`--type tiny-gaussian`, `--chunk 8`, ...)."""
    json: bool = False

    def image_keys(self) -> dict[str, str] | None:
        if not self.image_key:
            return None
        bad = [k for k in self.image_key if k.count("=") != 1 or not all(k.split("="))]
        if bad:
            raise ConfigError(f"sft.image_key={bad[0]!r} is invalid: must be CAMERA=FEATURE, e.g. main=observation.images.image")
        return dict(k.split("=") for k in self.image_key)

    def run(self) -> None:
        from asyncvla.algos.sft import train_sft

        summary = train_sft(self.env, self.demos, self.out, steps=self.steps, batch_size=self.batch_size, lr=self.lr,
                            policy_cfg=self.policy, seed=self.seed, progress=not self.json,
                            image_dropout=self.image_dropout, proprio_noise=self.proprio_noise,
                            image_keys=self.image_keys())
        _report(summary, self.json)


@dataclass
class Eval:
    """Evaluate a checkpoint on held-out initial states (env split `eval`).

    A training checkpoint (or a run directory: its best checkpoint, else its last) records how
    its run evaluated (env, episode length, reward, seeds, episodes, sampled or not); with no
    other flag the evaluation repeats exactly that."""

    ckpt: Positional[Path]
    """Checkpoint directory (from `asyncvla sft` or training) or a training run's directory."""
    episodes: int | None = None
    """Episodes; default: as the run evaluated, else 30."""
    env: str | None = None
    """Env id; default: the one recorded in the checkpoint (with the run's whole env config)."""
    num_envs: int | None = None
    """Envs stepped side by side; default: as the run evaluated, else 4."""
    image_size: int | None = None
    """Camera size; default: the one recorded in the checkpoint, else the policy's image_size."""
    sample: bool | None = None
    """Sample actions instead of taking the most likely ones; default: as the run evaluated, else false."""
    video: Path | None = None
    """Write an mp4 of the first env (one frame per action chunk)."""
    seed: int | None = None
    """Env seed; default: as the run evaluated, else 0."""
    json: bool = False

    def checkpoint_dir(self) -> Path:
        for tag in ("best", "last"):
            if (self.ckpt / "checkpoints" / tag).is_dir():
                return self.ckpt / "checkpoints" / tag
        return self.ckpt

    def run(self) -> None:
        from asyncvla.evaluation import evaluate_policy
        from asyncvla.policies.checkpoint import load_policy, read_checkpoint_config

        ckpt = self.checkpoint_dir()
        meta = read_checkpoint_config(ckpt)
        policy = load_policy(ckpt)
        run_eval = meta.get("eval") if self.env is None else None
        if run_eval is not None:  # repeat the run's own evaluation; flags given still apply
            cfg = from_dict(EnvConfig, run_eval["env"], where=f"checkpoint {ckpt} eval.env")
            episodes, sample = run_eval["episodes"], not run_eval["deterministic"]
        else:
            env_id = self.env or meta.get("env_id")
            if env_id is None:
                raise ConfigError(f"env=None is invalid: checkpoint {ckpt} records no env id; pass --env ENV_ID")
            size = meta.get("env_image_size") or policy.cfg.image_size
            cfg = env_config(id=env_id, num_envs=4, image_size=size, cameras=policy.cfg.cameras, seed=0, split="eval")
            episodes, sample = 30, False
        given = {k: v for k, v in (("num_envs", self.num_envs), ("image_size", self.image_size), ("seed", self.seed)) if v is not None}
        cfg = dataclasses.replace(cfg, **given)
        episodes = self.episodes or episodes
        sample = sample if self.sample is None else self.sample
        result = evaluate_policy(policy, cfg, episodes, deterministic=not sample, video=self.video)
        _report({"checkpoint": str(ckpt), **result}, self.json)


@dataclass
class BenchPolicy:
    """Training and inference samples/s of a policy for batch sizes 1..256 on this machine."""

    out: Path | None = None
    """Directory for results.json."""
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
    budget_s: float = 1.0
    """Seconds per measurement (at least 3 calls each)."""
    policy: PolicyConfig = field(default_factory=_argv_policy)
    types: tuple[str, ...] = ()
    """Bench each of these policy types at its default sizes instead of --policy (e.g. `--types tiny oft flow`);
    results.json then holds the rows of all of them."""
    json: bool = False
    """Print one JSON line per batch size (the table goes to stderr)."""

    def run(self) -> None:
        from rich.console import Console

        from asyncvla.bench.policy import bench_policy, results_table

        configs = [policy_config(t, device=self.policy.device) for t in self.types] or [self.policy]
        rows = []
        for cfg in configs:
            mine = bench_policy(cfg, self.batch_sizes, budget_s=self.budget_s, on_result=_print_json if self.json else None)
            Console(stderr=self.json).print(results_table(mine))
            rows += mine
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "results.json").write_text(json.dumps(rows, indent=2))


@dataclass
class BenchThroughput:
    """Env steps/s of sync and async (and the ladder between them) on one workload, beside the async bound."""

    workload: str = "emulated-balanced"
    """emulated-{balanced,env-bound,infer-bound,train-bound,long-tail} or real-{metaworld,libero,maniskill}."""
    modes: tuple[str, ...] = ("sync", "async")
    """Any of sync, async_env, streaming_rollout, async (the ladder of asynchrony levels)."""
    seconds: float = 60.0
    """Wall seconds per mode (the throughput window excludes start-up and the first update)."""
    json: bool = False
    """Last stdout line: {workload, runs: [{mode, env_steps_per_s, trained_samples_per_s, bound_env_steps_per_s, utilization}]}."""
    out: Path = Path("bench-results/throughput")
    """Writes results.json, report.md and the throughput/utilization PNGs here."""
    torch_threads: int = 1
    """torch intra-op threads (all roles share this process's cores)."""
    check: bool = False
    """Compare async/sync and async's fraction of the bound with the workload's stored ratios
    (bench/baselines.json, or --baseline-file); exit 1 when one fell more than --tolerance below."""
    write_baseline: bool = False
    """Store this run's ratios as the workload's baseline (in --baseline-file, default the packaged one)."""
    baseline_file: Path | None = None
    """Baseline file of --check / --write-baseline (default: asyncvla/bench/baselines.json)."""
    tolerance: float = DEFAULT_TOLERANCE
    """--check: relative drop allowed below a stored ratio."""

    def run(self) -> None:
        from asyncvla.bench import baselines
        from asyncvla.bench.suite import set_torch_threads, throughput_cmd

        if not 0 <= self.tolerance < 1:
            raise ConfigError(f"tolerance={self.tolerance!r} is invalid: must be in [0, 1)")
        path = self.baseline_file or baselines.BASELINES_FILE
        set_torch_threads(self.torch_threads)
        modes = [m for item in self.modes for m in item.split(",") if m]  # accepts sync,async too
        result = throughput_cmd(self.workload, modes, self.seconds, self.out, echo=self.json)  # one line per run, then the whole result
        if self.write_baseline:
            baselines.write(result, path)
        verdict = baselines.check(result, path, self.tolerance) if self.check else None
        if verdict is not None:
            result["baseline_check"] = verdict
            (self.out / "baseline-check.json").write_text(json.dumps(verdict, indent=2) + "\n")
        if self.json:
            _print_json(result)
        else:
            for r in result["runs"]:
                print(f"{r['mode']:>18}: {r['env_steps_per_s']:>8.1f} env steps/s (bound {r['bound_env_steps_per_s']:.1f})  "
                      f"util {r['utilization']}")
        if verdict is not None:
            print("\n".join(baselines.summary_lines(verdict)), file=sys.stderr)
            if not verdict["ok"]:
                raise SystemExit(1)


@dataclass
class BenchAblation:
    """The ladder sync (1, 2, 4 stages) → +async_env → +streaming_rollout → +decoupled_actor; report, plots, timeline."""

    workload: str = "emulated-balanced"
    """emulated-{balanced,env-bound,infer-bound,train-bound,long-tail} or real-{metaworld,libero,maniskill}."""
    seconds: float = 30.0
    """Wall seconds per rung (the window excludes start-up and the first update)."""
    rungs: tuple[str, ...] = ()
    """Subset of rungs (default all): sync, sync-2stage, sync-4stage, +async_env, +streaming_rollout, +decoupled_actor."""
    out: Path = Path("bench-results/ablation")
    """Writes results.json, report.md, throughput/utilization/timeline PNGs and the sync/async traces here."""
    timeline: bool = True
    """Trace the sync and full-async rungs and draw them side by side (timeline.png)."""
    torch_threads: int = 1
    """torch intra-op threads (all roles share this process's cores)."""
    json: bool = False
    """One JSON line per run, then the whole result (results.json's content) as the last line."""

    def run(self) -> None:
        from asyncvla.bench.suite import ablation_cmd, set_torch_threads

        set_torch_threads(self.torch_threads)
        rungs = [r for item in self.rungs for r in item.split(",") if r]
        _bench_done(ablation_cmd(self.workload, self.seconds, self.out, rungs or None, self.timeline, echo=self.json),
                    self.out, self.json)


@dataclass
class BenchPlacement:
    """Colocated vs disaggregated vs hybrid on emulated devices, sync and full async."""

    workload: str = "emulated-balanced"
    seconds: float = 20.0
    """Wall seconds per (placement, mode)."""
    num_devices: int = 2
    """Emulated accelerators shared out by the placement."""
    out: Path = Path("bench-results/placement")
    torch_threads: int = 1
    json: bool = False
    """One JSON line per run, then the whole result (results.json's content) as the last line."""

    def run(self) -> None:
        from asyncvla.bench.suite import placement_cmd, set_torch_threads

        set_torch_threads(self.torch_threads)
        _bench_done(placement_cmd(self.workload, self.seconds, self.out, self.num_devices, echo=self.json), self.out, self.json)


@dataclass
class BenchBatching:
    """Dynamic batching under load: max_batch x max_wait_ms; samples/s, batch size, latency p50/p99 vs offline."""

    max_batches: tuple[int, ...] = (1, 4, 8, 16)
    max_waits_ms: tuple[float, ...] = (0.0, 2.0, 5.0)
    clients: int | None = None
    """Closed-loop clients (default 2 x the largest max_batch: full load)."""
    think_ms: float = 0.0
    """Client think time between requests (0 = full load)."""
    seconds: float = 2.0
    """Measured seconds per point."""
    accelerator: str = "emulated"
    """emulated: inference held to infer_fixed_ms + infer_per_sample_ms * B; real: the tiny VLA on this CPU."""
    infer_fixed_ms: float = 8.0
    infer_per_sample_ms: float = 0.5
    workload: str = "emulated-balanced"
    """Whose tiny VLA shape to serve."""
    out: Path = Path("bench-results/batching")
    torch_threads: int = 1
    json: bool = False
    """One JSON line per point, then the whole result (results.json's content) as the last line."""

    def run(self) -> None:
        from asyncvla.bench.suite import batching_cmd, set_torch_threads

        set_torch_threads(self.torch_threads)
        res = batching_cmd(self.out, echo=self.json, workload=self.workload, max_batches=self.max_batches, max_waits_ms=self.max_waits_ms,
                     clients=self.clients, seconds=self.seconds, think_ms=self.think_ms, accelerator=self.accelerator,
                     infer_fixed_ms=self.infer_fixed_ms, infer_per_sample_ms=self.infer_per_sample_ms)
        _bench_done(res, self.out, self.json)


@dataclass
class BenchEnvs:
    """Env steps/s of every backend (its representative task) through the protocol and raw."""

    backends: tuple[str, ...] = ()
    """Default all: emulated, metaworld, libero, maniskill (unavailable ones are reported as skipped)."""
    num_envs: int = 2
    steps: int = 120
    chunk: int = 4
    image_size: int = 64
    out: Path = Path("bench-results/envs")
    json: bool = False
    """One JSON line per backend, then the whole result (results.json's content) as the last line."""

    def run(self) -> None:
        from asyncvla.bench.suite import envs_cmd

        res = envs_cmd(self.out, echo=self.json, backends=list(self.backends) or None, num_envs=self.num_envs,
                       steps=self.steps, chunk=self.chunk, image_size=self.image_size)
        _bench_done(res, self.out, self.json)


@dataclass
class BenchFaults:
    """Full async with env crashes, unending hangs and a killed rollout server, beside the fault-free run."""

    workload: str = "emulated-balanced"
    """An emulated workload (emulated-{balanced,env-bound,infer-bound,train-bound,long-tail})."""
    seconds: float = 60.0
    """Wall seconds per row."""
    crash_prob: float = 0.01
    """Env crash probability per step (every ~100 steps)."""
    hang_prob: float = 0.0025
    """Probability per step of a hang that never ends (about 1% of 4-step decisions)."""
    step_timeout_s: float | Literal["auto"] = 0.5
    """The watchdog's deadline per decision (env.step_timeout_s; auto: from the measured chunk times)."""
    kill_after_s: float | None = None
    """SIGKILL the rollout server's process this long into the faulty row (default: a third of it)."""
    fault_free: bool = True
    """Also run the fault-free row (the throughput check); --no-fault-free with --seconds 1800 is a 30-minute soak."""
    decompose: bool = False
    """Also one row per fault kind (server kill, crashes, hangs alone): what each costs."""
    max_staleness: int | None = None
    """runtime.max_staleness of every row (default: the workload's, 1)."""
    out: Path = Path("bench-results/faults")
    torch_threads: int = 1
    json: bool = False
    """One JSON line per row, then the whole result (results.json's content) as the last line."""

    def run(self) -> None:
        from asyncvla.bench.suite import faults_cmd, set_torch_threads

        set_torch_threads(self.torch_threads)
        res = faults_cmd(self.workload, self.seconds, self.out, echo=self.json, crash_prob=self.crash_prob,
                         hang_prob=self.hang_prob, step_timeout_s=self.step_timeout_s, kill_after_s=self.kill_after_s,
                         fault_free=self.fault_free, decompose=self.decompose, max_staleness=self.max_staleness)
        _bench_done(res, self.out, self.json)


@dataclass
class BenchTimeline:
    """Sync and async Gantt charts side by side from two Chrome traces (e.g. from `bench ablation`)."""

    sync_trace: Path
    async_trace: Path
    out: Path = Path("timeline.png")
    window_s: float = 6.0
    """Seconds shown, from the middle of each run."""
    json: bool = False
    """Print {"png": path} instead of the path."""

    def run(self) -> None:
        from asyncvla.bench.timeline import side_by_side_gantt

        png = side_by_side_gantt([("sync", self.sync_trace), ("async", self.async_trace)], self.out, self.window_s)
        _print_json({"png": str(png)}) if self.json else print(png)


@dataclass
class BenchSuite:
    """The default benchmark suite (ablations, placement, batching, envs, faults; about 17 minutes here)."""

    out: Path = Path("bench-results")
    only: tuple[str, ...] = ()
    """Run only these items (names as in bench/suite.py DEFAULT_SUITE)."""
    doc: Path | None = None
    """Also write the summary table into this markdown file between its suite-table markers
    (docs/benchmarks.md), and copy the plots it shows next to it."""
    torch_threads: int = 1
    json: bool = False
    """One JSON line per run, then {"suite_wall_s": {item: seconds}} as the last line."""

    def run(self) -> None:
        from asyncvla.bench.suite import set_torch_threads, suite_cmd

        set_torch_threads(self.torch_threads)
        walls = suite_cmd(self.out, list(self.only) or None, echo=self.json, doc=self.doc)
        if self.json:
            _print_json({"suite_wall_s": walls})
        else:
            print("\n".join(f"{name}: {s:.0f} s, report in {self.out / name}/report.md" for name, s in walls.items()))


@dataclass
class Bench:
    """Benchmarks (one JSON object per run with --json)."""

    cmd: tyro.conf.OmitSubcommandPrefixes[Union[
        Annotated[BenchPolicy, tyro.conf.subcommand("policy")],
        Annotated[BenchEnvs, tyro.conf.subcommand("envs")],
        Annotated[BenchThroughput, tyro.conf.subcommand("throughput")],
        Annotated[BenchAblation, tyro.conf.subcommand("ablation")],
        Annotated[BenchPlacement, tyro.conf.subcommand("placement")],
        Annotated[BenchBatching, tyro.conf.subcommand("batching")],
        Annotated[BenchFaults, tyro.conf.subcommand("faults")],
        Annotated[BenchTimeline, tyro.conf.subcommand("timeline")],
        Annotated[BenchSuite, tyro.conf.subcommand("suite")],
    ]]

    def run(self) -> None:
        self.cmd.run()


@dataclass
class Train:
    """Train a policy with RL: `--mode sync` (the RLinf baseline) or `--mode async` (RL-VLA³).

    Config comes from `--preset` (a file in configs/), then the options below override it.
    """

    cfg: Annotated[TrainConfig, tyro.conf.arg(name="")]
    preset: str = "default"
    """Preset in configs/ (or a path to a YAML file); read before the other options apply."""
    # A plain str checked here: tyro would list None among the choices and box a bad one in 5 lines.
    mode: Annotated[str | None, tyro.conf.arg(metavar="{sync,async}")] = None
    """Shorthand for --runtime.mode (default: the preset's); `async` also turns on all three levels of asynchrony unless one was set
    (and makes the pipeline stages env managers of the same sizes)."""
    ray_address: str | None = None
    """Shorthand for --runtime.ray-address: join this Ray cluster (HEAD_IP:6379, or auto for the
    one `ray start` made on this node) instead of starting a local Ray; also applies on --resume."""
    resume: str | None = None
    """Continue the run in this directory from its last checkpoint, with its saved config."""
    json: bool = False
    """Print a JSON summary (success_before, success_after, env_steps, wall_s, env_steps_per_s) as the last line."""

    def resolved_config(self) -> TrainConfig:
        """The config the run uses: preset + overrides (or the saved one on --resume), then the shorthands."""
        cfg = self.cfg
        if self.mode not in (None, "sync", "async"):
            raise ConfigError(f"mode={self.mode!r} is invalid: allowed: sync, async")
        if self.resume:
            from asyncvla.runtime.checkpoints import load_run_config

            cfg = _with_resume_overrides(load_run_config(self.resume), self.cfg, load_preset(TrainConfig, self.preset))
            if self.mode is not None and self.mode != cfg.runtime.mode:
                raise ConfigError(f"mode={self.mode!r} is invalid with --resume: the run in {self.resume} is "
                                  f"{cfg.runtime.mode} (a resumed run keeps its mode); drop --mode")
        elif self.mode is not None:
            rt = cfg.runtime
            levels = {}
            if self.mode == "async" and not (rt.async_env or rt.streaming_rollout or rt.decoupled_actor):
                # The full RL-VLA³ pipeline. Every env steps on its own, so RLinf's stages become env
                # managers of the same sizes: each its own loop (and, on Ray, its own process).
                stages = rt.pipeline_stages
                managers = rt.env_managers or ((cfg.env.num_envs // stages,) * stages if stages > 1 else ())
                levels = dict(async_env=True, streaming_rollout=True, decoupled_actor=True, pipeline_stages=1,
                              env_managers=managers)
            cfg = dataclasses.replace(cfg, runtime=dataclasses.replace(rt, mode=self.mode, **levels))
        if self.ray_address is not None:
            # A resumed run may continue on another cluster than the one that saved it.
            cfg = dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime, ray_address=self.ray_address))
        return cfg

    def run(self) -> None:
        from asyncvla.metrics.progress import TrainProgress

        from asyncvla.runtime.driver import train

        cfg = self.resolved_config()
        try:
            with TrainProgress(cfg.run.total_env_steps, cfg.run.total_updates) as progress:
                summary = train(cfg, progress=progress)
        except (Terminated, KeyboardInterrupt) as e:
            what = "SIGTERM" if isinstance(e, Terminated) else "Ctrl-C"
            if cfg.run.out_dir and (Path(cfg.run.out_dir) / "checkpoints" / "last").is_dir():
                print(f"asyncvla: stopped by {what}; resume with: asyncvla train --resume {cfg.run.out_dir}", file=sys.stderr)
            else:
                print(f"asyncvla: stopped by {what} before the first checkpoint", file=sys.stderr)
            raise
        except ConfigError:
            raise
        except Exception as e:  # a role failed: one line with the cause, where the traceback is, how to go on
            print(failure_line(e), file=sys.stderr)
            raise SystemExit(1) from None
        _report(summary, self.json)
        if not self.json:
            print(train_epilogue(summary, cfg))


def failure_line(e: Exception) -> str:
    """`asyncvla: the run failed: <cause> (traceback in …; resume with: …)` on one line."""
    notes = getattr(e, "__notes__", [])
    where = next((n.removeprefix("traceback: ") for n in notes if n.startswith("traceback: ")), None)
    cause = " ".join(str(e).split())[:400] or type(e).__name__
    tail = []
    if where is not None:
        run_dir = Path(where).parent.parent
        tail.append(f"traceback in {where}")
        if (run_dir / "checkpoints" / "last").is_dir():
            tail.append(f"resume with: asyncvla train --resume {run_dir}")
    return f"asyncvla: the run failed: {type(e).__name__}: {cause}" + (f" ({'; '.join(tail)})" if tail else "")


RESUME_OVERRIDES = ("run.total_env_steps", "run.total_updates", "run.eval_every", "run.checkpoint_every")
"""What a resumed run may change on the command line: its budget and how often it evaluates and
saves. Anything else would make the resumed run another run than the one its logs describe."""


def _flat(d: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _with_resume_overrides(saved: TrainConfig, given: TrainConfig, base: TrainConfig) -> TrainConfig:
    """The saved config of a resumed run with the budget options given on the command line (the
    fields where `given` differs from the preset it was parsed onto); other options are refused."""
    from asyncvla.config import to_dict

    preset = _flat(to_dict(base))
    changed = {k: v for k, v in _flat(to_dict(given)).items() if preset.get(k, object()) != v}
    refused = sorted(k for k in changed if k not in RESUME_OVERRIDES)
    if refused:
        raise ConfigError(f"--resume keeps the run's saved config: --{refused[0].replace('_', '-')} cannot change on resume "
                          f"({len(refused)} such option(s)); allowed with --resume: "
                          f"{', '.join('--' + k.replace('_', '-') for k in RESUME_OVERRIDES)}")
    run = dataclasses.replace(saved.run, **{k.split(".", 1)[1]: v for k, v in changed.items()})
    return dataclasses.replace(saved, run=run)


def train_epilogue(summary: dict, cfg: TrainConfig) -> str:
    """What the run changed and where to look, for a person (the summary above is for scripts)."""
    before, after, d = summary.get("success_before"), summary.get("success_after"), summary["run_dir"]
    how = "the most likely actions" if cfg.run.eval_deterministic else "sampled actions"
    lines = []
    if before is not None and after is not None:
        lines.append(f"\nRL changed eval success {before:.2f} -> {after:.2f} ({after - before:+.2f}) on "
                     f"{cfg.run.eval_episodes} held-out episodes ({how}).")
    lines += [f"run directory: {d}",
              f"  curves:     tensorboard --logdir {d}/tb   (or {d}/metrics.jsonl)",
              f"  videos:     {d}/videos (one evaluation episode each)",
              f"  trace:      {d}/trace.json (open in https://ui.perfetto.dev)",
              f"  checkpoint: {d}/checkpoints/best (asyncvla eval it)"]
    return "\n".join(lines)


def _flag(argv: list[str], name: str) -> str | None:
    """The value of `--name V` or `--name=V` in argv (the last one wins, as in tyro)."""
    value = None
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            value = argv[i + 1]
        elif a.startswith(name + "="):
            value = a.split("=", 1)[1]
    return value


def _command(argv: list[str]):
    """The subcommand union; `train` gets its preset, with the class-picking flags applied, as its default."""
    global _argv_policy_type
    choices: dict[str, dict[str, str]] = {}
    for flag, (section, key) in CHOICE_FLAGS.items():
        if (value := _flag(argv, flag)) is not None:
            choices.setdefault(section, {})[key] = value
    _argv_policy_type = choices.get("policy", {}).get("type", PolicyConfig.type)
    train_default = None
    if argv[:1] == ["train"]:
        train_default = Train(cfg=load_preset(TrainConfig, _flag(argv, "--preset") or "default", choices))
    return Union[
        Annotated[Train, tyro.conf.subcommand("train", default=train_default)],
        Command,
    ]


Command = Union[
    Annotated[Envs, tyro.conf.subcommand("envs")],
    Annotated[EnvBench, tyro.conf.subcommand("env-bench")],
    Annotated[Demos, tyro.conf.subcommand("demos")],
    Annotated[Sft, tyro.conf.subcommand("sft")],
    Annotated[Eval, tyro.conf.subcommand("eval")],
    Annotated[Bench, tyro.conf.subcommand("bench")],
    Annotated[Simulate, tyro.conf.subcommand("simulate")],
]


def parse(argv: list[str]):
    """The command `asyncvla ARGV` names, parsed, not yet run."""
    return tyro.cli(_command(argv), args=argv, prog="asyncvla", description=__doc__.splitlines()[0])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # Before torch loads OpenMP: spinning worker threads collapse throughput (measured ~8x)
    # when other processes share the cores (env workers, Ray actors, other users).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    install_sigterm()
    from asyncvla.cli_help import render

    argv_all = ["--help" if a == "--help-all" else a for a in argv]
    try:
        short = render(parse, argv)  # reads the preset: a bad one is the same one line as when running
        if short is not None:
            print(short)
            return 0
        parse(argv_all).run()
    except ConfigError as e:
        print(f"asyncvla: error: {e}", file=sys.stderr)
        return 2
    except SystemExit as e:  # tyro's --help-all and its parse errors; in-process callers get the code
        return e.code if isinstance(e.code, int) else 0 if e.code is None else 2
    except Terminated:
        return EXIT_SIGTERM
    except KeyboardInterrupt:
        return EXIT_SIGINT
    return 0


if __name__ == "__main__":
    sys.exit(main())
