"""The family registry: every declaration is complete and true of the model it builds, so that a family added
with a wrong or missing fact fails here, not at the end of a training run."""

import dataclasses

import pytest
import torch
import transformers

from lmpretrain.data import LAYOUTS
from lmpretrain.errors import UserError
from lmpretrain.models import LossTerm, build_model, family_names, family_of, get_family, parse_preset, register
from lmpretrain.models.base import BuildSpec
from lmpretrain.trainer import count_units
from tests.helpers import layout_fields

BASE = {"number-of-layers": 2, "hidden-size": 32, "sequence-length": 16, "ffn-inner-hidden-size": 64,
        "attention-heads": 4, "warmup-steps": 1, "learning-rate": 1e-3, "batch-size": {"-1": 4}, "train-steps": 2}
VOCAB = 50


def tiny(name: str):
    params = parse_preset(f"{name}-test", dict(BASE), "test")
    return params, build_model(params, vocab_size=VOCAB, pad_token_id=0, seed=0, eos_token_id=3)


def a_batch(family):
    g = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, VOCAB, (2, 16), generator=g)
    labels = torch.full_like(input_ids, -100)
    if family.collator == "causal":
        labels = input_ids.clone()
    else:
        labels[:, 3:6] = input_ids[:, 3:6]
    batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels,
             "positions": torch.arange(2)}
    return {**batch, **layout_fields(family.layout, input_ids)}


@pytest.mark.parametrize("name", family_names())
def test_declaration_matches_the_model_it_builds(name, tmp_path):
    family = get_family(name)
    params, model = tiny(name)
    assert model.family is family and family.layout in LAYOUTS
    hf = model.hf_models()
    assert list(hf) == [part.name for part in family.parts]  # the main part first
    for part in family.parts:
        assert type(hf[part.name]) is getattr(transformers, part.hf_class)
        assert hf[part.name].config.model_type in family.hf_model_types
    out = model(a_batch(family))
    units = count_units(a_batch(family))
    for term in family.loss_terms:  # every declared term is produced, finite, and its unit is counted
        assert torch.isfinite(out[term.name]) and term.unit in units
    assert set(family.loss_weights(params)) == {t.name for t in family.loss_terms}
    model.save_pretrained(tmp_path)
    for part in family.parts:  # each part where the family says, loadable through its declared Auto class
        role_class = {"pretraining": transformers.AutoModelForPreTraining,
                      "masked_lm": transformers.AutoModelForMaskedLM,
                      "causal_lm": transformers.AutoModelForCausalLM, "base": transformers.AutoModel}[part.role]
        assert type(role_class.from_pretrained(tmp_path / part.folder)).__name__ == part.hf_class
    for field, attribute in family.hf_shape.items():  # the shape read back from an HF config is the preset's
        config = hf[family.main_part.name].config
        value = attribute(config) if callable(attribute) else getattr(config, attribute)
        expected = getattr(params, field) if hasattr(params, field) else (params.option(field) or params.hidden_size)
        assert value == expected, field


def test_preset_name_finds_the_family_as_the_original_does():
    assert family_of("gpt2-small") == "gpt" and family_of("my-electra-base") == "electra"
    assert family_of("finance-base") is None and family_of("finance-base", "roberta") == "roberta"
    with pytest.raises(UserError, match="unknown model family 't5'"):
        get_family("t5")


def test_family_options_are_the_familys_own():
    electra = parse_preset("electra-x", {**BASE, "generator-size": "1/2", "discriminator-weight": 10}, "p.json")
    assert electra.option("generator_size") == 0.5 and electra.option("embedding_size") is None
    assert get_family("electra").loss_weights(electra)["discriminator_loss"] == 10.0
    assert electra.to_dict()["generator_size"] == 0.5  # stored flat in checkpoints, as before
    with pytest.raises(UserError, match=r"bert-x\.generator-size: unknown key"):
        parse_preset("bert-x", {**BASE, "generator-size": "1/2"}, "p.json")


def test_a_bad_declaration_is_refused_at_registration():
    bert = get_family("bert")
    with pytest.raises(AssertionError, match="unit 'words'"):
        register(dataclasses.replace(bert, name="bert-words", loss_terms=(LossTerm("mlm_loss", "words"),)))
    with pytest.raises(AssertionError, match="layout 'pairs'"):
        register(dataclasses.replace(bert, name="bert-pairs", layout="pairs"))
    with pytest.raises(AssertionError, match="label 'sentence_label' of nsp_loss"):
        register(dataclasses.replace(bert, name="bert-label", loss_terms=(
            LossTerm("mlm_loss", "masked"), LossTerm("nsp_loss", "samples", label="sentence_label"))))
    with pytest.raises(AssertionError, match="registered twice"):
        register(bert)


def test_masking_keys_on_a_causal_preset_are_an_error_not_ignored():
    with pytest.raises(UserError, match=r"p\.json: gpt-x\.whole-word-mask: applies to masked LMs"):
        parse_preset("gpt-x", {**BASE, "whole-word-mask": True}, "p.json")
    assert parse_preset("gpt-x", {**BASE, "whole-word-mask": False}, "p.json").family == "gpt"


@pytest.mark.parametrize("name", family_names())
def test_declared_hooks_find_the_layers_embeddings_and_export_outputs(name):
    family = get_family(name)
    params, model = tiny(name)
    main = model.hf_models()[family.main_part.name]
    assert family.can_freeze
    layers = list(family.layers(main))
    assert len(layers) == main.config.num_hidden_layers == params.number_of_layers
    embeddings = family.embeddings(main)
    assert main.get_input_embeddings() in list(embeddings.modules())  # the token table is among the embeddings
    assert not any(p is q for layer in layers for p in layer.parameters() for q in embeddings.parameters())
    batch = {"input_ids": torch.randint(5, VOCAB, (1, 8)), "attention_mask": torch.ones(1, 8, dtype=torch.long)}
    for part in family.parts:  # what verifying an export compares is in each part's output
        hf = model.hf_models()[part.name].eval()
        with torch.no_grad():
            out = hf(**batch)
        assert all(out[field] is not None for field in part.compared_outputs)


def test_a_family_that_does_not_declare_its_layers_cannot_freeze_one_error_at_validation(monkeypatch):
    from lmpretrain.models import registry

    fake = dataclasses.replace(get_family("roberta"), name="nohooks", display="NoHooks", embeddings=None, layers=None)
    monkeypatch.setitem(registry._FAMILIES, "nohooks", fake)
    further = {**BASE, "model-family": "nohooks", "pretrained_model_name_or_path": "/some/model"}
    with pytest.raises(UserError, match=r"p\.json: x\.flozen-layers: the NoHooks family does not declare where its "
                                        r"embeddings and layers are"):
        parse_preset("x", {**further, "flozen-layers": 1}, "p.json")
    assert parse_preset("x", further, "p.json").family == "nohooks"  # without flozen-layers it is fine
    model = fake.model(parse_preset("x", {**BASE, "model-family": "nohooks"}, "p.json"),
                       BuildSpec(vocab_size=VOCAB, pad_token_id=0))
    with pytest.raises(UserError, match="the NoHooks family does not declare"):  # and the model agrees
        model.freeze(0)
