"""Every flag of every script has help text, and --help shows each optional flag's default (issue 14, item 7)."""

import argparse
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("run_pretraining.py", "train_tokenizer.py", "extract_electra_model.py", "evaluate_downstream.py",
           "evaluate_perplexity.py", "convert_checkpoint.py")
STATES_DEFAULT = re.compile(r"\bdefault\b")


def entry_of(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The flag's own entry, as --help prints it (whitespace collapsed)."""
    formatter = parser._get_formatter()
    formatter.add_argument(action)
    return " ".join(formatter.format_help().split())


# scripts/flag_tables.py renders the docs' flag tables from the same parsers: one way to catch a script's parser
_spec = importlib.util.spec_from_file_location("flag_tables", ROOT / "scripts" / "flag_tables.py")
flag_tables = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(flag_tables)
parser_of = flag_tables.parser_of  # the script's own parser, caught as its main([]) builds it


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_flag_has_help_and_shows_its_default(script):
    parser = parser_of(script)
    actions = [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]
    assert actions
    missing = [a.option_strings[0] for a in actions if not (a.help or "").strip()]
    assert not missing, f"{script}: flags without help: {missing}"
    result = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True,
                            env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    for action in actions:
        if action.required:
            continue
        entry = entry_of(parser, action)
        # the value, or, where the help says what an unset flag means, its own words (one default: see below)
        shown = f"(default: {action.default})" if not STATES_DEFAULT.search(action.help) else "default"
        assert shown in entry, f"{script}: {action.option_strings[0]}"
        assert action.option_strings[0] in text
    assert text.count("default") == sum(not a.required for a in actions)


@pytest.mark.parametrize("script", SCRIPTS)
def test_no_flag_shows_two_defaults(script):
    """Issue 28: `(default 32768; ...) (default: None)`, `default: the machine's cores) (default: 2)` contradicted
    themselves. Each optional flag's entry in --help names its default exactly once, a required one never."""
    parser = parser_of(script)
    twice = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        count = len(STATES_DEFAULT.findall(entry_of(parser, action)))
        if count != (0 if action.required else 1):
            twice.append(f"{action.option_strings[0]}: {count}")
    assert not twice, f"{script}: {twice}"


@pytest.mark.parametrize("script", ["train_tokenizer.py", "extract_electra_model.py"])
def test_the_examples_keep_their_line_breaks(script):
    """The epilog's example commands, as --help prints them, are the docstring's lines, continuations included."""
    result = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True,
                            env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    commands = [line for line in result.stdout.splitlines() if line.strip().startswith("python ")]
    assert commands and all(line.rstrip().endswith("\\") for line in commands), commands


def test_extraction_help_names_deberta_v3():
    result = subprocess.run([sys.executable, "extract_electra_model.py", "--help"], cwd=ROOT, capture_output=True,
                            text=True, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert "ELECTRA or DeBERTa-v3 checkpoint" in result.stdout and "--model_type deberta-v3-tiny" in result.stdout
