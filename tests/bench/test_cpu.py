"""bench/cpu.py: CPU utilization over the whole process tree of a run, per process and window."""

import subprocess
import sys

import pytest

from asyncvla.bench.cpu import CpuMeter, ProcSample, group_name, window_cpu_s


def s(cpu: float) -> ProcSample:
    return ProcSample("x", cpu)


def test_window_counts_each_process_from_its_base_sample_or_from_zero():
    base = {(1, 0.0): s(5.0), (2, 0.0): s(1.0)}
    seen = {(1, 0.0): s(9.0), (2, 0.0): s(1.5),  # 2 exited after this sample: keeps what it used until then
            (3, 20.0): s(2.0)}                   # not in the base: created in the window, all of its CPU counts
    assert window_cpu_s(base, seen) == {(1, 0.0): 4.0, (2, 0.0): 0.5, (3, 20.0): 2.0}


def test_a_reused_pid_is_another_process():
    base = {(7, 1.0): s(50.0)}
    seen = {(7, 1.0): s(52.0), (7, 30.0): s(3.0)}
    assert sum(window_cpu_s(base, seen).values()) == pytest.approx(5.0)


@pytest.mark.parametrize("name,root,group", [
    ("python3", True, "driver"),
    ("ray::EnvManagerActor.__init__", False, "ray::EnvManagerActor"),
    ("ray::RolloutServerActor", False, "ray::RolloutServerActor"),
    ("ray::IDLE", False, "ray::IDLE"),
    ("raylet", False, "ray system"),
    ("gcs_server", False, "ray system"),
])
def test_group_names(name, root, group):
    assert group_name(name, root) == group


def test_meter_counts_a_child_that_exits_inside_the_window():
    # The child burns 0.3 CPU-seconds, says so, and exits when its stdin closes.
    burn = "import sys,time\nt=time.process_time()\nwhile time.process_time()-t<0.3: pass\nprint('ok',flush=True)\nsys.stdin.read()"
    meter = CpuMeter(cores=2)
    meter.mark()  # start-up mark (not in the window)
    meter.mark()  # the window starts
    child = subprocess.Popen([sys.executable, "-c", burn], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ok"
    meter.mark()
    child.communicate("")
    meter.mark()  # the child is gone: it must still count
    used = meter.by_group()
    assert used["ray system"] * meter.window_s >= 0.28  # 0.3 s less tick and rounding error: the child (a plain process: "ray system")
    assert meter.utilization() == pytest.approx(sum(used.values()) / 2, rel=0.05)
    assert meter.window_s == pytest.approx(meter.marks[-1] - meter.marks[1])


def test_no_utilization_before_two_marks_in_the_window():
    meter = CpuMeter(cores=2)
    meter.mark()
    meter.mark()
    assert meter.utilization() is None and meter.by_group() == {}
