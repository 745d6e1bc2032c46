"""Sharded training on PyTorch's own FSDP2 (``torch.distributed.fsdp.fully_shard``): the modes, the device mesh, and
where each family's parameters are sharded.

``--fsdp`` (transformers' names) and what each does here:

- not given: DDP (``DistributedDataParallel``), as always;
- ``no_shard``: FSDP2 on a (processes, 1) mesh: replicated, gradients all-reduced (DDP's math through FSDP);
- ``shard_grad_op`` (ZeRO-2; the original's ``--use_deepspeed``): parameters, gradients and optimizer states
  sharded; a block's weights stay gathered from its forward to its backward (``reshard_after_forward=False``);
- ``full_shard`` (ZeRO-3): the same, re-gathered for the backward;
- ``hybrid_shard`` (HSDP): a (nodes, processes per node) mesh: sharded inside a node, replicated across nodes.

Where parameters live: each transformer block the family declares (``Family.layers``, applied to every part whose
model has them) is its own FSDP unit; everything else (the embeddings, the heads, the tied output layers, ELECTRA's
shared embeddings, DeBERTa-v3's GDES table) belongs to the root unit, which is gathered for the whole forward and
backward: a tied or shared parameter is one parameter of one unit, so it stays tied. A block the family lists more
than once (ALBERT's layer, run at every depth) is shared too, and stays in the root.

Gradients: FSDP2 averages them over all processes, as DDP does, so the loop's loss weighting (x world size) holds.
Under ``shard_grad_op`` with gradient accumulation they are reduce-scattered once per step, after the last
micro-batch (:func:`defer_gradient_sync`), as DDP's ``no_sync`` all-reduces once.

The build (:func:`build_on_rank0`, :func:`shard_from_rank0`): only rank 0 builds the whole model (seeded, or loaded
for continued pretraining); the other ranks build it on the meta device, and after ``fully_shard`` receive rank 0's
weights and buffers into their shards by broadcast, one tensor at a time. The weights are those of the unsharded
build bit for bit; a rank other than 0 never holds the whole model. DDP builds the whole model on every rank.

``--compile`` under sharding compiles each block in place before it is sharded (:func:`compile_blocks`), as
torchtitan does, rather than the whole sharded model.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .errors import UserError
from .log import get_logger

if TYPE_CHECKING:
    from .distributed import Layout

logger = get_logger(__name__)



def mesh_shape(mode: str, layout: Layout) -> tuple[int, ...]:
    """The device mesh of a mode: 1-D (every process) for the sharded modes; (replicas, shards) for the others."""
    if mode == "no_shard":
        return (layout.world_size, 1)
    if mode == "hybrid_shard":
        if layout.world_size % layout.num_nodes:
            raise UserError(f"--fsdp hybrid_shard: {layout.world_size} processes over {layout.num_nodes} nodes are "
                            "not the same number on every node")
        return (layout.num_nodes, layout.world_size // layout.num_nodes)
    return (layout.world_size,)


def device_mesh(shape: tuple[int, ...], device: torch.device):
    from torch.distributed.device_mesh import init_device_mesh

    names = ("replicate", "shard") if len(shape) == 2 else ("shard",)
    return init_device_mesh(device.type, shape, mesh_dim_names=names)


def shard_units(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules that become FSDP units of their own, the root aside: each block of each part, from the family's
    ``layers`` declaration (a part whose model the declaration does not fit keeps its blocks in the root), minus
    the blocks listed more than once (shared weights, run at several depths)."""
    family = getattr(model, "family", None)
    if family is None or family.layers is None:
        return []
    units, seen, shared = [], set(), set()
    for hf_model in model.hf_models().values():
        try:
            layers = list(family.layers(hf_model))
        except AttributeError:
            continue
        for layer in layers:
            if id(layer) in seen:
                shared.add(id(layer))
            else:
                seen.add(id(layer))
                units.append(layer)
    return [unit for unit in units if id(unit) not in shared]


def shard_model(model: torch.nn.Module, mode: str, layout: Layout, *, mesh_dims: tuple[int, ...] | None = None,
                mp_policy=None) -> torch.nn.Module:
    """Apply ``fully_shard`` in place: each block (:func:`shard_units`), then the root. ``mesh_dims`` overrides the
    mode's mesh (tests: a 2x1 hybrid mesh on one machine). Returns ``model``, now an ``FSDPModule``."""
    from torch.distributed.fsdp import fully_shard

    trained_rows = _trained_rows(model)
    mesh = device_mesh(mesh_dims or mesh_shape(mode, layout), layout.device)
    kwargs = {"mesh": mesh, "reshard_after_forward": mode != "shard_grad_op"}
    if mp_policy is not None:
        kwargs["mp_policy"] = mp_policy
    for unit in shard_units(model):
        fully_shard(unit, **kwargs)
    fully_shard(model, **kwargs)
    _keep_trained_rows(model, trained_rows)
    return model


def _trained_rows(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights that train some rows only (``flozen-layers`` with vocabulary adaptation:
    :func:`.models.vocab_adapt.train_rows_only`), by parameter name: their trained rows' mask."""
    return {name: ~param.frozen_rows for name, param in model.named_parameters()
            if getattr(param, "frozen_rows", None) is not None}


def _keep_trained_rows(model: torch.nn.Module, trained_rows: dict[str, torch.Tensor]) -> None:
    """After ``fully_shard`` (or ``to_empty``), which replace the parameters by new (DTensor) ones without
    train_rows_only's gradient hook and ``frozen_rows``: set both again on each new parameter that lacks them (the
    hook zeroing the frozen rows of its gradient shard)."""
    from .models.vocab_adapt import train_rows_only

    for name, param in model.named_parameters():
        if name in trained_rows and getattr(param, "frozen_rows", None) is None:
            train_rows_only(param, trained_rows[name])


def build_on_rank0(build: Callable[[], torch.nn.Module], layout: Layout) -> torch.nn.Module:
    """The model to shard, built so that only rank 0 ever holds all of it: rank 0 builds it as an unsharded run does
    (seeded, or loaded for continued pretraining), on the CPU; every other rank builds the same structure on the
    meta device (no memory, no weights read: ``models.base.load_pretrained`` builds from the config there).
    :func:`shard_from_rank0` then shards both and broadcasts rank 0's weights into the shards (HF accelerate's
    ``cpu_ram_efficient_loading``; torch's ``set_model_state_dict(..., broadcast_from_rank0=True)``). The CPU
    random state every rank leaves with is rank 0's, as when every rank built the model itself. Collective."""
    if layout.rank == 0:
        model = build()
    else:
        with torch.device("meta"):
            model = build()
    import torch.distributed as dist

    state = torch.get_rng_state().to(layout.device)
    dist.broadcast(state, src=0)
    torch.set_rng_state(state.cpu())
    return model


def shard_from_rank0(model: torch.nn.Module, mode: str, layout: Layout, **shard_kwargs) -> torch.nn.Module:
    """:func:`shard_model` for a model from :func:`build_on_rank0`: rank 0 keeps its whole weights (references to
    them) while sharding, the meta ranks allocate their empty shards (``to_empty``: a tied or shared
    parameter is one parameter, and stays one), then rank 0 broadcasts each parameter in turn and every rank copies
    its own slice into its shard (a rank other than 0 holds one whole tensor at a time), and every buffer whole:
    the non-persistent ones (RoPE's inverse frequencies, position ids) are in no state dict. The weights are rank
    0's bit for bit. Collective.

    As torch's ``set_model_state_dict(..., StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))``
    (``_state_dict_utils._broadcast_state_dict`` / ``_distribute_tensors``), but over the parameters themselves,
    each once: the state-dict route lists a module shared by two parents (ELECTRA's embeddings) under both names
    and fails on the second, and misses GDES's E_delta."""
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    # rank 0's whole weights by parameter name (not the state dict: DeBERTa-v3's GDES writes E_generator + E_delta
    # there, not E_delta)
    whole = {name: param.detach() for name, param in model.named_parameters()} if layout.rank == 0 else {}
    trained_rows = _trained_rows(model)
    model = shard_model(model, mode, layout, **shard_kwargs)
    if layout.rank != 0:
        model.to_empty(device=layout.device)
        _keep_trained_rows(model, trained_rows)  # to_empty made new parameters again
    with torch.no_grad():
        for name, param in model.named_parameters():  # each parameter once, in the same order on every rank
            full = whole.pop(name).to(layout.device) if layout.rank == 0 else \
                torch.empty(param.shape, dtype=param.dtype, device=layout.device)
            dist.broadcast(full, src=0)
            if isinstance(param, DTensor):
                shape, offset = compute_local_shape_and_global_offset(param.shape, param.device_mesh,
                                                                      param.placements)
                param.to_local().copy_(full[tuple(slice(o, o + n) for n, o in zip(shape, offset))])
            else:
                param.copy_(full)
            del full
        whole.clear()
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)
    return model


def compile_blocks(model: torch.nn.Module) -> int:
    """``torch.compile`` each block the family declares, in place and once (a shared block too), before
    :func:`shard_model`: per-block compilation, as torchtitan's ``apply_compile`` (compile, then ``fully_shard``),
    so that FSDP2's all-gathers and reduce-scatters run between compiled blocks rather than inside one whole-model
    graph, and blocks of one shape share their compiled code. ``nn.Module.compile`` keeps the module and its
    state-dict keys (``torch.compile(block)`` would add ``_orig_mod.``), so checkpoints and exports are unchanged.
    Returns the number of blocks compiled."""
    family = getattr(model, "family", None)
    blocks = {}
    for hf_model in model.hf_models().values():
        try:
            layers = list(family.layers(hf_model)) if family is not None and family.layers is not None else []
        except AttributeError:
            layers = []
        blocks.update((id(layer), layer) for layer in layers)
    for block in blocks.values():
        block.compile()
    return len(blocks)


def defer_gradient_sync(model: torch.nn.Module, defer: bool) -> None:
    """Gradient accumulation under ``shard_grad_op``: with ``defer``, the next backward keeps its gradients
    unsharded on this process (no reduce-scatter) and the parameters gathered (no re-gather for the next forward);
    the last micro-batch's backward (``defer=False``) reduce-scatters the sum once and reshards. The gradient is the
    same sum as one reduce-scatter per micro-batch (a mean over processes of the summed micro-batches either way);
    the cost is a gathered copy of the weights and gradients until the step, as ZeRO-2 holds."""
    model.set_requires_gradient_sync(not defer)
    model.set_reshard_after_backward(not defer)


def checkpoint_activations(model: torch.nn.Module) -> None:
    """Activation checkpointing on every block of every part: transformers' own where the part supports it
    (non-reentrant: each block's forward is recomputed in the backward, FSDP2's hooks staying outside it), else
    torch's checkpoint around the forward of each block the family declares (``Family.layers``: ALBERT's shared
    layer, whose transformers class has none). Dropout draws the same numbers again in the recompute (the checkpoint
    restores the RNG state), so the step is the one without it. State dict keys are unchanged."""
    family = getattr(model, "family", None)
    for name, hf_model in model.hf_models().items():
        if getattr(hf_model, "supports_gradient_checkpointing", False):
            hf_model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            continue
        try:
            layers = list(family.layers(hf_model)) if family is not None and family.layers is not None else []
        except AttributeError:
            layers = []
        if not layers:
            raise UserError(f"--gradient_checkpointing: the {name} part ({type(hf_model).__name__}) supports no "
                            "activation checkpointing and its family declares no layers to checkpoint")
        for layer in {id(layer): layer for layer in layers}.values():  # a shared layer once
            layer.forward = functools.partial(_checkpointed, layer.forward)


def _checkpointed(forward, *args, **kwargs):
    if not torch.is_grad_enabled():
        return forward(*args, **kwargs)
    from torch.utils.checkpoint import checkpoint

    return checkpoint(forward, *args, use_reentrant=False, **kwargs)


def is_sharded(model: torch.nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def full_tensor(value: torch.Tensor) -> torch.Tensor:
    """A DTensor's whole value (a collective: every process calls it); a plain tensor as it is."""
    from torch.distributed.tensor import DTensor

    return value.full_tensor() if isinstance(value, DTensor) else value


def all_finite(parameters) -> bool:
    """Whether every weight is finite, each process looking at its own shards (the same answer on every process
    when the model is sharded: one all-reduce)."""
    from torch.distributed.tensor import DTensor

    parameters = list(parameters)
    finite = all(bool(torch.isfinite(p.to_local() if isinstance(p, DTensor) else p).all()) for p in parameters)
    if not any(isinstance(p, DTensor) for p in parameters):
        return finite
    from .distributed import all_reduce_sum

    return float(all_reduce_sum(torch.tensor([0.0 if finite else 1.0], dtype=torch.float64))[0]) == 0.0


def save_shards(model: torch.nn.Module, optimizer: torch.optim.Optimizer, directory: Path) -> None:
    """Write the model's and optimizer's state with torch.distributed.checkpoint: every process its own shards
    (a plain model in one process: the whole of it), ``.metadata`` by rank 0. Collective."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optimizer_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optimizer_state, "extra": _resume_state(model)},
             checkpoint_id=str(directory))


def load_shards(model: torch.nn.Module, optimizer: torch.optim.Optimizer, directory: Path) -> None:
    """Load what :func:`save_shards` wrote into ``model`` and ``optimizer``, on any number of processes (DCP
    reshards: 2 -> 1, 1 -> 2 ...). Collective."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optimizer_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optimizer_state, "extra": _resume_state(model)}
    dcp.load(state, checkpoint_id=str(directory))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    if state["extra"]:
        model.load_resume_state(state["extra"])


def load_model_shards(model: torch.nn.Module, directory: Path) -> None:
    """Load the weights alone of what :func:`save_shards` wrote into a plain (unsharded) ``model``, in one process
    with no process group (DCP reads every rank's shards into the whole tensors): the converter's and the
    extraction's way to a whole model."""
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

    state = {"model": get_model_state_dict(model)}
    with warnings.catch_warnings():  # "torch.distributed is disabled ...: assuming ... a single process": it is
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load(state, checkpoint_id=str(directory), no_dist=not (dist.is_available() and dist.is_initialized()))
    set_model_state_dict(model, state["model"])


def _resume_state(model: torch.nn.Module) -> dict:
    """What an exact resume needs beyond the weights (DeBERTa-v3's E_delta), sharded like the weights it is."""
    resume_state = getattr(model, "resume_state", None)
    return resume_state() if resume_state is not None else {}


def gathered_model(model: torch.nn.Module, build: Callable[[], torch.nn.Module], *, is_main: bool):
    """The whole model, unsharded, on the CPU of rank 0 (None elsewhere): a fresh ``build()`` holding the full
    state dict gathered from the shards (collective; each parameter gathered once, straight to the CPU). A plain
    model is returned as it is."""
    if not is_sharded(model):
        return model
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not is_main:
        return None
    plain = build().to("cpu")
    plain.load_state_dict(full)
    return plain.eval()
