"""Admission control bounds the lag by pacing, never deadlocks at 0; the ledger balances."""

import json
import random
import threading

import numpy as np
import pytest

from asyncvla.runtime.learner.staleness import Ledger, StalenessController


def test_admission_respects_the_bound_and_grants_partially():
    c = StalenessController(max_staleness=1, samples_per_version=4)
    assert c.try_admit(3) == 3 and c.try_admit(3) == 3 and c.try_admit(3) == 2  # cap = 8
    assert c.try_admit(1) == 0
    c.refund(2)  # a segment came back 2 short: its room is reusable
    assert c.try_admit(5) == 2
    c.advance(version=1, consumed_samples=4)
    assert c.try_admit(10) == 4


def test_admit_waits_until_the_trainer_advances():
    c = StalenessController(max_staleness=0, samples_per_version=2)
    assert c.admit(2) == 2
    got = []
    th = threading.Thread(target=lambda: got.append(c.admit(2)))
    th.start()
    th.join(timeout=0.05)
    assert th.is_alive()  # paused: the trainer has not consumed version 0's samples
    c.advance(1, 2)
    th.join(timeout=5)
    assert got == [2] and c.metrics()["lag/admission_waits"] == 1
    assert c.admit(1, timeout_s=0.01) == 0
    c.close()
    assert c.admit(1) == 0


def _simulate(max_staleness, num_envs=3, seg_len=3, batch=5, steps=6, seed=0):
    """Envs (threads) roll segments tagged with the version they act with; a trainer consumes
    `batch` samples per version. Returns (lags seen by the trainer, ledger)."""
    c = StalenessController(max_staleness, batch)
    ledger, lock, buf, lags = Ledger(), threading.Condition(), [], []
    done = threading.Event()

    def env(k):
        rng = random.Random(seed * 100 + k)
        while not done.is_set():
            n = c.admit(seg_len, timeout_s=0.5)
            if n == 0:
                continue
            seg = []
            for _ in range(n):
                seg.append(c.version)  # the weights inference would use for this decision
                ledger.produced(2)
                if rng.random() < 0.1:  # env crash: the partial segment is dropped and refunded
                    ledger.dropped("env_error", len(seg), 2 * len(seg))
                    c.refund(n)
                    seg = None
                    break
            if seg is not None:
                with lock:
                    buf.extend(seg)
                    lock.notify_all()

    threads = [threading.Thread(target=env, args=(k,), daemon=True) for k in range(num_envs)]
    for t in threads:
        t.start()
    consumed = 0
    for v in range(steps):
        with lock:
            assert lock.wait_for(lambda: len(buf) >= batch, timeout=10), f"deadlock at version {v}"
            take, buf[:] = buf[:batch], buf[batch:]
        lags.extend(v - x for x in take)
        ledger.trained(batch, 2 * batch)
        consumed += batch
        c.advance(v + 1, consumed)  # publish, then reopen admission
    done.set()
    c.close()
    for t in threads:
        t.join(timeout=5)
    with lock:
        ledger.dropped("shutdown", len(buf), 2 * len(buf))
    return np.array(lags), ledger


@pytest.mark.parametrize("eta", [0, 1, 2])
def test_lag_is_bounded_by_pacing_and_zero_does_not_deadlock(eta):
    lags, ledger = _simulate(eta)
    assert len(lags) == 30 and lags.min() >= 0
    assert lags.max() <= eta
    assert ledger.balance == 0  # every env step trained or dropped with a reason
    assert ledger.produced_env_steps == ledger.trained_env_steps + sum(ledger.dropped_env_steps.values())


def test_lag_histogram_and_state_survive_a_json_round_trip():
    c = StalenessController(max_staleness=2, samples_per_version=4)
    for v in (1, 2, 3):
        c.advance(v, 4 * v)
    assert c.record_lags(np.array([3, 3, 2, 1])).tolist() == [0, 0, 1, 2]
    m = c.metrics()
    assert m["lag/max"] == 2 and m["lag/mean"] == pytest.approx(0.75) and m["lag/hist"] == [2, 1, 1]
    c2 = StalenessController(max_staleness=2, samples_per_version=4)
    c2.load_state_dict(json.loads(json.dumps(c.state_dict())))
    assert c2.metrics() == m and c2.version == 3
    assert c2.try_admit(100) == 12  # cap = 12 + 3 * 4; nothing in flight after resume
    assert c.is_stale(0) and not c.is_stale(1)


def test_lag_counts_publishes_not_optimizer_steps():
    """A trainer taking 4 optimizer steps per update (PPO epochs) publishes versions 0, 4, 8."""
    c = StalenessController(max_staleness=1, samples_per_version=16)
    c.advance(4, 16)
    c.advance(8, 32)
    assert [c.lag(v) for v in (8, 4, 0)] == [0, 1, 2]
    assert not c.is_stale(4) and c.is_stale(0)


def test_ledger_counts_drops_by_reason_and_resume_accounts_for_lost_work():
    led = Ledger()
    led.produced(10)
    led.trained(2, 6)
    led.dropped("env_error", 1, 3)
    assert led.balance == 1
    m = led.metrics()
    assert m["train/dropped_env_error_env_steps"] == 3 and m["train/env_steps_in_flight"] == 1
    led2 = Ledger()
    led2.load_state_dict(json.loads(json.dumps(led.state_dict())))
    assert led2.balance == 0 and led2.dropped_env_steps["resume"] == 1


def test_listeners_are_woken_whenever_admission_may_reopen():
    c = StalenessController(max_staleness=0, samples_per_version=2)
    calls = []
    c.add_listener(lambda: calls.append(c.cap - c.admitted))  # runs after the lock is released
    assert c.try_admit(2) == 2 and not calls  # admitting never wakes anyone
    c.advance(version=1, consumed_samples=2)
    assert calls == [2]  # published: room for one more version
    c.refund(1)
    assert calls == [2, 3]
    c.close()
    assert len(calls) == 3
