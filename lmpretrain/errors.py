"""One kind of error for bad input, and the wrapper every script's ``main`` runs in.

A :class:`UserError` is a problem with what the user gave us (a missing file, a bad key in
parameter.json, a tokenizer that does not match a checkpoint). Scripts print it as one line
naming the file, line or key, and exit non-zero, without a Python traceback.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """Bad input or environment, reported to the user as one clear line."""


class Preempted(BaseException):
    """SIGTERM / SIGUSR1 before the training loop (validation, the dataset build): raised where the program is, so
    that every ``finally`` and ``except BaseException`` cleans up (temporary dirs, locks) on the way out. A
    BaseException, like KeyboardInterrupt, so that no ``except Exception`` swallows it."""

    left: str | None = None
    """What the interrupted step left behind, when it is more than nothing (an interrupted --overwrite_output_dir
    sets it): said in place of "nothing half-written is left"."""


class CheckpointError(Exception):
    """A checkpoint that cannot be used (incomplete, truncated, corrupt); the message names what is wrong."""


def _safetensors_error() -> type[Exception]:
    try:
        from safetensors import SafetensorError
    except ImportError:  # older safetensors
        return ValueError
    return SafetensorError


# what loading a bad model dir or checkpoint raises (safetensors' own error derives from Exception only)
LOAD_ERRORS = (CheckpointError, UserError, RuntimeError, OSError, ValueError, KeyError, EOFError,
               _safetensors_error())


def run_cli(main: Callable[[Sequence[str] | None], object], argv: Sequence[str] | None = None) -> int:
    """Run a script's ``main(argv)``; turn a :class:`UserError` into ``error: ...`` on stderr and exit code 2."""
    try:
        main(argv)
    except UserError as error:
        logging.shutdown()
        print(f"error: {error}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except OSError as error:
        # A full disk, an unwritable directory or a vanished file: name it, no traceback.
        if error.errno is not None:
            where = f" ({error.filename})" if error.filename else ""
            print(f"error: {error.strerror}{where}", file=sys.stderr, flush=True)
            return EXIT_USER_ERROR
        raise
    return 0
