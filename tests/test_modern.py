"""ModernBERT and Llama-style families, and causal exports that generate: losses against transformers' own, the
published preset shapes, bad attention settings, training end to end with fill-mask / text-generation on the export,
special ids that agree between config and tokenizer, and what a decode round trip returns."""

import json
import shutil
import unicodedata

import pytest
import torch

from lmpretrain.errors import UserError
from lmpretrain.models import build_model, load_parameters, parse_preset
from lmpretrain.trainer import train
from tests.test_models import BASE, batch, make, total_loss
from tests.test_run_pretraining import losses, make_args


def test_modernbert_loss_equals_transformers_masked_lm_dense_and_sparse():
    model, b = make("modernbert").eval(), batch()
    ours = model(b)
    hf = model.model
    theirs = hf(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"])
    torch.testing.assert_close(total_loss(model, ours), theirs.loss)
    hf.sparse_prediction = True  # transformers' own sparse prediction gives the same loss
    sparse = hf(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"])
    torch.testing.assert_close(total_loss(model, ours), sparse.loss)
    assert hf.config.layer_types == ["full_attention", "sliding_attention"]
    assert hf.config._attn_implementation == "sdpa"  # CPU; flash_attention_2 only on a CUDA GPU with flash-attn


def test_modernbert_defaults_are_the_papers():
    params = parse_preset("modernbert-x", dict(BASE), "test")
    assert params.mlm_probability == 0.3 and params.dropout == 0.0
    assert params.option("global_attn_every_n_layers") == 3 and params.option("global_rope_theta") == 160_000


def test_llama_loss_equals_transformers_causal_lm_with_grouped_query_attention():
    model = make("llama", **{"num-key-value-heads": 2}).eval()
    b = batch()
    labels = torch.where(b["attention_mask"].bool(), b["input_ids"], torch.full_like(b["input_ids"], -100))
    b = {**b, "labels": labels}
    theirs = model.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=labels)
    torch.testing.assert_close(total_loss(model, model(b)), theirs.loss)
    config = model.model.config
    assert (config.num_attention_heads, config.num_key_value_heads) == (4, 2)
    assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (3, 3, 0)


def test_llama_tied_and_untied_embeddings():
    tied = make("llama", **{"tie-word-embeddings": True}).model
    untied = make("llama").model
    assert tied.lm_head.weight is tied.model.embed_tokens.weight
    assert untied.lm_head.weight is not untied.model.embed_tokens.weight


def test_shipped_presets_have_the_published_shapes(repo_root):
    from transformers import LlamaForCausalLM, ModernBertConfig

    from lmpretrain.models import llama
    from lmpretrain.models.base import BuildSpec

    reference = ModernBertConfig()  # transformers' defaults are ModernBERT-base's
    base = load_parameters(repo_root / "parameter.json", "modernbert-base")
    assert (base.number_of_layers, base.hidden_size, base.ffn_inner_hidden_size, base.attention_heads) == (
        reference.num_hidden_layers, reference.hidden_size, reference.intermediate_size,
        reference.num_attention_heads)
    assert base.sequence_length == 1024 and base.option("local_attention") == reference.local_attention
    large = load_parameters(repo_root / "parameter.json", "modernbert-large")
    assert (large.number_of_layers, large.hidden_size, large.ffn_inner_hidden_size, large.attention_heads) == (
        28, 1024, 2624, 16)
    one_b = load_parameters(repo_root / "parameter.json", "llama-1b")  # TinyLlama-1.1B's shape
    with torch.device("meta"):
        model = LlamaForCausalLM(llama.hf_config(one_b, BuildSpec(vocab_size=32000, pad_token_id=0, eos_token_id=2)))
    assert 1.0e9 < model.num_parameters() < 1.2e9
    assert load_parameters(repo_root / "parameter.json", "llama-135m").option("num_key_value_heads") == 3


@pytest.mark.parametrize("family, extra, message", [
    ("modernbert", {"local-attention": 7}, "local-attention: 7 does not divide by 2"),
    ("modernbert", {"local-attention": 32}, "longer than sequence-length 16"),
    ("modernbert", {"sequence-length": 16384, "local-attention": 128}, "above the 8192 positions"),
    ("modernbert", {"max-position-embeddings": 8}, "sequence-length: 16 is above max-position-embeddings 8"),
    ("llama", {"num-key-value-heads": 3}, "attention-heads 4 does not divide by num-key-value-heads 3"),
    ("llama", {"hidden-size": 20}, "does not divide by 2, as rotary"),
])
def test_bad_attention_settings_are_one_clear_error(family, extra, message):
    with pytest.raises(UserError, match=message):
        parse_preset(f"{family}-x", {**BASE, **extra}, "p.json")


def test_modernbert_with_a_mecab_tokenizer_is_refused_before_training(tiny_tokenizer_dir, sample_corpus, tmp_path):
    from lmpretrain.prepare import prepare_run

    params = tmp_path / "parameter.json"
    params.write_text(json.dumps({"modernbert-x": BASE}))
    with pytest.raises(UserError, match="loads a ModernBERT model's AutoTokenizer from a tokenizer.json only"):
        prepare_run(make_args(sample_corpus, tiny_tokenizer_dir, tmp_path / "out", params, "modernbert-x"))


def test_causal_tokenizer_without_end_of_text_is_refused(tokenizer_factory, sample_corpus, tmp_path):
    from lmpretrain.prepare import prepare_run

    tok = tmp_path / "tok"
    shutil.copytree(tokenizer_factory("none", "bpe"), tok)
    data = json.loads((tok / "tokenizer.json").read_text(encoding="utf-8"))
    data["model"]["vocab"]["[EOS]"] = data["model"]["vocab"].pop("[SEP]")
    for added in data["added_tokens"]:
        added["content"] = "[EOS]" if added["content"] == "[SEP]" else added["content"]
    (tok / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    params = tmp_path / "parameter.json"
    params.write_text(json.dumps({"llama-x": BASE}))
    with pytest.raises(UserError, match=r"has no \[SEP\]: a causal LM ends every document"):
        prepare_run(make_args(sample_corpus, tok, tmp_path / "out", params, "llama-x"))


E2E = {"number-of-layers": 2, "hidden-size": 32, "sequence-length": 64, "ffn-inner-hidden-size": 64,
       "attention-heads": 2, "warmup-steps": 2, "learning-rate": 2e-3, "batch-size": {"-1": 8}, "train-steps": 16,
       "save-steps": 8, "logging-steps": 1, "eval-steps": 8, "eval-share": 0.1}


def _train(sample_corpus, tokenizer, tmp_path, model_type, **extra):
    params = tmp_path / "parameter.json"
    params.write_text(json.dumps({model_type: {**E2E, **extra}}))
    out = tmp_path / "out"
    train(make_args(sample_corpus, tokenizer, out, params, model_type))
    curve = losses(out)
    assert sum(curve[s] for s in (14, 15, 16)) < sum(curve[s] for s in (1, 2, 3)), curve
    return out


@pytest.mark.slow
def test_modernbert_trains_and_fill_mask_runs_on_the_export(sample_corpus, tokenizer_factory, tmp_path):
    from transformers import AutoModelForMaskedLM, AutoTokenizer, pipeline

    out = _train(sample_corpus, tokenizer_factory("none", "bpe"), tmp_path, "modernbert-x", **{"local-attention": 32})
    model = AutoModelForMaskedLM.from_pretrained(out)
    assert type(model).__name__ == "ModernBertForMaskedLM" and model.config.local_attention == 32
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert model.config.pad_token_id == tokenizer.pad_token_id
    predictions = pipeline("fill-mask", model=model, tokenizer=tokenizer)(f"私たちの小さな{tokenizer.mask_token}では")
    assert len(predictions) == 5 and all("token_str" in p for p in predictions)


@pytest.mark.slow
@pytest.mark.parametrize("model_type, dic", [("llama-x", "none"), ("gpt-x", "none"), ("llama-m", "ipadic")])
def test_causal_export_agrees_with_its_tokenizer_and_generates(model_type, dic, sample_corpus, tokenizer_factory,
                                                                tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    tokenizer_dir = tokenizer_factory(dic, "bpe" if dic == "none" else "wordpiece")
    extra = {"num-key-value-heads": 1} if model_type.startswith("llama") else {}
    out = _train(sample_corpus, tokenizer_dir, tmp_path, model_type, **extra)
    for directory in (out, out / "checkpoint-8"):
        model = AutoModelForCausalLM.from_pretrained(directory)
        tokenizer = AutoTokenizer.from_pretrained(directory)
        config = model.config
        assert tokenizer.eos_token == tokenizer.bos_token == "[SEP]" and tokenizer.pad_token == "[PAD]"
        assert (config.eos_token_id, config.bos_token_id, config.pad_token_id) == (
            tokenizer.eos_token_id, tokenizer.bos_token_id, tokenizer.pad_token_id)
        assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    ids = tokenizer("吾輩は猫である")["input_ids"]
    if dic == "none":  # a tokenizer.json adds nothing: the ids a document starts with in training
        assert tokenizer.cls_token_id not in ids and tokenizer.eos_token_id not in ids
    else:  # transformers' BertJapaneseTokenizer always wraps; the pipeline passes add_special_tokens=False
        assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    generator = pipeline("text-generation", model=model, tokenizer=tokenizer)
    text = generator("私たちの小さな町では", max_new_tokens=8, do_sample=False)[0]["generated_text"]
    assert text.startswith("私たちの小さな町では") and len(text) > len("私たちの小さな町では")


@pytest.mark.parametrize("algorithm", ["bpe", "unigram"])
def test_decode_returns_held_out_lines_exactly_up_to_nfkc(algorithm, sample_corpus, tmp_path):
    """Without MeCab (tokenizer.json, Metaspace), decoding returns a held-out line exactly when its characters are in
    the vocabulary and it is NFKC-stable; otherwise it returns NFKC(line) (the tokenizer normalizes), with [UNK]
    where a character is unknown (no byte fallback)."""
    from transformers import AutoTokenizer

    from lmpretrain.tokenization import TokenizerSpec, train_tokenizer

    lines = [line for line in sample_corpus.read_text(encoding="utf-8").splitlines() if line.strip()]
    held_out = lines[-40:]
    train_file = tmp_path / "train.txt"
    train_file.write_text("\n".join(lines[:-40]) + "\n", encoding="utf-8")
    spec = TokenizerSpec(mecab_dic_type="none", tokenizer_type=algorithm, vocab_size=2000, min_frequency=1,
                         limit_alphabet=2000, num_unused_tokens=5)
    train_tokenizer([str(train_file)], tmp_path / "tok", spec, num_workers=1)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "tok")
    exact = known = 0
    for line in held_out:
        ids = tokenizer(line, add_special_tokens=False)["input_ids"]
        decoded = tokenizer.decode(ids)
        if tokenizer.unk_token_id in ids:  # a character the 340 training lines never had: [UNK] in its place
            assert "[UNK]" in decoded
            continue
        known += 1
        assert decoded == unicodedata.normalize("NFKC", line), (line, decoded)
        exact += decoded == line
    assert known >= 5 and exact >= known - 3, (known, exact)  # NFKC changes few lines (full-width letters, ①)


def test_causal_tokenizer_files_and_fast_encoder_agree(tokenizer_factory, tmp_path):
    from transformers import AutoTokenizer

    from lmpretrain.tokenization import FastEncoder, copy_tokenizer_files

    for dic, algorithm in (("none", "bpe"), ("ipadic", "wordpiece")):
        source, dest = tokenizer_factory(dic, algorithm), tmp_path / dic
        dest.mkdir()
        copy_tokenizer_files(source, dest, 64, causal_lm=True)
        theirs = AutoTokenizer.from_pretrained(dest)
        with FastEncoder.from_pretrained(source) as encoder:
            texts = ["吾輩は猫である。", "東京都の人口"]
            assert encoder.encode_batch(texts, add_special_tokens=True, causal_lm=True) == \
                [theirs(t)["input_ids"] for t in texts]
        assert theirs.model_max_length == 64 and theirs.eos_token_id == encoder.sep_token_id


def test_build_model_is_seeded_for_the_new_families():
    params = parse_preset("llama-x", dict(BASE), "test")
    a = build_model(params, vocab_size=50, pad_token_id=0, seed=1, eos_token_id=3)
    b = build_model(params, vocab_size=50, pad_token_id=0, seed=1, eos_token_id=3)
    torch.testing.assert_close(a.model.lm_head.weight, b.model.lm_head.weight)
