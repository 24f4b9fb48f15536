"""Every Ray worker's Python output in the run directory: RUN_DIR/logs/<role>.log.

The driver starts Ray with `log_to_driver=False`: worker lines printed into the driver's terminal
would break the progress bar and the last JSON line of `--json`. Without this module a worker's
warnings and tracebacks were then only in Ray's session directory under /tmp. `setup` runs in
every worker process (Ray's `worker_process_setup_hook`) and copies its stdout, stderr and
warning-level logging into `worker-<pid>.log` there; `name` gives the file the actor's role.
On a node that cannot write the run directory (a cluster without a shared file system) the
worker keeps Ray's own files only.
"""

from __future__ import annotations

import io
import logging
import os
import sys
from pathlib import Path

ENV = "ASYNCVLA_WORKER_LOG_DIR"
"""Absolute log directory, handed to the workers through Ray's runtime_env."""
HOOK = f"{__name__}.setup"
_file: io.TextIOBase | None = None
_RAY_MARKERS = (":job_id:", ":actor_name:", ":task_name:")
"""Lines Ray prints into its own worker files to attribute them; noise in ours."""


class _Tee(io.TextIOBase):
    """Writes to the worker's own stream (Ray's file) and to the run's log."""

    def __init__(self, stream, copy):
        self.stream, self.copy = stream, copy

    def write(self, s: str) -> int:
        self.stream.write(s)
        if not s.startswith(_RAY_MARKERS):
            self.copy.write(s)
        return len(s)

    def flush(self) -> None:
        self.stream.flush()
        self.copy.flush()

    def fileno(self) -> int:  # faulthandler and subprocess need the real descriptor
        return self.stream.fileno()


def setup() -> None:
    global _file
    log_dir = os.environ.get(ENV)
    if not log_dir or _file is not None:
        return
    try:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        _file = open(Path(log_dir) / f"worker-{os.getpid()}.log", "a", buffering=1)
    except OSError:
        return
    sys.stdout, sys.stderr = _Tee(sys.stdout, _file), _Tee(sys.stderr, _file)
    handler = logging.StreamHandler(_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.WARNING)
    logging.getLogger("asyncvla").addHandler(handler)


def name(role: str) -> None:
    """Renames this worker's log to `<role>.log` (`<role>-<pid>.log` if a restarted actor's is there)."""
    if _file is None:
        return
    old = Path(_file.name)
    new = old.with_name(f"{role}.log")
    if new.exists():
        new = old.with_name(f"{role}-{os.getpid()}.log")
    try:
        old.rename(new)
    except OSError:
        pass
