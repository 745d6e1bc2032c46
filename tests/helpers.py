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


def pair_label(layout: str) -> str | None:
    """The label a sentence-pair layout's instances carry (``next_sentence_label``, ``sentence_order_label``), read
    from its dataset class; None for a layout of single segments."""
    from lmpretrain.data.instances import NextSentenceDataset

    pairs = (NextSentenceDataset, *NextSentenceDataset.__subclasses__())
    return next((cls.label for cls in pairs if cls.layout == layout), None)


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie does not count); Linux, through /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
