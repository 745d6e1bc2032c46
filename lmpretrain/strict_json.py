"""Strict JSON for files people write (parameter.json, jsonl corpora): a key given twice in one object is an error
naming the key and its line, where ``json`` would silently keep the last value."""

from __future__ import annotations

import json
from typing import Any


class DuplicateKey(ValueError):
    """``key`` is given twice in one object: at ``line`` (1-based, the second time), under ``path`` (the keys of the
    objects around it, outermost first)."""

    def __init__(self, key: str, line: int, path: tuple[str, ...]):
        super().__init__(f"line {line}: key {key!r} is given twice")
        self.key, self.line, self.path = key, line, path


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise DuplicateKey(next(k for i, (k, _) in enumerate(pairs) if k in dict(pairs[:i])), 0, ())
    return result


def loads_strict(text: str) -> Any:
    """``json.loads`` that raises :class:`DuplicateKey` (with the line and the enclosing keys) for a repeated key;
    ``json.JSONDecodeError`` as usual for malformed text."""
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except DuplicateKey:
        raise _locate_duplicate(text) from None


def _locate_duplicate(text: str) -> DuplicateKey:
    """Walk the (well-formed) text and return the first key repeated in its object, with its line and path."""
    stack: list[tuple[set | None, str | None]] = []  # per open object: keys seen, the key being read; None: array
    i, line, n = 0, 1, len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
        elif c in "{[":
            stack.append((set() if c == "{" else None, None))
        elif c in "}]":
            stack.pop()
        elif c == '"':
            start = i
            i += 1
            while text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            j = i + 1
            while j < n and text[j] in " \t\r\n":
                j += 1
            if j < n and text[j] == ":" and stack and stack[-1][0] is not None:
                key = json.loads(text[start:i + 1])
                seen = stack[-1][0]
                path = tuple(k for _, k in stack[:-1] if k is not None)
                if key in seen:
                    return DuplicateKey(key, line, path)
                seen.add(key)
                stack[-1] = (seen, key)
        i += 1
    return DuplicateKey("?", 0, ())  # not reached: called only for text the hook found a repeated key in
