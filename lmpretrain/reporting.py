"""Where a run's figures go: the trackers (TensorBoard, W&B, MLflow), ``train_log.jsonl``, the progress bar and the
plain step lines, with the loss and throughput window between logging steps. The loop hands each step's values to
one :class:`Reporter`; everything about how and where they are shown is here."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from .distributed import Layout
from .log import JsonlLog, duration, get_logger, is_main_process, progress
from .throughput import device_peak_tflops, throughput_scalars
from .trackers import open_trackers

logger = get_logger("lmpretrain.trainer")  # the loop's lines keep the name users grep their logs for


class Window:
    """Loss and throughput since the last logged step, and throughput over the whole run (the summary's)."""

    def __init__(self, peak_tflops: float | None = None):
        self.peak_tflops = peak_tflops
        self.total = {"tokens": 0.0, "flops": 0.0, "data_wait": 0.0, "elapsed": 0.0}
        self._start()

    def _start(self) -> None:
        self.loss, self.tokens, self.flops, self.steps, self.started = 0.0, 0.0, 0.0, 0, time.perf_counter()
        self.data_wait = 0.0

    def add(self, loss: float, tokens: float, flops: float = 0.0, data_wait: float = 0.0) -> None:
        """One step: its global loss and tokens, this device's FLOPs, the time the loop waited for its batch."""
        self.loss += loss
        self.tokens += tokens
        self.flops += flops
        self.steps += 1
        self.data_wait += data_wait

    def take(self, *, learning_rate: float, grad_norm: float, skipped_steps: int, metrics: dict) -> dict[str, float]:
        """The scalars to log for this window, which then starts over."""
        elapsed = time.perf_counter() - self.started
        for key, value in (("tokens", self.tokens), ("flops", self.flops), ("data_wait", self.data_wait),
                           ("elapsed", elapsed)):
            self.total[key] += value
        scalars = {"train/loss": self.loss / self.steps, "train/learning_rate": learning_rate,
                   "train/grad_norm": grad_norm, "train/skipped_steps": skipped_steps,
                   **throughput_scalars(tokens=self.tokens, flops=self.flops, data_wait=self.data_wait,
                                        elapsed=elapsed, peak_tflops=self.peak_tflops)}
        scalars.update({f"train/{k}": v for k, v in metrics.items()})
        self._start()
        return scalars

    def run_totals(self) -> dict[str, float]:
        """Throughput over every logged window of this run (this process's part of it, after a resume)."""
        if not self.total["elapsed"]:
            return {}
        rates = throughput_scalars(tokens=self.total["tokens"], flops=self.total["flops"],
                                   data_wait=self.total["data_wait"], elapsed=self.total["elapsed"],
                                   peak_tflops=self.peak_tflops, prefix="")
        return {k: round(v, 6) for k, v in rates.items()}


def fmt(values: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


def step_line(step: int, train_steps: int, scalars: dict[str, float], elapsed: float, steps_done: int) -> str:
    """The plain line of a logging step: ``step 100/300: loss 7.4712, lr 4.2e-04, 2,623 tokens/s, eta 3m10s``
    (the eta from this process's steps so far, evaluations and saves included)."""
    eta = f", eta {duration(elapsed / steps_done * (train_steps - step))}" if steps_done and step < train_steps else ""
    return (f"step {step}/{train_steps}: loss {scalars['train/loss']:.4f}, lr {scalars['train/learning_rate']:.2e}, "
            f"{scalars.get('train/tokens_per_second', 0):,.0f} tokens/s{eta}")


def fresh_purge(tb_dir: Path) -> int | None:
    """A run from step 0 whose TensorBoard dir already holds events (another run's: an --overwrite_output_dir
    with --logging_dir outside the model dir, or another model dir with the same --logging_dir and --run_name):
    purge from step 0, so that TensorBoard shows this run alone rather than two curves mixed. The old files stay."""
    if is_main_process() and tb_dir.is_dir() and any(tb_dir.glob("events.out.tfevents.*")):
        logger.warning("%s holds TensorBoard events of an earlier run: this run's replace them in TensorBoard (the "
                       "files stay; --run_name NAME keeps both runs side by side)", tb_dir)
        return 0
    return None


class Reporter:
    """The run's figures from ``step`` (0, or the step a resume starts at) to ``train_steps``: a context manager
    that closes the trackers and the bar on every way out (the last scalars kept). ``outputs``/``system``: the run
    description's groups; ``config``: the run's record (the trackers' hyperparameters); ``history``: the resume
    history, whose last entry, when it is this step's, is written to ``train_log.jsonl``."""

    def __init__(self, outputs, system, layout: Layout, *, config: dict, step: int, train_steps: int,
                 history: tuple):
        # a resume at step N keeps what was logged up to N (its eval included) and drops what an interrupted run
        # wrote after its last checkpoint: TensorBoard purges events at steps >= purge_step from the earlier files
        purge = step + 1 if step else \
            fresh_purge(Path(outputs.logging_dir) / outputs.run_name) if "tensorboard" in outputs.report_to else None
        self.writer = open_trackers(outputs.report_to, model_dir=outputs.model_dir, logging_dir=outputs.logging_dir,
                                    run_name=outputs.run_name, config=config, resumed=step > 0, purge_step=purge)
        self.step_log = JsonlLog(f"{outputs.model_dir}/train_log.jsonl", resume_step=step)
        if history and history[-1]["step"] == step:  # what this resume changed, where it changed
            self.step_log.write({"step": step, "resumed_with_changes": history[-1]["changes"]})
        self.logging_steps, self.train_steps, self.first_step = outputs.logging_steps, train_steps, step
        logging_steps = outputs.logging_steps
        if step % logging_steps and step < train_steps:
            # the steps since the last logged step ran in the interrupted process, whose window was not saved
            first = min(train_steps, (step // logging_steps + 1) * logging_steps)
            logger.info("resumed at step %d: the first logged window (step %d) averages the %d step(s) since the "
                        "resume, not the %d since step %d; windows stay at multiples of logging-steps", step, first,
                        first - step, first - step // logging_steps * logging_steps,
                        step // logging_steps * logging_steps)
        self.bar = progress(total=train_steps, initial=step, desc="train", unit="step")
        peak, peak_source = device_peak_tflops(layout.device, system.peak_tflops)
        logger.info("MFU against a peak of %s", peak_source) if peak else \
            logger.info("train/mfu not logged: %s; give --peak_tflops to log it (train/tflops_per_device is logged)",
                        peak_source)
        self.window = Window(peak)
        self.started = time.perf_counter()
        self._closing = contextlib.ExitStack()

    def __enter__(self) -> Reporter:
        self._closing.enter_context(self.writer)
        self._closing.enter_context(contextlib.closing(self.bar))
        return self

    def start_clock(self) -> None:
        """The run's seconds (and the eta) count from here: after the step-0 evaluation."""
        self.started = time.perf_counter()

    def __exit__(self, *exc) -> bool | None:
        return self._closing.__exit__(*exc)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def first_steps(self) -> bool:
        """This process has logged no window yet (its first step is under way)."""
        return self.window.steps == 0 and not self.window.total["elapsed"]

    def evaluation(self, step: int, scalars: dict[str, float], *, to_log_file: bool = True) -> None:
        """An evaluation's scalars at ``step`` (nothing when there was no eval split)."""
        self.writer.scalars(scalars, step)
        if scalars:
            if to_log_file:
                self.step_log.write({"step": step, **scalars})
            logger.info("step %d: %s", step, fmt(scalars))

    def step(self, step: int, loss: float, tokens: float, *, flops: float, data_wait: float) -> bool:
        """One finished step; true when it is a logging step (then :meth:`log_window` is due)."""
        self.window.add(loss, tokens, flops=flops, data_wait=data_wait)
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loss:.4f}")
        return step % self.logging_steps == 0 or step == self.train_steps

    def log_window(self, step: int, **values) -> None:
        """The window's scalars at a logging step: to the trackers, the log file and one plain line."""
        scalars = self.window.take(**values)
        self.writer.scalars(scalars, step)
        self.step_log.write({"step": step, **scalars})
        logger.info("%s", step_line(step, self.train_steps, scalars, self.elapsed, step - self.first_step))

    def summary(self, step: int, **values) -> dict:
        """The run's summary: ``values`` with the run's throughput totals."""
        return {"step": step, **values, "train_seconds": round(self.elapsed, 1), **self.window.run_totals()}

    def finish(self, summary: dict | None = None, *, failed: bool = False) -> None:
        """The trackers' run summary (W&B, MLflow); TensorBoard's writer is closed already."""
        self.writer.finish(summary, failed=failed)
