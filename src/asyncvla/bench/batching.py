"""`asyncvla bench batching`: the dynamic batcher under load, max_batch x max_wait_ms.

A load generator of `clients` threads drives one `RolloutServer` (the runtime's own server,
batcher and `LocalTransport`): each client sends a one-sample request, waits for its
reply, thinks `think_ms` (an env stepping its chunk), and repeats. With think 0 and more
clients than max_batch the server is at full load. Each point reports served samples/s,
mean batch size and request latency p50/p99, next to the *offline* throughput of the same
policy on back-to-back batches of max_batch (no server, no waiting) and their ratio.

The policy is the workload's tiny VLA, either held to a GPU-like cost of
`infer_fixed_ms + infer_per_sample_ms * B` per batch (`accelerator=emulated`: a large fixed
cost per call, so batching pays) or run as is on this CPU (`accelerator=real`).
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Sequence

import numpy as np

from asyncvla.bench.report import Column
from asyncvla.config import ConfigError, EmulatedAcceleratorConfig
from asyncvla.policies.base import ObsBatch, Policy
from asyncvla.runtime.device import DeviceGate

BATCHING_COLUMNS = (
    Column("mode", "point", "{}"),
    Column("max_batch", "max_batch", "{}"),
    Column("max_wait_ms", "max_wait_ms", "{:g}"),
    Column("samples_per_s", "samples/s"),
    Column("mean_batch", "mean batch", "{:.2f}"),
    Column("latency_p50_ms", "p50 ms"),
    Column("latency_p99_ms", "p99 ms"),
    Column("offline_samples_per_s", "offline samples/s"),
    Column("ratio_to_offline", "of offline", "{:.0%}"),
)


def _obs(n: int, image_size: int, proprio_dim: int) -> ObsBatch:
    rng = np.random.default_rng(0)
    return ObsBatch(rng.integers(0, 256, (n, image_size, image_size, 3), dtype=np.uint8),
                    rng.normal(size=(n, proprio_dim)).astype(np.float32), ["move the point to the goal"] * n)


def offline_samples_per_s(policy: Policy, batch: int, seconds: float, image_size: int, proprio_dim: int) -> float:
    """Samples/s of back-to-back `act` calls on `batch` observations (after one warm-up call)."""
    obs = _obs(batch, image_size, proprio_dim)
    policy.act(obs)
    n, t0 = 0, time.perf_counter()
    while n < 3 or time.perf_counter() - t0 < seconds:
        policy.act(obs)
        n += 1
    return n * batch / (time.perf_counter() - t0)


def serve_under_load(policy: Policy, max_batch: int, max_wait_ms: float, clients: int, seconds: float,
                     image_size: int, proprio_dim: int, think_ms: float = 0.0, warmup_s: float = 0.3) -> dict:
    """Runs a RolloutServer with `clients` closed-loop clients; measures after `warmup_s`."""
    from asyncvla.runtime.inference.batcher import LocalTransport
    from asyncvla.runtime.inference.server import RolloutServer

    transport = LocalTransport()
    server = RolloutServer(policy, max_batch, max_wait_ms / 1000, trace=False)
    stop = threading.Event()
    serving = threading.Thread(target=server.serve, args=(transport, transport.clock, stop.is_set), daemon=True)
    serving.start()
    t_measure = time.perf_counter() + warmup_s
    t_end = t_measure + seconds
    latencies: list[list[float]] = [[] for _ in range(clients)]
    obs = _obs(1, image_size, proprio_dim)

    def client(i: int) -> None:
        while (t0 := time.perf_counter()) < t_end:
            transport.submit(i, obs, 1).result()
            if t0 >= t_measure:
                latencies[i].append(time.perf_counter() - t0)
            if think_ms:
                time.sleep(think_ms / 1000)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for th in threads:
        th.start()
    time.sleep(max(0.0, t_measure - time.perf_counter()))
    b0, s0, w0 = server.num_batches, server.num_samples, time.perf_counter()
    time.sleep(max(0.0, t_end - time.perf_counter()))
    b1, s1, w1 = server.num_batches, server.num_samples, time.perf_counter()
    for th in threads:
        th.join(timeout=10)
    stop.set()
    transport.close()
    serving.join(timeout=10)
    lat = np.concatenate([np.asarray(x) for x in latencies]) * 1e3 if any(latencies) else np.zeros(1)
    return {"samples_per_s": round((s1 - s0) / (w1 - w0), 2), "mean_batch": round((s1 - s0) / max(b1 - b0, 1), 2),
            "batches": b1 - b0, "latency_p50_ms": round(float(np.percentile(lat, 50)), 2),
            "latency_p99_ms": round(float(np.percentile(lat, 99)), 2)}


class HeldPolicy(Policy):
    """`policy` on an emulated accelerator: each `act` holds the device for the calibrated time."""

    def __init__(self, policy: Policy, gate: DeviceGate):
        super().__init__()
        self.inner, self.gate = policy, gate

    def act(self, obs, deterministic: bool = False):
        with self.gate.infer(len(obs)):
            return self.inner.act(obs, deterministic)


def batching_policy(workload: str, accelerator: str, infer_fixed_ms: float, infer_per_sample_ms: float
                    ) -> tuple[Policy, int, int]:
    """(policy, image_size, proprio_dim): the workload's tiny VLA, held to at least
    infer_fixed_ms + infer_per_sample_ms * B per batch (accelerator=emulated) or as is (real)."""
    from asyncvla.bench.workloads import build_workload
    from asyncvla.policies.registry import build_policy

    if accelerator not in ("emulated", "real"):
        raise ConfigError(f"accelerator={accelerator!r} is invalid: allowed: emulated, real")
    cfg = build_workload(workload).cfg
    proprio_dim = 8
    policy = build_policy(cfg.policy, 4, proprio_dim, 0).eval()
    if accelerator == "emulated":
        policy = HeldPolicy(policy, DeviceGate(EmulatedAcceleratorConfig(infer_fixed_ms / 1e3, infer_per_sample_ms / 1e3)))
    return policy, cfg.env.image_size, proprio_dim


def batching_bench(workload: str = "emulated-balanced", max_batches: Sequence[int] = (1, 4, 8, 16),
                   max_waits_ms: Sequence[float] = (0.0, 2.0, 5.0), clients: int | None = None, seconds: float = 2.0,
                   think_ms: float = 0.0, accelerator: str = "emulated", infer_fixed_ms: float = 8.0,
                   infer_per_sample_ms: float = 0.5, on_run: Callable[[dict], None] | None = None) -> dict:
    """The sweep; `clients` defaults to 2 x the largest max_batch (full load with think 0)."""
    if not max_batches or min(max_batches) < 1:
        raise ConfigError(f"max_batches={list(max_batches)!r} is invalid: need at least one, all >= 1")
    if not max_waits_ms or min(max_waits_ms) < 0:
        raise ConfigError(f"max_waits_ms={list(max_waits_ms)!r} is invalid: need at least one, all >= 0")
    clients = clients or 2 * max(max_batches)
    if clients < 1:
        raise ConfigError(f"clients={clients} is invalid: must be >= 1")
    policy, image_size, proprio_dim = batching_policy(workload, accelerator, infer_fixed_ms, infer_per_sample_ms)
    runs = []
    for b in max_batches:
        offline = offline_samples_per_s(policy, b, min(seconds, 1.0), image_size, proprio_dim)
        for wait in max_waits_ms:
            row = {"mode": f"b{b}-w{wait:g}", "max_batch": b, "max_wait_ms": wait, "clients": clients,
                   "think_ms": think_ms,
                   **serve_under_load(policy, b, wait, clients, seconds, image_size, proprio_dim, think_ms)}
            row["offline_samples_per_s"] = round(offline, 2)
            row["ratio_to_offline"] = round(row["samples_per_s"] / offline, 3)
            runs.append(row)
            if on_run is not None:
                on_run(row)
    costs = {"infer_fixed_ms": infer_fixed_ms, "infer_per_sample_ms": infer_per_sample_ms} if accelerator == "emulated" else None
    return {"bench": "batching", "workload": workload, "accelerator": accelerator, "costs": costs, "clients": clients,
            "think_ms": think_ms, "window": f"{seconds:g} s per point after 0.3 s warm-up", "runs": runs}


def batching_plot(runs: list[dict], out_dir) -> list:
    """samples/s per point with the offline throughput as the bound tick."""
    from pathlib import Path

    from asyncvla.bench.report import bar_plot

    return [bar_plot(runs, Path(out_dir) / "batching.png", metric="samples_per_s", bound_key="offline_samples_per_s",
                     ylabel="served samples/s", title="dynamic batching under load (tick: offline max-batch throughput)")]
