"""Model FLOPs of one forward pass, counted from a family's shapes: what the model actually computes.

Only matrix products are counted (2 FLOPs per multiply-add), as MFU conventionally does (Chowdhery et al. 2022,
PaLM, appendix B; Kaplan et al. 2020) and as ``torch.utils.flop_counter.FlopCounterMode`` does; norms, softmax,
activations and embedding lookups are left out. Per layer and position of a transformer with width ``h``, FFN width
``f``, attending to ``keys`` positions:

- projections: q and o ``2·h·h`` each, k and v ``2·h·kv`` each (``kv`` = h, or fewer with grouped-query attention);
- FFN: ``2·h·f`` per matrix (2 matrices; 3 for a gated FFN, SwiGLU / GeGLU);
- attention scores and values: ``2·keys·h`` each, i.e. ``4·keys·h`` (x 3 for forward + backward: the 12·L·h·s of
  the PaLM formula). ``keys`` is the padded sequence length (the kernels compute the full square, the causal one
  included, as the FLOP counter counts it); a sliding window counts its width only under FlashAttention, which
  skips the blocks outside it (SDPA and eager attention apply the window as a mask over the full square).

The backbone runs on every position of the padded batch (``sequences x length``); an output head runs where its
family runs it (an MLM head on the masked positions only, a causal LM head on the positions with a next token, a
replaced-token head on all). Training counts 3x the forward (the backward computes two products per forward one).
Each family declares ``forward_flops`` (``registry.Family``) from these pieces; :func:`generic_forward_flops` is the
default: the main part's layers plus an output head over its vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

BACKWARD_FACTOR = 3  # forward + backward = 3 x forward (gradients for the inputs and for the weights)


@dataclass(frozen=True)
class BatchShape:
    """What a micro-batch's FLOPs depend on: its padded shape and the rows each head runs on."""

    sequences: int
    length: int
    masked: int = 0
    """Positions the MLM head runs on."""
    predicted: int = 0
    """Positions the causal LM head runs on (those with a next token)."""

    @property
    def positions(self) -> int:
        return self.sequences * self.length


def linear(rows: int, fan_in: int, fan_out: int) -> int:
    return 2 * rows * fan_in * fan_out


def layer_flops(shape: BatchShape, hidden: int, ffn: int, *, kv: int | None = None, ffn_matrices: int = 2,
                keys: int | None = None) -> int:
    """One transformer layer over the padded batch: projections, FFN and attention (see the module docstring)."""
    kv = hidden if kv is None else kv
    keys = shape.length if keys is None else keys
    per_position = 2 * hidden * (2 * hidden + 2 * kv) + ffn_matrices * 2 * hidden * ffn + 4 * keys * hidden
    return shape.positions * per_position


def stack_flops(config, shape: BatchShape, *, ffn_matrices: int = 2, layers: int | None = None,
                keys: list[int] | None = None) -> int:
    """The layers of a transformers model ``config`` (hidden_size, intermediate_size, num_attention_heads,
    num_key_value_heads and num_hidden_layers, which every transformers config maps). ``keys``: per layer."""
    hidden, layers = config.hidden_size, layers or config.num_hidden_layers
    ffn = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * hidden
    heads = config.num_attention_heads
    head_size = getattr(config, "head_dim", None) or hidden // heads
    kv = (getattr(config, "num_key_value_heads", None) or heads) * head_size
    keys = keys or [shape.length] * layers
    return sum(layer_flops(shape, hidden, ffn, kv=kv, ffn_matrices=ffn_matrices, keys=k) for k in keys)


def mlm_head_flops(config, rows: int) -> int:
    """A BERT-style masked-LM head on ``rows`` positions: a hidden-to-hidden transform, then the vocabulary."""
    return linear(rows, config.hidden_size, config.hidden_size) + linear(rows, config.hidden_size, config.vocab_size)


def generic_forward_flops(model, shape: BatchShape) -> int:
    """The default: the main part's layers, and an output head over the vocabulary on the rows the family's first
    loss term is over (masked positions, or positions with a next token)."""
    config = next(iter(model.hf_models().values())).config
    rows = shape.masked if model.family.loss_terms[0].unit == "masked" else shape.predicted
    return stack_flops(config, shape) + linear(rows, config.hidden_size, config.vocab_size)


def train_flops(model, shape: BatchShape) -> int:
    """FLOPs of one training step's forward and backward over this micro-batch."""
    count = model.family.forward_flops or generic_forward_flops
    return BACKWARD_FACTOR * count(model, shape)
