"""Continued pretraining of a model dir saved by transformers with its own tokenizer (issue 14, item 3): the
tokenizer's own ids, its own word boundaries for whole-word masking, MLM-only for a BertForMaskedLM, an export that
fill-mask runs on; and BERT's ``next-sentence-prediction: false``."""

import json

import pytest
import torch

from lmpretrain.errors import UserError
from lmpretrain.models import get_family, parse_preset
from tests.helpers import run_script
from tests.test_run_pretraining import BASE

FURTHER = {"warmup-steps": 1, "learning-rate": 5e-3, "batch-size": {"-1": 8}, "train-steps": 3, "save-steps": 3,
           "logging-steps": 1, "eval-share": 0.1, "sequence-length": 64}


@pytest.fixture(scope="module")
def masked_lm_dir(tmp_path_factory, sample_corpus):
    """A tiny BertForMaskedLM and a BertTokenizerFast trained here on the sample corpus, both save_pretrained'd
    into one dir (as a hub bert-base-* dir is)."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    directory = tmp_path_factory.mktemp("hf") / "bert-mlm"
    trainer = BertWordPieceTokenizer(lowercase=False)
    trainer.train([str(sample_corpus)], vocab_size=1500, min_frequency=1,
                  special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], show_progress=False)
    tokenizer = BertTokenizerFast(tokenizer_object=trainer._tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                                  cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    tokenizer.save_pretrained(directory)
    BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=64)).save_pretrained(directory)
    assert not (directory / "lmpretrain_tokenizer.json").exists()
    return directory


def same_ids_as_transformers(directory, sample_corpus, specials_line: str):
    """The FastEncoder of a transformers-saved dir gives AutoTokenizer's ids (with and without special tokens, on
    corpus lines, accents, case and special tokens written in the text) and its special tokens' ids."""
    from transformers import AutoTokenizer

    from lmpretrain.tokenization import FastEncoder

    lines = [line for line in sample_corpus.read_text(encoding="utf-8").splitlines() if line.strip()][:100]
    lines += ["Hello, WORLD! naïve café", specials_line]
    tokenizer = AutoTokenizer.from_pretrained(directory)
    encoder = FastEncoder.from_pretrained(directory)
    assert encoder.encode_batch(lines) == tokenizer(lines, add_special_tokens=False)["input_ids"]
    assert encoder.encode_batch(lines, add_special_tokens=True) == tokenizer(lines)["input_ids"]
    assert (encoder.cls_token_id, encoder.sep_token_id, encoder.mask_token_id, encoder.pad_token_id) == \
        (tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.mask_token_id, tokenizer.pad_token_id)
    return lines, tokenizer, encoder


def test_the_encoder_gives_transformers_ids_and_word_boundaries(masked_lm_dir, sample_corpus):


    lines, tokenizer, encoder = same_ids_as_transformers(masked_lm_dir, sample_corpus, "[MASK] は 猫 [SEP] である")
    for ids, starts in encoder.encode_batch_with_word_starts(lines):  # a word continues exactly at '##' pieces
        assert starts == [not token.startswith("##") for token in tokenizer.convert_ids_to_tokens(ids)]


def test_a_bert_masked_lm_dir_continues_mlm_only_and_exports_for_fill_mask(masked_lm_dir, sample_corpus, tmp_path):
    from transformers import pipeline

    params = tmp_path / "parameter.json"
    params.write_text(json.dumps({"bert-further": FURTHER}))
    out = tmp_path / "out"
    result = run_script("run_pretraining.py", "--input_file", str(sample_corpus), "--tokenizer_dir", str(masked_lm_dir),
                        "--pretrained_model_name_or_path", str(masked_lm_dir), "--model_dir", str(out),
                        "--parameter_file", str(params), "--model_type", "bert-further", "--num_workers", "1",
                        "--do_whole_word_mask", env={"LMP_NO_PROGRESS": "1"}, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "no next-sentence-prediction head (BertForMaskedLM): training MLM-only" in result.stderr
    assert "a tokenizer saved by transformers (BertTokenizer" in result.stderr
    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    trained = [r for r in records if "train/loss" in r]
    assert [r["step"] for r in trained] == [1, 2, 3]
    assert all("train/mlm_loss" in r for r in trained)
    assert not any(key.startswith(("train/nsp", "eval/nsp")) for r in records for key in r)
    fill = pipeline("fill-mask", model=str(out), tokenizer=str(out))
    assert len(fill("吾輩は[MASK]である。")) == 5
    # the class it started as (issue 26 item 4): no next-sentence head or pooler added, the same weights trained
    start, trained = masked_lm_weights(masked_lm_dir), masked_lm_weights(out)
    assert json.loads((out / "config.json").read_text())["architectures"] == ["BertForMaskedLM"]
    assert sorted(trained) == sorted(start) and all(trained[k].shape == start[k].shape for k in start)
    assert not torch.equal(trained["bert.encoder.layer.0.attention.self.query.weight"],
                           start["bert.encoder.layer.0.attention.self.query.weight"])
    assert "exporting a BertForMaskedLM, as it started" in result.stderr


def masked_lm_weights(directory) -> dict:
    """The state dict of the model in ``directory`` as AutoModelForMaskedLM loads it (which must be a
    BertForMaskedLM)."""
    from transformers import AutoModelForMaskedLM

    model = AutoModelForMaskedLM.from_pretrained(directory)
    assert type(model).__name__ == "BertForMaskedLM"
    return model.state_dict()


def test_a_bert_masked_lm_dir_comes_back_unchanged_when_nothing_is_learnt(masked_lm_dir, sample_corpus, tmp_path):
    """One step at a learning rate (1e-30) too small to move an fp32 weight (a zero one by 1e-30 at most): the export
    gives the start's logits (nothing added, dropped or re-initialised on the way through training and export)."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    params = tmp_path / "parameter.json"
    params.write_text(json.dumps({"bert-further": {**FURTHER, "learning-rate": 1e-30, "train-steps": 1}}))
    out = tmp_path / "out"
    result = run_script("run_pretraining.py", "--input_file", str(sample_corpus), "--tokenizer_dir", str(masked_lm_dir),
                        "--pretrained_model_name_or_path", str(masked_lm_dir), "--model_dir", str(out),
                        "--parameter_file", str(params), "--model_type", "bert-further", "--num_workers", "1",
                        env={"LMP_NO_PROGRESS": "1"}, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    tokenizer = AutoTokenizer.from_pretrained(masked_lm_dir)
    batch = tokenizer(["吾輩は[MASK]である。", "名前はまだ無い。"], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = [AutoModelForMaskedLM.from_pretrained(d).eval()(**batch).logits for d in (masked_lm_dir, out)]
    # (a zero-initialised bias moves by ~1e-30: nothing else can)
    torch.testing.assert_close(logits[1], logits[0], rtol=0, atol=1e-6)


def test_next_sentence_prediction_on_a_masked_lm_adds_a_head(masked_lm_dir, caplog):
    """A preset that asks for next-sentence prediction on a BertForMaskedLM gets a new head, said in one line; without
    it, the model stays a BertForMaskedLM; asking for NSP without a head is one error."""
    from lmpretrain.models import resolve_pretrained_shape

    family = get_family("bert")
    further = {k: v for k, v in FURTHER.items() if k != "sequence-length"}
    with caplog.at_level("INFO", logger="lmpretrain"):
        nsp = resolve_pretrained_shape(parse_preset("bert-nsp", {**further, "next-sentence-prediction": True}, "p",
                                                    continued=True), str(masked_lm_dir), {"next-sentence-prediction"})
    assert [p.hf_class for p in family.parts_for(nsp)] == ["BertForPreTraining"]
    assert [term.name for term in family.loss_terms_for(nsp)] == ["mlm_loss", "nsp_loss"]
    assert any("next-sentence-prediction: true in the preset adds a new one" in r.message for r in caplog.records)
    mlm = resolve_pretrained_shape(parse_preset("bert-mlm", further, "p", continued=True), str(masked_lm_dir),
                                   set(further))
    assert [p.hf_class for p in family.parts_for(mlm)] == ["BertForMaskedLM"]
    assert [term.name for term in family.loss_terms_for(mlm)] == ["mlm_loss"]
    with pytest.raises(UserError, match="next-sentence-head: false leaves no head for next-sentence-prediction"):
        parse_preset("bert-x", {**BASE, "next-sentence-prediction": True, "next-sentence-head": False}, "p.json")


def test_next_sentence_prediction_false_packs_sentences(tmp_path):
    family = get_family("bert")
    off = parse_preset("bert-mlm", {**BASE, "next-sentence-prediction": False}, "p.json")
    on = parse_preset("bert-nsp", BASE, "p.json")
    assert family.instance_layout(off) == "packed_sentences" and family.instance_layout(on) == "sentence_pairs"
    with pytest.raises(UserError, match=r"p\.json: bert-x\.next-sentence-prediction: expected true or false"):
        parse_preset("bert-x", {**BASE, "next-sentence-prediction": "no"}, "p.json")
    with pytest.raises(UserError, match=r"roberta-x\.next-sentence-prediction: unknown key"):
        parse_preset("roberta-x", {**BASE, "next-sentence-prediction": False}, "p.json")


def test_next_sentence_prediction_false_trains_without_nsp(sample_corpus, tiny_tokenizer_dir, tmp_path):
    from lmpretrain.trainer import train
    from tests.test_run_pretraining import make_args

    params = tmp_path / "parameter.json"
    params.write_text(json.dumps({"bert-mlm": {**BASE, "next-sentence-prediction": False}}))
    out = tmp_path / "out"
    summary = train(make_args(sample_corpus, tiny_tokenizer_dir, out, params, "bert-mlm", train_steps=2))
    assert summary["step"] == 2 and "eval/mlm_loss" in summary and "eval/nsp_loss" not in summary
    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert not any("nsp" in key for r in records for key in r)


@pytest.fixture(scope="module")
def albert_masked_lm_dir(tmp_path_factory, masked_lm_dir):
    """A tiny AlbertForMaskedLM (no sentence-order head) saved by transformers, with the WordPiece tokenizer of
    ``masked_lm_dir`` beside it."""
    from transformers import AlbertConfig, AlbertForMaskedLM, AutoTokenizer

    directory = tmp_path_factory.mktemp("hf") / "albert-mlm"
    tokenizer = AutoTokenizer.from_pretrained(masked_lm_dir)
    tokenizer.save_pretrained(directory)
    AlbertForMaskedLM(AlbertConfig(vocab_size=len(tokenizer), embedding_size=16, hidden_size=32, num_hidden_layers=2,
                                   num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                                   pad_token_id=tokenizer.pad_token_id)).save_pretrained(directory)
    assert not (directory / "lmpretrain_tokenizer.json").exists()
    return directory


def test_an_albert_masked_lm_dir_continues_mlm_only_and_exports_an_albert_masked_lm(albert_masked_lm_dir,
                                                                                    sample_corpus, tmp_path):
    """Issue 26 item 4 for ALBERT: no sentence-order head is added, no SOP term trained, and the export is the
    AlbertForMaskedLM it started as (the same weight names and shapes, trained)."""
    from transformers import AutoModelForMaskedLM, pipeline

    params = tmp_path / "parameter.json"
    params.write_text(json.dumps({"albert-further": FURTHER}))
    out = tmp_path / "out"
    result = run_script("run_pretraining.py", "--input_file", str(sample_corpus), "--tokenizer_dir",
                        str(albert_masked_lm_dir), "--pretrained_model_name_or_path", str(albert_masked_lm_dir),
                        "--model_dir", str(out), "--parameter_file", str(params), "--model_type", "albert-further",
                        "--num_workers", "1", env={"LMP_NO_PROGRESS": "1"}, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "no sentence-order-prediction head (AlbertForMaskedLM): training MLM-only on packed sentences and " \
           "exporting an AlbertForMaskedLM, as it started" in result.stderr
    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    trained = [r for r in records if "train/loss" in r]
    assert [r["step"] for r in trained] == [1, 2, 3] and all("train/mlm_loss" in r for r in trained)
    assert not any(key.startswith(("train/sop", "eval/sop")) for r in records for key in r)
    assert json.loads((out / "config.json").read_text())["architectures"] == ["AlbertForMaskedLM"]
    start, end = (AutoModelForMaskedLM.from_pretrained(d) for d in (albert_masked_lm_dir, out))
    assert type(start).__name__ == type(end).__name__ == "AlbertForMaskedLM"
    start, end = start.state_dict(), end.state_dict()
    assert sorted(end) == sorted(start) and all(end[k].shape == start[k].shape for k in start)
    assert not any("sop_classifier" in k or "pooler" in k for k in end)
    name = "albert.encoder.albert_layer_groups.0.albert_layers.0.attention.query.weight"
    assert not torch.equal(end[name], start[name])
    assert len(pipeline("fill-mask", model=str(out), tokenizer=str(out))("吾輩は[MASK]である。")) == 5


def test_sentence_order_prediction_on_an_albert_masked_lm_adds_a_head(albert_masked_lm_dir, caplog):
    """A preset asking for SOP on an AlbertForMaskedLM gets a new head, said in one line; without it the model stays
    an AlbertForMaskedLM on packed sentences; SOP without a head is one error; ``sentence-order-prediction: false``
    alone packs sentences and keeps the head."""
    from lmpretrain.models import resolve_pretrained_shape

    family = get_family("albert")
    further = {k: v for k, v in FURTHER.items() if k != "sequence-length"}
    with caplog.at_level("INFO", logger="lmpretrain"):
        sop = resolve_pretrained_shape(parse_preset("albert-sop", {**further, "sentence-order-prediction": True}, "p",
                                                    continued=True), str(albert_masked_lm_dir),
                                       {"sentence-order-prediction"})
    assert [p.hf_class for p in family.parts_for(sop)] == ["AlbertForPreTraining"]
    assert [term.name for term in family.loss_terms_for(sop)] == ["mlm_loss", "sop_loss"]
    assert family.instance_layout(sop) == "sentence_order"
    assert any("sentence-order-prediction: true in the preset adds a new one" in r.message for r in caplog.records)
    mlm = resolve_pretrained_shape(parse_preset("albert-mlm", further, "p", continued=True),
                                   str(albert_masked_lm_dir), set(further))
    assert [p.hf_class for p in family.parts_for(mlm)] == ["AlbertForMaskedLM"]
    assert [term.name for term in family.loss_terms_for(mlm)] == ["mlm_loss"]
    assert family.instance_layout(mlm) == "packed_sentences"
    with pytest.raises(UserError, match="sentence-order-head: false leaves no head for sentence-order-prediction"):
        parse_preset("albert-x", {**BASE, "sentence-order-prediction": True, "sentence-order-head": False}, "p.json")
    off = parse_preset("albert-off", {**BASE, "sentence-order-prediction": False}, "p.json")
    assert family.instance_layout(off) == "packed_sentences"
    assert [p.hf_class for p in family.parts_for(off)] == ["AlbertForPreTraining"]  # the head kept, untrained
    with pytest.raises(UserError, match=r"p\.json: albert-x\.sentence-order-prediction: expected true or false"):
        parse_preset("albert-x", {**BASE, "sentence-order-prediction": "no"}, "p.json")
    with pytest.raises(UserError, match=r"bert-x\.sentence-order-prediction: unknown key"):
        parse_preset("bert-x", {**BASE, "sentence-order-prediction": False}, "p.json")


def assert_byte_level_word_starts(encoder, tokenizer, lines):
    """Whole-word masking on a byte-level BPE: every piece that begins with 'Ġ' (a space) starts a word."""
    for ids, starts in encoder.encode_batch_with_word_starts(lines + ["hello big world"]):
        tokens = tokenizer.convert_ids_to_tokens(ids)
        assert all(start for token, start in zip(tokens, starts) if token.startswith("Ġ"))


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory, sample_corpus):
    """A tiny GPT2LMHeadModel and a byte-level BPE GPT2TokenizerFast (only <|endoftext|>, no pad, no mask), trained
    here and save_pretrained'd into one dir."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    directory = tmp_path_factory.mktemp("hf") / "gpt2"
    trainer = ByteLevelBPETokenizer()
    trainer.train([str(sample_corpus)], vocab_size=800, min_frequency=1, special_tokens=["<|endoftext|>"],
                  show_progress=False)
    tokenizer = GPT2TokenizerFast(tokenizer_object=trainer._tokenizer, bos_token="<|endoftext|>",
                                  eos_token="<|endoftext|>", unk_token="<|endoftext|>")
    tokenizer.save_pretrained(directory)
    end = tokenizer.eos_token_id
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=2,
                               bos_token_id=end, eos_token_id=end)).save_pretrained(directory)
    return directory


def test_a_gpt2_dir_continues_as_a_causal_lm(gpt2_dir, sample_corpus, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lmpretrain.tokenization import FastEncoder
    from lmpretrain.trainer import train
    from tests.test_run_pretraining import make_args

    lines = [line for line in sample_corpus.read_text(encoding="utf-8").splitlines() if line.strip()][:100]
    tokenizer = AutoTokenizer.from_pretrained(gpt2_dir)
    encoder = FastEncoder.from_pretrained(gpt2_dir)
    assert encoder.encode_batch(lines) == tokenizer(lines)["input_ids"]  # GPT-2 adds nothing around a text
    assert encoder.sep_token_id == encoder.cls_token_id == tokenizer.eos_token_id
    assert_byte_level_word_starts(encoder, tokenizer, lines)
    params = tmp_path / "parameter.json"
    params.write_text(json.dumps({"gpt-further": FURTHER}))
    out = tmp_path / "out"
    summary = train(make_args(sample_corpus, gpt2_dir, out, params, "gpt-further",
                              pretrained_model_name_or_path=str(gpt2_dir)))
    assert summary["step"] == 3 and summary["eval/perplexity"] < summary["eval/perplexity_at_start"]
    model = AutoModelForCausalLM.from_pretrained(out)
    assert type(model).__name__ == "GPT2LMHeadModel"
    exported = AutoTokenizer.from_pretrained(out)
    assert exported.eos_token == exported.pad_token == "<|endoftext|>"
    assert exported(lines[0])["input_ids"] == encoder.encode_batch(lines[:1])[0]


def test_a_bert_japanese_tokenizer_saved_by_transformers_is_encoded_fast_with_its_ids(tiny_tokenizer_dir,
                                                                                      sample_corpus, tmp_path,
                                                                                      caplog):
    """A BertJapaneseTokenizer dir saved by transformers alone (a hub model's, no metadata of ours) whose settings
    the toolkit reproduces is encoded by its fast encoder: transformers' ids, MeCab's words ('##' continues one).
    One it cannot reproduce (here do_lower_case) is encoded through transformers itself, with a warning saying why;
    its ids are transformers' too."""
    from transformers import AutoTokenizer

    from lmpretrain.tokenization import FastEncoder

    saved = tmp_path / "bert-japanese"
    AutoTokenizer.from_pretrained(tiny_tokenizer_dir).save_pretrained(saved)
    assert not (saved / "lmpretrain_tokenizer.json").exists()
    tokenizer = AutoTokenizer.from_pretrained(saved)
    assert type(tokenizer).__name__ == "BertJapaneseTokenizer"
    lines = [line for line in sample_corpus.read_text(encoding="utf-8").splitlines() if line.strip()][:50]
    lines += ["Hello, WORLD! ｶﾀｶﾅ ①②", "[MASK] は 猫 [SEP] である"]
    with caplog.at_level("INFO", logger="lmpretrain"):
        encoder = FastEncoder.from_pretrained(saved)
    assert "encoded by the toolkit's fast encoder" in caplog.text and "Python tokenizer" not in caplog.text
    assert encoder._python is None and encoder._segmenter is not None
    assert encoder.encode_batch(lines, add_special_tokens=True) == tokenizer(lines)["input_ids"]
    ours = FastEncoder.from_pretrained(tiny_tokenizer_dir)  # the toolkit's own encoder on the original dir
    assert encoder.encode_batch_with_word_starts(lines) == ours.encode_batch_with_word_starts(lines)

    lowered = tmp_path / "bert-japanese-lower"
    AutoTokenizer.from_pretrained(tiny_tokenizer_dir).save_pretrained(lowered)
    config = json.loads((lowered / "tokenizer_config.json").read_text(encoding="utf-8"))
    (lowered / "tokenizer_config.json").write_text(json.dumps({**config, "do_lower_case": True}), encoding="utf-8")
    caplog.clear()
    with caplog.at_level("WARNING", logger="lmpretrain"):
        slow = FastEncoder.from_pretrained(lowered)
    assert "do_lower_case true" in caplog.text and "BertJapaneseTokenizer is a Python tokenizer" in caplog.text
    assert slow._python is not None
    assert slow.encode_batch(lines, add_special_tokens=True) == AutoTokenizer.from_pretrained(lowered)(lines)[
        "input_ids"]


def test_a_tokenizer_without_word_boundaries_says_so(masked_lm_dir, tmp_path):
    import shutil

    from lmpretrain.tokenization import FastEncoder

    bare = tmp_path / "bare"
    shutil.copytree(masked_lm_dir, bare)
    data = json.loads((bare / "tokenizer.json").read_text(encoding="utf-8"))
    data["pre_tokenizer"] = None
    (bare / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    config = json.loads((bare / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["tokenizer_class"] = "PreTrainedTokenizerFast"  # BertTokenizer would rebuild BERT's pre-tokenizer
    (bare / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    assert FastEncoder.from_pretrained(masked_lm_dir).has_word_boundaries
    assert not FastEncoder.from_pretrained(bare).has_word_boundaries


@pytest.fixture(scope="module")
def roberta_dir(tmp_path_factory, sample_corpus):
    """A tiny RobertaForMaskedLM and a byte-level BPE RobertaTokenizerFast (<s> <pad> </s> <unk> <mask>), trained
    here and save_pretrained'd into one dir, as a hub roberta-base dir is."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaForMaskedLM, RobertaTokenizerFast

    directory = tmp_path_factory.mktemp("hf") / "roberta"
    trainer = ByteLevelBPETokenizer()
    trainer.train([str(sample_corpus)], vocab_size=900, min_frequency=1,
                  special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], show_progress=False)
    tokenizer = RobertaTokenizerFast(tokenizer_object=trainer._tokenizer, bos_token="<s>", eos_token="</s>",
                                     cls_token="<s>", sep_token="</s>", unk_token="<unk>", pad_token="<pad>",
                                     mask_token="<mask>")
    tokenizer.save_pretrained(directory)
    RobertaForMaskedLM(RobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=66,
                                     pad_token_id=tokenizer.pad_token_id)).save_pretrained(directory)
    assert not (directory / "lmpretrain_tokenizer.json").exists()
    return directory


def test_a_roberta_dir_continues_with_its_own_tokenizer_and_exports_for_fill_mask(roberta_dir, sample_corpus,
                                                                                  tmp_path):
    """Its special tokens by role (<s> as [CLS], </s> as [SEP], <mask>, <pad>), transformers' ids for every line,
    whole-word masking on 'Ġ' word starts, and an export whose fill-mask fills <mask>."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer, pipeline

    from lmpretrain.trainer import train
    from tests.test_run_pretraining import make_args

    lines, tokenizer, encoder = same_ids_as_transformers(roberta_dir, sample_corpus, "<mask> は 猫 </s> である")
    assert tokenizer.convert_ids_to_tokens([encoder.cls_token_id, encoder.sep_token_id]) == ["<s>", "</s>"]
    assert_byte_level_word_starts(encoder, tokenizer, lines[:20])
    params = tmp_path / "parameter.json"
    params.write_text(json.dumps({"roberta-further": FURTHER}))
    out = tmp_path / "out"
    summary = train(make_args(sample_corpus, roberta_dir, out, params, "roberta-further",
                              pretrained_model_name_or_path=str(roberta_dir), do_whole_word_mask=True))
    assert summary["step"] == 3 and summary["eval/perplexity"] < summary["eval/perplexity_at_start"]
    assert type(AutoModelForMaskedLM.from_pretrained(out)).__name__ == "RobertaForMaskedLM"
    exported = AutoTokenizer.from_pretrained(out)
    assert exported(lines[:5])["input_ids"] == tokenizer(lines[:5])["input_ids"]
    fill = pipeline("fill-mask", model=str(out), tokenizer=str(out))
    assert len(fill("吾輩は<mask>である。")) == 5


def test_an_electra_discriminator_dir_continues_with_a_new_generator(masked_lm_dir, sample_corpus, tmp_path):
    """A hub-style ELECTRA dir holds the discriminator and an ElectraTokenizerFast (WordPiece) only: training
    continues it with a generator built new (a third of its width), the tokenizer's own ids, and exports both."""
    import transformers
    from transformers import AutoTokenizer

    from lmpretrain.tokenization import FastEncoder
    from lmpretrain.trainer import train
    from tests.test_run_pretraining import make_args

    base = AutoTokenizer.from_pretrained(masked_lm_dir)
    directory = tmp_path / "electra-discriminator"
    tokenizer = transformers.ElectraTokenizerFast(tokenizer_object=base.backend_tokenizer, unk_token="[UNK]",
                                                  pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
                                                  mask_token="[MASK]")
    tokenizer.save_pretrained(directory)
    transformers.ElectraForPreTraining(transformers.ElectraConfig(
        vocab_size=len(tokenizer), embedding_size=32, hidden_size=48, num_hidden_layers=2, num_attention_heads=3,
        intermediate_size=96, max_position_embeddings=64)).save_pretrained(directory)
    lines = [line for line in sample_corpus.read_text(encoding="utf-8").splitlines() if line.strip()][:50]
    encoder = FastEncoder.from_pretrained(directory)
    assert encoder.encode_batch(lines, add_special_tokens=True) == AutoTokenizer.from_pretrained(directory)(
        lines)["input_ids"]
    params = tmp_path / "parameter.json"
    params.write_text(json.dumps({"electra-further": {**FURTHER, "generator-size": "1/3"}}))
    out = tmp_path / "out"
    summary = train(make_args(sample_corpus, directory, out, params, "electra-further",
                              pretrained_model_name_or_path=str(directory)))
    assert summary["step"] == 3 and summary["eval/perplexity"] < summary["eval/perplexity_at_start"]
    discriminator = transformers.AutoModelForPreTraining.from_pretrained(out)
    generator = transformers.AutoModelForMaskedLM.from_pretrained(out / "generator")
    assert type(discriminator).__name__ == "ElectraForPreTraining"
    assert discriminator.config.hidden_size == 48 and discriminator.config.embedding_size == 32  # the loaded shapes
    assert generator.config.hidden_size == 16 and generator.config.embedding_size == 32  # 1/3, embeddings shared
    assert AutoTokenizer.from_pretrained(out)(lines[:5])["input_ids"] == encoder.encode_batch(
        lines[:5], add_special_tokens=True)


def test_an_electra_generator_is_not_continued_as_a_discriminator(masked_lm_dir, tmp_path, caplog):
    """A transformers-saved ElectraForMaskedLM (a generator alone) given as the model to continue would become the
    discriminator (its width, a new detection head): one error says which dir goes where; a discriminator given as
    the generator too. A discriminator alone gets a new generator, said in one line."""
    import transformers

    from lmpretrain.models import build_model, resolve_pretrained_shape

    config = dict(vocab_size=1500, embedding_size=32, num_hidden_layers=2, intermediate_size=64,
                  max_position_embeddings=64)
    transformers.ElectraForMaskedLM(transformers.ElectraConfig(hidden_size=16, num_attention_heads=1, **config)) \
        .save_pretrained(tmp_path / "generator-only")
    transformers.ElectraForPreTraining(transformers.ElectraConfig(hidden_size=48, num_attention_heads=3, **config)) \
        .save_pretrained(tmp_path / "discriminator")
    further = {k: v for k, v in FURTHER.items() if k != "sequence-length"}
    with pytest.raises(UserError, match=r"generator-only is an ELECTRA generator \(ElectraForMaskedLM, no "
                                        r"discriminator head\).*as pretrained_generator_model_name_or_path"):
        resolve_pretrained_shape(parse_preset("electra-further", further, "p", continued=True),
                                 str(tmp_path / "generator-only"), set(further))
    swapped = {**further, "pretrained_generator_model_name_or_path": str(tmp_path / "discriminator")}
    with pytest.raises(UserError, match=r"the generator .*discriminator is an ELECTRA discriminator"):
        resolve_pretrained_shape(parse_preset("electra-further", swapped, "p", continued=True),
                                 str(tmp_path / "discriminator"), set(swapped))
    params = resolve_pretrained_shape(parse_preset("electra-further", {**further, "generator-size": "1/3"}, "p",
                                                   continued=True), str(tmp_path / "discriminator"), set(further))
    with caplog.at_level("INFO", logger="lmpretrain"):
        model = build_model(params, vocab_size=1500, pad_token_id=0, seed=0, pretrained_dir=str(tmp_path /
                                                                                                "discriminator"))
    assert model.generator.config.hidden_size == 16
    assert any("is a discriminator without a generator" in r.message and "a new ElectraForMaskedLM generator is "
               "added (hidden size 16, generator-size 0.333333" in r.message for r in caplog.records)


def _single_class_start(kind: str, directory, tokenizer):
    """A tiny transformers model of the one class its family trains, save_pretrained'd with ``tokenizer``."""
    import transformers

    shape = dict(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=64, max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id)
    if kind == "deberta-v2":
        # the attention settings of microsoft/deberta-v3-base's config.json (which a continued preset must match)
        model = transformers.DebertaV2ForMaskedLM(transformers.DebertaV2Config(
            **shape, relative_attention=True, position_buckets=256, pos_att_type=["p2c", "c2p"],
            norm_rel_ebd="layer_norm", share_att_key=True, position_biased_input=False, max_relative_positions=-1))
    elif kind == "modernbert":
        model = transformers.ModernBertForMaskedLM(transformers.ModernBertConfig(
            **shape, cls_token_id=tokenizer.cls_token_id, sep_token_id=tokenizer.sep_token_id))
    else:
        shape["pad_token_id"] = None
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
            **shape, bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id))
    tokenizer.save_pretrained(directory)
    model.save_pretrained(directory)
    return type(model).__name__


@pytest.mark.parametrize("kind, auto", [("deberta-v2", "AutoModelForMaskedLM"), ("modernbert", "AutoModelForMaskedLM"),
                                        ("llama", "AutoModelForCausalLM")])
def test_a_single_class_family_continues_and_exports_the_class_it_started_as(kind, auto, masked_lm_dir, gpt2_dir,
                                                                               sample_corpus, tmp_path):
    """Issue 26 item 4 for the families that train one class (DeBERTa-v2 and ModernBERT masked LMs, Llama causal
    LM; RoBERTa and GPT-2 are shown by their tests above): the export is the start's class, with the same weight
    names and shapes, trained."""
    import transformers

    from lmpretrain.trainer import train
    from tests.test_run_pretraining import make_args

    tokenizer = transformers.AutoTokenizer.from_pretrained(gpt2_dir if kind == "llama" else masked_lm_dir)
    start_dir, out = tmp_path / "start", tmp_path / "out"
    start_class = _single_class_start(kind, start_dir, tokenizer)
    params = tmp_path / "parameter.json"
    params.write_text(json.dumps({f"{kind}-further": FURTHER}))
    summary = train(make_args(sample_corpus, start_dir, out, params, f"{kind}-further",
                              pretrained_model_name_or_path=str(start_dir)))
    assert summary["step"] == 3
    assert json.loads((out / "config.json").read_text())["architectures"] == [start_class]
    start, end = (getattr(transformers, auto).from_pretrained(d) for d in (start_dir, out))
    assert type(start).__name__ == type(end).__name__ == start_class
    start, end = start.state_dict(), end.state_dict()
    assert sorted(end) == sorted(start) and all(end[k].shape == start[k].shape for k in start)
    assert sum(not torch.equal(end[k], start[k]) for k in start) > len(start) // 2

