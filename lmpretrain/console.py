"""The console commands of an installed lmpretrain (``pip install .``): each runs a top-level script's ``main``.

``lmpretrain-run-pretraining ARGS`` is ``python run_pretraining.py ARGS`` in a checkout: the same flags, help, output
and exit codes (one ``error:`` line and 2 for bad input). The scripts are installed unchanged as
``lmpretrain.scripts`` (pyproject.toml maps the checkout's top level there), so there is one copy of each.
"""

from __future__ import annotations

import importlib
import sys

from .errors import run_cli

SCRIPTS = ("train_tokenizer", "create_datasets", "run_pretraining", "extract_electra_model", "evaluate_perplexity",
           "evaluate_downstream", "convert_checkpoint")
"""The top-level scripts, each installed as the command ``lmpretrain-<name with hyphens>``."""


def command_name(script: str) -> str:
    return "lmpretrain-" + script.replace("_", "-")


def _run(script: str) -> None:
    module = importlib.import_module(f"lmpretrain.scripts.{script}")
    sys.exit(run_cli(module.main))


def train_tokenizer() -> None:
    _run("train_tokenizer")


def create_datasets() -> None:
    _run("create_datasets")


def run_pretraining() -> None:
    _run("run_pretraining")


def extract_electra_model() -> None:
    _run("extract_electra_model")


def evaluate_perplexity() -> None:
    _run("evaluate_perplexity")


def evaluate_downstream() -> None:
    _run("evaluate_downstream")


def convert_checkpoint() -> None:
    _run("convert_checkpoint")
