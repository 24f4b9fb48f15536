"""`asyncvla bench placement`: colocated vs disaggregated vs hybrid, sync and full async.

Placement is modelled on `num_devices` emulated accelerators (emulated workloads only):
a role spread over d devices runs data-parallel (per-sample costs / d; inference's fixed
per-batch cost stays), and roles that share a device never run at the same time (one lock:
the device holds one model's work at a time, as with offloading).

| placement | inference | training | shared device |
|---|---|---|---|
| colocated | all devices | all devices | yes |
| disaggregated | half the devices | the other half | no |
| hybrid (RL-VLA³: inference on a subset, trainer on all) | half the devices | all devices | yes |

Sync cannot overlap the roles anyway, so it gains from colocation (every device works on
each phase); async needs the roles apart to overlap them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

from asyncvla.bench.ablation import RUNGS, WINDOW, bound_terms, rung_config, run_row, with_bound
from asyncvla.bench.throughput import AcceleratorCosts, Workload
from asyncvla.bench.workloads import build_workload, get_spec
from asyncvla.config import ConfigError


@dataclass(frozen=True)
class Placement:
    """Devices per role (as fractions of all devices) and whether inference and training share one."""

    name: str
    infer_share: float
    train_share: float
    shared: bool


PLACEMENTS = {p.name: p for p in (
    Placement("colocated", 1.0, 1.0, True),
    Placement("disaggregated", 0.5, 0.5, False),
    Placement("hybrid", 0.5, 1.0, True),
)}


def placed_costs(costs: AcceleratorCosts, p: Placement, num_devices: int) -> AcceleratorCosts:
    """Per-call costs when inference runs on infer_share and training on train_share of the devices."""
    d_inf, d_train = max(1.0, p.infer_share * num_devices), max(1.0, p.train_share * num_devices)
    return AcceleratorCosts(costs.infer_fixed_s, costs.infer_per_sample_s / d_inf, costs.train_per_sample_s / d_train)


def placement_terms(w: Workload, shared: bool) -> dict[str, float]:
    """Stage capacities; sharing a device adds one term: inference and training of a sample back to back."""
    terms = bound_terms(w)
    if shared:
        b, k = w.cfg.runtime.max_batch, w.cfg.policy.chunk
        terms["shared_device"] = k / (w.costs.infer_s(b) / b + w.costs.train_per_sample_s)
    return terms


def placement_config(w: Workload, p: Placement, mode: str):
    """The config of one (placement, mode) row: sync is the ladder's sync rung (no dynamic batching),
    async its full-async rung."""
    cfg = rung_config(w.config(), RUNGS["+decoupled_actor" if mode == "async" else "sync"])
    # Colocated on the emulated device: the plan gives both roles one gate, so they never overlap.
    cfg.runtime.placement = "colocated" if p.shared else "disaggregated"
    return cfg


def placement_bench(workload: str, seconds: float, placements: list[str] | None = None, modes: tuple[str, ...] = ("sync", "async"),
                    num_devices: int = 2, on_run: Callable[[dict], None] | None = None) -> dict:
    """Runs every (placement, mode) on an emulated workload; rows are named `placement/mode`."""
    spec = get_spec(workload)
    if spec.kind != "emulated":
        raise ConfigError(f"workload={workload!r} is invalid for placement: needs an emulated workload (devices are emulated)")
    names = placements or list(PLACEMENTS)
    for n in names:
        if n not in PLACEMENTS:
            raise ConfigError(f"placements={n!r} is invalid: allowed: {', '.join(PLACEMENTS)}")
    for m in modes:
        if m not in ("sync", "async"):
            raise ConfigError(f"modes={m!r} is invalid: allowed: sync, async")
    if num_devices < 2:
        raise ConfigError(f"num_devices={num_devices} is invalid: must be >= 2 (disaggregated needs one per role)")
    base = build_workload(workload)
    runs = []
    for n in names:
        p = PLACEMENTS[n]
        w = dataclasses.replace(base, costs=placed_costs(base.costs, p, num_devices))
        for m in modes:
            row, _ = run_row(placement_config(w, p, m), seconds, f"{n}/{m}")
            with_bound(row, placement_terms(w, p.shared) if m == "async" else bound_terms(w))
            row["placement"] = n
            runs.append(row)
            if on_run is not None:
                on_run(row)
    return {"bench": "placement", "workload": workload, "kind": spec.kind, "label": base.label, "params": spec.params(),
            "num_devices": num_devices, "window": WINDOW, "seconds": seconds, "runs": runs,
            "notes": ["bound = the async bound of each placement's stage costs; sync rows show the same bound for reference"]}
