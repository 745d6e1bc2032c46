"""Vocabulary adaptation by token: a pretrained model continued with another tokenizer keeps what it knew.

Every row of a vocabulary-indexed tensor (input embeddings, tied or untied output embeddings, output biases) of the
new model comes from the old model by token string, never by id:

- **kept**: a token the old vocabulary has (or a special token whose role the old tokenizer fills: [PAD], [UNK],
  [CLS], [SEP], [MASK]) gets its old row, bit for bit;
- **composed**: a token new to the model gets the mean of the rows of the pieces the model's own tokenizer splits
  its text into ([UNK] pieces left out);
- **initialised**: a token nothing splits (a new special or reserved token, or one of only unknown pieces) gets the
  mean row of the old vocabulary.

:func:`plan_adaptation` decides where each row comes from (pure: vocabularies in, a :class:`VocabPlan` out);
:meth:`VocabPlan.apply` maps one tensor; :func:`adapt_model` applies the plan to every vocabulary-indexed parameter
of a transformers model, keeping ties. Under ``flozen-layers`` the kept rows stay frozen and the others train
(:func:`train_rows_only`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch

_RESERVED = re.compile(r"\[[^\[\]\s]+\]|<[^<>\s]+>")  # [unused3], [MASK], <s>, <|endoftext|>: not text to split


@dataclass(frozen=True)
class VocabPlan:
    """Where each row of the new vocabulary comes from (ids of the old one)."""

    old_size: int
    new_size: int
    kept: tuple[tuple[int, int], ...]
    """(new id, old id) pairs."""
    composed: tuple[tuple[int, tuple[int, ...]], ...]
    """(new id, old ids of its pieces) pairs."""
    initialised: tuple[int, ...]
    """New ids that start from the mean row."""
    by_role: int = 0
    """How many of ``kept`` are special tokens matched by role rather than by string."""

    @classmethod
    def by_id(cls, old_size: int, new_size: int) -> VocabPlan:
        """What resizing did before adaptation by token (rows kept by id, new ids at the mean): for comparisons."""
        shared = min(old_size, new_size)
        return cls(old_size, new_size, tuple((i, i) for i in range(shared)), (), tuple(range(shared, new_size)))

    @property
    def extends(self) -> bool:
        """The new vocabulary is the old one with tokens appended (train_tokenizer.py --base_tokenizer_dir): every
        old id kept, for the same token."""
        return self.new_size > self.old_size and self.kept == tuple((i, i) for i in range(self.old_size))

    def summary(self) -> str:
        role = f" ({self.by_role} special tokens by role)" if self.by_role else ""
        extension = (f"the tokenizer extends the model's by {self.new_size - self.old_size} tokens (ids 0-"
                     f"{self.old_size - 1} unchanged): " if self.extends else "")
        return (f"{extension}{len(self.kept)} rows kept{role}, {len(self.composed)} composed from the pieces of the "
                f"model's tokenizer, {len(self.initialised)} initialised to the mean embedding "
                f"({self.old_size} -> {self.new_size} tokens)")

    def trainable_rows(self) -> torch.Tensor:
        """A bool mask over the new ids: True for the rows this plan made (composed and initialised). On the CPU
        always, also where the model is built on the meta device (sharding.build_on_rank0's other ranks)."""
        mask = torch.ones(self.new_size, dtype=torch.bool, device="cpu")
        if self.kept:
            mask[torch.tensor([new for new, _ in self.kept], device="cpu")] = False
        return mask

    def apply(self, old: torch.Tensor) -> torch.Tensor:
        """The new tensor (``new_size`` rows) from an old one (at least ``old_size`` rows: a model may pad its
        vocabulary): kept rows copied exactly, composed rows the mean of their pieces' rows, the rest the mean of
        the old vocabulary's rows."""
        if old.shape[0] < self.old_size:
            raise ValueError(f"a tensor of {old.shape[0]} rows for a vocabulary of {self.old_size} tokens")
        source = old.detach()
        new = source[: self.old_size].float().mean(0).to(old.dtype).expand(self.new_size, *old.shape[1:]).clone()
        if self.kept:
            new_ids, old_ids = (torch.tensor(ids, device=old.device) for ids in zip(*self.kept))
            new[new_ids] = source[old_ids]
        if self.composed:
            pieces = [old_ids for _, old_ids in self.composed]
            flat = torch.tensor([i for ids in pieces for i in ids], device=old.device)
            segment = torch.repeat_interleave(torch.arange(len(pieces), device=old.device),
                                              torch.tensor([len(ids) for ids in pieces], device=old.device))
            sums = torch.zeros(len(pieces), *old.shape[1:], dtype=torch.float32, device=old.device)
            sums.index_add_(0, segment, source[flat].float())
            counts = torch.tensor([len(ids) for ids in pieces], dtype=torch.float32, device=old.device)
            means = sums / counts.view(-1, *([1] * (old.dim() - 1)))
            new[torch.tensor([new_id for new_id, _ in self.composed], device=old.device)] = means.to(old.dtype)
        return new


def plan_adaptation(old_tokens: dict[str, int], new_tokens: dict[str, int], *,
                    split: Callable[[list[str]], list[list[int]]] | None = None,
                    old_roles: dict[str, str] | None = None, new_roles: dict[str, str] | None = None,
                    text_of: Callable[[str], str] | None = None) -> VocabPlan:
    """Where each new row comes from. ``split``: texts -> old ids (the model's own tokenizer; None: no composing);
    ``*_roles``: role -> special token; ``text_of``: a token's text (markers stripped) for ``split``."""
    old_roles, new_roles = old_roles or {}, new_roles or {}
    role_of = {token: role for role, token in new_roles.items()}
    unk = old_tokens.get(old_roles["unk"]) if "unk" in old_roles else None
    kept, missing, by_role = [], [], 0
    for token, new_id in sorted(new_tokens.items(), key=lambda kv: kv[1]):
        role = role_of.get(token)
        if role is not None and role in old_roles:  # a special token takes its counterpart's row, whatever its name
            kept.append((new_id, old_tokens[old_roles[role]]))
            by_role += token != old_roles[role]
        elif token in old_tokens:
            kept.append((new_id, old_tokens[token]))
        else:
            missing.append((new_id, token))
    splittable = [(new_id, token) for new_id, token in missing
                  if split is not None and token not in role_of and not _RESERVED.fullmatch(token)
                  and (text_of or str)(token)]
    composed, done = [], set()
    if splittable:
        for (new_id, _), ids in zip(splittable, split([(text_of or str)(t) for _, t in splittable])):
            ids = tuple(i for i in ids if i != unk)
            if ids:
                composed.append((new_id, ids))
                done.add(new_id)
    initialised = tuple(new_id for new_id, _ in missing if new_id not in done)
    return VocabPlan(old_size=max(old_tokens.values()) + 1, new_size=max(new_tokens.values()) + 1, kept=tuple(kept),
                     composed=tuple(composed), initialised=initialised, by_role=by_role)


def vocabulary_parameters(model: torch.nn.Module, vocab_size: int) -> list[str]:
    """Names of the parameters indexed by token id: the input embeddings, the output embeddings (tied or not) and
    their bias, and any output bias a head holds as a bare parameter (BERT's ``cls.predictions.bias``). Tied
    parameters appear once."""
    names, seen = [], set()
    wanted = {id(model.get_input_embeddings().weight)}
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if isinstance(output, torch.nn.Module):
        wanted.update(id(p) for p in output.parameters(recurse=False))
    plain = (torch.nn.Linear, torch.nn.Embedding, torch.nn.LayerNorm)
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            full = f"{module_name}.{name}" if module_name else name
            if id(param) in seen or not param.shape or param.shape[0] != vocab_size:
                continue
            bare_bias = name == "bias" and param.dim() == 1 and not isinstance(module, plain)
            if id(param) in wanted or bare_bias:
                names.append(full)
                seen.add(id(param))
    return names


@torch.no_grad()
def adapt_model(model, plan: VocabPlan) -> list[str]:
    """Resize a transformers model to ``plan.new_size`` tokens with every vocabulary-indexed row from the plan.
    The new rows go into the same parameter objects, so ties hold (a tied output layer, BERT's decoder bias);
    transformers' ``resize_token_embeddings`` is not used: it resizes whatever ``get_output_embeddings`` returns,
    which for DeBERTa-v2's head is a hidden-to-hidden layer. Returns the adapted parameters' names."""
    old_rows = model.get_input_embeddings().weight.shape[0]
    names = vocabulary_parameters(model, old_rows)
    params = dict(model.named_parameters(remove_duplicate=False))
    for name in names:
        params[name].data = plan.apply(params[name].detach())
    for module in model.modules():  # the sizes the modules report (repr, checks), as the weights now have
        if isinstance(module, torch.nn.Embedding) and module.weight.shape[0] != module.num_embeddings:
            module.num_embeddings = module.weight.shape[0]
        elif isinstance(module, torch.nn.Linear) and module.weight.shape[0] != module.out_features:
            module.out_features = module.weight.shape[0]
    model.config.vocab_size = plan.new_size
    return names


def train_rows_only(weight: torch.nn.Parameter, rows: torch.Tensor) -> None:
    """Train only ``rows`` (a bool mask over the first dimension) of a frozen weight: the gradient of the other rows
    is zeroed by a hook, and ``weight.frozen_rows`` tells the optimizer to leave the parameter out of weight decay
    (which would move the frozen rows). Adam's update of a row whose gradient is always zero is exactly zero.

    A sharded weight (a DTensor parameter of FSDP2's ``fully_shard``, which replaced the one this was first called
    on: :func:`..sharding.shard_model` calls this again on it) never sees a gradient through autograd: FSDP2 writes
    (or adds) its reduce-scattered gradient shard into ``.grad`` and then runs the parameter's post-accumulate-grad
    hooks (``_fsdp_collectives.foreach_reduce``); that hook zeroes the frozen rows of this process's shard (the
    slice of ``rows`` its placements hold, as ``sharding.shard_from_rank0`` copies weights). Zeroing is idempotent,
    so a gradient accumulated over several reductions stays right."""
    from torch.distributed.tensor import DTensor

    weight.requires_grad_(True)
    rows = rows.cpu()
    weight.frozen_rows = ~rows
    if isinstance(weight, DTensor):
        from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

        shape, offset = compute_local_shape_and_global_offset(weight.shape, weight.device_mesh, weight.placements)
        rows = rows[offset[0]: offset[0] + shape[0]] if shape else rows
    mask = rows.to(weight.dtype).view(-1, *([1] * (weight.dim() - 1)))
    cache = {}

    def masked(grad: torch.Tensor) -> torch.Tensor:
        key = (grad.device, grad.dtype)
        if key not in cache:
            cache[key] = mask.to(grad.device, grad.dtype)
        return cache[key]

    if isinstance(weight, DTensor):
        def zero_frozen_shard(param: torch.nn.Parameter) -> None:
            with torch.no_grad():
                local = param.grad.to_local()
                local.mul_(masked(local))

        weight.register_post_accumulate_grad_hook(zero_frozen_shard)
    else:
        weight.register_hook(lambda grad: grad * masked(grad))
