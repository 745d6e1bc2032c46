"""The training loop: batch → forward/backward with accumulation → clip → step → log → eval → save.

Exactness across layouts: every loss term is a mean over its own units (masked tokens for MLM,
samples for NSP, real tokens for ELECTRA's discriminator, next tokens for a causal LM). Each process
sums its units over all micro-batches of a step, one all-reduce gives the global counts, and each
micro-batch's term is weighted by ``local units / global units``. One optimizer step therefore equals
a single-process step over the same global batch, whatever the number of nodes, processes, per-node
batch sizes or accumulation steps.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from collections.abc import Callable
from pathlib import Path

import torch

from . import checkpoint as ckpt
from . import export
from .data.loader import StepBatches, count_units, micro_batch_positions
from .data_setup import RunData, build_run_data
from .distributed import (
    Layout,
    PeerWatchdog,
    all_reduce_sum,
    init_distributed,
    is_collective_error,
    reduces_on_device,
    shutdown,
)
from .errors import Preempted, UserError
from .log import JsonlLog, duration, get_logger, is_main_process, progress
from .models import BatchShape
from .optim import apply_settings, build_optimizer, lr_schedule
from .precision import Precision, make_precision
from .prepare import Run, prepare_run, settle_run
from .resume import check_checkpoint
from .run_config import TrainArgs
from .run_dir import own_model_dir
from .run_state import RunState
from .sharding import checkpoint_activations, gathered_model, is_sharded, shard_model
from .throughput import device_peak_tflops, throughput_scalars
from .trackers import open_trackers

logger = get_logger(__name__)

# A test seam, None in real runs: tests install ``hook(loss, step) -> loss`` to make losses non-finite
# (tests/inject_nan.py does it for the script). Applied to each micro-batch's loss inside autocast.
loss_hook: Callable[[torch.Tensor, int], torch.Tensor] | None = None
_PREEMPT_SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGUSR1", None)) if s)


def weighted_loss(out: dict[str, torch.Tensor], terms, weights: dict[str, float], local: dict[str, float],
                  global_units: dict, world_size: int, family=None) -> torch.Tensor:
    """The micro-batch's share of the global-batch loss (times world_size, which DDP's averaging divides out).
    ``terms``: the :class:`~lmpretrain.models.LossTerm` s this preset trains (``Family.loss_terms_for``), each of
    which the model must return (a :class:`UserError` otherwise, at the first step); ``weights``: term name ->
    weight; ``global_units``: floats, or 0-dim float64 tensors on the device (NCCL), never read back here;
    ``family``: the :class:`~lmpretrain.models.Family`, for the error."""
    total = None
    for term in terms:
        if term.name not in out:
            raise missing_term_error(term, family, out)
        count = global_units[term.unit]
        if local[term.unit] == 0 or (not isinstance(count, torch.Tensor) and count == 0):
            continue  # an empty term (e.g. nothing masked here) contributes nothing, not NaN (local > 0: global > 0)
        factor = weights[term.name] * local[term.unit] / count * world_size
        if isinstance(factor, torch.Tensor):  # rounded to the loss's dtype as a Python float would be
            factor = factor.to(out[term.name].dtype)
        part = out[term.name] * factor
        total = part if total is None else total + part
    if total is None:  # no term has units here: a zero that still reaches backward() (DDP expects every rank's)
        total = sum((torch.where(torch.isfinite(v), v * 0.0, torch.zeros_like(v)) for v in out.values()
                     if v.requires_grad), torch.zeros((), device=next(iter(out.values())).device))
    return total


def missing_term_error(term, family, out: dict) -> UserError:
    """A declared loss term the model did not return: the run would report done with it never trained."""
    declared = f"the {family.display} family" if family is not None else "its family"
    cause = (f"the batch probably lacks {term.label!r}, the label its layout declares: the collator did not pass it on"
             if term.label else "its forward does not compute it")
    return UserError(f"the model returned no {term.name!r}, a loss term {declared} declares (it returned "
                     f"{', '.join(sorted(out)) or 'nothing'}); {cause}")


def _to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


class _Preemption:
    """SIGTERM / SIGUSR1 for the whole run. Before the loop (``immediate``: validation, the lock, the dataset build)
    a signal raises :class:`Preempted` where the program is, so that the build's temporary dir and every lock are
    removed on the way out and nothing is left that a later run takes as complete. From the first evaluation on it
    sets a flag: the loop saves a checkpoint at the next step boundary and exits (a signal during the first
    evaluation: after step 1)."""

    def __init__(self):
        self.requested = False
        self.immediate = True
        self._previous = {}

    def __enter__(self):
        for sig in _PREEMPT_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True
        name = signal.Signals(signum).name
        if self.immediate:
            self.immediate = False  # a second signal while unwinding must not interrupt the clean-up
            raise Preempted(name)
        logger.warning("received %s: saving a checkpoint at the next step boundary, then exiting", name)

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@torch.no_grad()
def evaluate(model, data: RunData, layout: Layout, precision: Precision, max_samples: int) -> dict[str, float]:
    """Mean loss over the eval split (this process's share; summed over processes), and perplexity."""
    if data.eval_dataset is None:
        return {}
    model.eval()
    total = min(len(data.eval_dataset), max_samples)
    terms = model.family.loss_terms
    sums = torch.zeros(2 * len(terms) + 2, dtype=torch.float64)
    batch_size = layout.per_device_batch_size
    mine = [p for p in range(total) if p % layout.world_size == layout.rank]
    starts, started = range(0, len(mine), batch_size), time.perf_counter()
    with progress(total=len(starts), desc="eval", unit="batch", leave=False) as bar:
        for start in starts:
            batch = data.eval_collator([data.eval_dataset[p] for p in mine[start:start + batch_size]])
            units = count_units(batch)
            with precision.autocast():
                out = model(_to_device(batch, layout.device))
            for i, term in enumerate(terms):
                if units[term.unit] and term.name in out:
                    sums[2 * i] += float(out[term.name]) * units[term.unit]
                    sums[2 * i + 1] += units[term.unit]
            if "mlm_accuracy" in out and units.get("masked"):
                sums[-2] += float(out["mlm_accuracy"]) * units["masked"]
                sums[-1] += units["masked"]
            bar.update(1)
            if start == 0:
                _announce_eval(total, len(starts), time.perf_counter() - started)
    all_reduce_sum(sums)
    model.train()
    result = {}
    for i, term in enumerate(terms):
        if sums[2 * i + 1] > 0:
            result[f"eval/{term.name}"] = float(sums[2 * i] / sums[2 * i + 1])
    main_term = f"eval/{terms[0].name}"
    if main_term in result:
        result["eval/perplexity"] = math.exp(min(result[main_term], 50.0))
    if sums[-1] > 0:
        result["eval/mlm_accuracy"] = float(sums[-2] / sums[-1])
    return result


EVAL_NOTICE_S = 10.0  # an evaluation expected to take longer says so, with its estimate


def _announce_eval(instances: int, batches: int, first_batch_s: float) -> None:
    """After an evaluation's first batch: one line with its estimate when the rest looks long (a bar alone is
    hidden by LMP_NO_PROGRESS, and the step-0 evaluation on a loaded machine can take minutes)."""
    estimate = first_batch_s * batches
    if estimate >= EVAL_NOTICE_S:
        logger.info("evaluating %d eval instances in %d batches of this process: about %s (the first batch took "
                    "%.1f s; --max_eval_samples sets the instances)", instances, batches, duration(estimate),
                    first_batch_s)


def train(args: TrainArgs) -> dict[str, float]:
    """Run the whole job; returns the final summary (also logged as one line). A preemption signal before the
    first step ends it with exit code 0 as one in the loop does, having removed what it had half-built."""
    with _Preemption() as preemption:
        try:
            return _train(args, preemption)
        except Preempted as signal_name:
            preemption.immediate = False
            logger.warning("preempted (%s) before training started: nothing half-written is left (a dataset cache "
                           "being built was removed) and no checkpoint was saved; rerun the same command to start "
                           "again (the dataset cache is reused if it was complete)", signal_name)
            return {"step": 0, "preempted": 1.0}


def _train(args: TrainArgs, preemption: _Preemption) -> dict[str, float]:
    # --- setup: validate everything before any long work; from here on only the run description is read ---------
    draft = prepare_run(args)  # phase (a): flags and preset resolved, encoder open; UserError before anything is built
    system = draft.description.system
    layout = init_distributed(system.node_batch_sizes, local_rank=system.local_rank, node_rank=system.node_rank,
                              device=system.device, training=not system.build_dataset_only, batch_key=system.batch_key,
                              join_timeout_s=draft.description.data.peer_timeout)
    watchdog = PeerWatchdog(layout.rank, layout.world_size, draft.description.data.peer_timeout).start()
    try:
        precision = make_precision(draft.description.optim.fp16_type, draft.description.optim.bf16, layout.device)
        run, data = settle_run(draft, layout)  # phase (b): the description the loop reads
        if system.build_dataset_only:  # wrote the dataset cache only (it has its own lock)
            logger.info("dataset built; --build_dataset_only: exiting")
            return dict(data.epoch)
        with own_model_dir(run, layout) as found:
            if found.finished is not None:
                return found.finished
            return _train_loop(run, found.history, layout, precision, data, preemption)
    except RuntimeError as error:  # a peer died mid-collective: one line naming it, not the backend's traceback
        if layout.distributed and is_collective_error(error):
            raise watchdog.peer_lost(error) from None
        raise
    finally:
        watchdog.stop()
        draft.resources.close()
        shutdown()


def _train_loop(run: Run, history: tuple, layout: Layout, precision: Precision, data: RunData | None,
                preemption: _Preemption) -> dict[str, float]:
    model_settings, optim, outputs = run.description.model, run.description.optim, run.description.outputs
    data_settings, system = run.description.data, run.description.system
    family = model_settings.family
    state = _build_state(run, layout, precision)
    current = run.record(history)
    checkpoints = ckpt.Checkpoints(outputs.model_dir, layout, tokenizer_dir=data_settings.tokenizer_dir,
                                   config=current,
                                   check=lambda path, saved: check_checkpoint(run.description, path, saved, current),
                                   total_limit=outputs.save_total_limit, sharded=system.fsdp is not None)
    if checkpoints.restore(state, resume=outputs.resume) is not None:
        apply_settings(state.optimizer, state.scheduler, learning_rate=optim.learning_rate,
                       weight_decay=optim.weight_decay, adam_epsilon=optim.adam_epsilon, adam_betas=optim.adam_betas)
    model, counters = state.model, state.train
    data = data or build_run_data(run, layout)  # built already when an epoch budget needed its instances
    logging_steps, train_steps = outputs.logging_steps, optim.train_steps
    if counters.step % logging_steps and counters.step < train_steps:
        # the steps since the last logged step ran in the interrupted process, whose window was not saved
        first = min(train_steps, (counters.step // logging_steps + 1) * logging_steps)
        logger.info("resumed at step %d: the first logged window (step %d) averages the %d step(s) since the resume, "
                    "not the %d since step %d; windows stay at multiples of logging-steps", counters.step, first,
                    first - counters.step, first - counters.step // logging_steps * logging_steps,
                    counters.step // logging_steps * logging_steps)
    train_model = _wrap(model, layout, compile_model=model_settings.compile)

    preemption.immediate = False  # from here on a signal is acted on at a step boundary, the same on every rank
    steps_left = max(0, train_steps - counters.step)
    workers = data_settings.dataloader_workers
    batches = StepBatches(data.train_dataset, data.collator, layout, next_position=counters.next_position,
                          steps=steps_left, accumulation=optim.gradient_accumulation_steps,
                          workers=workers if steps_left else 0)  # its workers build batches during the first eval
    logger.info("input pipeline: %s", f"{workers} background worker(s)" if workers else "in this process")
    # a resume at step N keeps what was logged up to N (its eval included) and drops what an interrupted run wrote
    # after its last checkpoint: TensorBoard purges events at steps >= purge_step from the earlier files
    tb_dir = Path(outputs.logging_dir) / outputs.run_name
    purge = counters.step + 1 if counters.step else \
        _fresh_purge(tb_dir) if "tensorboard" in outputs.report_to else None
    writer = open_trackers(outputs.report_to, model_dir=outputs.model_dir, logging_dir=outputs.logging_dir,
                           run_name=outputs.run_name, config=current, resumed=counters.step > 0, purge_step=purge)
    step_log = JsonlLog(f"{outputs.model_dir}/train_log.jsonl", resume_step=counters.step)
    if history and history[-1]["step"] == counters.step:  # what this resume changed, where it changed
        step_log.write({"step": counters.step, "resumed_with_changes": history[-1]["changes"]})
    terms, weights = model_settings.loss_terms, model_settings.loss_weights
    max_eval_samples = data_settings.max_eval_samples

    bar = progress(total=train_steps, initial=counters.step, desc="train", unit="step")
    peak, peak_source = device_peak_tflops(layout.device, system.peak_tflops)
    logger.info("MFU against a peak of %s", peak_source) if peak else \
        logger.info("train/mfu not logged: %s; give --peak_tflops to log it (train/tflops_per_device is logged)",
                    peak_source)
    window = _Window(peak)
    # where the step's tensors are summed over processes: on the GPU under NCCL; the unit counts on the CPU
    # otherwise; the loss, in one process, where it already is (no all-reduce then)
    units_device = layout.device if reduces_on_device() else torch.device("cpu")
    loss_device = layout.device if reduces_on_device() or not layout.distributed else torch.device("cpu")
    # trackers and bar are closed on errors too (the last scalars kept); a signal during the last save is held off;
    # the batch workers are shut down on every way out of this block
    with writer, contextlib.closing(bar), batches:
        # before the first step; or, for a run resumed at its last step (its export interrupted), the final eval,
        # which the interrupted run has logged already
        first_eval = evaluate(model, data, layout, precision, max_eval_samples) \
            if counters.step == 0 or counters.step >= train_steps else {}
        if first_eval and counters.step == 0:
            writer.scalars(first_eval, 0)
            logger.info("step 0: %s", _fmt(first_eval))
        model.train()
        last_eval, started, preempted = first_eval, time.perf_counter(), False
        while counters.step < train_steps:
            # --- batch: this process's share of the global batch, as micro-batches (built ahead) -------------
            waited = step_started = time.perf_counter()
            micro = batches.next_step()
            waited = time.perf_counter() - waited
            local = [units for _, units in micro]
            flops = sum(model.train_flops(_batch_shape(batch, units)) for batch, units in micro)  # from shapes: no sync
            global_units = _global_units(local, units_device)

            # --- forward / backward with accumulation: no host synchronisation in here -------------------------
            step_loss = torch.zeros((), dtype=torch.float64, device=layout.device)
            metrics = {}
            for i, (batch, _) in enumerate(micro):
                no_sync = i < len(micro) - 1 and layout.distributed and hasattr(train_model, "no_sync")
                with train_model.no_sync() if no_sync else contextlib.nullcontext():
                    with precision.autocast():
                        out = train_model(batch)
                        loss = weighted_loss(out, terms, weights, local[i], global_units, layout.world_size,
                                             family=family)
                        if loss_hook is not None:
                            loss = loss_hook(loss, counters.step + 1)
                    precision.backward(loss)
                step_loss += loss.detach().double() / layout.world_size
                _add_metrics(metrics, out, local[i], family)

            # --- clip and step (skipping non-finite steps): the step's one read from the device --------------
            # the preemption flag rides on the loss's all-reduce, so that every process sees a signal at the same step
            flag = torch.full((), float(preemption.requested), dtype=torch.float64, device=step_loss.device)
            reduced = all_reduce_sum(torch.stack([step_loss, flag]).to(loss_device))
            norm = precision.clip(state.optimizer, model.parameters(), optim.max_grad_norm)
            step_tokens = global_units["tokens"]  # a float, or (NCCL) a tensor read with the rest
            values = [reduced[0], reduced[1], norm.double()] + [step_tokens] * isinstance(step_tokens, torch.Tensor)
            read = torch.stack([v.to(norm.device) for v in values]).tolist()
            global_loss, preempt_now, grad_norm = read[0], read[1] > 0, read[2]
            step_tokens = read[3] if len(read) > 3 else step_tokens
            if model_settings.compile and window.steps == 0 and not window.total["elapsed"]:  # this process's 1st step
                logger.info("step %d took %.1f s (torch.compile compiled the model in it)", counters.step + 1,
                            time.perf_counter() - step_started)
            stepped = precision.apply(state.optimizer, grad_norm=grad_norm, loss_finite=math.isfinite(global_loss))
            state.optimizer.zero_grad(set_to_none=True)
            state.scheduler.step()
            counters.advance(samples=layout.global_batch_size, tokens=int(step_tokens), stepped=stepped,
                             loss=global_loss)
            if not stepped and precision.scaler is None:
                logger.warning("step %d: loss %s, gradient norm %s: update skipped (%d skipped in all, %d non-finite "
                               "in a row; stopping at %d)", counters.step, global_loss, grad_norm,
                               counters.skipped_steps, counters.nonfinite_streak, optim.max_nonfinite_steps)

            # --- log ---------------------------------------------------------------------------------------------
            window.add(global_loss, step_tokens, flops=flops, data_wait=waited)
            bar.update(1)
            bar.set_postfix(loss=f"{global_loss:.4f}")
            if counters.step % logging_steps == 0 or counters.step == train_steps:
                scalars = window.take(learning_rate=state.scheduler.get_last_lr()[0], grad_norm=grad_norm,
                                      skipped_steps=counters.skipped_steps,
                                      metrics=_global_metrics(metrics, global_units, family, units_device))
                writer.scalars(scalars, counters.step)
                step_log.write({"step": counters.step, **scalars})
                logger.info("%s", _step_line(counters.step, train_steps, scalars, time.perf_counter() - started,
                                             counters.step - (train_steps - steps_left)))
            if counters.nonfinite_streak >= optim.max_nonfinite_steps:
                raise UserError(f"the loss was NaN/inf for {counters.nonfinite_streak} consecutive steps (up to step "
                                f"{counters.step}); stopping. Lower the learning rate or use bf16/fp32; the last "
                                f"checkpoint in {outputs.model_dir} is intact")

            # --- eval and save -------------------------------------------------------------------------------
            if counters.step % outputs.eval_steps == 0 or counters.step == train_steps:
                last_eval = evaluate(model, data, layout, precision, max_eval_samples) or last_eval
                writer.scalars(last_eval, counters.step)
                if last_eval:
                    step_log.write({"step": counters.step, **last_eval})
                    logger.info("step %d: %s", counters.step, _fmt(last_eval))
            if preempt_now or counters.step % outputs.save_steps == 0 or counters.step == train_steps:
                checkpoints.save(state)  # every save-steps; the final model; where a preempted run resumes
            if preempt_now:
                preempted = True
                break
        # a run resumed at (or past) its last step has no step to take: it exports the checkpoint it resumed from

    if preempted:
        writer.finish()
        logger.warning("preempted: saved checkpoint-%d; rerun with --do_continue to resume", counters.step)
        return {"step": counters.step, "preempted": 1.0}
    summary = {"step": counters.step, "final_loss": counters.last_loss, "skipped_steps": counters.skipped_steps,
               "tokens_seen": counters.tokens_seen, "train_seconds": round(time.perf_counter() - started, 1),
               **window.run_totals()}
    summary.update(last_eval)
    if first_eval.get("eval/perplexity") is not None and steps_left == train_steps:  # the run started at step 0
        summary["eval/perplexity_at_start"] = first_eval["eval/perplexity"]
    whole = gathered_model(model, run.build_model, is_main=layout.is_main)  # FSDP: gathered once, on rank 0
    try:
        checkpoints.export_final(state, summary, verify=lambda export_dir: export.verify_export(whole, export_dir,
                                                                                                 run.encoder),
                                 model=whole)
    except BaseException:
        writer.finish(failed=True)
        raise
    writer.finish(summary)  # wandb's and MLflow's run summary (TensorBoard's writer is closed already)
    logger.info("done: %s; model saved to %s", _fmt(summary), outputs.model_dir)
    return summary


def _step_line(step: int, train_steps: int, scalars: dict[str, float], elapsed: float, steps_done: int) -> str:
    """The plain line of a logging step: ``step 100/300: loss 7.4712, lr 4.2e-04, 2,623 tokens/s, eta 3m10s``
    (the eta from this process's steps so far, evaluations and saves included)."""
    eta = f", eta {duration(elapsed / steps_done * (train_steps - step))}" if steps_done and step < train_steps else ""
    return (f"step {step}/{train_steps}: loss {scalars['train/loss']:.4f}, lr {scalars['train/learning_rate']:.2e}, "
            f"{scalars.get('train/tokens_per_second', 0):,.0f} tokens/s{eta}")


def _build_state(run: Run, layout: Layout, precision: Precision) -> RunState:
    """A fresh model (seeded), its optimizer and schedule, and the loss scaler: the state a resume overwrites."""
    optim = run.description.optim
    torch.manual_seed(run.description.data.seed)
    model = run.build_model().to(layout.device)
    if precision.model_dtype != torch.float32:
        model = model.to(precision.model_dtype)
    if run.description.model.gradient_checkpointing:
        checkpoint_activations(model)
    mode = run.description.system.fsdp
    if mode is not None and layout.distributed:  # sharded before the optimizer, which then holds the shards
        model = shard_model(model, mode, layout, mp_policy=precision.fsdp_policy())  # fp32 shards, fp32 reduction
        precision.shard_scaler()  # an inf in any process's gradient shard skips the step on every process
        logger.info("FSDP2 %s over %d processes: each block a unit, then the root", mode, layout.world_size)
    elif mode is not None:
        logger.info("--fsdp %s in one process: nothing to shard; checkpoints are written with "
                    "torch.distributed.checkpoint all the same, so that more processes can resume them", mode)
    optimizer = build_optimizer(model, learning_rate=optim.learning_rate, weight_decay=optim.weight_decay,
                                adam_epsilon=optim.adam_epsilon, adam_betas=optim.adam_betas, device=layout.device)
    scheduler = lr_schedule(optimizer, warmup_steps=optim.warmup_steps, train_steps=optim.train_steps,
                            schedule=optim.lr_schedule, min_lr_ratio=optim.min_lr_ratio)
    return RunState(model, optimizer, scheduler, precision.scaler)


def _fresh_purge(tb_dir: Path) -> int | None:
    """A run from step 0 whose TensorBoard dir already holds events (another run's: an --overwrite_output_dir
    with --logging_dir outside the model dir, or another model dir with the same --logging_dir and --run_name):
    purge from step 0, so that TensorBoard shows this run alone rather than two curves mixed. The old files stay."""
    if is_main_process() and tb_dir.is_dir() and any(tb_dir.glob("events.out.tfevents.*")):
        logger.warning("%s holds TensorBoard events of an earlier run: this run's replace them in TensorBoard (the "
                       "files stay; --run_name NAME keeps both runs side by side)", tb_dir)
        return 0
    return None


def _wrap(model: torch.nn.Module, layout: Layout, *, compile_model: bool) -> torch.nn.Module:
    """The module the loop calls: DDP across processes (unless sharded with FSDP2 already), torch.compile if asked
    (checkpoints use ``model``)."""
    if layout.distributed and not is_sharded(model):  # FSDP2 modules synchronise their own gradients
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[layout.device.index] if layout.device.type == "cuda" else None)
    return torch.compile(model) if compile_model else model


def _batch_shape(batch: dict[str, torch.Tensor], units: dict[str, float]) -> BatchShape:
    """What the micro-batch's FLOPs depend on, from its shape and its unit counts (host values)."""
    sequences, length = batch["input_ids"].shape
    masked = batch["masked_index"].numel() if "masked_index" in batch else int(units.get("masked", 0))
    predicted = batch["predicted_index"].numel() if "predicted_index" in batch else int(units.get("next_tokens", 0))
    return BatchShape(sequences, length, masked=masked, predicted=predicted)


def _global_units(local: list[dict[str, float]], device: torch.device) -> dict:
    """Each unit's count over all micro-batches of all processes (one all-reduce). The local counts come from the
    collator, on the CPU; summed on the CPU (gloo, one process) they are floats, under NCCL 0-dim tensors that stay
    on the GPU (sent there from pinned memory without waiting)."""
    unit_names = sorted(local[0])
    counts = torch.tensor([[u[n] for n in unit_names] for u in local], dtype=torch.float64).sum(0)
    if device.type == "cpu":
        return dict(zip(unit_names, all_reduce_sum(counts).tolist()))
    counts = all_reduce_sum(counts.pin_memory().to(device, non_blocking=True))
    return dict(zip(unit_names, counts.unbind()))


def _add_metrics(sums: dict, out: dict[str, torch.Tensor], units: dict[str, float], family) -> None:
    """Add a micro-batch's metrics (means over their units) to the step's sums, weighted by the local unit counts
    (host floats: no device read). A metric with no units here adds nothing (its mean is NaN); its key is still
    set, so that every process reduces the same keys."""
    for key, value in out.items():
        if key == "loss":
            continue
        count = units.get(family.metric_unit(key), 0.0)
        part = value.detach().double() * count if count else torch.zeros((), dtype=torch.float64,
                                                                          device=value.device)
        sums[key] = sums[key] + part if key in sums else part


def _global_metrics(sums: dict, global_units: dict, family, device: torch.device) -> dict[str, float]:
    """The step's metrics over the global batch: the per-process sums summed over processes (one all-reduce, at
    logging steps only), each divided by its unit's global count. A metric without units in the whole batch is
    left out (no NaN in the logs)."""
    if not sums:
        return {}
    keys = sorted(sums)
    totals = all_reduce_sum(torch.stack([sums[k].to(device) for k in keys])).tolist()
    counts = [float(global_units[family.metric_unit(k)]) for k in keys]
    return {k: total / count for k, total, count in zip(keys, totals, counts) if count > 0}


class _Window:
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


_chunks = micro_batch_positions  # the name the unit tests use


def _fmt(values: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
