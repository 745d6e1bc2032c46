import torch

from lmpretrain.models import LossTerm, get_family
from lmpretrain.trainer import _chunks, count_units, weighted_loss


def test_chunks_split_evenly_and_keep_order():
    assert _chunks(list(range(5)), 2) == [[0, 1, 2], [3, 4]]
    assert _chunks([7], 4) == [[7]]
    assert sum(_chunks(list(range(10)), 3), []) == list(range(10))


def _batch(labels):
    labels = torch.tensor(labels)
    return {"input_ids": torch.zeros_like(labels), "attention_mask": torch.ones_like(labels), "labels": labels}


def test_weighted_loss_reproduces_global_token_mean():
    # two micro-batches with 1 and 3 masked tokens; per-token losses 1.0 and 3.0 on average
    micro = [_batch([[-100, 5, -100]]), _batch([[4, 4, 4]])]
    means = [torch.tensor(1.0), torch.tensor(3.0)]
    local = [count_units(b) for b in micro]
    global_units = {k: sum(u[k] for u in local) for k in local[0]}
    terms = [LossTerm("mlm_loss", "masked")]
    weights = {"mlm_loss": 1.0}
    total = sum(weighted_loss({"mlm_loss": m}, terms, weights, u, global_units, 1) for m, u in zip(means, local))
    assert torch.isclose(total, torch.tensor((1.0 * 1 + 3.0 * 3) / 4))


def test_empty_term_contributes_nothing_not_nan():
    batch = _batch([[-100, -100]])
    units = count_units(batch)
    out = {"mlm_loss": torch.tensor(float("nan")), "nsp_loss": torch.tensor(0.5)}
    terms = get_family("bert").loss_terms
    weights = {"mlm_loss": 1.0, "nsp_loss": 1.0}
    global_units = {"masked": 4.0, "samples": 2.0, "tokens": 4.0, "next_tokens": 2.0}
    total = weighted_loss(out, terms, weights, units, global_units, 1)
    assert torch.isclose(total, torch.tensor(0.25))


def test_no_term_with_units_gives_a_zero_that_still_backpropagates():
    # nothing masked here and no other term: the micro-batch adds 0, yet backward() runs (DDP needs every rank's)
    weight = torch.tensor(2.0, requires_grad=True)
    out = {"mlm_loss": torch.tensor(float("nan")), "mlm_accuracy": weight * 0.5}
    units = count_units(_batch([[-100, -100]]))
    total = weighted_loss(out, [LossTerm("mlm_loss", "masked")], {"mlm_loss": 1.0}, units, {**units, "masked": 3.0}, 1)
    total.backward()
    assert float(total.detach()) == 0.0 and weight.grad is not None and float(weight.grad) == 0.0
