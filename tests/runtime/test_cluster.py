"""`asyncvla train --ray-address` joins a Ray cluster that `ray start --head` made, as docs/cluster.md says."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from asyncvla.runtime.inference.broadcast import free_port


@pytest.fixture
def ray_head():
    """A one-node cluster on this machine's node IP, in its own session so the test can stop it all.

    Not the loopback address: `ray.init(address="127.0.0.1:PORT")` swaps a loopback host for the
    node IP before it connects, so a head bound to 127.0.0.1 cannot be joined on a machine that
    has another interface."""
    from ray._private.services import get_node_ip_address

    ray = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
    ip = get_node_ip_address()  # what Ray resolves 127.0.0.1 to (127.0.0.1 itself on a loopback-only machine)
    port = free_port()
    tmp = tempfile.mkdtemp(prefix="rayh_", dir="/tmp")  # Ray's socket paths must stay short
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    head = subprocess.Popen([ray, "start", "--head", "--block", "--port", str(port), "--num-cpus", "2",
                             "--node-ip-address", ip, "--include-dashboard=false", "--disable-usage-stats",
                             "--temp-dir", tmp], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env=env)
    address = f"{ip}:{port}"
    try:
        deadline = time.time() + 90
        while subprocess.run([ray, "status", "--address", address], capture_output=True, env=env).returncode != 0:
            assert head.poll() is None, "ray start --head exited"
            assert time.time() < deadline, "the Ray head did not come up within 90 s"
            time.sleep(1)
        yield address, Path(tmp)
    finally:
        # Only this cluster's processes: `ray stop` would stop every Ray on the machine.
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.slow
def test_train_joins_an_existing_cluster(tmp_path, ray_head):
    address, ray_tmp = ray_head
    run_dir = tmp_path / "run"
    driver = subprocess.Popen(
        [sys.executable, "-m", "asyncvla.cli", "train", "--preset", "emulated-e2e", "--ray-address", address, "--json",
         "--env.id", "emulated/fast", "--run.total-updates", "2", "--run.eval-episodes", "1", "--run.out-dir", str(run_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    out, err = driver.communicate(timeout=300)
    assert driver.returncode == 0, err[-2000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["updates"] == 2 and summary["env_steps"] > 0
    # The run's driver and actors ran in that cluster (its session logs name the driver's pid),
    # not in an embedded Ray of their own.
    logs = list((ray_tmp / "session_latest" / "logs").glob(f"python-core-driver-*_{driver.pid}.log"))
    assert logs, sorted(p.name for p in (ray_tmp / "session_latest" / "logs").iterdir())
    assert (run_dir / "checkpoints" / "last" / "run_state.json").exists()
