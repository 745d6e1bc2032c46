"""Every flag of every script has help text, and --help shows each optional flag's default (issue 14, item 7)."""

import argparse
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("run_pretraining.py", "train_tokenizer.py", "extract_electra_model.py")


def parser_of(script: str) -> argparse.ArgumentParser:
    """The script's own parser, caught as its main() builds it (argparse's parse_args is intercepted)."""
    if script == "run_pretraining.py":
        from lmpretrain.run_config import build_parser

        return build_parser()
    spec = importlib.util.spec_from_file_location(script[:-3], ROOT / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    caught = []

    class Caught(Exception):
        pass

    def catch(self, *args, **kwargs):
        caught.append(self)
        raise Caught

    original = argparse.ArgumentParser.parse_args
    argparse.ArgumentParser.parse_args = catch
    try:
        with pytest.raises(Caught):
            module.main([])
    finally:
        argparse.ArgumentParser.parse_args = original
    return caught[0]


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
        formatter = parser._get_formatter()  # this flag's own entry, as --help prints it
        formatter.add_argument(action)
        shown = f"(default: {action.default})"
        assert shown in " ".join(formatter.format_help().split()), f"{script}: {action.option_strings[0]}"
        assert action.option_strings[0] in text
    assert text.count("(default: ") == sum(not a.required for a in actions)
