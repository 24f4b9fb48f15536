"""The one driver: `train(cfg)` runs (or resumes) a run in either mode, on either backend.

1. warm start (SFT made and cached by the run) and the run directory with its config;
2. the runtime from the plan (runtime/plan.py, runtime/loop.py) and, on resume, the trainer,
   staleness and ledger state of checkpoints/last;
3. evaluation before training, every `run.eval_every` updates and at the end; checkpoints
   every `run.checkpoint_every` updates, `last` and `best`;
4. one metrics record per update with the same keys in both modes (docs/metrics.md), the
   Chrome trace, the summary that `--json` prints.
A crash leaves intact logs and checkpoints/last; `run.resume=RUN_DIR` continues from it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from asyncvla.config import ConfigError, PolicyConfig, TrainConfig, to_dict
from asyncvla.metrics.spans import Span, load_chrome_trace, write_chrome_trace
from asyncvla.metrics.writer import MetricsWriter, truncate_jsonl
from asyncvla.policies.base import Policy
from asyncvla.policies.registry import build_policy
from asyncvla.runtime import loop
from asyncvla.runtime.checkpoints import (RunState, count_lost, load_checkpoint, prepare_run_dir, resumable, save_checkpoint,
                                          record_failure, save_on_crash, summarize)
from asyncvla.runtime.loop import Runtime
from asyncvla.runtime.plan import make_plan
from asyncvla.runtime.signals import install_sigterm

RUNTIME_STATE = "async_state.json"
MAX_TRACE_SPANS = 500_000


def runtime_state(run: Runtime) -> dict:
    """What a checkpoint adds to the trainer's: staleness admission and the ledger."""
    return {"staleness": run.controller.state_dict(), "ledger": run.ledger.state_dict()}


def restore_runtime_state(run: Runtime, ckpt: Path) -> None:
    """Restores staleness, ledger and the trainer's consumed count; inference restarts from the trainer's weights.

    The staleness cap is consumed + (max_staleness + 1) * samples_per_version: the learner's
    consumed count must come back with the controller's, or the cap would shrink below what
    is admitted and admission would never reopen.
    """
    path = Path(ckpt) / RUNTIME_STATE
    if path.exists():
        state = json.loads(path.read_text())
        run.controller.load_state_dict(state["staleness"])
        run.ledger.load_state_dict(state["ledger"])
        run.learner.consumed = run.controller.consumed
    run.store.publish(run.trainer.policy.published_state(), run.trainer.version)


def evaluate(cfg: TrainConfig, run_dir: Path, update: int, trainer, eval_policy: Policy) -> dict:
    """Episodes on the eval split with the trainer's current weights (in the driver)."""
    from asyncvla.evaluation import evaluate_policy

    if cfg.run.eval_episodes == 0:
        return {}
    eval_policy.load_state_dict(trainer.policy.state_dict())
    video = run_dir / "videos" / f"update_{update:06d}.mp4" if cfg.run.eval_video else None
    res = evaluate_policy(eval_policy, eval_env_config(cfg), cfg.run.eval_episodes, deterministic=cfg.run.eval_deterministic,
                          video=video)
    return {"eval/success": res["success_rate"], "eval/success_at_end": res["success_at_end"], "eval/return": res["mean_return"],
            "eval/episode_len": res["mean_episode_len"]}


def eval_env_config(cfg: TrainConfig):
    """The envs a run evaluates on: the eval split, seeded apart from training's, without injected
    faults (an evaluation measures the policy; rerunning cut episodes would favour short ones)."""
    return dataclasses.replace(cfg.env, split="eval", seed=cfg.env.seed + 10_007,
                               wrappers=dataclasses.replace(cfg.env.wrappers, fault_prob=0.0, hang_prob=0.0))


def eval_record(cfg: TrainConfig) -> dict:
    """How the run evaluates, stored in every checkpoint so `asyncvla eval` repeats it exactly."""
    return {"env": to_dict(eval_env_config(cfg)), "episodes": cfg.run.eval_episodes, "deterministic": cfg.run.eval_deterministic}


@dataclass
class Driver:
    """Per-update book-keeping, run on the driver thread between two updates."""

    run: Runtime
    cfg: TrainConfig
    run_dir: Path
    state: RunState
    writer: MetricsWriter
    progress: Callable | None
    eval_policy: Policy
    trace: list[Span]
    local_updates: int = 0
    mark: tuple[float, int] | None = None
    """(time, trained env steps) when the previous update's book-keeping ended."""

    def evaluate(self) -> dict:
        with self.run.trainer.rec.span("eval"):  # every evaluation, the one before training too, is in the trace
            return evaluate(self.cfg, self.run_dir, self.state.update, self.run.trainer, self.eval_policy)

    def evaluate_and_keep_best(self) -> dict:
        m = self.evaluate()
        if m.get("eval/success", -1) > self.state.best_success:
            self.state.best_success = m["eval/success"]
            self.checkpoint("best")
        return m

    def checkpoint(self, tag: str) -> None:
        save_checkpoint(self.run.trainer, self.run_dir, self.state, tag, {RUNTIME_STATE: runtime_state(self.run)},
                        meta={"eval": eval_record(self.cfg)})

    def done(self) -> bool:
        r, st = self.cfg.run, self.state
        return loop.budget_reached(r.total_env_steps, r.total_updates, st.env_steps, st.update)

    def collect_spans(self) -> None:
        if self.cfg.runtime.trace:
            spans = self.run.trainer.drain_spans() + self.run.backend.spans()
            self.trace.extend(spans[: max(0, MAX_TRACE_SPANS - len(self.trace))])

    def __call__(self, _: int, m: dict) -> None:
        st, led, now = self.state, self.run.ledger, time.time()
        self.local_updates += 1
        st.update += 1
        st.version, st.env_steps, st.samples = self.run.trainer.version, led.produced_env_steps, led.trained_samples
        # The first update of a (re)start carries start-up; it counts only when it is the last.
        if self.mark is not None and (self.local_updates > 1 or self.done()):
            st.window_s += now - self.mark[0]
            # Trained, not produced: rollouts may run during the book-keeping that the window leaves out.
            st.window_env_steps += led.trained_env_steps - self.mark[1]
        m["perf/env_steps"] = st.env_steps
        if self.local_updates == 1:  # its rate includes start-up, which the run's throughput window leaves out
            m["perf/env_steps_per_s"] = None
        # The summary's throughput so far (null until its window has a second update).
        m["perf/run_env_steps_per_s"] = st.window_env_steps / st.window_s if st.window_s > 0 else None
        self.collect_spans()
        r = self.cfg.run
        if r.eval_every and st.update % r.eval_every == 0 and not self.done():
            m.update(self.evaluate_and_keep_best())
        st.wall_s = self.writer.wall_s
        self.writer.write(st.update, m)
        self.write_minibatches()
        if r.checkpoint_every and st.update % r.checkpoint_every == 0:
            self.checkpoint(f"update_{st.update:06d}")
            self.checkpoint("last")
            write_chrome_trace(self.run_dir / "trace.json", self.trace)
        if self.progress is not None:
            self.progress(st.update, m)
        self.mark = (time.time(), led.trained_env_steps)  # evaluation and checkpoints stay out of the window

    def write_minibatches(self) -> None:
        """Per-optimizer-step ratio / KL / clip stats of the updates so far, one JSON line each."""
        rows = self.run.trainer.drain_minibatches()
        if rows:
            with open(self.run_dir / "minibatches.jsonl", "a") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)

    def finish(self) -> None:
        """After shutdown (the ledger balances): final evaluation, best and last checkpoints."""
        st, led = self.state, self.run.ledger
        st.version, st.env_steps, st.samples = self.run.trainer.version, led.produced_env_steps, led.trained_samples
        if self.cfg.run.eval_episodes:
            m = self.evaluate_and_keep_best()
            st.success_after = m["eval/success"]
            self.writer.write(st.update, m)
        st.wall_s = self.writer.wall_s
        self.checkpoint("last")


def preflight(cfg: TrainConfig, plan) -> None:
    """What the machine must offer the run, checked before anything starts (one-line ConfigError):
    the env id and backend, the policy's init checkpoint, the device, the checkpoint to resume, a
    writable run directory, a Ray cluster that answers."""
    from asyncvla.envs.registry import validate_env_id
    from asyncvla.policies.checkpoint import read_checkpoint_config
    from asyncvla.policies.registry import check_init

    validate_env_id(cfg.env)
    if cfg.policy.init:
        saved = read_checkpoint_config(cfg.policy.init).get("policy", {})
        check_init(cfg.policy, saved.get("type", PolicyConfig.type), saved.get("cameras", PolicyConfig.cameras))
    if cfg.run.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"run.device={cfg.run.device!r} is invalid: this machine has no CUDA device "
                          "(torch.cuda.is_available() is False); allowed here: cpu")
    if cfg.run.resume:
        resumable(cfg.run.resume)
    if cfg.run.out_dir and not cfg.run.resume:
        parent = Path(cfg.run.out_dir).absolute()
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir() or not os.access(parent, os.W_OK):
            raise ConfigError(f"run.out_dir={cfg.run.out_dir!r} is invalid: {parent} is "
                              f"{'not a directory' if not parent.is_dir() else 'not writable'}")
    address = cfg.runtime.ray_address
    if plan.backend == "ray" and address not in (None, "auto", "local"):
        host, _, port = address.removeprefix("ray://").rpartition(":")
        try:
            socket.create_connection((host or "127.0.0.1", int(port)), timeout=3).close()
        except (OSError, ValueError) as e:
            raise ConfigError(f"runtime.ray_address={address!r} is invalid: nothing answers there ({e}); "
                              "start the head with `ray start --head` or check HOST:PORT") from None


def _start_ray(cfg: TrainConfig, plan, run_dir: Path) -> bool:
    """Starts the embedded Ray (or joins runtime.ray_address) for the ray backend; True if this run started it."""
    if plan.backend != "ray":
        return False
    import ray

    from asyncvla.runtime.backends.ray import init_ray, required_cpus

    if ray.is_initialized():
        return False
    init_ray(cfg.runtime.ray_address, min_cpus=required_cpus(plan, cfg), log_dir=run_dir / "logs")
    install_sigterm()  # ray.init replaced it with a handler that dumps a stack and aborts (exit 134)
    return True


def train(cfg: TrainConfig, progress: Callable | None = None) -> dict:
    """Runs (or resumes) a training run, sync or async; returns the summary that `--json` prints."""
    from asyncvla.algos.warm_start import ensure_warm_start

    plan = make_plan(cfg)  # bad combinations fail here, before anything starts
    preflight(cfg, plan)
    # The SFT start is made before the run dir's config.yaml, which then records policy.init.
    cfg.policy.init = ensure_warm_start(cfg) or cfg.policy.init
    run_dir = prepare_run_dir(cfg)
    (run_dir / "plan.json").write_text(json.dumps(dataclasses.asdict(plan), indent=1))  # the derived layout, in the open
    torch.manual_seed(cfg.run.seed)
    np.random.seed(cfg.run.seed)
    trace_path = run_dir / "trace.json"
    trace: list[Span] = load_chrome_trace(trace_path) if cfg.run.resume and trace_path.exists() else []
    state, run, writer, driver = RunState(), None, None, None
    own_ray = _start_ray(cfg, plan, run_dir)
    try:
        run = loop.build_runtime(cfg, plan)
        if cfg.run.resume:
            state, ckpt = load_checkpoint(run.trainer, run_dir)
            restore_runtime_state(run, ckpt)
            lost_updates, lost_steps = count_lost(state, run_dir / "metrics.jsonl")
            if lost_updates:
                print(f"warning: resuming at update {state.update}: the stopped run logged {lost_updates} update(s) "
                      f"({lost_steps} env steps) after its last checkpoint; they are redone", file=sys.stderr)
        resumed = state.update if cfg.run.resume else None
        writer = MetricsWriter(run_dir, wall_offset_s=state.wall_s, resume_step=resumed)
        if resumed is not None:
            truncate_jsonl(run_dir / "minibatches.jsonl", lambda r: r.get("update", 0) <= resumed)
        eval_policy = build_policy(cfg.policy, run.spec["action_dim"], run.spec["proprio_dim"], cfg.run.seed).eval()
        driver = Driver(run, cfg, run_dir, state, writer, progress, eval_policy, trace)
        if state.success_before is None and cfg.run.eval_episodes:
            m = driver.evaluate()
            state.success_before = m["eval/success"]
            writer.write(state.update, m)
            if progress is not None:
                progress(state.update, m)
        if not driver.done():
            left = None if cfg.run.total_updates is None else cfg.run.total_updates - state.update
            driver.mark = (time.time(), run.ledger.trained_env_steps)
            loop.run(run, cfg.run.total_env_steps, left, on_update=driver, stall_s=cfg.run.stall_timeout_s)
        driver.finish()
    except BaseException as e:
        save_on_crash(run.trainer if run else None, run_dir, state, lambda: {RUNTIME_STATE: runtime_state(run)}, e)
        if isinstance(e, Exception) and not isinstance(e, ConfigError):
            record_failure(run_dir, e)
        raise
    finally:
        if writer is not None:
            writer.close()
        if driver is not None:
            driver.collect_spans()
        if trace:
            write_chrome_trace(trace_path, trace)
        if own_ray:
            import ray

            ray.shutdown()
    return summarize(state, run_dir)
