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
