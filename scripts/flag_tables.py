"""The flag tables of README.md and docs/*.md, rendered from each script's own argparse parser (one source of truth).

A table lives between two markers; everything between them is generated:

    <!-- flags:run_pretraining.py -->
    | flag | meaning |
    ...
    <!-- /flags -->

    python scripts/flag_tables.py --check   # exit 1, naming each stale table, when one differs from its parser
    python scripts/flag_tables.py --write   # rewrite every table from the parsers
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("train_tokenizer.py", "run_pretraining.py", "create_datasets.py", "extract_electra_model.py",
           "evaluate_perplexity.py", "evaluate_downstream.py", "convert_checkpoint.py")
BLOCK = re.compile(r"(<!-- flags:(?P<script>[\w.]+) -->\n)(?P<table>.*?)(<!-- /flags -->)", re.S)
_NO_DEFAULT = re.compile(r" \(default: (?:None|False)\)$")


class _Caught(Exception):
    pass


def parser_of(script: str) -> argparse.ArgumentParser:
    """The script's own parser, caught as its ``main([])`` builds it (``parse_args`` is intercepted)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    if script == "run_pretraining.py":
        from lmpretrain.run_config import build_parser

        return build_parser()
    spec = importlib.util.spec_from_file_location(f"_flags_{script[:-3]}", ROOT / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    caught: list[argparse.ArgumentParser] = []

    def catch(self, *args, **kwargs):
        caught.append(self)
        raise _Caught

    original = argparse.ArgumentParser.parse_args
    argparse.ArgumentParser.parse_args = catch
    try:
        module.main([])
    except _Caught:
        pass
    finally:
        argparse.ArgumentParser.parse_args = original
    if not caught:
        raise RuntimeError(f"{script}: main([]) built no parser")
    return caught[0]


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _flag(action: argparse.Action) -> str:
    first, *aliases = action.option_strings
    name = f"`{first}`"
    if action.choices is not None:
        name = f"`{first} {{{','.join(str(choice) for choice in action.choices)}}}`"
    elif action.metavar and action.nargs != 0:
        name = f"`{first} {action.metavar}`"
    if aliases:
        name += " (alias " + ", ".join(f"`{alias}`" for alias in aliases) + ")"
    return name


def render(script: str) -> str:
    """The script's flag table: one row per flag (its spellings, then its help as ``--help`` shows it, the default
    included; "required" for a required flag)."""
    parser = parser_of(script)
    formatter = parser._get_formatter()
    rows = ["| flag | meaning |", "|---|---|"]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or not action.option_strings:
            continue
        meaning = _NO_DEFAULT.sub("", " ".join(formatter._expand_help(action).split()))
        if action.required:
            meaning = f"(required) {meaning}"
        rows.append(f"| {_flag(action)} | {_cell(meaning)} |")
    return "\n".join(rows) + "\n"


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def regenerate(text: str, tables: dict[str, str]) -> str:
    def fill(match: re.Match) -> str:
        script = match.group("script")
        if script not in tables:
            tables[script] = render(script)
        return match.group(1) + tables[script] + match.group(4)

    return BLOCK.sub(fill, text)


def stale() -> list[str]:
    """The documents whose tables differ from what the parsers give (relative paths)."""
    tables: dict[str, str] = {}
    return [os.path.relpath(path, ROOT) for path in documents()
            if regenerate(text := path.read_text(encoding="utf-8"), tables) != text]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="exit 1 if a committed table differs from its parser")
    mode.add_argument("--write", action="store_true", help="rewrite the tables from the parsers")
    args = parser.parse_args(argv)
    tables: dict[str, str] = {}
    changed = []
    for path in documents():
        text = path.read_text(encoding="utf-8")
        new = regenerate(text, tables)
        if new != text:
            changed.append(os.path.relpath(path, ROOT))
            if args.write:
                path.write_text(new, encoding="utf-8")
    if args.check and changed:
        print(f"stale flag tables in {', '.join(changed)}: run python scripts/flag_tables.py --write", file=sys.stderr)
        return 1
    if args.write:
        print(f"rewrote {', '.join(changed) or 'nothing (all tables current)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
