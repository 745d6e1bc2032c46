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
import os
import signal
import time

import torch

from . import checkpoint as ckpt
from .data_setup import RunData, build_run_data, positions_for_step
from .distributed import Layout, PeerWatchdog, all_reduce_sum, init_distributed, shutdown
from .errors import UserError
from .log import JsonlLog, MetricsWriter, get_logger, progress
from .optim import build_optimizer, linear_schedule
from .precision import Precision, make_precision
from .prepare import prepare_run
from .run_config import TrainArgs
from .run_state import RunState

logger = get_logger(__name__)

# loss term -> (weight attribute or constant, unit) per family; units are counted from the batch.
LOSS_TERMS = {
    "bert": [("mlm_loss", "masked"), ("nsp_loss", "samples")],
    "roberta": [("mlm_loss", "masked")],
    "electra": [("generator_loss", "masked"), ("discriminator_loss", "tokens")],
    "gpt": [("lm_loss", "next_tokens")],
}
_PREEMPT_SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGUSR1", None)) if s)


def count_units(batch: dict[str, torch.Tensor]) -> dict[str, float]:
    """How many units each kind of loss term averages over in this micro-batch."""
    labels = batch.get("labels")
    units = {"samples": float(batch["input_ids"].shape[0]), "tokens": float(batch["attention_mask"].sum())}
    if labels is not None:
        units["masked"] = float((labels != -100).sum())
        units["next_tokens"] = float((labels[:, 1:] != -100).sum())
    return units


def weighted_loss(out: dict[str, torch.Tensor], terms, weights: dict[str, float], local: dict[str, float],
                  global_units: dict[str, float], world_size: int) -> torch.Tensor:
    """The micro-batch's share of the global-batch loss (times world_size, which DDP's averaging divides out)."""
    total = None
    for name, unit in terms:
        if local[unit] == 0 or global_units[unit] == 0:
            continue  # an empty term (e.g. nothing masked here) contributes nothing, not NaN
        part = out[name] * (weights.get(name, 1.0) * local[unit] / global_units[unit] * world_size)
        total = part if total is None else total + part
    if total is None:
        total = out["loss"] * 0.0
    return total


def _to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


class _Preemption:
    """SIGTERM / SIGUSR1 set a flag; the loop saves a checkpoint at the next step boundary and exits."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self):
        for sig in _PREEMPT_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True
        logger.warning("received %s: saving a checkpoint at the next step boundary, then exiting",
                       signal.Signals(signum).name)

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
    terms = LOSS_TERMS[data.family]
    sums = torch.zeros(2 * len(terms) + 2, dtype=torch.float64)
    batch_size = layout.per_device_batch_size
    mine = [p for p in range(total) if p % layout.world_size == layout.rank]
    for start in range(0, len(mine), batch_size):
        batch = data.eval_collator([data.eval_dataset[p] for p in mine[start:start + batch_size]])
        units = count_units(batch)
        with precision.autocast():
            out = model(_to_device(batch, layout.device))
        for i, (name, unit) in enumerate(terms):
            if units[unit]:
                sums[2 * i] += float(out[name]) * units[unit]
                sums[2 * i + 1] += units[unit]
        if "mlm_accuracy" in out and units.get("masked"):
            sums[-2] += float(out["mlm_accuracy"]) * units["masked"]
            sums[-1] += units["masked"]
    all_reduce_sum(sums)
    model.train()
    result = {}
    for i, (name, _) in enumerate(terms):
        if sums[2 * i + 1] > 0:
            result[f"eval/{name}"] = float(sums[2 * i] / sums[2 * i + 1])
    main_term = f"eval/{terms[0][0]}"
    if main_term in result:
        result["eval/perplexity"] = math.exp(min(result[main_term], 50.0))
    if sums[-1] > 0:
        result["eval/mlm_accuracy"] = float(sums[-2] / sums[-1])
    return result


def train(args: TrainArgs) -> dict[str, float]:
    """Run the whole job; returns the final summary (also logged as one line)."""
    # --- setup: validate everything before any long work -------------------------------------------------------
    run = prepare_run(args)  # params, encoder, checks; raises UserError before anything is built
    params = run.params
    layout = init_distributed(params.node_batch_sizes, local_rank=args.local_rank, node_rank=args.node_rank,
                              device=args.device)
    watchdog = PeerWatchdog(layout.rank, layout.world_size, args.peer_timeout).start()
    try:
        precision = make_precision(args.fp16_type, args.bf16, layout.device)
        data = build_run_data(run, layout)
        if args.build_dataset_only:
            logger.info("dataset built (%s); --build_dataset_only: exiting", data.describe())
            return {}
        return _train_loop(args, run, layout, precision, data)
    finally:
        watchdog.stop()
        run.encoder.close()
        shutdown()


def _train_loop(args: TrainArgs, run, layout: Layout, precision: Precision, data: RunData) -> dict[str, float]:
    params = run.params
    train_steps = run.config.train_steps
    torch.manual_seed(args.seed)
    model = run.build_model().to(layout.device)
    if precision.model_dtype != torch.float32:
        model = model.to(precision.model_dtype)
    optimizer = build_optimizer(model, learning_rate=params.learning_rate, weight_decay=params.weight_decay,
                                adam_epsilon=params.adam_epsilon, adam_betas=tuple(params.adam_betas),
                                device=layout.device)
    scheduler = linear_schedule(optimizer, warmup_steps=params.warmup_steps, train_steps=train_steps)
    run_state = RunState(model, optimizer, scheduler, precision.scaler)

    # --- resume --------------------------------------------------------------------------------------------------
    checkpoints = ckpt.Checkpoints(args.model_dir, layout, tokenizer_dir=args.tokenizer_dir,
                                   config=run.resolved_config(), check=run.check_checkpoint,
                                   total_limit=params.save_total_limit)
    checkpoints.restore(run_state, resume=args.do_continue)
    state = run_state.train

    train_model = model
    if layout.distributed:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[layout.device.index] if layout.device.type == "cuda" else None)
    if args.compile:
        train_model = torch.compile(train_model)

    writer = MetricsWriter(f"{args.model_dir}/runs/{run.config.run_name}", purge_step=state.step or None)
    step_log = JsonlLog(f"{args.model_dir}/train_log.jsonl", resume_step=state.step)
    terms = LOSS_TERMS[data.family]
    weights = run.loss_weights
    accumulation = params.gradient_accumulation_steps
    eval_steps = run.config.eval_steps
    inject_nan_at = _test_nan_step()

    first_eval = evaluate(model, data, layout, precision, args.max_eval_samples) if state.step == 0 else {}
    if first_eval:
        writer.scalars(first_eval, 0)
        logger.info("step 0: %s", _fmt(first_eval))

    model.train()
    bar = progress(total=train_steps, initial=state.step, desc="train", unit="step")
    window = {"loss": 0.0, "tokens": 0.0, "time": time.perf_counter(), "steps": 0}
    last_eval, last_loss, started = first_eval, float("nan"), time.perf_counter()
    with _Preemption() as preemption, contextlib.closing(writer):  # closed on errors too: the last scalars kept
        while state.step < train_steps:
            # --- batch: this process's share of the global batch, as micro-batches ----------------------------
            positions = positions_for_step(state.next_position, layout)
            micro = [data.collator([data.train_dataset[p] for p in chunk])
                     for chunk in _chunks(positions, accumulation)]
            local = [count_units(b) for b in micro]
            unit_names = sorted(local[0])
            counts = torch.tensor([[u[n] for n in unit_names] for u in local], dtype=torch.float64).sum(0)
            global_units = dict(zip(unit_names, all_reduce_sum(counts).tolist()))

            # --- forward / backward with accumulation ------------------------------------------------------------
            step_loss, metrics = 0.0, {}
            for i, batch in enumerate(micro):
                sync = i == len(micro) - 1 or not layout.distributed
                no_sync = not sync and hasattr(train_model, "no_sync")
                with train_model.no_sync() if no_sync else contextlib.nullcontext():
                    with precision.autocast():
                        out = train_model(_to_device(batch, layout.device))
                        loss = weighted_loss(out, terms, weights, local[i], global_units, layout.world_size)
                        if inject_nan_at is not None and state.step + 1 >= inject_nan_at:
                            loss = loss * float("nan")
                    scaled = precision.scaler.scale(loss) if precision.scaler else loss
                    scaled.backward()
                step_loss += float(loss.detach()) / layout.world_size
                for key, value in out.items():
                    if key != "loss":
                        metrics[key] = metrics.get(key, 0.0) + float(value.detach()) / len(micro)

            # --- clip and step (skipping non-finite steps) ---------------------------------------------------------
            # the preemption flag rides on this all-reduce, so that every process sees a signal at the same step
            reduced = all_reduce_sum(torch.tensor([step_loss, float(preemption.requested)], dtype=torch.float64))
            global_loss, preempt_now = float(reduced[0]), bool(reduced[1] > 0)
            if precision.scaler is not None:
                precision.scaler.unscale_(optimizer)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), params.max_grad_norm))
            finite = math.isfinite(global_loss) and math.isfinite(grad_norm)
            if precision.scaler is not None:
                scale_before = precision.scaler.get_scale()
                precision.scaler.step(optimizer)
                precision.scaler.update()
                stepped = precision.scaler.get_scale() >= scale_before
            elif finite:
                optimizer.step()
                stepped = True
            else:
                stepped = False
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            state.step += 1
            state.next_position += layout.global_batch_size
            state.tokens_seen += int(global_units["tokens"])
            if not stepped:
                state.skipped_steps += 1
            state.nonfinite_streak = 0 if math.isfinite(global_loss) else state.nonfinite_streak + 1
            if not finite and precision.scaler is None:
                logger.warning("step %d: loss %s, gradient norm %s: update skipped (%d skipped in all, %d non-finite "
                               "in a row; stopping at %d)", state.step, global_loss, grad_norm, state.skipped_steps,
                               state.nonfinite_streak, args.max_nonfinite_steps)

            # --- log ---------------------------------------------------------------------------------------------
            last_loss = global_loss
            window["loss"] += global_loss
            window["tokens"] += global_units["tokens"]
            window["steps"] += 1
            bar.update(1)
            bar.set_postfix(loss=f"{global_loss:.4f}")
            if state.step % params.logging_steps == 0 or state.step == train_steps:
                elapsed = time.perf_counter() - window["time"]
                scalars = {"train/loss": window["loss"] / window["steps"], "train/learning_rate":
                           scheduler.get_last_lr()[0], "train/grad_norm": grad_norm,
                           "train/tokens_per_second": window["tokens"] / max(elapsed, 1e-9),
                           "train/skipped_steps": state.skipped_steps}
                scalars.update({f"train/{k}": v for k, v in metrics.items()})
                writer.scalars(scalars, state.step)
                step_log.write({"step": state.step, **scalars})
                window = {"loss": 0.0, "tokens": 0.0, "time": time.perf_counter(), "steps": 0}
            if state.nonfinite_streak >= args.max_nonfinite_steps:
                raise UserError(f"the loss was NaN/inf for {state.nonfinite_streak} consecutive steps (up to step "
                                f"{state.step}); stopping. Lower the learning rate or use bf16/fp32; the last "
                                f"checkpoint in {args.model_dir} is intact")

            # --- eval and save -------------------------------------------------------------------------------
            if state.step % eval_steps == 0 or state.step == train_steps:
                last_eval = evaluate(model, data, layout, precision, args.max_eval_samples) or last_eval
                writer.scalars(last_eval, state.step)
                if last_eval:
                    step_log.write({"step": state.step, **last_eval})
                    logger.info("step %d: %s", state.step, _fmt(last_eval))
            if preempt_now:
                checkpoints.save(run_state)
                logger.warning("preempted: saved checkpoint-%d; rerun with --do_continue to resume", state.step)
                writer.close()
                bar.close()
                return {"step": state.step, "preempted": 1.0}
            if state.step % params.save_steps == 0 and state.step != train_steps:
                checkpoints.save(run_state)
    bar.close()

    # --- final model -----------------------------------------------------------------------------------------
    checkpoints.save(run_state)
    writer.close()
    summary = {"step": state.step, "final_loss": last_loss, "skipped_steps": state.skipped_steps,
               "tokens_seen": state.tokens_seen, "train_seconds": round(time.perf_counter() - started, 1)}
    summary.update(last_eval)
    if first_eval.get("eval/perplexity") is not None:
        summary["eval/perplexity_at_start"] = first_eval["eval/perplexity"]
    checkpoints.export_final(run_state, summary, family=run.family, encoder=run.encoder)
    logger.info("done: %s; model saved to %s", _fmt(summary), args.model_dir)
    return summary


def _test_nan_step() -> int | None:
    """Test hook: ``LMP_TEST_INJECT_NAN_AT_STEP=N`` makes the loss NaN from step N on (tests of the NaN guard)."""
    value = os.environ.get("LMP_TEST_INJECT_NAN_AT_STEP")
    if not value:
        return None
    logger.warning("LMP_TEST_INJECT_NAN_AT_STEP=%s: the loss is made NaN from step %s on (a test hook)", value, value)
    return int(value)


def _chunks(items: list[int], parts: int) -> list[list[int]]:
    """Split a process's batch into ``parts`` nearly equal micro-batches (none empty)."""
    parts = max(1, min(parts, len(items)))
    base, extra = divmod(len(items), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + base + (1 if i < extra else 0)
        out.append(items[start:end])
        start = end
    return out


def _fmt(values: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
