"""The README's and the guides' commands are ones that work (issue 28, items 1-2): every flag a command in README.md or
docs/*.md gives a script is one of that script's flags and parses, every --model_type is a preset of parameter.json,
the flag tables are the parsers' own (scripts/flag_tables.py), and the newcomer's path (the quick start, the README's
tour, then the continued-pretraining guide's example on its model) runs on the bundled sample with few steps."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_cli_help import flag_tables, parser_of

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("run_pretraining.py", "train_tokenizer.py", "extract_electra_model.py", "evaluate_downstream.py",
           "evaluate_perplexity.py", "convert_checkpoint.py")
CHECKED = (*SCRIPTS, "create_datasets.py")
DOCUMENTS = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))
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


def script_commands() -> list[tuple[str, str, list[str]]]:
    """(document:line, script, its arguments) of each command in README.md and docs/*.md that runs a script."""
    found = []
    for document in DOCUMENTS:
        for number, command in shell_commands(document.read_text(encoding="utf-8")):
            words = shlex.split(command, comments=True)
            at = next((i for i, word in enumerate(words) if Path(word).name in CHECKED), None)
            if at is not None:
                found.append((f"{document.relative_to(ROOT)}:{number}", Path(words[at]).name, words[at + 1:]))
    return found


def test_the_readme_shows_every_script():
    assert {script for _, script, _ in script_commands()} == set(CHECKED)
    readme = {script for where, script, _ in script_commands() if where.startswith("README.md:")}
    assert {"train_tokenizer.py", "run_pretraining.py", "evaluate_perplexity.py"} <= readme  # the tour


@pytest.mark.parametrize("script", CHECKED)
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
                problems.append(f"{number}: {script} has no flag {flag}")
        values = dict(zip(args, args[1:]))
        shipped = Path(values.get("--parameter_file", "parameter.json")).name == "parameter.json"
        if shipped and "--model_type" in values and values["--model_type"] not in PRESETS:
            problems.append(f"{number}: --model_type {values['--model_type']} is not in parameter.json")
        # a whole command (not an elided one) parses as the script parses it (--list_presets: its own small parser)
        if "..." not in args and "--list_presets" not in args and not problems:
            with contextlib.redirect_stderr(io.StringIO()) as error:
                try:
                    parser.parse_args(args)
                except SystemExit:
                    last = error.getvalue().strip().splitlines()[-1]
                    problems.append(f"{number}: {script} {shlex.join(args)}: {last}")
    assert checked, f"no {script} command in the README or docs/"
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
    # the README's tour and docs/evaluation.md: the perplexity command on the quick start's model
    blocks = {command for document in DOCUMENTS for _, command in shell_commands(document.read_text(encoding="utf-8"))
              if "evaluate_perplexity.py" in command}
    assert blocks and all("out/quickstart/bert-tiny" in command for command in blocks)
    for command in sorted(blocks):
        output = _run(command.replace("python ", f"{sys.executable} ", 1), tmp_path, env)
        assert json.loads(next(line for line in output.splitlines() if line.startswith("{")))["perplexity"] > 1

    guide = (ROOT / "docs" / "continued-pretraining.md").read_text(encoding="utf-8")
    block = [command for _, command in shell_commands(guide) if "hf/bert-mlm" in command]
    assert len(block) == 2 and "--model_type bert-tiny-further" in block[1]
    for command in block:
        _run(_fewer_steps(command.replace("python ", f"{sys.executable} ", 1), 4), tmp_path, env)
    summary = json.loads((tmp_path / "out/bert-domain/train_summary.json").read_text())
    assert summary["step"] == 4


def test_the_readme_tour_is_the_quick_start():
    """The tour's first three commands are scripts/quickstart.sh's (run by the slow test above), with its paths."""
    quick = [command.replace("$PY ", "python ").replace('"$OUT', "out/quickstart").replace('/tokenizer"', "/tokenizer")
             .replace('/bert-tiny"', "/bert-tiny")
             for _, command in shell_commands((ROOT / "scripts" / "quickstart.sh").read_text(), None)
             if command.startswith("$PY ")]
    tour = [command for _, command in shell_commands((ROOT / "README.md").read_text(encoding="utf-8"))
            if command.startswith("python ")]
    assert [" ".join(c.split()) for c in tour[:3]] == [" ".join(c.split()) for c in quick]


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation but - and _ dropped, spaces as -."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(document: Path) -> list[str]:
    prose = re.sub(r"^```.*?^```", "", document.read_text(encoding="utf-8"), flags=re.S | re.M)
    return [_slug(h) for h in re.findall(r"^#{1,3} (.+)$", prose, flags=re.M)]


def test_the_readme_links_to_its_own_sections_and_lists_them():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    anchors = set(_anchors(ROOT / "README.md"))
    links = set(re.findall(r"\]\(#([^)]+)\)", text))
    assert links and not links - anchors, sorted(links - anchors)
    sections = re.findall(r"^## (.+)$", re.sub(r"^```.*?^```", "", text, flags=re.S | re.M), flags=re.M)
    assert {_slug(h) for h in sections if h != "Contents"} <= links  # the table of contents lists every section
    guides = set(re.findall(r"\]\(docs/([\w-]+\.md)\)", text))
    assert guides == {path.name for path in DOCUMENTS[1:]}  # ... and its guides table every guide


def test_every_link_between_the_readme_and_the_guides_resolves():
    problems = []
    for document in DOCUMENTS:
        for target in re.findall(r"\]\(([^)\s]+)\)", document.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+://", target):
                continue
            path, _, anchor = target.partition("#")
            linked = (document.parent / path).resolve() if path else document
            if not linked.exists():
                problems.append(f"{document.relative_to(ROOT)}: {target}: no such file")
            elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
                problems.append(f"{document.relative_to(ROOT)}: {target}: no such section")
    assert not problems, problems


def test_readme_lines_fit_in_120_characters():
    """Prose and commands wrap at 120 characters; only table rows (one line each in Markdown) may be longer."""
    long = [f"{document.relative_to(ROOT)}:{n}" for document in DOCUMENTS if document.name != "ARCHITECTURE.md"
            for n, line in enumerate(document.read_text(encoding="utf-8").splitlines(), 1)
            if len(line) > 120 and not line.startswith("|")]
    assert not long, long


def test_the_flag_tables_are_the_parsers_own():
    """Every table between flag markers is what scripts/flag_tables.py renders from the script's parser today
    (after changing a flag: python scripts/flag_tables.py --write), and every script has one."""
    assert flag_tables.stale() == []
    blocks = [match.group("script") for document in DOCUMENTS
              for match in flag_tables.BLOCK.finditer(document.read_text(encoding="utf-8"))]
    assert sorted(blocks) == sorted(flag_tables.SCRIPTS) and set(CHECKED) <= set(blocks)


def _flag_table(script: str) -> list[str]:
    """The first column of the script's committed flag table: the flags it names."""
    for document in DOCUMENTS:
        for match in flag_tables.BLOCK.finditer(document.read_text(encoding="utf-8")):
            if match.group("script") == script:
                rows = match.group("table").splitlines()[2:]
                return [flag for row in rows for flag in re.findall(r"`(--[\w-]+)", row.split(" | ")[0])]
    raise AssertionError(f"no flag table for {script}")


@pytest.mark.parametrize("script", CHECKED)
def test_the_readme_flag_table_lists_every_flag_and_no_other(script):
    """Each script's flag table and its parser agree: every flag (any of its spellings) has a row, and every flag
    a row names is the parser's."""
    parser = parser_of(script)
    listed = _flag_table(script)
    flags = [action.option_strings for action in parser._actions if not isinstance(action, argparse._HelpAction)]
    missing = [names[0] for names in flags if not set(names) & set(listed)]
    unknown = [flag for flag in listed if flag not in parser._option_string_actions]
    assert not missing and not unknown, f"{script}: not in the table {missing}; not flags {unknown}"


def test_flag_tables_check_and_write(tmp_path, monkeypatch):
    """--check fails on a stale table and --write brings it back to the parser's."""
    document = tmp_path / "README.md"
    (tmp_path / "docs").mkdir()
    document.write_text("x\n<!-- flags:evaluate_perplexity.py -->\n| flag | meaning |\n<!-- /flags -->\n")
    monkeypatch.setattr(flag_tables, "documents", lambda: [document])
    assert flag_tables.main(["--check"]) == 1
    assert flag_tables.main(["--write"]) == 0 and flag_tables.main(["--check"]) == 0
    assert flag_tables.render("evaluate_perplexity.py") in document.read_text()
