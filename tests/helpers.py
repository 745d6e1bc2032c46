"""Test helpers shared across test modules."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_script(script: str, *args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 600):
    """Run one of the top-level scripts in a subprocess with this interpreter; returns CompletedProcess."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, str(REPO / script), *args], cwd=cwd or REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie does not count); Linux, through /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def layout_fields(layout_name: str, input_ids):
    """The fields a collated batch of this layout carries beside the tokens, from its declaration (data/layouts.py):
    ``token_type_ids`` (all 0) where it declares token types, and each declared label (0, 1, ... in turn)."""
    import torch

    from lmpretrain.data import get_layout

    layout = get_layout(layout_name)
    fields = {"token_type_ids": torch.zeros_like(input_ids)} if layout.token_types else {}
    for label in layout.labels:
        fields[label.name] = torch.arange(len(input_ids)) % label.classes
    return fields


def wait_for(condition, proc=None, *, what: str = "the condition", timeout: float = 900.0, poll: float = 0.005):
    """Wait on progress, not on the clock: until ``condition()`` holds; an error at once if ``proc`` (a Popen) ends
    first. ``timeout`` only catches a hang: it is far beyond what a loaded machine needs."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            if condition():
                return
            raise AssertionError(f"the process ended (exit {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} after {timeout:.0f} s")
        time.sleep(poll)


def wait_for_exit(proc, *watched: Path, stall: float = 300.0) -> int:
    """``proc``'s exit code, waiting as long as it makes progress: a ``watched`` file (its stderr, a log) grows or
    changes within ``stall`` seconds. Only a process that stops doing anything for that long fails the test."""
    import subprocess
    import time

    def state():
        found = []
        for path in watched:
            try:
                info = os.stat(path)
                found.append((info.st_size, info.st_mtime_ns))
            except OSError:
                found.append(None)
        return found

    last, since = state(), time.monotonic()
    while True:
        try:
            return proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            pass
        now = state()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since > stall:
            raise AssertionError(f"pid {proc.pid} made no progress for {stall:.0f} s (watched {list(watched)})")
