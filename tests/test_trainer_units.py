import torch

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
    terms = [("mlm_loss", "masked")]
    total = sum(weighted_loss({"mlm_loss": m, "loss": m}, terms, {}, u, global_units, 1) for m, u in zip(means, local))
    assert torch.isclose(total, torch.tensor((1.0 * 1 + 3.0 * 3) / 4))


def test_empty_term_contributes_nothing_not_nan():
    batch = _batch([[-100, -100]])
    units = count_units(batch)
    out = {"mlm_loss": torch.tensor(float("nan")), "nsp_loss": torch.tensor(0.5), "loss": torch.tensor(float("nan"))}
    terms = [("mlm_loss", "masked"), ("nsp_loss", "samples")]
    total = weighted_loss(out, terms, {}, units, {"masked": 4.0, "samples": 2.0, "tokens": 4.0, "next_tokens": 2.0}, 1)
    assert torch.isclose(total, torch.tensor(0.25))
