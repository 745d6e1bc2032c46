"""The README's commands are ones that work (issue 28, item 1): every flag a README command gives a script is one of
that script's flags, every --model_type is a preset of parameter.json, and the newcomer's path (the quick start,
then the continued-pretraining example on its model) runs on the bundled sample with few steps."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_cli_help import parser_of

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("run_pretraining.py", "train_tokenizer.py", "extract_electra_model.py", "evaluate_downstream.py",
           "evaluate_perplexity.py", "convert_checkpoint.py")
PRESETS = json.loads((ROOT / "parameter.json").read_text(encoding="utf-8"))


def shell_commands(text: str, languages=("bash", "sh")) -> list[tuple[int, str]]:
    """(line number, command) of each command in the text's fenced shell blocks (of a shell script, when
    ``languages`` is None); continuation lines joined, comment lines left out."""
    commands, fence, pending, start = [], None if languages else "bash", "", 0
    for number, line in enumerate(text.splitlines(), 1):
        if languages and line.startswith("```"):
            fence = line[3:].strip() if fence is None else None
            continue
        if fence not in ("bash", "sh") or (not pending and (not line.strip() or line.lstrip().startswith("#"))):
            continue
        start = start if pending else number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        commands.append((start, pending + line.strip()))
        pending = ""
    return commands


def script_commands() -> list[tuple[int, str, list[str]]]:
    """(README line, script, its arguments) of each README command that runs one of the scripts."""
    found = []
    for number, command in shell_commands((ROOT / "README.md").read_text(encoding="utf-8")):
        words = shlex.split(command, comments=True)
        at = next((i for i, word in enumerate(words) if Path(word).name in SCRIPTS), None)
        if at is not None:
            found.append((number, Path(words[at]).name, words[at + 1:]))
    return found


def test_the_readme_shows_every_script():
    assert {script for _, script, _ in script_commands()} == set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_readme_flag_and_model_type_exists(script):
    parser = parser_of(script)
    checked, problems = 0, []
    for number, name, args in script_commands():
        if name != script:
            continue
        for word in args:
            if not word.startswith("--"):
                continue
            flag = word.split("=", 1)[0]
            checked += 1
            if flag not in parser._option_string_actions:
                problems.append(f"README.md:{number}: {script} has no flag {flag}")
        values = dict(zip(args, args[1:]))
        shipped = Path(values.get("--parameter_file", "parameter.json")).name == "parameter.json"
        if shipped and "--model_type" in values and values["--model_type"] not in PRESETS:
            problems.append(f"README.md:{number}: --model_type {values['--model_type']} is not in parameter.json")
    assert checked, f"no {script} command in the README"
    assert not problems, "\n".join(problems)


def _run(command: str, cwd: Path, env: dict) -> str:
    result = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True)
    tail = result.stdout[-2000:] + result.stderr[-4000:]
    assert result.returncode == 0, f"{command}\nexit {result.returncode}\n{tail}"
    return result.stdout + result.stderr


def _fewer_steps(command: str, steps: int) -> str:
    return f"{command} --train_steps {steps}" if "run_pretraining.py" in command else command


@pytest.mark.slow
def test_quick_start_then_continued_pretraining_run(tmp_path):
    """The quick start's commands (scripts/quickstart.sh, after its install), then the README's continued-pretraining
    example on the model it left, run as written in a fresh directory, with --train_steps added."""
    for name in ("samples", "scripts", "parameter.json", *SCRIPTS):
        (tmp_path / name).symlink_to(ROOT / name)
    env = {**os.environ, "PY": sys.executable, "OUT": "out/quickstart", "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "LMP_NO_PROGRESS": "1",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    quick = [command for _, command in shell_commands((ROOT / "scripts" / "quickstart.sh").read_text(), None)
             if command.startswith("$PY ")]
    assert [c.split()[1] for c in quick] == ["train_tokenizer.py", "run_pretraining.py", "scripts/quickstart_demo.py"]
    for command in quick:
        output = _run(_fewer_steps(command, 12), tmp_path, env)
    assert "ids equal to FastEncoder's: True" in output
    assert (tmp_path / "out/quickstart/bert-tiny/train_summary.json").is_file()
    # the README's perplexity command on the quick start's model
    readme_text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = [command for _, command in shell_commands(readme_text) if "evaluate_perplexity.py" in command]
    assert len(block) == 1 and "out/quickstart/bert-tiny" in block[0]
    output = _run(block[0].replace("python ", f"{sys.executable} ", 1), tmp_path, env)
    assert json.loads(next(line for line in output.splitlines() if line.startswith("{")))["perplexity"] > 1

    block = [command for _, command in shell_commands(readme_text) if "hf/bert-mlm" in command]
    assert len(block) == 2 and "--model_type bert-tiny-further" in block[1]
    for command in block:
        _run(_fewer_steps(command.replace("python ", f"{sys.executable} ", 1), 4), tmp_path, env)
    summary = json.loads((tmp_path / "out/bert-domain/train_summary.json").read_text())
    assert summary["step"] == 4


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation but - and _ dropped, spaces as -."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_the_readme_links_to_its_own_sections_and_lists_them():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    headings = re.findall(r"^#{2,3} (.+)$", prose, flags=re.M)
    anchors = {_slug(h) for h in headings}
    links = set(re.findall(r"\]\(#([^)]+)\)", text))
    assert links and not links - anchors, sorted(links - anchors)
    assert {_slug(h) for h in headings if h != "Contents"} <= links  # the table of contents lists every section


def test_readme_lines_fit_in_120_characters():
    """Prose and commands wrap at 120 characters; only table rows (one line each in Markdown) may be longer."""
    long = [f"README.md:{n}" for n, line in enumerate((ROOT / "README.md").read_text(encoding="utf-8").splitlines(), 1)
            if len(line) > 120 and not line.startswith("|")]
    assert not long, long


def _flag_table(script: str) -> list[str]:
    """The first column of the first flag table after the README's section about ``script`` (ELECTRA's for
    extract_electra_model.py): the flags it names."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    if script == "extract_electra_model.py":
        found = re.search(r"^## ELECTRA: pretrain, extract", text, flags=re.M)
    else:  # "## run_pretraining.py", or a section named after what the script is for: "## Is ... (evaluate_x.py)"
        found = re.search(rf"^## (?:{re.escape(script)}|.*\({re.escape(script)}\))$", text, flags=re.M)
    assert found, f"no README section for {script}"
    rows = re.search(r"^\| flag \|.*?\n((?:\|.*\n)+)", text[found.start():], flags=re.M).group(1)
    return [flag for row in rows.splitlines()[1:] for flag in re.findall(r"`(--[\w-]+)", row.split("|")[1])]


@pytest.mark.parametrize("script", SCRIPTS)
def test_the_readme_flag_table_lists_every_flag_and_no_other(script):
    """Each script's flag table and its parser agree: every flag (any of its spellings) has a row, and every flag
    a row names is the parser's."""
    parser = parser_of(script)
    listed = _flag_table(script)
    flags = [action.option_strings for action in parser._actions if not isinstance(action, argparse._HelpAction)]
    missing = [names[0] for names in flags if not set(names) & set(listed)]
    unknown = [flag for flag in listed if flag not in parser._option_string_actions]
    assert not missing and not unknown, f"{script}: not in the README's table {missing}; not flags {unknown}"
