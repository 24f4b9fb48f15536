"""`asyncvla train --ray-address` joins a Ray cluster that `ray start --head` made, as docs/cluster.md says."""

import contextlib
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


def _ray_cli() -> str:
    return shutil.which("ray") or str(Path(sys.executable).with_name("ray"))


def _start_node(args: list[str], env: dict) -> subprocess.Popen:
    """`ray start ... --block` in a session of its own, so the test can stop exactly that node."""
    return subprocess.Popen([_ray_cli(), "start", "--block", "--disable-usage-stats", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, env=env)


def _stop_node(node: subprocess.Popen) -> None:
    # Only this cluster's processes: `ray stop` would stop every Ray on the machine.
    os.killpg(node.pid, signal.SIGTERM)
    try:
        node.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(node.pid, signal.SIGKILL)


def _wait_for(address: str, env: dict, nodes: list[subprocess.Popen], resource: str, what: str) -> None:
    deadline = time.time() + 90
    while True:
        st = subprocess.run([_ray_cli(), "status", "--address", address], capture_output=True, text=True, env=env)
        if st.returncode == 0 and resource in st.stdout:
            return
        assert all(n.poll() is None for n in nodes), f"{what}: ray start exited"
        assert time.time() < deadline, f"{what} did not come up within 90 s"
        time.sleep(1)


@contextlib.contextmanager
def _cluster(worker_resources: dict | None = None, head_resources: dict | None = None):
    """A cluster on this machine's node IP: a head and, with worker_resources, a second raylet (node).

    Not the loopback address: `ray.init(address="127.0.0.1:PORT")` swaps a loopback host for the
    node IP before it connects, so a head bound to 127.0.0.1 cannot be joined on a machine that
    has another interface."""
    from ray._private.services import get_node_ip_address

    ip = get_node_ip_address()  # what Ray resolves 127.0.0.1 to (127.0.0.1 itself on a loopback-only machine)
    port = free_port()
    tmp = tempfile.mkdtemp(prefix="rayh_", dir="/tmp")  # Ray's socket paths must stay short
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    address = f"{ip}:{port}"
    head_args = ["--head", "--port", str(port), "--num-cpus", "2", "--node-ip-address", ip, "--temp-dir", tmp,
                 "--include-dashboard=false"]
    if head_resources:
        head_args += ["--resources", json.dumps(head_resources)]
    nodes = [_start_node(head_args, env)]
    try:
        _wait_for(address, env, nodes, "CPU", "the Ray head")
        if worker_resources:
            nodes.append(_start_node(["--address", address, "--num-cpus", "2", "--node-ip-address", ip,
                                      "--resources", json.dumps(worker_resources)], env))
            _wait_for(address, env, nodes, next(iter(worker_resources)), "the second node")
        yield address, Path(tmp)
    finally:
        for node in reversed(nodes):
            _stop_node(node)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def ray_head():
    """A one-node cluster, in its own session so the test can stop it all."""
    with _cluster() as head:
        yield head


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


def _actor_nodes(address: str) -> dict[str, set[str]]:
    """Actor class -> the custom resource (node_a / node_b) of every node its actors ran on,
    from Ray's GCS (dead actors included)."""
    import ray

    ray.init(address=address, log_to_driver=False)
    try:
        labels = {n["NodeID"]: next((r for r in n["Resources"] if r.startswith("node_")), "?") for n in ray.nodes()}
        out: dict[str, set[str]] = {}
        for actor in ray._private.state.actors().values():
            out.setdefault(actor["ActorClassName"].rsplit(".", 1)[-1], set()).add(labels.get(actor["Address"]["NodeID"], "?"))
        return out
    finally:
        ray.shutdown()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["async", "sync"])
def test_two_nodes_envs_on_one_inference_and_trainer_on_the_other(tmp_path, mode):
    """A cluster of two raylets on this machine (custom resources node_a, node_b): the config places
    the env managers on node_a and the rollout server on node_b; Ray's own record of each actor
    says where it ran."""
    with _cluster(worker_resources={"node_a": 4}, head_resources={"node_b": 4}) as (address, _):
        run_dir = tmp_path / "run"
        driver = subprocess.run(
            [sys.executable, "-m", "asyncvla.cli", "train", "--preset", "emulated-e2e", "--ray-address", address, "--json",
             "--mode", mode, "--env.id", "emulated/fast", "--run.total-updates", "2", "--run.eval-episodes", "1",
             "--runtime.env-resources", "node_a", "1", "--runtime.rollout-resources", "node_b", "1",
             "--run.out-dir", str(run_dir)],
            capture_output=True, text=True, timeout=300, env={**os.environ, "RAY_AUTH_MODE": "disabled"})
        assert driver.returncode == 0, driver.stderr[-2000:]
        summary = json.loads(driver.stdout.strip().splitlines()[-1])
        assert summary["updates"] == 2 and summary["env_steps"] > 0
        where = _actor_nodes(address)
        print(f"{mode}: where each actor ran: {where}")
        assert where["EnvManagerActor"] == {"node_a"}, where
        assert where["RolloutServerActor"] == {"node_b"}, where
        # The trajectory hub goes beside the driver's raylet; both raylets have this machine's IP, so
        # which of them the driver attached to is Ray's choice here (on real nodes: the one it runs on).
        assert len(where["Hub"]) == 1, where
