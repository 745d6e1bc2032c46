"""--downstream_task: the downstream probe over a run's checkpoints, beside the training and never in its way.

On rank 0, each saved checkpoint whose step is a multiple of --downstream_every, and the final model (the final
step's checkpoint), is probed: its model and tokenizer files are hard-linked (copied where the filesystem cannot) into
``<model_dir>/downstream/<task>/.snapshot-<step>/`` at once, so that save-total-limit may delete the checkpoint while
it is probed; one background thread then runs the probes one at a time, each in a child process (``python -m
lmpretrain.downstream_watch``: :func:`lmpretrain.downstream.evaluate`, evaluate_downstream.py's code, with its seeds
0, 1, ...) at low priority (``os.nice``) with a few torch threads (:func:`probe_threads`). What has finished is
collected at each save and at the end: ``downstream/<task>/<metric>`` (the test split's mean; ``dev_<metric>``, and
``_std`` over several seeds) goes to the trackers at the checkpoint's step, one line to ``downstream_log.jsonl``, the
probe's own JSON and log stay in ``downstream/<task>/step-<step>/``. A failed probe is a warning and the training goes
on. The run waits for its probes at the end (after the export); a preempted or failed run stops them. A resumed run
keeps the log's lines up to its step and probes what the log lacks among the checkpoints it finds (steps a preempted
run left unprobed included), never a step already recorded.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .log import get_logger, strict_dumps

# torch (through .checkpoint) is imported where it is used: the child process lowers its priority before it loads

logger = get_logger(__name__)

LOG_FILE = "downstream_log.jsonl"
"""In the model dir: one line per probe (its step, its metrics, or its error)."""
RESULTS_DIR = "downstream"
"""In the model dir: ``<task>/step-<step>/`` with the probe's downstream_results.json and probe.log."""
NICE = 10
WAIT_NOTICE_S = 60.0


def probe_threads() -> int:
    """The probe's torch threads: a quarter of the machine's cores, 1 to 4 (the training keeps the rest)."""
    return max(1, min(4, (os.cpu_count() or 1) // 4))


def metric_scalars(task: str, results: dict) -> dict[str, float]:
    """A probe's results (downstream_results.json) as scalars: the test split's mean as ``downstream/<task>/<metric>``,
    the dev split's as ``dev_<metric>``, and over several seeds their spread as ``..._std``."""
    scalars = {}
    for split, prefix in (("test", ""), ("dev", "dev_")):
        for name, value in results["mean"][split].items():
            scalars[f"downstream/{task}/{prefix}{name}"] = value
            if len(results["per_seed"]) > 1:
                scalars[f"downstream/{task}/{prefix}{name}_std"] = results["std"][split][name]
    return scalars


@dataclass
class _Job:
    step: int
    snapshot: Path
    output_dir: Path
    seconds: float = 0.0


class DownstreamWatch:
    """The probes of one run (inactive without --downstream_task and on ranks other than 0: every call is then a
    no-op). ``step``: where the run starts (0, or the step it resumed at)."""

    def __init__(self, description, layout, *, step: int):
        self.settings = description.outputs.downstream
        self.active = self.settings is not None and layout.is_main
        if not self.active:
            return
        self.model_dir = Path(description.outputs.model_dir)
        self.final_step = description.optim.train_steps
        self.root = self.model_dir / RESULTS_DIR / self.settings.task
        self.log_path = self.model_dir / LOG_FILE
        self.threads = probe_threads()
        self._jobs: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._outcomes: list[tuple[_Job, dict | str | None]] = []
        self._pending: dict[int, str] = {}  # step -> "queued" | "running", until collected
        self._process: subprocess.Popen | None = None
        self._stopping = False
        self._recorded = self._keep_log(step)
        for leftover in self.root.glob(".snapshot-*") if self.root.is_dir() else ():
            shutil.rmtree(leftover, ignore_errors=True)  # an interrupted run's
        self._thread = threading.Thread(target=self._work, name="downstream-probe", daemon=True)
        self._thread.start()
        atexit.register(self.stop)
        s = self.settings
        logger.info("downstream probe: %s (%s) at every %d steps and the final model, %d seed(s) x %d epoch(s) on %s, "
                    "in a background process (nice %d, %d thread(s))", s.task, s.task_dir, s.every, s.seeds, s.epochs,
                    s.device, NICE, self.threads)
        from .checkpoint import MANIFEST, list_checkpoints

        for saved_step, path in list_checkpoints(self.model_dir):  # a resume: what the earlier run left unprobed
            if saved_step <= step and (path / MANIFEST).is_file():
                self._submit(saved_step, path)

    def _keep_log(self, step: int) -> set[int]:
        """The log's lines up to ``step`` kept (none for a fresh run); the steps they record for this task."""
        kept, recorded = [], set()
        if step and self.log_path.is_file():
            for line in self.log_path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    break  # a line cut by a crash ends the usable log
                if record.get("step", 0) <= step:
                    kept.append(line)
                    if record.get("task_dir") == self.settings.task_dir and "error" not in record:
                        recorded.add(record["step"])
        self.log_path.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")
        return recorded

    def _wanted(self, step: int) -> bool:
        return ((step % self.settings.every == 0 or step == self.final_step) and step not in self._recorded
                and step not in self._pending)

    # ---- the loop's calls --------------------------------------------------------------------------------------

    def saved(self, step: int, writer) -> None:
        """After ``checkpoint-<step>`` was saved: probe it if its step is due; log what has finished."""
        if not self.active:
            return
        from .checkpoint import checkpoint_path

        self._submit(step, checkpoint_path(self.model_dir, step))
        self.collect(writer)

    def collect(self, writer) -> None:
        """Write what the finished probes found to ``writer`` (the trackers) and the log."""
        if not self.active:
            return
        with self._lock:
            outcomes, self._outcomes = self._outcomes, []
        for job, outcome in outcomes:
            with self._lock:
                self._pending.pop(job.step, None)
            if outcome is None:  # stopped
                continue
            record = {"step": job.step, "task": self.settings.task, "task_dir": self.settings.task_dir,
                      "checkpoint": f"checkpoint-{job.step}"}
            if isinstance(outcome, str):
                logger.warning("downstream probe of checkpoint-%d failed: %s (its log: %s); the training goes on",
                               job.step, outcome, job.output_dir / "probe.log")
                self._append(record | {"error": outcome})
                continue
            scalars = metric_scalars(self.settings.task, outcome)
            if writer is not None:
                writer.scalars(scalars, job.step)
            self._append(record | scalars | {"seeds": self.settings.seeds, "epochs": self.settings.epochs,
                                             "device": self.settings.device, "threads": self.threads,
                                             "seconds": round(job.seconds, 1),
                                             "results": str(job.output_dir / "downstream_results.json")})
            self._recorded.add(job.step)
            logger.info("downstream %s at step %d: %s (probed in %.0f s)", self.settings.task, job.step,
                        ", ".join(f"{k.rsplit('/', 1)[1]} {v:.4f}" for k, v in scalars.items()), job.seconds)

    def finish(self, writer) -> None:
        """The end of the run: wait for every probe (a line names what is awaited), writing each result."""
        if not self.active:
            return
        self._jobs.put(None)
        shown, noticed = None, time.monotonic()
        while self._thread.is_alive():
            self.collect(writer)
            with self._lock:
                waiting = dict(self._pending)
            if waiting and (waiting != shown or time.monotonic() - noticed >= WAIT_NOTICE_S):
                logger.info("waiting for the downstream probe(s) of %s",
                            ", ".join(f"checkpoint-{step} ({state})" for step, state in sorted(waiting.items())))
                shown, noticed = waiting, time.monotonic()
            self._thread.join(timeout=1.0)
        self.collect(writer)
        atexit.unregister(self.stop)
        self.active = False

    def stop(self, writer=None) -> None:
        """Stop the probes (a preempted or failed run): what has finished is written, the rest is dropped (a resume
        probes it again)."""
        if not self.active:
            return
        self.collect(writer)
        self._stopping = True
        self._jobs.put(None)
        deadline, killed = time.monotonic() + 10, False
        while self._thread.is_alive():  # the running probe (or one the thread was starting) is ended
            with self._lock:
                process = self._process
            if process is not None and process.poll() is None:
                if time.monotonic() < deadline:
                    process.terminate()
                elif not killed:
                    process.kill()
                    killed = True
            self._thread.join(timeout=0.5)
        dropped = sorted(self._pending)
        if dropped:
            logger.warning("stopped the downstream probe(s) of %s: --do_continue probes them again",
                           ", ".join(f"checkpoint-{step}" for step in dropped))
        atexit.unregister(self.stop)
        self.active = False

    def __enter__(self) -> DownstreamWatch:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.stop()

    # ---- the background thread ---------------------------------------------------------------------------------

    def _submit(self, step: int, checkpoint: Path) -> None:
        if not self._wanted(step):
            return
        from .checkpoint import STATE_FILE

        snapshot = self.root / f".snapshot-{step}"
        try:
            shutil.rmtree(snapshot, ignore_errors=True)
            snapshot.mkdir(parents=True)
            for src in checkpoint.iterdir():
                if src.is_file() and src.name != STATE_FILE:  # the model and tokenizer files, not the optimizer
                    try:
                        os.link(src, snapshot / src.name)
                    except OSError:
                        shutil.copy2(src, snapshot / src.name)
        except OSError as error:
            shutil.rmtree(snapshot, ignore_errors=True)
            logger.warning("downstream probe of %s skipped: cannot snapshot it (%s)", checkpoint.name, error)
            return
        with self._lock:
            self._pending[step] = "queued"
        self._jobs.put(_Job(step, snapshot, self.root / f"step-{step}"))

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            outcome = None
            if not self._stopping:
                with self._lock:
                    self._pending[job.step] = "running"
                started = time.perf_counter()
                try:
                    outcome = self._probe(job)
                except Exception as error:  # noqa: BLE001  (a probe never stops the training)
                    outcome = f"{type(error).__name__}: {error}"
                job.seconds = time.perf_counter() - started
            shutil.rmtree(job.snapshot, ignore_errors=True)
            with self._lock:
                self._outcomes.append((job, None if self._stopping else outcome))

    def _probe(self, job: _Job) -> dict | str:
        """One probe in a child process: its results, or the error it ended with."""
        s = self.settings
        job.output_dir.mkdir(parents=True, exist_ok=True)
        results = job.output_dir / "downstream_results.json"
        results.unlink(missing_ok=True)
        log = job.output_dir / "probe.log"
        package_root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ, OMP_NUM_THREADS=str(self.threads), MKL_NUM_THREADS=str(self.threads),
                   TOKENIZERS_PARALLELISM="false", LMP_NO_PROGRESS="1",
                   PYTHONPATH=os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p))
        command = [sys.executable, "-m", "lmpretrain.downstream_watch", "--model_dir", str(job.snapshot),
                   "--task", s.task_dir, "--output_dir", str(job.output_dir), "--seeds", str(s.seeds),
                   "--epochs", str(s.epochs), "--device", s.device, "--threads", str(self.threads)]
        with open(log, "w", encoding="utf-8") as out:
            # its own session: a Ctrl-C or a preemption signal to the training's process group is the training's to
            # act on (it stops the probe); the probe does not die half-way on its own
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                       env=env, start_new_session=True)
            with self._lock:
                self._process = process
            code = process.wait()
            with self._lock:
                self._process = None
        if code == 0 and results.is_file():
            return json.loads(results.read_text(encoding="utf-8"))
        lines = [line for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
        return f"exit code {code}: {lines[-1].strip() if lines else 'no output'}"

    def _append(self, record: dict) -> None:
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(strict_dumps(record) + "\n")


# ---- the child process -----------------------------------------------------------------------------------------

def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="one downstream probe of a run (started by run_pretraining.py)")
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--task", required=True)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--seeds", type=int, required=True)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--device", required=True)
    parser.add_argument("--threads", type=int, required=True)
    args = parser.parse_args(argv)
    if hasattr(os, "nice"):
        os.nice(NICE)  # the training's processes come first (before torch and transformers load)
    import torch

    from .downstream import ProbeSettings, evaluate, summary_line
    from .log import setup_logging

    torch.set_num_threads(args.threads)
    setup_logging()
    settings = ProbeSettings(seeds=args.seeds, seed=0, epochs=args.epochs, device=args.device)
    print(summary_line(evaluate(args.model_dir, args.task, args.output_dir, settings)), flush=True)


if __name__ == "__main__":
    from .errors import run_cli

    sys.exit(run_cli(main))
