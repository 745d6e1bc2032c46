"""Test-only entry point: one of the scripts, stopped at a named point until a test signals or kills it.

    python tests/stop_at.py POINT READY_FILE SCRIPT <the script's flags>

At POINT the process writes READY_FILE (its pid) and sleeps, so that a test sends its real signal at exactly that
moment. The points wrap library functions from outside, as tests/inject_nan.py does; the library reads no switch:

- ``overwrite-delete:N``: --overwrite_output_dir, before its N-th folder deletion (run_dir's rmtree)
- ``extract-rename:N``: extract_electra_model.py, before the N-th part is renamed into place
- ``tokenizer-trained``: train_tokenizer.py, after the pre-tokenized text is written, before the subword training
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lmpretrain.errors import run_cli  # noqa: E402


def stop(ready: Path) -> None:
    ready.write_text(str(os.getpid()))
    while True:  # signal handlers run between sleeps
        time.sleep(0.05)


def before_call(function, nth: int, ready: Path):
    calls = 0

    def wrapper(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == nth:
            stop(ready)
        return function(*args, **kwargs)

    return wrapper


def install(point: str, ready: Path) -> None:
    name, _, count = point.partition(":")
    if name == "overwrite-delete":
        from lmpretrain import run_dir

        proxy = types.ModuleType("shutil")  # run_dir's own view of shutil, nobody else's
        proxy.__dict__.update(shutil.__dict__)
        proxy.rmtree = before_call(shutil.rmtree, int(count), ready)
        run_dir.shutil = proxy
    elif name == "extract-rename":
        from lmpretrain import export

        export.publish = before_call(export.publish, int(count), ready)
    elif name == "tokenizer-trained":
        from lmpretrain.tokenization import training

        pretokenize = training._pretokenize

        def pretokenize_then_stop(*args, **kwargs):
            result = pretokenize(*args, **kwargs)
            stop(ready)
            return result

        training._pretokenize = pretokenize_then_stop
    else:
        raise SystemExit(f"unknown stop point {point}")


if __name__ == "__main__":
    point, ready, script = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    install(point, ready)
    module = importlib.import_module(Path(script).stem)
    sys.exit(run_cli(module.main, sys.argv[4:]))
