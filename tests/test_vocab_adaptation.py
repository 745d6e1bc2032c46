"""Vocabulary adaptation by token (--resize_embeddings with another tokenizer): shared tokens keep their rows
exactly, new tokens are the mean of their pieces under the model's own tokenizer, ties and biases follow, for every
family; frozen layers leave the new rows trainable."""

import json
import logging
import shutil

import pytest
import torch
from safetensors.torch import load_file

from lmpretrain.models import build_model, family_names, get_family, parse_preset, plan_adaptation
from lmpretrain.models.vocab_adapt import VocabPlan, vocabulary_parameters
from lmpretrain.prepare import vocabulary_plan
from lmpretrain.tokenization import TOKENIZER_FILES, FastEncoder, TokenizerSpec, token_text, train_tokenizer
from lmpretrain.trainer import train
from tests.test_run_pretraining import BASE, make_args

PRESETS = {"electra": {"embedding-size": 16, "generator-size": "1/2"}, "debertav3": {"generator-depth": "1/2"}}


# -- the plan, on hand-made vocabularies ------------------------------------------------------------------------

def test_plan_maps_by_token_composes_and_falls_back():
    old = {"[PAD]": 0, "[UNK]": 1, "<s>": 2, "猫": 3, "##が": 4, "犬": 5, "が": 6}
    new = {"[PAD]": 0, "[CLS]": 1, "犬": 2, "猫": 3, "猫が": 4, "[unused0]": 5, "##鳥": 6, "[UNK]": 7}
    pieces = {"猫が": [3, 4], "鳥": [1]}  # the old tokenizer knows no 鳥: [UNK] only
    plan = plan_adaptation(old, new, split=lambda texts: [pieces[t] for t in texts],
                           old_roles={"pad": "[PAD]", "unk": "[UNK]", "cls": "<s>"},
                           new_roles={"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]"}, text_of=token_text)
    assert dict(plan.kept) == {0: 0, 1: 2, 2: 5, 3: 3, 7: 1} and plan.by_role == 1
    assert dict(plan.composed) == {4: (3, 4)}
    assert plan.initialised == (5, 6)  # a reserved token is never split; [UNK]-only pieces are not a split
    old_rows = torch.randn(8, 4)  # one padding row past the tokenizer's tokens
    rows = plan.apply(old_rows)
    assert rows.shape == (8, 4)
    for new_id, old_id in plan.kept:
        assert torch.equal(rows[new_id], old_rows[old_id])
    torch.testing.assert_close(rows[4], old_rows[[3, 4]].mean(0))
    torch.testing.assert_close(rows[5], old_rows[:7].mean(0))
    bias = plan.apply(torch.arange(8.0))
    assert bias[2] == 5.0 and bias[4] == 3.5
    assert plan.trainable_rows().tolist() == [False, False, False, False, True, True, True, False]


def test_token_text_strips_the_markers():
    assert [token_text(t) for t in ("##ing", "\u2581the", "\u2581", "猫", "##")] == ["ing", "the", "", "猫", "##"]


def test_by_id_plan_is_what_resizing_did():
    plan = VocabPlan.by_id(5, 7)
    old = torch.randn(5, 3)
    rows = plan.apply(old)
    assert torch.equal(rows[:5], old) and plan.initialised == (5, 6)


# -- every family, on tokenizers trained here -------------------------------------------------------------------

@pytest.fixture(scope="module")
def other_tokenizer(tmp_path_factory, sample_corpus):
    """Another tokenizer for the same language: no MeCab, another size (the model's has 2000 tokens)."""
    out = tmp_path_factory.mktemp("other-tok") / "tokenizer"
    train_tokenizer([str(sample_corpus)], out, TokenizerSpec(mecab_dic_type="none", tokenizer_type="wordpiece",
                                                             vocab_size=1200, min_frequency=1, limit_alphabet=400,
                                                             num_unused_tokens=7), num_workers=1)
    return out


def _params(family: str, **extra):
    return parse_preset(f"{family}-test", {**BASE, **PRESETS.get(family, {}), **extra}, "test")


def _pretrained(tmp_path, family, tokenizer_dir, **extra):
    """A tiny model of ``family`` built for ``tokenizer_dir``, saved with that tokenizer's files."""
    with FastEncoder.from_pretrained(tokenizer_dir) as encoder:
        model = build_model(_params(family, **extra), vocab_size=encoder.vocab_size,
                            pad_token_id=encoder.pad_token_id, seed=0, eos_token_id=encoder.sep_token_id,
                            cls_token_id=encoder.cls_token_id)
    with torch.no_grad():  # distinct output biases, so that "biases follow" means something
        for hf_model in model.hf_models().values():
            for name, param in hf_model.named_parameters():
                if name.endswith("bias") and param.shape[0] == encoder.vocab_size:
                    param.copy_(torch.randn_like(param))
    directory = tmp_path / "pretrained"
    model.save_pretrained(directory)
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).is_file():
            shutil.copy(tokenizer_dir / name, directory / name)
    return model, directory


def _continued(family, directory, tokenizer_dir, plan, **extra):
    with FastEncoder.from_pretrained(tokenizer_dir) as encoder:
        return build_model(_params(family, **extra), vocab_size=encoder.vocab_size, pad_token_id=encoder.pad_token_id,
                           seed=1, pretrained_dir=str(directory), resize_embeddings=True, vocab_plan=plan,
                           eos_token_id=encoder.sep_token_id, cls_token_id=encoder.cls_token_id)


def _check_rows(old_tensor, new_tensor, plan):
    assert new_tensor.shape[0] == plan.new_size
    new_ids, old_ids = map(list, zip(*plan.kept))
    assert torch.equal(new_tensor[new_ids], old_tensor[old_ids])  # bit-equal
    for new_id, pieces in plan.composed[:50]:
        torch.testing.assert_close(new_tensor[new_id], old_tensor[list(pieces)].mean(0))
    for new_id in plan.initialised:
        torch.testing.assert_close(new_tensor[new_id], old_tensor[: plan.old_size].mean(0))


def _vocab_tensors(model):
    """(part, parameter name) -> tensor, and which names are one tied tensor, for every part."""
    tensors, ties = {}, set()
    for part, hf_model in model.hf_models().items():
        size = hf_model.get_input_embeddings().weight.shape[0]
        names = vocabulary_parameters(hf_model, size)
        params = dict(hf_model.named_parameters(remove_duplicate=False))
        for name in names:
            tensors[part, name] = params[name].detach().clone()
        for name, param in params.items():
            for other in names:
                if name != other and param is params[other]:
                    ties.add((part, name, other))
    return tensors, ties


@pytest.mark.parametrize("family", family_names())
def test_every_family_keeps_shared_rows_and_composes_new_ones(family, tmp_path, tiny_tokenizer_dir, other_tokenizer):
    old_model, directory = _pretrained(tmp_path, family, tiny_tokenizer_dir)
    plan = vocabulary_plan(str(directory), other_tokenizer, compose=True)
    assert plan.old_size == 2000 and plan.new_size == 1200
    assert len(plan.kept) > 500 and len(plan.composed) > 100
    before, ties_before = _vocab_tensors(old_model)
    new_model = _continued(family, directory, other_tokenizer, plan)
    after, ties_after = _vocab_tensors(new_model)
    assert before.keys() == after.keys()
    assert ties_after == ties_before  # tied output embeddings (and tied biases) stay tied
    for key, old_tensor in before.items():
        if family == "debertav3" and key == ("discriminator", "embeddings.word_embeddings.weight"):
            continue  # GDES: E_generator + E_delta, checked below
        _check_rows(old_tensor, after[key], plan)
    for part, hf_model in new_model.hf_models().items():
        assert hf_model.config.vocab_size == 1200, part
    if family == "debertav3":  # each of E_generator and the merged table follows the plan, so E_delta does too
        merged = new_model.discriminator.embeddings.word_embeddings.weight
        old_merged = old_model.discriminator.embeddings.word_embeddings.weight
        _check_rows(old_merged, merged, plan)
    # the continued model runs on the new ids
    batch = {"input_ids": torch.randint(5, 1200, (2, 16)), "attention_mask": torch.ones(2, 16, dtype=torch.long),
             "labels": torch.full((2, 16), -100), "positions": torch.arange(2)}
    batch["labels"][:, 3] = 7
    if get_family(family).collator == "causal":
        batch["labels"] = batch["input_ids"].clone()
    out = new_model(batch)
    assert all(torch.isfinite(out[t.name]) for t in get_family(family).loss_terms if t.name in out)


def test_tied_untied_output_embeddings_of_llama(tmp_path, tiny_tokenizer_dir, other_tokenizer):
    for tied in (True, False):
        old_model, directory = _pretrained(tmp_path / str(tied), "llama", tiny_tokenizer_dir, **{"tie-word-embeddings":
                                                                                                  tied})
        plan = vocabulary_plan(str(directory), other_tokenizer, compose=True)
        new = _continued("llama", directory, other_tokenizer, plan, **{"tie-word-embeddings": tied}).model
        assert (new.lm_head.weight is new.model.embed_tokens.weight) == tied
        _check_rows(old_model.model.lm_head.weight, new.lm_head.weight, plan)


def test_one_log_line_reports_the_counts(tmp_path, tiny_tokenizer_dir, other_tokenizer, caplog):
    _, directory = _pretrained(tmp_path, "bert", tiny_tokenizer_dir)
    plan = vocabulary_plan(str(directory), other_tokenizer, compose=True)
    with caplog.at_level(logging.INFO, logger="lmpretrain"):
        _continued("bert", directory, other_tokenizer, plan)
    lines = [r.getMessage() for r in caplog.records if "vocabulary adapted by token" in r.getMessage()]
    assert len(lines) == 1
    assert (f"{len(plan.kept)} rows kept" in lines[0] and f"{len(plan.composed)} composed" in lines[0]
            and f"{len(plan.initialised)} initialised" in lines[0] and "(2000 -> 1200 tokens)" in lines[0])
    assert len(plan.kept) + len(plan.composed) + len(plan.initialised) == 1200


def test_the_same_vocabulary_needs_no_plan(tmp_path, tiny_tokenizer_dir):
    _, directory = _pretrained(tmp_path, "bert", tiny_tokenizer_dir)
    assert vocabulary_plan(str(directory), tiny_tokenizer_dir) is None


@pytest.mark.parametrize("family", ["bert", "debertav2"])
def test_a_model_dir_without_tokenizer_files_keeps_rows_by_id(family, tmp_path, tiny_tokenizer_dir, other_tokenizer,
                                                               caplog):
    old_model, directory = _pretrained(tmp_path, family, tiny_tokenizer_dir)
    for name in TOKENIZER_FILES:
        (directory / name).unlink(missing_ok=True)
    with caplog.at_level(logging.WARNING, logger="lmpretrain"):
        assert vocabulary_plan(str(directory), other_tokenizer, compose=True) is None
    assert "kept by id, not by token" in caplog.text
    before, _ = _vocab_tensors(old_model)
    new_model = _continued(family, directory, other_tokenizer, None)
    after, _ = _vocab_tensors(new_model)
    for key, old_tensor in before.items():
        assert torch.equal(after[key], old_tensor[:1200]), key
    vocab_names = {name for _, name in before}
    old_shapes = {n: p.shape for n, p in old_model.model.named_parameters() if n not in vocab_names}
    new_shapes = {n: p.shape for n, p in new_model.model.named_parameters() if n not in vocab_names}
    assert new_shapes == old_shapes  # nothing else resized (DeBERTa-v2's head keeps its hidden-to-hidden layer)


# -- frozen layers ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bert_base(tmp_path_factory, sample_corpus, tiny_tokenizer_dir):
    root = tmp_path_factory.mktemp("vocab-frozen")
    further = {"warmup-steps": 1, "learning-rate": 5e-3, "batch-size": {"-1": 8}, "train-steps": 3, "save-steps": 3,
               "logging-steps": 1, "dropout": 0.0, "attention-dropout": 0.0, "eval-share": 0.1,
               "pretrained_model_name_or_path": str(root / "base"), "resize-embeddings": True, "flozen-layers": 1}
    params = root / "parameter.json"
    params.write_text(json.dumps({"bert-test": BASE, "bert-frozen": further,
                                  "bert-frozen-all": {**further, "freeze-new-rows": True}}))
    train(make_args(sample_corpus, tiny_tokenizer_dir, root / "base", params, "bert-test", train_steps=3))
    return root, params


@pytest.mark.parametrize("freeze_new_rows", [False, True])
def test_frozen_layers_keep_kept_rows_and_train_the_new_ones(bert_base, sample_corpus, other_tokenizer,
                                                             freeze_new_rows):
    root, params = bert_base
    out = root / f"frozen-{freeze_new_rows}"
    preset = "bert-frozen-all" if freeze_new_rows else "bert-frozen"
    train(make_args(sample_corpus, other_tokenizer, out, params, preset))
    plan = vocabulary_plan(str(root / "base"), other_tokenizer)  # the default: new rows at the mean
    base_weights, weights = load_file(root / "base" / "model.safetensors"), load_file(out / "model.safetensors")
    name = "bert.embeddings.word_embeddings.weight"
    start = plan.apply(base_weights[name])  # the rows the continued run started from
    kept = ~plan.trainable_rows()
    assert torch.equal(weights[name][kept], start[kept])  # frozen exactly (no weight decay either)
    new_rows_moved = ~torch.isclose(weights[name][~kept], start[~kept], rtol=0, atol=0).all(-1)
    if freeze_new_rows:
        assert not new_rows_moved.any()
    else:
        assert new_rows_moved.float().mean() > 0.9  # the tied decoder gives every row a gradient
    for key in base_weights:
        if key.startswith(("bert.embeddings.", "bert.encoder.layer.0.")) and key != name:
            assert torch.equal(weights[key], base_weights[key]), key
    assert not torch.equal(weights["bert.encoder.layer.1.output.dense.weight"],
                           base_weights["bert.encoder.layer.1.output.dense.weight"])


def test_new_token_init_is_the_mean_by_default_and_pieces_on_request(tmp_path, tiny_tokenizer_dir, other_tokenizer):
    from lmpretrain.errors import UserError

    _, directory = _pretrained(tmp_path, "bert", tiny_tokenizer_dir)
    by_default = vocabulary_plan(str(directory), other_tokenizer)
    assert by_default.composed == () and len(by_default.initialised) > 100
    assert by_default.kept == vocabulary_plan(str(directory), other_tokenizer, compose=True).kept
    preset = dict(BASE)
    assert parse_preset("bert-x", preset, "p").new_token_init == "mean"
    assert parse_preset("bert-x", {**preset, "new-token-init": "pieces"}, "p").new_token_init == "pieces"
    with pytest.raises(UserError, match=r'bert-x\.new-token-init: expected "mean" or "pieces"'):
        parse_preset("bert-x", {**preset, "new-token-init": "random"}, "p")
