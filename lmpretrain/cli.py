"""What every script's argument parser shares: help text that shows each flag's default."""

from __future__ import annotations

import argparse
import re

_STATES_DEFAULT = re.compile(r"\bdefault\b")


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """argparse's ``ArgumentDefaultsHelpFormatter`` (``(default: ...)`` after each flag's help), keeping the
    description's and the examples' line breaks. One default per flag: a help text that states its own default
    (``default: the machine's cores``, ``wordpiece (default)``: a flag whose unset value means something the value
    itself cannot say) gets no second one; a required flag has no default to show."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.required or _STATES_DEFAULT.search(action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


def make_parser(doc: str | None) -> argparse.ArgumentParser:
    """A script's parser: its docstring's first line as the description, the rest (the example) as the epilog."""
    lines = (doc or "").strip().splitlines()
    return argparse.ArgumentParser(description=lines[0] if lines else None,
                                   epilog="\n".join(lines[1:]).strip() or None, formatter_class=HelpFormatter)
