"""The model dir belongs to one run at a time: its lock, and what a run may do with a dir an earlier run used.

The lock is ``<model_dir>/.lmpretrain.lock``, created with ``O_CREAT | O_EXCL`` (atomic on local filesystems and on
NFSv3+, which is what a shared filesystem needs: no ``flock``, whose NFS behaviour varies) and holding the holder's
host, pid and process start time. Global rank 0 alone takes it: it is the only process that writes the model dir
(checkpoints, logs, the final model), whether the dir is shared by the nodes or node-local. A lock whose holder is
dead (same host: no such pid, or a pid reused by a younger process) is taken over; one held on another host is
never taken over (its liveness cannot be seen from here): the error says how to remove it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from . import checkpoint as ckpt
from .distributed import Layout, all_reduce_sum
from .downstream_watch import LOG_FILE as PROBE_LOG
from .downstream_watch import RESULTS_DIR as PROBE_DIR
from .errors import Preempted, UserError
from .fsutil import atomic_write_text, process_is_running
from .log import get_logger
from .resume import compare, judge, newest_complete

logger = get_logger(__name__)

LOCK_FILE = ".lmpretrain.lock"
REPLACING_FILE = ".lmpretrain.replacing"
"""Written (atomically) by --overwrite_output_dir before it deletes anything and removed once everything is deleted:
what a dir holding it has left of a run is garbage, which no run resumes or exports."""
SUMMARY_FILE = "train_summary.json"
LOG_FILE = "train_log.jsonl"
RUNS_DIR = "runs"
# what a final export writes at the top of the model dir besides the tokenizer files and part folders
MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors", "model.safetensors.index.json",
               "pytorch_model.bin", "lmpretrain_config.json")


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid from the holder."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


class ModelDirLock:
    """Held for a run's whole life (a context manager); released on every exit path that runs Python code."""

    def __init__(self, model_dir: str | Path, lock_path: str | Path | None = None):
        """``lock_path``: the lock file, when not ``<model_dir>/.lmpretrain.lock`` (train_tokenizer.py locks beside
        its dir, which it replaces as a whole)."""
        self.model_dir = Path(model_dir)
        self.path = Path(lock_path) if lock_path is not None else self.model_dir / LOCK_FILE
        self.owner = {"host": socket.gethostname(), "pid": os.getpid(), "start": _start_time(os.getpid()),
                      "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        self.held = False

    def __enter__(self) -> ModelDirLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is None or not self._dead(holder):
                    raise UserError(self._in_use(holder)) from None
                self._take_over(holder)
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(json.dumps(self.owner))
            self.held = True
            return self
        raise UserError(self._in_use(self._holder()))

    def _holder(self) -> dict | None:
        try:
            holder = json.loads(self.path.read_text(encoding="utf-8"))
            return holder if isinstance(holder, dict) else {}
        except FileNotFoundError:
            return {"gone": True}
        except (OSError, ValueError):
            return {}  # being written this instant, or garbage: not provably dead

    def _dead(self, holder: dict) -> bool:
        if holder.get("gone"):
            return True
        pid = holder.get("pid")
        if holder.get("host") != socket.gethostname() or not isinstance(pid, int):
            return False
        if not process_is_running(pid):
            return True
        started = _start_time(pid)
        return holder.get("start") is not None and started is not None and started != holder["start"]

    def _take_over(self, holder: dict) -> None:
        if holder.get("gone"):
            return
        # renamed aside, then checked: of two processes taking over at once, only one moves the dead holder's file
        aside = self.path.with_name(f"{self.path.name}.stale-{self.owner['host']}-{self.owner['pid']}")
        try:
            os.replace(self.path, aside)
        except FileNotFoundError:
            return
        try:
            moved = json.loads(aside.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            moved = None
        if moved != holder:  # another process's fresh lock: put it back (nobody can have created one since)
            try:
                os.link(aside, self.path)
            except OSError:
                pass
        else:
            logger.warning("taking over the lock %s of a run that died (host %s, pid %s)", self.path,
                           holder.get("host"), holder.get("pid"))
        aside.unlink(missing_ok=True)

    def _in_use(self, holder: dict | None) -> str:
        if not holder:
            return (f"--model_dir {self.model_dir} is in use by another run (its lock {self.path} cannot be read); "
                    f"if no run uses this dir, delete the lock file")
        where = f"host {holder.get('host')}, pid {holder.get('pid')}, since {holder.get('since')}"
        advice = "wait for it to end or use another --model_dir"
        if holder.get("host") != socket.gethostname():
            advice += f"; if no run is alive on {holder.get('host')}, delete {self.path}"
        return f"--model_dir {self.model_dir} is in use by another run ({where}): {advice}"

    def __exit__(self, *exc) -> None:
        if self.held:
            try:
                if json.loads(self.path.read_text(encoding="utf-8")) == self.owner:
                    self.path.unlink()
            except (OSError, ValueError):
                pass
            self.held = False


def checkpoint_names(model_dir: Path) -> list[str]:
    from .checkpoint import list_checkpoints

    return [p.name for _, p in list_checkpoints(model_dir)]


def earlier_run_outputs(model_dir: Path) -> list[str]:
    """What in ``model_dir`` says an earlier run trained there: its checkpoints and its finished model."""
    found = checkpoint_names(model_dir)
    if (model_dir / SUMMARY_FILE).is_file():
        found.append(SUMMARY_FILE)
    found += [name for name in MODEL_FILES if (model_dir / name).is_file()]
    return found


def check_fresh_run(model_dir: str | Path, *, overwrite: bool, keep: list[Path], tokenizer_dir: str | Path,
                    part_folders: list[str]) -> None:
    """A run without --do_continue: refuse a dir that holds another run's checkpoints or model, or with
    ``overwrite`` (--overwrite_output_dir) remove that run's outputs (never ``keep``, e.g. the dataset cache)
    before anything new is written. Logs of a run that saved nothing are removed: they must not mix with ours."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return
    interrupted = (model_dir / REPLACING_FILE).exists()
    if interrupted and not overwrite:
        refuse_if_being_replaced(model_dir)
    used = earlier_run_outputs(model_dir)
    if used and not overwrite:
        shown = ", ".join(used[:4]) + (f" and {len(used) - 4} more" if len(used) > 4 else "")
        raise UserError(f"--model_dir {model_dir} holds an earlier run ({shown}): pass --do_continue to resume it, "
                        f"--overwrite_output_dir to delete it and start over, or choose another --model_dir")
    if not used and not interrupted:
        doomed = [model_dir / LOG_FILE, model_dir / RUNS_DIR, model_dir / PROBE_LOG, model_dir / PROBE_DIR]
    else:
        doomed = [model_dir / SUMMARY_FILE] + [model_dir / name for name in checkpoint_names(model_dir)]
        names = {LOG_FILE, RUNS_DIR, PROBE_LOG, PROBE_DIR, *MODEL_FILES, *part_folders}
        for checkpoint in doomed[1:]:  # what a final export copied from the checkpoints
            names.update(p.name for p in checkpoint.iterdir())
        tokenizer = Path(tokenizer_dir)
        if tokenizer.is_dir():
            names.update(p.name for p in tokenizer.iterdir() if p.is_file() and not p.name.startswith("."))
        names -= {"lmpretrain_checkpoint.json", "training_state.pt", LOCK_FILE}
        # the summary first: from the first deletion on, nothing claims a finished model
        doomed += [model_dir / name for name in sorted(names)]
    kept = {Path(p).resolve() for p in keep}

    def spared(path: Path) -> bool:
        resolved = path.resolve()
        return any(k == resolved or k.is_relative_to(resolved) or resolved.is_relative_to(k) for k in kept)

    doomed = [path for path in doomed if path.exists() and not spared(path)]
    marker = model_dir / REPLACING_FILE
    if used or interrupted:  # from here until the last deletion, what is left is marked as no run's
        atomic_write_text(marker, json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                              "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                                              "removing": [p.name for p in doomed]}))
    removed = []
    try:
        for path in doomed:
            if not path.exists():
                continue
            removed.append(path.name)
            if path.is_dir():
                if path.name.startswith("checkpoint-"):  # renamed first, as rotation does: never half a checkpoint-N
                    aside = path.with_name(f".{path.name}.deleting-{os.getpid()}")
                    path.rename(aside)
                    path = aside
                shutil.rmtree(path)
            else:
                path.unlink()
    except BaseException as stop:
        if used or interrupted:
            logger.warning("--overwrite_output_dir was stopped after deleting %d of the %d outputs of the earlier run "
                           "in %s; the rest is marked as being replaced (%s): no run resumes or exports it, and "
                           "rerunning with --overwrite_output_dir finishes deleting it", len(removed) - 1, len(doomed),
                           model_dir, REPLACING_FILE)
            if isinstance(stop, Preempted):
                stop.left = (f"--model_dir {model_dir} is left half-cleared, marked as being replaced "
                             f"({REPLACING_FILE}: no run resumes or exports what is left there); rerun with "
                             f"--overwrite_output_dir to finish the replacement and train the new run")
        raise
    marker.unlink(missing_ok=True)
    if interrupted:
        logger.warning("--overwrite_output_dir: finished deleting what an interrupted --overwrite_output_dir left in "
                       "%s (%s)", model_dir, ", ".join(removed) or "nothing was left")
    elif removed and used:
        logger.warning("--overwrite_output_dir: removed the earlier run's outputs from %s (%s)", model_dir,
                       ", ".join(removed))
    elif removed:
        logger.warning("removed %s from %s: left by a run that saved no checkpoint", " and ".join(removed), model_dir)


@dataclass(frozen=True)
class DirOutcome:
    """What a run found in its model dir: ``finished`` (the summary of a run with nothing left to do; ``{}`` on the
    processes other than rank 0) or None, and ``history``: the changes this and earlier resumes accepted, which each
    checkpoint records."""

    finished: dict | None = None
    history: tuple = ()


def refuse_if_being_replaced(model_dir: str | Path) -> None:
    """A dir whose --overwrite_output_dir was interrupted holds garbage: one error saying so (no resume, no export)."""
    marker = Path(model_dir) / REPLACING_FILE
    if not marker.exists():
        return
    try:
        record = json.loads(marker.read_text(encoding="utf-8"))
        since = f" (pid {record['pid']} on {record['host']}, {record['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        since = ""
    raise UserError(f"--model_dir {model_dir} was being cleared by --overwrite_output_dir when it was stopped{since}: "
                    f"what is left there ({marker.name} marks it) is no run to resume, export or keep; rerun with "
                    f"--overwrite_output_dir (without --do_continue) to finish deleting it and start over")


@contextlib.contextmanager
def own_model_dir(run, layout: Layout) -> Iterator[DirOutcome]:
    """Hold the model dir's lock for the run's life (global rank 0, the only writer of the dir) and settle, before
    any long work, what this run does with what the dir holds (``run``: the ``prepare.Run``). Every process learns
    rank 0's outcome through one all-reduce (0 go, 1 finished, 2 failed)."""
    outcome, failure, found = 0.0, None, DirOutcome()
    with contextlib.ExitStack() as stack:
        if layout.is_main:
            try:
                stack.enter_context(ModelDirLock(run.description.outputs.model_dir))
                found = settle_model_dir(run, layout)
                outcome = 1.0 if found.finished is not None else 0.0
            except UserError as error:
                failure, outcome = error, 2.0
        agreed = float(all_reduce_sum(torch.tensor([outcome], dtype=torch.float64))[0])
        if failure is not None:
            raise failure
        if agreed >= 2:
            raise UserError("rank 0 stopped before training (its error line says why)")
        yield found if layout.is_main else DirOutcome(finished={} if agreed >= 1 else None)


def settle_model_dir(run, layout: Layout) -> DirOutcome:
    """A fresh run: refuse a used dir, or clear it with --overwrite_output_dir. --do_continue: compare the newest
    checkpoint's config with this run's (every difference printed; breaking or unaccepted ones are an error), and
    return the summary of a run that has already reached its steps."""
    data, outputs = run.description.data, run.description.outputs
    model_dir = Path(outputs.model_dir)
    if not outputs.resume:
        keep = [Path(data.cache_dir), Path(data.tokenizer_dir), *map(Path, data.input_files),
                *map(Path, data.eval_files or ())]
        check_fresh_run(model_dir, overwrite=outputs.overwrite_output_dir, keep=keep, tokenizer_dir=data.tokenizer_dir,
                        part_folders=[p.folder for p in run.description.model.family.parts if p.folder])
        return DirOutcome()
    refuse_if_being_replaced(model_dir)
    newest = newest_complete(model_dir)
    if newest is None:
        return DirOutcome()  # the resume itself says why no checkpoint is usable
    path, saved = newest
    current = run.record()

    changes = compare(saved, current, run.description.model.family.shape_fields())
    judge(changes, path, accept_changed_run=run.description.outputs.accept_changed_run, announce=True)
    step, train_steps = ckpt.step_of(path), run.description.optim.train_steps
    summary_path = model_dir / SUMMARY_FILE
    if step >= train_steps and summary_path.is_file():
        try:
            summary = json.loads(summary_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            summary = {}
        if summary.get("step") == step:
            logger.warning("--do_continue: the run in %s is finished: %s is at step %d and the run has %d train "
                           "steps; nothing to do (its outputs are left as they are)", model_dir, path.name, step,
                           train_steps)
            return DirOutcome(finished=summary)
    if step > train_steps:
        logger.warning("--do_continue: %s is past the run's %d train steps: exporting it as the final model",
                       path.name, train_steps)
    history = tuple(saved.get("history", []))
    if changes:
        history += ({"step": step, "changes": [str(c) for c in changes], "kinds": [c.kind for c in changes]},)
    return DirOutcome(history=history)
