"""Test-only entry point: run_pretraining.py with every loss made NaN from a given step on (tests of the NaN guard).

    python tests/inject_nan.py STEP <run_pretraining.py flags>

It installs ``lmpretrain.trainer.loss_hook`` and then runs the real script's ``main``; the library reads no switch.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import run_pretraining  # noqa: E402
from lmpretrain import trainer  # noqa: E402
from lmpretrain.errors import run_cli  # noqa: E402


def nan_from(step: int):
    def hook(loss, at_step: int):
        return loss * float("nan") if at_step >= step else loss

    return hook


if __name__ == "__main__":
    trainer.loss_hook = nan_from(int(sys.argv[1]))
    sys.exit(run_cli(run_pretraining.main, sys.argv[2:]))
