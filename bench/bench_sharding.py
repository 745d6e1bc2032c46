"""Per-rank training state and step time under FSDP2 (issue 24): ``full_shard`` and ``shard_grad_op`` against DDP.

    python bench/bench_sharding.py                                   # CPU, gloo: 1, 2 and 4 processes, llama-135m
    python bench/bench_sharding.py --device cuda --nprocs 1 2 4 8    # one GPU per process (NCCL), bf16 autocast
    python bench/bench_sharding.py --preset llama-tiny --steps 2 --nprocs 1 2   # a smoke run
    python bench/bench_sharding.py --nprocs 2 --modes full_shard full_shard_whole_build   # the build's memory

The model is the toolkit's own (``lmpretrain.models.build_model`` from a ``parameter.json`` preset, default
``llama-135m`` with a 32768-token vocabulary: ~125M parameters, tied embeddings), built and sharded as the trainer
does (``lmpretrain.sharding.build_on_rank0``: rank 0 builds the whole model, the other ranks on the meta device;
``shard_from_rank0``: each block a unit, then the root, rank 0's weights broadcast into the shards), AdamW from
``lmpretrain.optim``; ``full_shard_whole_build`` is full_shard with every rank building the whole model first (the
build before ``build_on_rank0``), for the comparison. For each
number of processes N, each mode runs in its own N spawned processes (so each row's peak RSS is its own): ``--warmup``
steps, then ``--steps`` timed steps of random tokens (``--batch`` sequences of ``--seq_len`` per process).

Per rank (the largest over the ranks): bytes of parameters, gradients (before ``zero_grad`` of the last step) and
optimizer states (every tensor in ``optimizer.state``), each counted from what the rank holds (``DTensor.to_local()``:
its shard, FSDP2's padding included); peak RSS (``ru_maxrss``, the build included: the whole model on every rank
under DDP and full_shard_whole_build, on rank 0 only otherwise) and the RSS after the steps; the peak RSS once the
model is built and sharded, before any step (rank 0 and the largest of the other ranks: what building on meta
saves); on CUDA ``torch.cuda.max_memory_allocated``.
Goal (issue 24): full_shard's state per rank <= 1.1 x (DDP's state / N). Step time: rank 0's median, and its ratio
to DDP at the same N, measured in the same invocation.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchlib import machine, report  # noqa: E402  (bench/ is on sys.path when run as a script)

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("LMP_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
MODES = ("ddp", "full_shard", "shard_grad_op", "full_shard_whole_build")
# full_shard_whole_build: full_shard with every rank building the whole model before sharding it (the build before
# sharding.build_on_rank0); the other FSDP modes build as the trainer does: rank 0 whole, the others on meta
MIB = 2 ** 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def local_bytes(tensor) -> int:
    """Bytes this rank holds of a tensor: a DTensor's local shard (padding included), a plain tensor whole."""
    from torch.distributed.tensor import DTensor

    if isinstance(tensor, DTensor):
        tensor = tensor.to_local()
    return tensor.numel() * tensor.element_size()


def rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def worker(rank: int, world: int, port: int, mode: str, args: argparse.Namespace, out_dir: str) -> None:
    import torch
    import torch.distributed as dist

    from lmpretrain.distributed import Layout
    from lmpretrain.models import build_model
    from lmpretrain.models.presets import load_parameters
    from lmpretrain.optim import build_optimizer
    from lmpretrain.sharding import build_on_rank0, shard_from_rank0, shard_model

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    cuda = args.device == "cuda"
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(args.threads)
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world, device_id=device if cuda else None)
    params = load_parameters(args.parameter_file, args.preset)
    batch = args.batch
    layout = Layout(rank, world, rank, world, 0, 1, batch * world, batch, rank * batch, batch * world, device)

    def build():
        return build_model(params, vocab_size=args.vocab_size, pad_token_id=0, seed=0, eos_token_id=3)

    rank0_build = mode not in ("ddp", "full_shard_whole_build")
    model = build_on_rank0(build, layout) if rank0_build else build().to(device)
    n_params = sum(p.numel() for p in model.parameters())
    if mode == "ddp":
        train_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[rank] if cuda else None)
    elif rank0_build:
        train_model = shard_from_rank0(model, mode, layout)
    else:
        train_model = shard_model(model, "full_shard", layout)
    build_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # the build and sharding, no step yet
    optimizer = build_optimizer(model, learning_rate=1e-4, weight_decay=0.1, adam_epsilon=1e-8, adam_betas=(0.9, 0.95),
                                device=device)
    times, grad_bytes = [], 0
    generator = torch.Generator().manual_seed(rank)
    for step in range(args.warmup + args.steps):
        ids = torch.randint(5, args.vocab_size, (batch, args.seq_len), generator=generator).to(device)
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
        if cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = train_model(inputs)["lm_loss"]
        loss.backward()
        if step == args.warmup + args.steps - 1:
            grad_bytes = sum(local_bytes(p.grad) for p in model.parameters() if p.grad is not None)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        if step >= args.warmup:
            times.append(time.perf_counter() - started)
    result = {
        "rank": rank, "parameters": n_params,
        "param_bytes": sum(local_bytes(p) for p in model.parameters()),
        "grad_bytes": grad_bytes,
        "optim_bytes": sum(local_bytes(v) for state in optimizer.state.values() for v in state.values()
                           if isinstance(v, torch.Tensor)),
        "buffer_bytes": sum(local_bytes(b) for b in model.buffers()),
        "step_s": statistics.median(times), "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "build_peak_rss": build_peak,
        "rss": rss_bytes(), "cuda_peak": torch.cuda.max_memory_allocated(device) if cuda else None,
        "loss": float(loss.detach())}
    Path(out_dir, f"{mode}-{world}-{rank}.json").write_text(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()


def run_case(mode: str, world: int, args, out_dir: str) -> dict:
    import torch.multiprocessing as mp

    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    mp.start_processes(worker, args=(world, free_port(), mode, args, out_dir), nprocs=world, start_method="spawn")
    ranks = [json.loads(Path(out_dir, f"{mode}-{world}-{r}.json").read_text()) for r in range(world)]
    worst = {key: max(r[key] for r in ranks) for key in ("param_bytes", "grad_bytes", "optim_bytes", "buffer_bytes",
                                                         "peak_rss", "rss")}
    worst["state_bytes"] = max(r["param_bytes"] + r["grad_bytes"] + r["optim_bytes"] for r in ranks)
    worst["build_peak_rank0"] = ranks[0]["build_peak_rss"]  # rank 0 builds the whole model in every mode
    worst["build_peak_others"] = max((r["build_peak_rss"] for r in ranks[1:]), default=None)
    worst["cuda_peak"] = max(r["cuda_peak"] for r in ranks) if ranks[0]["cuda_peak"] is not None else None
    return {**worst, "step_s": ranks[0]["step_s"], "parameters": ranks[0]["parameters"]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="llama-135m")
    parser.add_argument("--parameter_file", default=str(REPO / "parameter.json"))
    parser.add_argument("--vocab_size", type=int, default=32768)
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--batch", type=int, default=1, help="sequences per process and step")
    parser.add_argument("--nprocs", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES[:3]),
                        help="full_shard_whole_build only when named (the build before build_on_rank0)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (CPU)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--markdown", default=None)
    args = parser.parse_args(argv)
    if "ddp" not in args.modes:
        args.modes = ["ddp", *args.modes]  # the reference of every ratio
    if args.device == "cuda":
        import torch

        if torch.cuda.device_count() < max(args.nprocs):
            print(f"only {torch.cuda.device_count()} GPU(s): skipping --nprocs above it")
            args.nprocs = [n for n in args.nprocs if n <= torch.cuda.device_count()]
    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])])
    load_before = os.getloadavg()
    rows = {}
    with tempfile.TemporaryDirectory() as out_dir:
        for world in args.nprocs:
            for mode in args.modes:
                began = time.perf_counter()
                rows[world, mode] = run_case(mode, world, args, out_dir)
                print(f"{mode} x{world}: {time.perf_counter() - began:.0f} s, {json.dumps(rows[world, mode])}",
                      flush=True)
    load_after = os.getloadavg()
    n_params = rows[args.nprocs[0], "ddp"]["parameters"]
    cuda = args.device == "cuda"
    lines = [f"`{command}`", "", f"Machine: {machine()}; device {args.device}",
             f"Load average before / after: {load_before[0]:.1f} / {load_after[0]:.1f} (1 min)", "",
             f"Model: {args.preset} (vocab {args.vocab_size}), {n_params / 1e6:.1f}M parameters; "
             f"{args.batch} x {args.seq_len} tokens per process and step; {args.warmup} warm-up + {args.steps} timed "
             f"steps; {'bf16 autocast' if args.device == 'cuda' else 'fp32'}", "",
             "| N | mode | params MiB | grads MiB | optim MiB | state MiB / rank | DDP state / N | ratio | goal "
             "| step s | vs DDP | peak RSS MiB | RSS after MiB | build peak RSS rank 0 / others MiB |"
             + (" CUDA peak MiB |" if cuda else ""),
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if cuda else "")]
    for (world, mode), row in rows.items():
        ddp = rows[world, "ddp"]
        share = ddp["state_bytes"] / world
        ratio = row["state_bytes"] / share
        goal = "" if not mode.startswith("full_shard") else ("met" if ratio <= 1.1 else "MISSED")
        others = row["build_peak_others"]
        build = f"{row['build_peak_rank0'] / MIB:.0f} / " + (f"{others / MIB:.0f}" if others is not None else "-")
        peak = f" {row['cuda_peak'] / MIB:.0f} |" if row["cuda_peak"] is not None else ""
        lines.append(f"| {world} | {mode} | {row['param_bytes'] / MIB:.0f} | {row['grad_bytes'] / MIB:.0f} | "
                     f"{row['optim_bytes'] / MIB:.0f} | {row['state_bytes'] / MIB:.0f} | {share / MIB:.0f} | "
                     f"{ratio:.3f} | {goal} | {row['step_s']:.2f} | {row['step_s'] / ddp['step_s']:.2f} | "
                     f"{row['peak_rss'] / MIB:.0f} | {row['rss'] / MIB:.0f} | {build} |{peak}")
    report(lines, args.markdown)
    missed = [world for (world, mode), row in rows.items()
              if mode.startswith("full_shard") and row["state_bytes"] > 1.1 * rows[world, "ddp"]["state_bytes"] / world]
    if missed:
        raise SystemExit(f"full_shard missed the goal (state per rank <= 1.1 x DDP's / N) at N = {missed}")


if __name__ == "__main__":
    main()
