import pytest
import torch

from lmpretrain.errors import UserError
from lmpretrain.models import LossTerm, get_family
from lmpretrain.trainer import _chunks, count_units, weighted_loss
from tests.test_run_pretraining import make_args, parameter_file  # noqa: F401  (module fixture)


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


def _tiny_bert(**preset):
    from lmpretrain.models import build_model, parse_preset

    base = {"number-of-layers": 1, "hidden-size": 16, "sequence-length": 16, "ffn-inner-hidden-size": 32,
            "attention-heads": 2, "warmup-steps": 1, "learning-rate": 1e-3, "batch-size": {"-1": 4}, "train-steps": 1}
    params = parse_preset("bert-x", {**base, **preset}, "p.json")
    return params, build_model(params, vocab_size=40, pad_token_id=0, seed=0, eos_token_id=3).eval()  # no dropout


def _collated_pairs(labels=True):
    """A batch as the MLM collator gives it for BERT's sentence pairs (next_sentence_label passed on)."""
    import numpy as np

    from lmpretrain.masking import MaskingConfig, MLMCollator

    instances = [{"input_ids": np.array([2, 7 + i, 8, 9, 3, 10, 11 + i, 3]), "position": i,
                  "token_type_ids": np.array([0, 0, 0, 0, 0, 1, 1, 1]), "next_sentence_label": i % 2}
                 for i in range(4)]
    collate = MLMCollator(MaskingConfig(mlm_probability=0.3), vocab_size=40, pad_token_id=0, mask_token_id=4,
                          special_token_ids=[1, 2, 3], seed=0)
    return collate(instances)


def _loss(model, params, batch):
    family = model.family
    units = count_units(batch)
    return weighted_loss(model(batch), family.loss_terms_for(params), family.loss_weights(params), units, units, 1,
                         family=family)


def test_a_declared_term_the_model_does_not_return_is_an_error_naming_term_family_and_label():
    params, model = _tiny_bert()
    batch = _collated_pairs()
    assert batch["next_sentence_label"].tolist() == [0, 1, 0, 1]
    assert [t.name for t in model.family.loss_terms_for(params)] == ["mlm_loss", "nsp_loss"]
    assert torch.isfinite(_loss(model, params, batch))
    del batch["next_sentence_label"]  # a collator that does not pass the layout's label on
    with pytest.raises(UserError, match=r"the model returned no 'nsp_loss', a loss term the BERT family declares "
                                        r"\(it returned mlm_accuracy, mlm_loss\); the batch probably lacks "
                                        r"'next_sentence_label'.*collator did not pass it on"):
        _loss(model, params, batch)


def test_a_term_the_presets_layout_does_not_label_is_not_trained_and_not_an_error():
    params, model = _tiny_bert(**{"next-sentence-prediction": False})  # packed sentences: no next_sentence_label
    assert [t.name for t in model.family.loss_terms_for(params)] == ["mlm_loss"]
    batch = _collated_pairs()
    del batch["next_sentence_label"], batch["token_type_ids"]
    out = model(batch)
    assert "nsp_loss" not in out
    assert torch.equal(_loss(model, params, batch), out["mlm_loss"])


def test_a_term_without_a_label_is_always_required():
    units = count_units(_batch([[4, -100]]))
    with pytest.raises(UserError, match=r"no 'mlm_loss'.*its forward does not compute it"):
        weighted_loss({"mlm_accuracy": torch.tensor(1.0)}, [LossTerm("mlm_loss", "masked")], {"mlm_loss": 1.0},
                      units, units, 1)


class _DroppingCollator:
    """A collator that loses the layout's label, as one that does not know it would."""

    def __init__(self, collator, label):
        self.collator, self.label = collator, label

    def __call__(self, instances):
        batch = self.collator(instances)
        assert self.label in batch  # the real collator passes it on
        del batch[self.label]
        return batch


def test_a_run_whose_collator_drops_the_label_fails_at_the_first_step(sample_corpus, tiny_tokenizer_dir,
                                                                       parameter_file, tmp_path, monkeypatch):  # noqa: F811
    from lmpretrain import data_setup
    from lmpretrain.trainer import train

    make = data_setup.make_collator
    monkeypatch.setattr(data_setup, "make_collator",
                        lambda *a, **kw: _DroppingCollator(make(*a, **kw), "next_sentence_label"))
    out = tmp_path / "out"
    with pytest.raises(UserError, match=r"no 'nsp_loss', a loss term the BERT family declares.*"
                                        r"lacks 'next_sentence_label'"):
        train(make_args(sample_corpus, tiny_tokenizer_dir, out, parameter_file, "bert-test", dataloader_workers=0))
    assert not list(out.glob("checkpoint-*")) and not (out / "model.safetensors").exists()
