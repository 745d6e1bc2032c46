"""The training loop: batch → forward/backward with accumulation → clip → step → log → eval → save.

The loop orders the work; what each part does lives with its concern: the loss weighting that keeps a step exact
across layouts in :mod:`lmpretrain.losses`, the evaluation in :mod:`lmpretrain.evaluation`, where the figures go
(trackers, ``train_log.jsonl``, the bar and the step lines) in :mod:`lmpretrain.reporting`, checkpoints in
:mod:`lmpretrain.checkpoint`.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from collections.abc import Callable

import torch

from . import checkpoint as ckpt
from . import export
from .data.loader import StepBatches, count_units, micro_batch_positions  # noqa: F401  (count_units: unit tests)
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
from .downstream_watch import DownstreamWatch
from .errors import Preempted, UserError
from .evaluation import evaluate
from .log import get_logger
from .losses import add_metrics, batch_shape, global_metrics, global_units, weighted_loss
from .optim import apply_settings, build_optimizer, lr_schedule
from .precision import Precision, make_precision
from .prepare import Run, prepare_run, settle_run
from .reporting import Reporter, fmt
from .resume import check_checkpoint
from .run_config import TrainArgs
from .run_dir import own_model_dir
from .run_state import RunState
from .sharding import (
    build_on_rank0,
    checkpoint_activations,
    compile_blocks,
    defer_gradient_sync,
    gathered_model,
    is_sharded,
    shard_from_rank0,
)

logger = get_logger(__name__)

# A test seam, None in real runs: tests install ``hook(loss, step) -> loss`` to make losses non-finite
# (tests/inject_nan.py does it for the script). Applied to each micro-batch's loss inside autocast.
loss_hook: Callable[[torch.Tensor, int], torch.Tensor] | None = None
_PREEMPT_SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGUSR1", None)) if s)


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


def train(args: TrainArgs) -> dict[str, float]:
    """Run the whole job; returns the final summary (also logged as one line). A preemption signal before the
    first step ends it with exit code 0 as one in the loop does, having removed what it had half-built."""
    with _Preemption() as preemption:
        try:
            return _train(args, preemption)
        except Preempted as signal_name:
            preemption.immediate = False
            if signal_name.left:  # something is left: say what, not that nothing is
                logger.warning("preempted (%s) before training started: %s; no checkpoint was saved", signal_name,
                               signal_name.left)
                return {"step": 0, "preempted": 1.0}
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
    train_steps = optim.train_steps
    train_model = _wrap(model, layout, compile_model=model_settings.compile)

    preemption.immediate = False  # from here on a signal is acted on at a step boundary, the same on every rank
    steps_left = max(0, train_steps - counters.step)
    workers = data_settings.dataloader_workers
    batches = StepBatches(data.train_dataset, data.collator, layout, next_position=counters.next_position,
                          steps=steps_left, accumulation=optim.gradient_accumulation_steps,
                          workers=workers if steps_left else 0)  # its workers build batches during the first eval
    logger.info("input pipeline: %s", f"{workers} background worker(s)" if workers else "in this process")
    report = Reporter(outputs, system, layout, config=current, step=counters.step, train_steps=train_steps,
                      history=history)
    probes = DownstreamWatch(run.description, layout, step=counters.step)  # --downstream_task, rank 0
    terms, weights = model_settings.loss_terms, model_settings.loss_weights
    max_eval_samples = data_settings.max_eval_samples
    # shard_grad_op with accumulation: one reduce-scatter per step, after the last micro-batch (DDP's no_sync)
    defer_sync = system.fsdp == "shard_grad_op" and is_sharded(model)
    # where the step's tensors are summed over processes: on the GPU under NCCL; the unit counts on the CPU
    # otherwise; the loss, in one process, where it already is (no all-reduce then)
    units_device = layout.device if reduces_on_device() else torch.device("cpu")
    loss_device = layout.device if reduces_on_device() or not layout.distributed else torch.device("cpu")
    # trackers and bar are closed on errors too (the last scalars kept); a signal during the last save is held off;
    # the batch workers are shut down on every way out of this block
    with report, batches, probes:
        # before the first step; or, for a run resumed at its last step (its export interrupted), the final eval,
        # which the interrupted run has logged already
        first_eval = evaluate(model, data, layout, precision, max_eval_samples) \
            if counters.step == 0 or counters.step >= train_steps else {}
        if first_eval and counters.step == 0:
            report.evaluation(0, first_eval, to_log_file=False)
        model.train()
        last_eval, preempted = first_eval, False
        report.start_clock()
        while counters.step < train_steps:
            # --- batch: this process's share of the global batch, as micro-batches (built ahead) -------------
            waited = step_started = time.perf_counter()
            micro = batches.next_step()
            waited = time.perf_counter() - waited
            local = [units for _, units in micro]
            flops = sum(model.train_flops(batch_shape(batch, units)) for batch, units in micro)  # from shapes: no sync
            step_units = global_units(local, units_device)

            # --- forward / backward with accumulation: no host synchronisation in here -------------------------
            step_loss = torch.zeros((), dtype=torch.float64, device=layout.device)
            metrics = {}
            for i, (batch, _) in enumerate(micro):
                if defer_sync and len(micro) > 1:
                    defer_gradient_sync(model, defer=i < len(micro) - 1)
                no_sync = i < len(micro) - 1 and layout.distributed and hasattr(train_model, "no_sync")
                with train_model.no_sync() if no_sync else contextlib.nullcontext():
                    with precision.autocast():
                        out = train_model(batch)
                        loss = weighted_loss(out, terms, weights, local[i], step_units, layout.world_size,
                                             family=family)
                        if loss_hook is not None:
                            loss = loss_hook(loss, counters.step + 1)
                    precision.backward(loss)
                step_loss += loss.detach().double() / layout.world_size
                add_metrics(metrics, out, local[i], family)

            # --- clip and step (skipping non-finite steps): the step's one read from the device --------------
            # the preemption flag rides on the loss's all-reduce, so that every process sees a signal at the same step
            flag = torch.full((), float(preemption.requested), dtype=torch.float64, device=step_loss.device)
            reduced = all_reduce_sum(torch.stack([step_loss, flag]).to(loss_device))
            norm = precision.clip(state.optimizer, model.parameters(), optim.max_grad_norm)
            step_tokens = step_units["tokens"]  # a float, or (NCCL) a tensor read with the rest
            values = [reduced[0], reduced[1], norm.double()] + [step_tokens] * isinstance(step_tokens, torch.Tensor)
            read = torch.stack([v.to(norm.device) for v in values]).tolist()
            global_loss, preempt_now, grad_norm = read[0], read[1] > 0, read[2]
            step_tokens = read[3] if len(read) > 3 else step_tokens
            if model_settings.compile and report.first_steps():  # this process's 1st step
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
            if report.step(counters.step, global_loss, step_tokens, flops=flops, data_wait=waited):
                report.log_window(counters.step, learning_rate=state.scheduler.get_last_lr()[0],
                                  grad_norm=grad_norm, skipped_steps=counters.skipped_steps,
                                  metrics=global_metrics(metrics, step_units, family, units_device))
            if counters.nonfinite_streak >= optim.max_nonfinite_steps:
                raise UserError(f"the loss was NaN/inf for {counters.nonfinite_streak} consecutive steps (up to step "
                                f"{counters.step}); stopping. Lower the learning rate or use bf16/fp32; the last "
                                f"checkpoint in {outputs.model_dir} is intact")

            # --- eval and save -------------------------------------------------------------------------------
            if counters.step % outputs.eval_steps == 0 or counters.step == train_steps:
                last_eval = evaluate(model, data, layout, precision, max_eval_samples) or last_eval
                report.evaluation(counters.step, last_eval)
            if preempt_now or counters.step % outputs.save_steps == 0 or counters.step == train_steps:
                checkpoints.save(state)  # every save-steps; the final model; where a preempted run resumes
                probes.saved(counters.step, report.writer)  # a background probe of it, if its step is due
            if preempt_now:
                preempted = True
                break
        # a run resumed at (or past) its last step has no step to take: it exports the checkpoint it resumed from

    if preempted:
        probes.stop(report.writer)
        report.finish()
        logger.warning("preempted: saved checkpoint-%d; rerun with --do_continue to resume", counters.step)
        return {"step": counters.step, "preempted": 1.0}
    summary = report.summary(counters.step, final_loss=counters.last_loss, skipped_steps=counters.skipped_steps,
                             tokens_seen=counters.tokens_seen)
    summary.update(last_eval)
    if first_eval.get("eval/perplexity") is not None and steps_left == train_steps:  # the run started at step 0
        summary["eval/perplexity_at_start"] = first_eval["eval/perplexity"]
    whole = gathered_model(model, run.build_model, is_main=layout.is_main)  # FSDP: gathered once, on rank 0
    try:
        checkpoints.export_final(state, summary, verify=lambda export_dir: export.verify_export(whole, export_dir,
                                                                                                 run.encoder),
                                 model=whole)
    except BaseException:
        report.finish(failed=True)
        raise
    probes.finish(report.writer)  # waits for the downstream probes, writing their metrics at their checkpoints' steps
    report.finish(summary)  # wandb's and MLflow's run summary (TensorBoard's writer is closed already)
    logger.info("done: %s; model saved to %s", fmt(summary), outputs.model_dir)
    return summary


def _build_state(run: Run, layout: Layout, precision: Precision) -> RunState:
    """A fresh model (seeded), its optimizer and schedule, and the loss scaler: the state a resume overwrites."""
    optim = run.description.optim
    torch.manual_seed(run.description.data.seed)
    # sharded: only rank 0 builds the whole model, the others on the meta device (sharding.build_on_rank0)
    rank0_build = run.description.system.fsdp is not None and layout.distributed
    model = build_on_rank0(run.build_model, layout) if rank0_build else run.build_model().to(layout.device)
    if precision.model_dtype != torch.float32:
        model = model.to(precision.model_dtype)
    if run.description.model.gradient_checkpointing:
        checkpoint_activations(model)
    mode = run.description.system.fsdp
    if mode is not None and layout.distributed:  # sharded before the optimizer, which then holds the shards
        if run.description.model.compile:  # per block, before sharding (torchtitan's order)
            logger.info("--compile with --fsdp: %d blocks compiled one by one", compile_blocks(model))
        # rank 0's weights broadcast into every rank's shards; fp32 shards, compute in the policy's dtype, fp32
        # reduction
        model = shard_from_rank0(model, mode, layout, mp_policy=precision.fsdp_policy())
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


def _wrap(model: torch.nn.Module, layout: Layout, *, compile_model: bool) -> torch.nn.Module:
    """The module the loop calls: DDP across processes (unless sharded with FSDP2 already), torch.compile if asked
    and not sharded (checkpoints use ``model``)."""
    if layout.distributed and not is_sharded(model):  # FSDP2 modules synchronise their own gradients
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[layout.device.index] if layout.device.type == "cuda" else None)
    # a sharded model's blocks were compiled before sharding (_build_state: sharding.compile_blocks)
    return torch.compile(model) if compile_model and not is_sharded(model) else model


_chunks = micro_batch_positions  # the name the unit tests use


