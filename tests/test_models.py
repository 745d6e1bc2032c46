"""Our pretraining models against transformers' own: the same losses from the same weights and batch, SDPA
attention, ELECTRA's shared embeddings and sizes, frozen layers."""

import pytest
import torch

from lmpretrain.models import build_model, parse_preset

BASE = {"number-of-layers": 2, "hidden-size": 32, "sequence-length": 16, "ffn-inner-hidden-size": 64,
        "attention-heads": 4, "warmup-steps": 1, "learning-rate": 1e-3, "batch-size": {"-1": 4}, "train-steps": 2,
        "dropout": 0.0, "attention-dropout": 0.0}
VOCAB, PAD = 50, 0


def make(family: str, **extra):
    params = parse_preset(f"{family}-test", {**BASE, **extra}, "test")
    return build_model(params, vocab_size=VOCAB, pad_token_id=PAD, seed=0, eos_token_id=3)


def total_loss(model, out):
    """The loss as the trainer forms it from the family's declared terms and weights (one process, one batch)."""
    weights = model.family.loss_weights(model.params)
    return sum(weights[term.name] * out[term.name] for term in model.family.loss_terms)


def batch(masked_share=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, VOCAB, (4, 16), generator=g)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 12:] = 0
    input_ids[attention_mask == 0] = PAD
    chosen = (torch.rand(input_ids.shape, generator=g) < masked_share) & attention_mask.bool()
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    masked_input = torch.where(chosen, torch.full_like(input_ids, 4), input_ids)
    return {"input_ids": masked_input, "attention_mask": attention_mask, "labels": labels,
            "token_type_ids": (torch.arange(16) >= 8).long().expand(4, 16).clone(),
            "next_sentence_label": torch.tensor([0, 1, 0, 1]), "positions": torch.arange(4)}


def test_bert_loss_equals_transformers_bert_for_pretraining():
    model, b = make("bert").eval(), batch()
    ours = model(b)
    theirs = model.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                         token_type_ids=b["token_type_ids"], labels=b["labels"],
                         next_sentence_label=b["next_sentence_label"])
    torch.testing.assert_close(total_loss(model, ours), theirs.loss)
    assert type(model.model).__name__ == "BertForPreTraining"


def test_roberta_loss_equals_transformers_masked_lm():
    model, b = make("roberta").eval(), batch()
    ours = model(b)
    theirs = model.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"])
    torch.testing.assert_close(total_loss(model, ours), theirs.loss)


def test_gpt_loss_equals_transformers_causal_lm():
    model, b = make("gpt").eval(), batch()
    labels = torch.where(b["attention_mask"].bool(), b["input_ids"], torch.full_like(b["input_ids"], -100))
    b = {**b, "labels": labels}
    ours = model(b)
    theirs = model.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=labels)
    torch.testing.assert_close(total_loss(model, ours), theirs.loss)


def test_electra_shares_embeddings_is_sized_from_the_preset_and_weights_the_discriminator():
    model = make("electra", **{"embedding-size": 16, "generator-size": "1/2"}).eval()
    generator, discriminator = model.generator, model.discriminator
    assert generator.electra.embeddings is discriminator.electra.embeddings
    assert generator.generator_lm_head.weight is discriminator.electra.embeddings.word_embeddings.weight
    assert (discriminator.config.embedding_size, generator.config.embedding_size) == (16, 16)
    assert (generator.config.hidden_size, generator.config.num_attention_heads) == (16, 2)
    assert generator.config.intermediate_size == 32 and discriminator.config.hidden_size == 32
    b = batch()
    out = model(b)
    # the paper's loss: generator MLM + 50 x discriminator, the weight applied once (by the trainer's terms)
    torch.testing.assert_close(total_loss(model, out), out["generator_loss"] + 50.0 * out["discriminator_loss"])
    assert model.family.loss_weights(model.params) == {"generator_loss": 1.0, "discriminator_loss": 50.0}
    assert "loss" not in out
    # the generator term is transformers' own masked-LM loss on the same batch
    theirs = generator(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                       token_type_ids=b["token_type_ids"], labels=b["labels"])
    torch.testing.assert_close(out["generator_loss"], theirs.loss)
    # sampling has no gradient path: the discriminator loss does not reach the generator's own layers
    model.zero_grad()
    out["discriminator_loss"].backward()
    assert all(p.grad is None or not p.grad.any() for p in generator.electra.encoder.parameters())
    assert any(p.grad is not None and p.grad.any() for p in discriminator.electra.encoder.parameters())


def test_electra_replacements_depend_only_on_seed_and_position():
    model = make("electra", **{"embedding-size": 16, "generator-size": "1/2"}).eval()
    b = batch()
    with torch.no_grad():
        first = model(b)
        again = model(b)
    assert first["discriminator_loss"] == again["discriminator_loss"]
    shifted = {**b, "positions": b["positions"] + 1000}
    with torch.no_grad():
        other = model(shifted)
    assert other["discriminator_loss"] != first["discriminator_loss"]


@pytest.mark.parametrize("family", ["bert", "roberta", "electra", "gpt"])
def test_attention_is_pytorch_sdpa(family):
    extra = {"embedding-size": 16} if family == "electra" else {}
    for hf_model in make(family, **extra).hf_models().values():
        assert hf_model.config._attn_implementation == "sdpa"


def test_flozen_layers_freeze_embeddings_and_the_first_layers():
    model = make("bert")
    model.freeze(1)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert any(".embeddings." in n for n in frozen)
    assert any(".encoder.layer.0." in n for n in frozen)
    assert not any(".encoder.layer.1." in n for n in frozen)
    fresh = make("bert")
    fresh.freeze(-1)
    assert all(p.requires_grad for p in fresh.parameters())
