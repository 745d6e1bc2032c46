"""``pip install .`` (issue 26, item 5): a wheel with every package and the top-level scripts, a console command per
script, and the shipped presets found from any directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lmpretrain.config import read_presets
from lmpretrain.console import SCRIPTS, command_name

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_and_script_is_in_the_wheel_config():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    packages = {".".join(p.relative_to(ROOT).parts) for p in (ROOT / "lmpretrain").rglob("__init__.py")
                for p in [p.parent]}
    listed = set(pyproject["tool"]["setuptools"]["packages"])
    assert listed == packages | {"lmpretrain.scripts"}
    top_level = {p.stem for p in ROOT.glob("*.py")}
    assert top_level == set(SCRIPTS)  # lmpretrain.scripts is the top level: only the scripts go there
    assert pyproject["project"]["scripts"] == {command_name(s): f"lmpretrain.console:{s}" for s in SCRIPTS}


def _run(command: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_the_installed_commands_run_from_outside_the_checkout(tmp_path):
    """Build the wheel from a copy of the checkout (no build/ left in it), install it without dependencies into a
    target dir, and run every command's --help and --list_presets from an empty directory: the commands are the
    installed ones, and the presets are the installed parameter.json."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "requirements.txt", "parameter.json",
                 *(f"{s}.py" for s in SCRIPTS)):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "lmpretrain", source / "lmpretrain", ignore=shutil.ignore_patterns("__pycache__"))
    wheels, target, elsewhere = tmp_path / "wheels", tmp_path / "target", tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    built = _run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q",
                  "-w", str(wheels)], tmp_path, env)
    assert built.returncode == 0, built.stderr[-3000:]
    wheel = next(wheels.glob("lmpretrain-*.whl"))
    installed = _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "-q", "--target",
                      str(target), str(wheel)], tmp_path, env)
    assert installed.returncode == 0, installed.stderr[-3000:]
    env["PYTHONPATH"] = str(target)  # the dependencies are this interpreter's; lmpretrain is the installed one
    for script in SCRIPTS:
        result = _run([str(target / "bin" / command_name(script)), "--help"], elsewhere, env)
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.startswith(f"usage: {command_name(script)}")
        checkout = _run([sys.executable, str(ROOT / f"{script}.py"), "--help"], elsewhere, env)
        # the same description, flags and help after the usage lines (which wrap by the program's name)
        assert result.stdout.split("\n\n", 1)[1] == checkout.stdout.split("\n\n", 1)[1]
    listing = _run([str(target / "bin" / command_name("run_pretraining")), "--list_presets"], elsewhere, env)
    assert listing.returncode == 0, listing.stderr[-3000:]
    lines = listing.stdout.splitlines()
    installed_presets = target / "lmpretrain" / "scripts" / "parameter.json"
    assert lines[0].startswith(f"{installed_presets}: {len(read_presets(ROOT / 'parameter.json'))} presets")
    assert any(line.split()[:2] == ["bert-tiny", "bert"] for line in lines)
    bad = _run([str(target / "bin" / command_name("run_pretraining")), "--list_presets", "--parameter_file",
                "missing.json"], elsewhere, env)
    assert (bad.returncode, bad.stderr.strip()) == (2, "error: --parameter_file missing.json does not exist")
