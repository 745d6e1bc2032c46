"""Process layout: plain runs, torchrun and ``python -m torch.distributed.launch``; per-node batch sizes.

A job's global batch at each optimizer step is the sum of the node batch sizes in parameter.json
(``batch-size``: node rank -> that node's batch; ``"-1"`` is the size for any node not listed, so a
single-node preset works unchanged on one node). A node's batch is split over its local processes:
``node_batch // nproc`` each, and the first ``node_batch % nproc`` local ranks take one sample more.
Samples of a global batch are laid out node by node, local rank by local rank, so every process
knows its contiguous slice ``[rank_offset, rank_offset + per_device_batch_size)`` of the batch
without talking to the others.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from .errors import UserError
from .log import get_logger, heartbeat

logger = get_logger(__name__)
JOIN_NOTICE_S = 5.0  # a join that takes longer is said (a node started before node 0 waits for it)
JOIN_HEARTBEAT_S = 30.0


@dataclass(frozen=True)
class Layout:
    """Where this process sits in the job and which slice of each global batch it handles."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    node_rank: int
    num_nodes: int
    node_batch_size: int
    per_device_batch_size: int
    rank_offset: int  # first sample of this process inside the global batch
    global_batch_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def node_batch_size(node_batch_sizes: dict[int, int], node_rank: int, key: str = "batch-size") -> int:
    """The batch of one node: its own entry, else the ``-1`` entry; a node with neither is an error naming ``key``
    (the file and preset key, e.g. ``parameter.json: bert-base.batch-size``)."""
    if node_rank in node_batch_sizes:
        return node_batch_sizes[node_rank]
    if -1 in node_batch_sizes:
        return node_batch_sizes[-1]
    known = ", ".join(str(k) for k in sorted(node_batch_sizes))
    raise UserError(f"{key} has no entry for node rank {node_rank} (entries: {known}); "
                    f'add "{node_rank}": <batch> or a "-1" default')


def preset_global_batch_size(node_batch_sizes: dict[int, int], num_nodes: int = 1) -> int:
    """The global batch of a preset on ``num_nodes`` nodes, or on every node it lists when those are more (what a
    dataset build launched alone counts an epoch's steps at)."""
    nodes = max([num_nodes, *(n + 1 for n in node_batch_sizes if n >= 0)])
    return sum(node_batch_size(node_batch_sizes, n) for n in range(nodes))


def split_node_batch(node_batch: int, local_world_size: int, key: str = "batch-size") -> list[int]:
    """Per-process shares of one node's batch: equal parts, the remainder going to the first local ranks."""
    base, remainder = divmod(node_batch, local_world_size)
    if base == 0:
        raise UserError(f"{key}: a node batch of {node_batch} cannot be split over {local_world_size} processes "
                        "(each needs at least one sample)")
    return [base + (1 if i < remainder else 0) for i in range(local_world_size)]


def batch_layout(node_batch_sizes: dict[int, int], *, num_nodes: int, node_rank: int, local_rank: int,
                 local_world_size: int, key: str = "batch-size") -> tuple[int, int, int, int]:
    """Return (node_batch_size, per_device_batch_size, rank_offset, global_batch_size) for one process."""
    node_batches = [node_batch_size(node_batch_sizes, n, key) for n in range(num_nodes)]
    shares = split_node_batch(node_batches[node_rank], local_world_size, key)
    offset = sum(node_batches[:node_rank]) + sum(shares[:local_rank])
    return node_batches[node_rank], shares[local_rank], offset, sum(node_batches)


def _env_int(*names: str) -> int | None:
    for name in names:
        value = os.environ.get(name)
        if value not in (None, ""):
            return int(value)
    return None


def init_distributed(node_batch_sizes: dict[int, int], *, local_rank: int | None = None,
                     node_rank: int | None = None, device: str | None = None,
                     timeout_s: float = 1800.0, training: bool = True, batch_key: str = "batch-size",
                     join_timeout_s: float | None = None) -> Layout:
    """Read the launcher's environment, start the process group (NCCL on GPUs, gloo on CPUs), compute the layout.

    ``local_rank`` is the ``--local_rank`` flag of ``torch.distributed.launch`` (``LOCAL_RANK`` wins when both
    are set, since torchrun sets only the variable). ``node_rank`` is the ``--node_rank`` flag; without it the
    launcher's ``GROUP_RANK`` (torchrun) or ``NODE_RANK`` is used; a flag that disagrees with the launcher is an
    error. One process given a multi-node ``batch-size`` trains with the node ``--node_rank`` names, and without it
    is an error when ``training`` (a dataset build alone does not depend on the batch). Batch errors name
    ``batch_key`` (the file and the preset's key). ``join_timeout_s`` (--peer_timeout): how long this process waits
    for every process of the job to join the process group; past it, it ends with one line (exit 1), since a peer
    whose script failed before joining (a bad flag on another node) would otherwise keep it waiting ``timeout_s``.
    """
    world_size = _env_int("WORLD_SIZE") or 1
    rank = _env_int("RANK") or 0
    env_local_rank = _env_int("LOCAL_RANK")
    given_local = local_rank if local_rank is not None and local_rank >= 0 else None  # -1: the original's "unset"
    if given_local is not None and env_local_rank is not None and given_local != env_local_rank:
        raise UserError(f"--local_rank {given_local} disagrees with the launcher's LOCAL_RANK={env_local_rank}; "
                        "drop the flag (the launcher sets it)")
    local_rank = env_local_rank if env_local_rank is not None else (given_local or 0)
    local_world_size = _env_int("LOCAL_WORLD_SIZE") or world_size
    num_nodes = _env_int("GROUP_WORLD_SIZE") or max(1, world_size // local_world_size)
    env_node_rank = _env_int("GROUP_RANK", "NODE_RANK")
    given_node = node_rank if node_rank is not None and node_rank >= 0 else None
    if given_node is not None and env_node_rank is not None and given_node != env_node_rank:
        names = "GROUP_RANK" if _env_int("GROUP_RANK") is not None else "NODE_RANK"
        raise UserError(f"--node_rank {given_node} disagrees with the launcher's {names}={env_node_rank} (the "
                        "original's README asks for the node rank twice: pass the same number to both, or only to "
                        "the launcher)")
    multi_node_preset = sorted(n for n in node_batch_sizes if n >= 0)
    if world_size == 1 and len(multi_node_preset) > 1 and (training or given_node is not None):
        # one process and a preset of per-node batches: train with the chosen node's batch, never node 0's silently
        if given_node is None:
            raise UserError(f"{batch_key} gives batches for nodes {', '.join(map(str, multi_node_preset))} (a "
                            "multi-node preset) but this is one process: launch every node, or pass --node_rank N "
                            "to train with node N's batch alone")
        node_batch_sizes = {0: node_batch_size(node_batch_sizes, given_node, batch_key)}
        given_node = None
    node_rank = given_node if given_node is not None else (
        env_node_rank if env_node_rank is not None else rank // local_world_size)
    if not 0 <= node_rank < num_nodes:
        raise UserError(f"--node_rank {node_rank} is outside the job's {num_nodes} node(s)")

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":  # each local process on its own GPU
        device = f"cuda:{local_rank}"
    torch_device = torch.device(device)
    if torch_device.type == "cuda":
        torch.cuda.set_device(torch_device)

    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if torch_device.type == "cuda" else "gloo"
        # A bounded timeout: if a peer dies, collectives fail instead of hanging forever.
        with _join_deadline(rank, world_size, join_timeout_s):
            dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s),
                                    **({"device_id": torch_device} if backend == "nccl" else {}))
        logger.info("process group: backend %s, world size %d, %d node(s)", backend, world_size, num_nodes)

    node_batch, per_device, offset, global_batch = batch_layout(
        node_batch_sizes, num_nodes=num_nodes, node_rank=node_rank, local_rank=local_rank,
        local_world_size=local_world_size, key=batch_key)
    return Layout(rank=rank, world_size=world_size, local_rank=local_rank, local_world_size=local_world_size,
                  node_rank=node_rank, num_nodes=num_nodes, node_batch_size=node_batch,
                  per_device_batch_size=per_device, rank_offset=offset, global_batch_size=global_batch,
                  device=torch_device)


@contextlib.contextmanager
def _join_deadline(rank: int, world_size: int, seconds: float | None) -> Iterator[None]:
    """End this process with one line if the body (joining the process group) takes over ``seconds``: the process
    group's own wait for a peer that never comes is its collective timeout (half an hour), not a join bound."""
    master = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
    bound = f"giving up after {seconds:g} s (--peer_timeout)" if seconds is not None else "no bound"
    waiting = heartbeat(f"rank {rank}: waiting for all {world_size} processes of the job to join at MASTER_ADDR:"
                        f"MASTER_PORT {master} (node 0 runs the store: start it, and every node, with the same "
                        f"address and port); {bound}", logger=logger, level=logging.WARNING,
                        first_s=JOIN_NOTICE_S, every_s=JOIN_HEARTBEAT_S)
    if seconds is None:
        with waiting:
            yield
        return
    timer = threading.Timer(seconds, _exit_with, (
        f"rank {rank}: not all {world_size} processes of the job joined within {seconds:g} s (--peer_timeout; "
        f"store {master}): a node's script failed before joining (see that node's log: a bad flag, a missing "
        f"file) or was not started; stopping this rank too",))
    timer.daemon = True
    timer.start()
    try:
        with waiting:
            yield
    finally:
        timer.cancel()


def _exit_with(message: str) -> None:
    import logging
    import sys

    logger.error(message)
    logging.shutdown()
    print(f"error: {message}", file=sys.stderr, flush=True)
    os._exit(1)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all processes in place (a no-op in a single process).

    The loop's bookkeeping tensors (unit counts, loss, the preemption flag) live on the CPU; NCCL reduces only
    CUDA tensors, so under NCCL they make a round trip through this process's GPU."""
    if dist.is_available() and dist.is_initialized():
        if tensor.device.type != "cuda" and dist.get_backend() == "nccl":
            on_device = tensor.to(torch.device("cuda", torch.cuda.current_device()))
            dist.all_reduce(on_device, op=dist.ReduceOp.SUM)
            tensor.copy_(on_device)
        else:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def reduces_on_device() -> bool:
    """Whether the process group reduces on the GPU (NCCL): the loop then keeps its step tensors there, so that
    summing them over processes needs no copy back to the host."""
    return dist.is_available() and dist.is_initialized() and dist.get_backend() == "nccl"


def store_set(key: str, value: str) -> None:
    """Set a key in the job's key-value store (torch.distributed's; nothing in one process)."""
    if dist.is_available() and dist.is_initialized():
        dist.distributed_c10d._get_default_store().set(f"lmpretrain/{key}", value)


def store_has(key: str) -> bool:
    """Whether a key is set in the job's store (False in one process or when the store does not answer)."""
    if not (dist.is_available() and dist.is_initialized()):
        return False
    try:
        return bool(dist.distributed_c10d._get_default_store().check([f"lmpretrain/{key}"]))
    except Exception:  # a store gone with its host: the peer watchdog says so
        return False


def dir_shared_by_nodes(path: str | os.PathLike, layout: Layout, purpose: str) -> bool:
    """Whether every process of a multi-node job sees the same ``path`` (a shared filesystem) rather than a node-local
    dir of the same name (the original README's relative paths on clusters without one). A collective: every process
    calls it, with the same ``purpose`` (a store key of its own). Each node's local rank 0 writes a token file of a
    random name into ``path`` (created if missing) and puts that name in the job's store; after a barrier, every
    process looks for every node's token; one sum says whether any process missed one (then every process answers
    False, so all of them agree); the tokens are removed after a second barrier. True in one process or on one node
    (a node's processes share its disk)."""
    if not layout.distributed or layout.num_nodes == 1:
        return True
    store = dist.distributed_c10d._get_default_store()
    token = None
    if layout.local_rank == 0:
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        token = directory / f".lmpretrain-shared-{purpose}-node{layout.node_rank}-{uuid.uuid4().hex}"
        token.touch()
        store.set(f"lmpretrain/shared/{purpose}/node{layout.node_rank}", token.name)
    try:
        barrier()
        names = [store.get(f"lmpretrain/shared/{purpose}/node{node}").decode() for node in range(layout.num_nodes)]
        missed = torch.tensor([float(sum(not (Path(path) / name).exists() for name in names))], dtype=torch.float64)
        shared = all_reduce_sum(missed)[0] == 0
        barrier()
    finally:
        if token is not None:
            token.unlink(missing_ok=True)
    return bool(shared)


def is_collective_error(error: BaseException) -> bool:
    """Whether an exception is a failed collective (a backend error or a gloo/NCCL transport failure)."""
    if isinstance(error, getattr(dist, "DistError", ())):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and any(
        word in text for word in ("gloo", "Gloo", "NCCL", "Connection closed by peer", "Connection reset by peer"))


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class PeerWatchdog:
    """Stop this process when a peer dies, instead of hanging in a collective until its timeout.

    Each process bumps a counter in the job's key-value store every ``interval_s`` from a background thread
    (which keeps running through long checkpoint writes) and watches the others' counters. A counter that
    has not moved for ``timeout_s`` — or a store that no longer answers — means a peer is gone: the
    watchdog logs which one and ends this process with exit code 1, so the launcher reports a failure.
    """

    def __init__(self, rank: int, world_size: int, timeout_s: float, interval_s: float | None = None):
        import threading

        self.rank, self.world_size, self.timeout_s = rank, world_size, timeout_s
        self.interval_s = interval_s or max(0.5, min(5.0, timeout_s / 6))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lmpretrain-peer-watchdog", daemon=True)

    def start(self) -> PeerWatchdog:
        if self.world_size > 1 and dist.is_initialized():
            self._store = dist.distributed_c10d._get_default_store()
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the heartbeats and wait for the thread to leave the store: a daemon thread still inside a TCPStore
        call when the interpreter finalizes is unwound through C++ frames, and the process aborts ("terminate
        called without an active exception", SIGABRT) after a run that had finished. Bounded: a store that no
        longer answers gives up after its own timeout, and the thread is a daemon."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=max(10.0, 3 * self.interval_s))

    def _run(self) -> None:
        import time

        beats = 0
        seen = {r: (-1, time.monotonic()) for r in range(self.world_size) if r != self.rank}
        while not self._stop.wait(self.interval_s):
            try:
                beats += 1
                self._store.set(f"lmpretrain/heartbeat/{self.rank}", str(beats))
                now = time.monotonic()
                for peer, (last, since) in seen.items():
                    key = f"lmpretrain/heartbeat/{peer}"
                    value = int(self._store.get(key)) if self._store.check([key]) else -1
                    if value != last:
                        seen[peer] = (value, now)
                    elif now - since > self.timeout_s:
                        self._die(f"rank {self.rank}: rank {peer} sent no heartbeat for {now - since:.0f} s "
                                  f"(--peer_timeout {self.timeout_s:g}): it died or hangs; stopping this rank too")
            except Exception as error:  # the store went away with the process that hosted it
                if self._stop.is_set():
                    return
                self._die(f"rank {self.rank}: lost contact with the job's store, which rank 0's node hosts "
                          f"({type(error).__name__}: {str(error).strip()[:200]}): rank 0 or its launcher died")

    def peer_lost(self, error: BaseException) -> UserError:
        """What a collective that failed (a peer's socket closed, a timeout) means: give the watchdog the time it
        needs to name the peer that is gone (it then ends this process with that one line); if it names none, the
        one error to raise instead of the backend's traceback."""
        import time

        if self._thread.is_alive():
            deadline = time.monotonic() + self.timeout_s + 3 * self.interval_s
            while self._thread.is_alive() and time.monotonic() < deadline:
                time.sleep(0.2)
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return UserError(f"rank {self.rank}: a collective with the other processes failed ({first[:200]}); a peer "
                         "died or hangs: see the other ranks' logs")

    def _die(self, message: str) -> None:
        _exit_with(message)
