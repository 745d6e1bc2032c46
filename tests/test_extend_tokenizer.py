"""train_tokenizer.py --base_tokenizer_dir: base ids kept, new tokens learnt from a domain corpus (most used first)
or read from --add_words, a dir that loads as the base does, one clear error for bad input, and continued
pretraining on the extension."""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from collections import Counter
from pathlib import Path

import pytest

from lmpretrain.errors import UserError
from lmpretrain.tokenization import FastEncoder, TokenizerSpec, read_meta, tokenizer_fingerprint, train_tokenizer
from lmpretrain.tokenization.extend import extend_tokenizer
from tests.conftest import SAMPLE_CORPUS
from tests.test_train_tokenizer import assert_one_clean_error, snapshot, train

ADDED = 40
# full-width (NFKC), split by MeCab, a continuation piece, blank, a duplicate, a base token
WORDS = ["ＣＯＶＩＤ", "重症急性呼吸器症候群", "##症候群", "", "ＣＯＶＩＤ", "天気"]


def domain_lines(count: int = 300, seed: int = 0) -> list[str]:
    """Clinical sentences: words the sample corpus (a small town's weather and shops) lacks, many times over."""
    rng = random.Random(seed)
    drugs = ["アセトアミノフェン", "イブプロフェン", "ロキソプロフェン", "アモキシシリン", "メトホルミン"]
    ills = ["糖尿病", "高血圧症", "気管支喘息", "肺炎", "胃潰瘍", "心筋梗塞"]
    signs = ["発熱", "咳嗽", "倦怠感", "頭痛", "嘔吐", "呼吸困難"]
    forms = ["患者は{d}を{n}ミリグラム服用した。", "{i}の症状として{s}が見られる。", "{i}の治療には{d}が用いられる。",
             "{s}と{t}を訴えて来院した患者に{d}を処方した。", "医師は{i}と診断し、{d}の投与を開始した。"]
    return [rng.choice(forms).format(d=rng.choice(drugs), i=rng.choice(ills), s=rng.choice(signs),
                                     t=rng.choice(signs), n=rng.randint(1, 20) * 50) for _ in range(count)]


@pytest.fixture(scope="module")
def domain(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("domain") / "domain.txt"
    path.write_text("\n".join(domain_lines()) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def words_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("words") / "words.txt"
    path.write_text("\n".join(WORDS) + "\n", encoding="utf-8")
    return path


def vocab_of(directory: Path) -> list[str]:
    from transformers import AutoTokenizer

    vocab = AutoTokenizer.from_pretrained(str(directory)).get_vocab()
    return [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]


@pytest.fixture(scope="module")
def extended(tmp_path_factory, tiny_tokenizer_dir, domain, words_file):
    """The script on the MeCab + WordPiece base, with a domain corpus and a word list."""
    out = tmp_path_factory.mktemp("ext") / "tok"
    size = len(vocab_of(tiny_tokenizer_dir)) + ADDED
    result = train("--base_tokenizer_dir", str(tiny_tokenizer_dir), "--input_file", str(domain), "--model_dir",
                   str(out), "--vocab_size", str(size), "--min_frequency", "1", "--num_files", "2",
                   "--add_words", str(words_file))
    assert result.returncode == 0, result.stderr
    return out, result


def test_base_ids_kept_new_tokens_appended_and_recorded(extended, tiny_tokenizer_dir, words_file):
    out, result = extended
    base, ext = vocab_of(tiny_tokenizer_dir), vocab_of(out)
    assert ext[:len(base)] == base  # every base token at its id
    assert len(ext) == len(base) + ADDED and len(set(ext)) == len(ext)
    assert ext[len(base):len(base) + 3] == ["COVID", "重症急性呼吸器症候群", "##症候群"]  # the list first, NFKC
    summary = result.stdout.strip().splitlines()[-1]
    assert re.fullmatch(rf"tokenizer: extended .* \({len(base)} tokens\) by {ADDED} of up to {ADDED} "
                        rf"\({ADDED - 3} learnt from 300 lines, 3 from --add_words\), {len(ext)} tokens, "
                        rf"in [\d.]+ s -> .*tok", summary), summary
    assert "重症急性呼吸器症候群" in result.stderr and "more than one word" in result.stderr  # MeCab splits it
    meta = read_meta(out)
    assert meta["extension"] == {
        "base_tokenizer_dir": str(tiny_tokenizer_dir.resolve()), "base_fingerprint":
        tokenizer_fingerprint(tiny_tokenizer_dir), "base_vocab_size": len(base), "added": ADDED,
        "learnt": ADDED - 3, "from_words": 3,
        "add_words": {"file": str(words_file), "sha256": hashlib.sha256(words_file.read_bytes()).hexdigest()},
        "base_training": read_meta(tiny_tokenizer_dir)["training"]}
    assert meta["vocab_size"] == len(ext) and meta["spec"]["vocab_size"] == len(ext)
    assert meta["word_segmenter"] == read_meta(tiny_tokenizer_dir)["word_segmenter"]


def test_learnt_tokens_are_the_domain_tokenizers_most_used_first(extended, tiny_tokenizer_dir, domain, tmp_path):
    """The definition, recomputed independently: a tokenizer of the same settings trained on the domain corpus,
    transformers' own tokenizer counting how often it uses each token, the ones the base lacks in that order."""
    from transformers import AutoTokenizer

    out, _ = extended
    meta = read_meta(out)
    train_tokenizer([str(domain)], tmp_path / "domain", TokenizerSpec(**meta["spec"]), num_workers=1)
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "domain"))
    counts = Counter(i for line in domain.read_text(encoding="utf-8").splitlines()
                     for i in tokenizer(line, add_special_tokens=False)["input_ids"])
    base, ext = set(vocab_of(tiny_tokenizer_dir)), vocab_of(out)
    listed = set(ext[len(base):len(base) + 3])
    expected = [t for _, _, t in sorted((-counts[i], i, t) for t, i in tokenizer.get_vocab().items()
                                        if t not in base and t not in listed and counts[i])]
    assert ext[len(base) + 3:] == expected[:ADDED - 3]
    assert "アモキシシリン" in ext[len(base) + 3:]


@pytest.fixture(scope="module")
def extensions(tmp_path_factory, tokenizer_factory, domain, words_file):
    """An extension per kind of base dir: MeCab + `tokenizers` WordPiece / Unigram / BPE or SentencePiece-library
    Unigram / BPE (spiece.model); no segmenter + WordPiece / Unigram (tokenizer.json)."""
    made = {}

    def make(dic: str, algorithm: str) -> tuple[Path, Path]:
        if (dic, algorithm) not in made:
            if algorithm.startswith("spm-"):  # the SentencePiece library's own models
                base = tmp_path_factory.mktemp(f"base-{dic}-{algorithm}") / "tok"
                train_tokenizer([str(SAMPLE_CORPUS)], base, TokenizerSpec.from_flags(
                    mecab_dic_type=dic, tokenizer_type="sentencepiece", spm_model_type=algorithm[4:],
                    vocab_size=1500, num_unused_tokens=5), num_workers=1)
            else:
                base = tokenizer_factory(dic, algorithm)
            out = tmp_path_factory.mktemp(f"ext-{dic}-{algorithm}") / "tok"
            words = words_file
            if algorithm != "wordpiece":  # no ## pieces in a sentencepiece model
                words = out.parent / "words.txt"
                words.write_text("\n".join(w for w in WORDS if not w.startswith("##")) + "\n", encoding="utf-8")
            extend_tokenizer(base, out, input_file=[str(domain)], vocab_size=len(vocab_of(base)) + 80,
                             add_words=str(words), min_frequency=1)
            made[dic, algorithm] = base, out
        return made[dic, algorithm]

    return make


KINDS = [("ipadic", "wordpiece"), ("ipadic", "unigram"), ("ipadic", "bpe"), ("ipadic", "spm-unigram"),
         ("ipadic", "spm-bpe"), ("none", "wordpiece"), ("none", "unigram")]


@pytest.mark.parametrize("dic,algorithm", KINDS)
def test_extension_loads_as_the_base_and_the_encoder_agrees(extensions, sample_corpus, domain, dic, algorithm):
    from transformers import AutoTokenizer

    base_dir, out = extensions(dic, algorithm)
    base, ext = AutoTokenizer.from_pretrained(str(base_dir)), AutoTokenizer.from_pretrained(str(out))
    assert type(ext) is type(base)
    for name in ("word_tokenizer_type", "subword_tokenizer_type", "mecab_kwargs"):
        assert getattr(ext, name, None) == getattr(base, name, None), name
    base_vocab, ext_vocab = base.get_vocab(), ext.get_vocab()
    assert all(ext_vocab[t] == i for t, i in base_vocab.items()) and len(ext_vocab) > len(base_vocab)
    texts = domain.read_text(encoding="utf-8").splitlines()[:60] + \
        sample_corpus.read_text(encoding="utf-8").splitlines()[:120]
    with FastEncoder.from_pretrained(out) as encoder:
        assert encoder.encode_batch(texts, add_special_tokens=True) == [ext(t)["input_ids"] for t in texts]


@pytest.mark.parametrize("dic,algorithm", KINDS)
def test_ids_change_only_where_a_new_token_is_used(extensions, sample_corpus, domain, dic, algorithm):
    """Greedy longest match (and Viterbi) only leave the base's tokens for a new one: a text whose ids changed
    uses a new token; the domain text gets shorter or loses its unknown tokens; most of the base's text is untouched."""
    base_dir, out = extensions(dic, algorithm)
    with FastEncoder.from_pretrained(base_dir) as old, FastEncoder.from_pretrained(out) as new:
        base_size = old.vocab_size
        sample = sample_corpus.read_text(encoding="utf-8").splitlines()
        clinical = domain.read_text(encoding="utf-8").splitlines()
        for texts in (sample, clinical):
            for text, before, after in zip(texts, old.encode_batch(texts), new.encode_batch(texts)):
                if before != after:
                    assert max(after) >= base_size, text
        unchanged = sum(a == b for a, b in zip(old.encode_batch(sample), new.encode_batch(sample)))
        assert unchanged > 0.8 * len(sample)
        before, after = old.encode_batch(clinical), new.encode_batch(clinical)
        unknown_before, unknown_after = (sum(ids.count(old.unk_token_id) for ids in e) for e in (before, after))
        assert unknown_after <= unknown_before
        assert sum(map(len, after)) < 0.9 * sum(map(len, before)) or unknown_after < unknown_before / 2


def test_sentencepiece_extension_keeps_scores_and_takes_listed_words_whole(extensions):
    from sentencepiece import sentencepiece_model_pb2 as sp_pb2

    base_dir, out = extensions("ipadic", "unigram")
    base, ext = sp_pb2.ModelProto(), sp_pb2.ModelProto()
    base.ParseFromString((base_dir / "spiece.model").read_bytes())
    ext.ParseFromString((out / "spiece.model").read_bytes())
    assert [(p.piece, p.score, p.type) for p in ext.pieces[:len(base.pieces)]] == \
        [(p.piece, p.score, p.type) for p in base.pieces]
    listed = ext.pieces[len(base.pieces):len(base.pieces) + 2]
    assert [p.piece for p in listed] == ["\u2581COVID", "\u2581重症急性呼吸器症候群"]
    assert all(p.type == sp_pb2.ModelProto.SentencePiece.USER_DEFINED for p in listed)
    assert (out / "vocab.txt").read_text(encoding="utf-8").splitlines() == [p.piece for p in ext.pieces]
    from transformers import AutoTokenizer

    assert "▁COVID" in AutoTokenizer.from_pretrained(str(out)).tokenize("ＣＯＶＩＤの患者")


def test_a_sentencepiece_library_model_without_a_segmenter_is_refused(tmp_path, domain):
    base = tmp_path / "spm"
    train_tokenizer([str(SAMPLE_CORPUS)], base, TokenizerSpec.from_flags(
        mecab_dic_type="none", tokenizer_type="sentencepiece", spm_model_type="unigram", vocab_size=1500,
        num_unused_tokens=5), num_workers=1)
    with pytest.raises(UserError, match=r"extending a sentencepiece tokenizer without a word segmenter "
                                        r"\(tokenizer.json converted from spiece.model\) is not supported"):
        extend_tokenizer(base, tmp_path / "tok", input_file=[str(domain)], vocab_size=1600)
    assert not (tmp_path / "tok").exists()


def test_a_plan_knows_an_extension():
    from lmpretrain.models.vocab_adapt import plan_adaptation

    old = {"[PAD]": 0, "[UNK]": 1, "a": 2, "b": 3}
    assert plan_adaptation(old, {**old, "ab": 4}).extends
    assert "the tokenizer extends the model's by 1 tokens (ids 0-3 unchanged): 4 rows kept" in \
        plan_adaptation(old, {**old, "ab": 4}).summary()
    assert not plan_adaptation(old, {"[PAD]": 0, "[UNK]": 1, "b": 2, "a": 3, "ab": 4}).extends  # ids moved
    assert not plan_adaptation(old, {"[PAD]": 0, "[UNK]": 1, "a": 2, "c": 3, "ab": 4}).extends  # a token dropped
    assert not plan_adaptation(old, dict(old)).extends


def test_a_continuation_piece_for_a_sentencepiece_base_is_an_error(tokenizer_factory, words_file, tmp_path):
    with pytest.raises(UserError, match=r"words.txt, line 3: '##症候群' is a WordPiece continuation piece, but the "
                                        r"base is unigram"):
        extend_tokenizer(tokenizer_factory("ipadic", "unigram"), tmp_path / "tok", input_file=None, vocab_size=None,
                         add_words=str(words_file))
    assert not (tmp_path / "tok").exists() and list(tmp_path.iterdir()) == []


def test_word_list_alone_adds_every_word_and_extensions_chain(tiny_tokenizer_dir, words_file, domain, tmp_path):
    summary = extend_tokenizer(tiny_tokenizer_dir, tmp_path / "tok", input_file=None, vocab_size=None,
                               add_words=str(words_file))
    base = vocab_of(tiny_tokenizer_dir)
    assert vocab_of(tmp_path / "tok") == base + ["COVID", "重症急性呼吸器症候群", "##症候群"]  # 天気: already there
    assert (summary["from_words"], summary["learnt"]) == (3, 0)
    extend_tokenizer(tmp_path / "tok", tmp_path / "tok2", input_file=[str(domain)], vocab_size=len(base) + 13,
                     min_frequency=1)
    assert vocab_of(tmp_path / "tok2")[:len(base) + 3] == vocab_of(tmp_path / "tok")
    assert len(vocab_of(tmp_path / "tok2")) == len(base) + 13
    record = read_meta(tmp_path / "tok2")["extension"]
    assert (record["base_vocab_size"], record["learnt"]) == (len(base) + 3, 10)
    assert record["base_extension"] == read_meta(tmp_path / "tok")["extension"]
    with pytest.raises(UserError, match=rf"has 3 words the base lacks, but --vocab_size {len(base) + 2} leaves room "
                                        rf"for 2 beyond the base's {len(base)} tokens"):
        extend_tokenizer(tiny_tokenizer_dir, tmp_path / "tok2", input_file=None, vocab_size=len(base) + 2,
                         add_words=str(words_file))


def test_flags_asking_for_another_segmenter_are_ignored_out_loud(tiny_tokenizer_dir, domain, tmp_path, caplog):
    asked = TokenizerSpec.from_flags(mecab_dic_type="unidic_lite", tokenizer_type="unigram")
    with caplog.at_level(logging.WARNING, logger="lmpretrain"):
        extend_tokenizer(tiny_tokenizer_dir, tmp_path / "tok", input_file=[str(domain)],
                         vocab_size=len(vocab_of(tiny_tokenizer_dir)) + 10, min_frequency=1, asked=asked,
                         given=frozenset({"mecab_dic_type", "tokenizer_type"}))
    message = " ".join(r.getMessage() for r in caplog.records)
    assert "mecab_dic_type 'ipadic'" in message and "ignores the flags asking for mecab_dic_type 'unidic_lite'; " \
        "tokenizer_type 'unigram'" in message
    config = json.loads((tmp_path / "tok" / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config == json.loads((tiny_tokenizer_dir / "tokenizer_config.json").read_text(encoding="utf-8"))


def _bad_bases(root: Path, base: Path) -> dict[str, Path]:
    import shutil

    no_vocab = root / "no-vocab"
    shutil.copytree(base, no_vocab)
    (no_vocab / "vocab.txt").unlink()
    corrupt = root / "corrupt"
    shutil.copytree(base, corrupt)
    (corrupt / "lmpretrain_tokenizer.json").write_text("{", encoding="utf-8")
    plain = root / "plain"
    plain.mkdir()
    (plain / "vocab.txt").write_text("[PAD]\n[UNK]\n", encoding="utf-8")
    (root / "spaced.txt").write_text("良い\n二つ の語\n", encoding="utf-8")
    (root / "blank.txt").write_text("\n\n\n", encoding="utf-8")
    return {"no-vocab": no_vocab, "corrupt": corrupt, "plain": plain}


BAD = {  # case -> (flags, fragments of the one error line)
    "missing dir": (["--base_tokenizer_dir", "{root}/nowhere", "--vocab_size", "3000"], ["nowhere does not exist"]),
    "not ours": (["--base_tokenizer_dir", "{root}/plain", "--vocab_size", "3000"],
                 ["plain/lmpretrain_tokenizer.json is missing"]),
    "no vocab.txt": (["--base_tokenizer_dir", "{root}/no-vocab", "--vocab_size", "3000"],
                     ["no-vocab/vocab.txt is missing"]),
    "corrupt meta": (["--base_tokenizer_dir", "{root}/corrupt", "--vocab_size", "3000"],
                     ["corrupt/lmpretrain_tokenizer.json is corrupt"]),
    "size below the base's": (["--base_tokenizer_dir", "{base}", "--vocab_size", "1000"],
                              ["--vocab_size 1000 is the extended vocabulary's total size", "above the base's"]),
    "no size": (["--base_tokenizer_dir", "{base}"], ["needs --vocab_size"]),
    "spaced word": (["--base_tokenizer_dir", "{base}", "--vocab_size", "3000", "--add_words", "{root}/spaced.txt"],
                    ["spaced.txt, line 2", "holds a space"]),
    "words without a base": (["--add_words", "{root}/spaced.txt"], ["--add_words needs --base_tokenizer_dir"]),
    "a corpus without text": (["--base_tokenizer_dir", "{base}", "--vocab_size", "3000", "--input_file",
                               "{root}/blank.txt"], ["blank.txt has no text"]),
    "output is the base": (["--base_tokenizer_dir", "{base}", "--vocab_size", "3000", "--model_dir", "{base}"],
                           ["is --base_tokenizer_dir"]),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_clear_error_and_nothing_written(tmp_path, tiny_tokenizer_dir, domain, case):
    _bad_bases(tmp_path, tiny_tokenizer_dir)
    flags, fragments = BAD[case]
    flags = [f.format(root=tmp_path, base=tiny_tokenizer_dir) for f in flags]
    if "--model_dir" not in flags:
        flags += ["--model_dir", str(tmp_path / "out" / "tok")]
    before = snapshot(tiny_tokenizer_dir)
    assert_one_clean_error(train("--input_file", str(domain), *flags), *fragments)
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
    assert snapshot(tiny_tokenizer_dir) == before


@pytest.mark.slow
def test_continued_pretraining_on_the_extension_keeps_every_shared_row(tmp_path, sample_corpus, tiny_tokenizer_dir,
                                                                       domain):
    """A tiny BERT pretrained with the base, its own dir extended (a released model's tokenizer), continued by
    run_pretraining.py with the embeddings frozen: the base's rows stay bit for bit, the new ones train, and the
    adaptation's log line reports the tokens added."""
    import torch
    from safetensors.torch import load_file

    from lmpretrain.models.vocab_adapt import VocabPlan
    from lmpretrain.trainer import train as pretrain
    from tests.helpers import run_script
    from tests.test_run_pretraining import BASE, make_args

    params = tmp_path / "parameter.json"
    further = {"warmup-steps": 1, "learning-rate": 5e-3, "batch-size": {"-1": 8}, "train-steps": 3, "save-steps": 3,
               "logging-steps": 1, "dropout": 0.0, "attention-dropout": 0.0, "eval-share": 0.1,
               "pretrained_model_name_or_path": str(tmp_path / "base"), "flozen-layers": 0, "new-token-init": "pieces"}
    params.write_text(json.dumps({"bert-test": BASE, "bert-domain": further}))
    pretrain(make_args(sample_corpus, tiny_tokenizer_dir, tmp_path / "base", params, "bert-test", train_steps=3))
    base_size = len(vocab_of(tmp_path / "base"))
    extend_tokenizer(tmp_path / "base", tmp_path / "ext", input_file=[str(domain)], vocab_size=base_size + ADDED,
                     min_frequency=1)
    without = run_script("run_pretraining.py", "--input_file", str(domain), "--tokenizer_dir", str(tmp_path / "ext"),
                         "--model_dir", str(tmp_path / "refused"), "--parameter_file", str(params),
                         "--model_type", "bert-domain", env={"LMP_NO_PROGRESS": "1"})
    assert_one_clean_error(without, f"extends the one the model at {tmp_path / 'base'} was trained with ({ADDED} "
                           f"tokens after its {base_size}); pass --resize_embeddings")
    result = run_script("run_pretraining.py", "--input_file", str(domain), "--tokenizer_dir", str(tmp_path / "ext"),
                        "--model_dir", str(tmp_path / "domain-bert"), "--parameter_file", str(params),
                        "--model_type", "bert-domain", "--resize_embeddings", "--num_workers", "1",
                        "--max_eval_samples", "16", env={"LMP_NO_PROGRESS": "1"}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(x for x in result.stderr.splitlines() if "vocabulary adapted by token" in x)
    assert f"the tokenizer extends the model's by {ADDED} tokens (ids 0-{base_size - 1} unchanged): " \
           f"{base_size} rows kept" in line and f"({base_size} -> {base_size + ADDED} tokens)" in line, line
    name = "bert.embeddings.word_embeddings.weight"
    before, after = load_file(tmp_path / "base" / "model.safetensors"), load_file(
        tmp_path / "domain-bert" / "model.safetensors")
    assert after[name].shape[0] == base_size + ADDED
    assert torch.equal(after[name][:base_size], before[name])  # every shared row, bit for bit
    mean_start = VocabPlan.by_id(base_size, base_size + ADDED).apply(before[name])[base_size:]
    assert not torch.isclose(after[name][base_size:], mean_start, rtol=0, atol=0).all(-1).any()  # composed, trained
    assert vocab_of(tmp_path / "domain-bert") == vocab_of(tmp_path / "ext")


# -- bases saved by transformers alone (a published model's tokenizer dir, no lmpretrain_tokenizer.json) ----------

HF_WORDS = ["ＣＯＶＩＤ", "ヘリコバクター"]
HF_KINDS = ["mecab-wordpiece", "mecab-sentencepiece", "sudachi-wordpiece", "fast-wordpiece", "fast-unigram"]


@pytest.fixture(scope="module")
def hf_base(tmp_path_factory, tokenizer_factory):
    """Return kind -> a tokenizer dir written by transformers' save_pretrained alone: BertJapaneseTokenizer built
    by hand (MeCab ipadic or Sudachi split mode C; WordPiece over vocab.txt or sentencepiece over spiece.model), a
    BertTokenizerFast trained by `tokenizers`, and a fast Unigram tokenizer.json re-saved by transformers."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import AutoTokenizer, BertJapaneseTokenizer, BertTokenizerFast

    made = {}

    def make(kind: str) -> Path:
        if kind not in made:
            directory = tmp_path_factory.mktemp(f"hf-{kind}") / "tok"
            wordpiece, unigram = tokenizer_factory("ipadic", "wordpiece"), tokenizer_factory("ipadic", "unigram")
            if kind == "mecab-wordpiece":
                tokenizer = BertJapaneseTokenizer(vocab_file=str(wordpiece / "vocab.txt"), word_tokenizer_type="mecab",
                                                  mecab_kwargs={"mecab_dic": "ipadic"})
            elif kind == "mecab-sentencepiece":
                tokenizer = BertJapaneseTokenizer(vocab_file=str(unigram / "vocab.txt"),
                                                  spm_file=str(unigram / "spiece.model"), word_tokenizer_type="mecab",
                                                  subword_tokenizer_type="sentencepiece",
                                                  mecab_kwargs={"mecab_dic": "ipadic"})
            elif kind == "sudachi-wordpiece":
                tokenizer = BertJapaneseTokenizer(vocab_file=str(wordpiece / "vocab.txt"),
                                                  word_tokenizer_type="sudachi",
                                                  sudachi_kwargs={"sudachi_split_mode": "C"})
            elif kind == "fast-wordpiece":
                trainer = BertWordPieceTokenizer(lowercase=False)
                trainer.train([str(SAMPLE_CORPUS)], vocab_size=1500, min_frequency=1,
                              special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], show_progress=False)
                tokenizer = BertTokenizerFast(tokenizer_object=trainer._tokenizer, unk_token="[UNK]",
                                              pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
                                              mask_token="[MASK]")
            else:
                tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_factory("none", "unigram")))
            tokenizer.save_pretrained(str(directory))
            assert not (directory / "lmpretrain_tokenizer.json").exists()
            made[kind] = directory
        return made[kind]

    return make


@pytest.fixture(scope="module")
def hf_extensions(tmp_path_factory, hf_base, domain):
    """Return kind -> (base, its extension by a domain corpus and HF_WORDS)."""
    made = {}

    def make(kind: str) -> tuple[Path, Path]:
        if kind not in made:
            base = hf_base(kind)
            out = tmp_path_factory.mktemp(f"hf-ext-{kind}") / "tok"
            words = out.parent / "words.txt"
            words.write_text("\n".join(HF_WORDS) + "\n", encoding="utf-8")
            extend_tokenizer(base, out, input_file=[str(domain)], vocab_size=len(vocab_of(base)) + 60,
                             add_words=str(words), min_frequency=1)
            made[kind] = base, out
        return made[kind]

    return make


@pytest.mark.parametrize("kind", HF_KINDS)
def test_a_base_saved_by_transformers_keeps_its_ids(hf_extensions, sample_corpus, domain, kind):
    """The extension of a transformers-saved dir loads in AutoTokenizer as the base's class, every base token at its
    id (the special tokens included); on real text its ids are the base's wherever no new token is used; the listed
    words come out whole; the toolkit's encoder gives AutoTokenizer's ids; the metadata records the base."""
    from transformers import AutoTokenizer

    base_dir, out = hf_extensions(kind)
    base, ext = AutoTokenizer.from_pretrained(str(base_dir)), AutoTokenizer.from_pretrained(str(out))
    assert type(ext) is type(base)
    base_vocab, ext_vocab = base.get_vocab(), ext.get_vocab()
    assert all(ext_vocab[t] == i for t, i in base_vocab.items())
    assert len(ext_vocab) == read_meta(out)["vocab_size"] > len(base_vocab) + len(HF_WORDS)  # learnt ones too
    assert [ext.convert_tokens_to_ids(t) for t in base.all_special_tokens] == \
        [base.convert_tokens_to_ids(t) for t in base.all_special_tokens]
    sample = [line for line in sample_corpus.read_text(encoding="utf-8").splitlines() if line.strip()][:150]
    clinical = domain.read_text(encoding="utf-8").splitlines()[:60]
    changed = 0
    for text in sample + clinical:
        before, after = base(text)["input_ids"], ext(text)["input_ids"]
        if before != after:
            assert max(after) >= len(base_vocab), text  # only a new token moves the ids
            changed += 1
    if kind != "mecab-sentencepiece":  # there the domain's model adds '▁。', which most sample lines end with
        assert sum(base(t)["input_ids"] == ext(t)["input_ids"] for t in sample) > 0.8 * len(sample)
    assert changed > len(clinical) / 2  # the domain text uses the new tokens
    for word in HF_WORDS:
        pieces = ext.tokenize(word)
        assert len(pieces) == 1 and ext_vocab[pieces[0]] >= len(base_vocab), (word, pieces)
    with FastEncoder.from_pretrained(out) as encoder:
        assert encoder.encode_batch(sample + clinical, add_special_tokens=True) == \
            [ext(t)["input_ids"] for t in sample + clinical]
    meta = read_meta(out)
    assert meta["saved_by"] == "transformers" and meta["tokenizer_class"] == type(base).__name__
    assert meta["extension"]["base_tokenizer_dir"] == str(base_dir.resolve())
    assert meta["extension"]["base_fingerprint"] == tokenizer_fingerprint(base_dir)
    assert (meta["extension"]["base_vocab_size"], meta["extension"]["from_words"]) == (len(base_vocab), 2)


def test_a_bert_japanese_base_records_its_segmenter(hf_extensions):
    _, out = hf_extensions("sudachi-wordpiece")
    meta = read_meta(out)
    assert meta["word_segmenter"]["name"] == "sudachi"
    assert meta["word_segmenter"]["options"] == {"sudachi_split_mode": "C", "sudachi_dict_type": "core"}
    _, out = hf_extensions("mecab-sentencepiece")
    assert (read_meta(out)["spec"]["spm_model_type"], read_meta(out)["mecab_dic_type"]) == ("unigram", "ipadic")


def test_an_extension_of_a_transformers_base_extends_again(hf_extensions, domain, tmp_path):
    """The extension keeps the base's pipeline (BERT's lowercasing, which transformers 5 reads from its
    tokenizer_config.json, not from tokenizer.json): extended again, every id stays and a listed word is added as
    that pipeline sees it."""
    from transformers import AutoTokenizer

    _, first = hf_extensions("fast-wordpiece")
    words = tmp_path / "words.txt"
    words.write_text("ロキソプロフェン\nＨｂＡ１ｃ\n", encoding="utf-8")
    extend_tokenizer(first, tmp_path / "tok", input_file=[str(domain)], vocab_size=len(vocab_of(first)) + 12,
                     add_words=str(words), min_frequency=1)
    before, after = AutoTokenizer.from_pretrained(str(first)), AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    assert vocab_of(tmp_path / "tok")[:len(vocab_of(first))] == vocab_of(first)
    assert after.tokenize("ＨｂＡ１ｃ") == ["ｈｂａ１ｃ"] != before.tokenize("ＨｂＡ１ｃ")  # lowercased, not NFKC
    assert after.tokenize("ロキソプロフェン") == ["ロキソフロフェン"]  # accents stripped too (BERT)
    assert read_meta(tmp_path / "tok")["extension"]["base_extension"] == read_meta(first)["extension"]
    with FastEncoder.from_pretrained(tmp_path / "tok") as encoder:
        texts = domain.read_text(encoding="utf-8").splitlines()[:40]
        assert encoder.encode_batch(texts, add_special_tokens=True) == [after(t)["input_ids"] for t in texts]


def test_a_mecab_base_without_a_dictionary_gets_the_one_transformers_uses(hf_base, tmp_path, caplog):
    """cl-tohoku/bert-base-japanese's tokenizer_config.json names no mecab_dic: AutoTokenizer then runs
    MecabTokenizer's default dictionary, and so must the extension (said in a warning)."""
    import inspect

    from transformers.models.bert_japanese.tokenization_bert_japanese import MecabTokenizer

    from lmpretrain.tokenization.extend import read_base

    base = _edited(hf_base("mecab-wordpiece"), tmp_path, mecab_kwargs=None)
    with caplog.at_level(logging.WARNING, logger="lmpretrain"):
        spec = read_base(base).spec
    default = inspect.signature(MecabTokenizer.__init__).parameters["mecab_dic"].default
    assert (spec.word_segmenter()[0], spec.mecab_dic_type) == ("mecab", default) != ("mecab", "ipadic")
    assert f"mecab_kwargs name no mecab_dic: AutoTokenizer runs MeCab with transformers' default dictionary, " \
        f"{default}" in caplog.text


def _edited(base: Path, root: Path, **config) -> Path:
    """A copy of the saved dir ``base`` with its tokenizer_config.json keys set (None: removed)."""
    import shutil

    directory = root / "edited"
    shutil.copytree(base, directory)
    path = directory / "tokenizer_config.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data.update(config)
    path.write_text(json.dumps(data), encoding="utf-8")
    return directory


HF_BAD = {  # case -> (kind, tokenizer_config.json keys, fragments of the error)
    "lowercasing": ("mecab-wordpiece", {"do_lower_case": True}, ["do_lower_case true (this toolkit never lowercases)"]),
    "a system dictionary": ("mecab-wordpiece", {"mecab_kwargs": {"mecab_dic": None, "mecab_option": "-d /opt/dic"}},
                            ["mecab_kwargs.mecab_dic null"]),
    "no NFKC": ("mecab-wordpiece", {"mecab_kwargs": {"mecab_dic": "ipadic", "normalize_text": False}},
                ["mecab_kwargs.normalize_text false (the toolkit needs true)"]),
    "basic": ("mecab-wordpiece", {"word_tokenizer_type": "basic"}, ['word_tokenizer_type "basic"']),
    "character": ("mecab-wordpiece", {"subword_tokenizer_type": "character"}, ['subword_tokenizer_type "character"']),
    "projection": ("sudachi-wordpiece", {"sudachi_kwargs": {"sudachi_projection": "normalized"}},
                   ['sudachi_kwargs.sudachi_projection "normalized" (the toolkit needs null)']),
}


@pytest.mark.parametrize("case", HF_BAD)
def test_a_transformers_config_the_toolkit_cannot_reproduce_is_one_error(hf_base, tmp_path, domain, case):
    kind, config, fragments = HF_BAD[case]
    base = _edited(hf_base(kind), tmp_path, **config)
    with pytest.raises(UserError) as error:
        extend_tokenizer(base, tmp_path / "out" / "tok", input_file=[str(domain)], vocab_size=3000)
    message = str(error.value)
    assert message.startswith(f"--base_tokenizer_dir {base}: {base / 'tokenizer_config.json'} asks for a tokenizer "
                              "this toolkit cannot reproduce: "), message
    assert all(f in message for f in fragments), message
    assert not (tmp_path / "out").exists()


def test_a_transformers_bpe_base_is_one_clean_error_of_the_script(tmp_path, domain, sample_corpus):
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2TokenizerFast

    trainer = ByteLevelBPETokenizer()
    trainer.train([str(sample_corpus)], vocab_size=600, min_frequency=1, special_tokens=["<|endoftext|>"],
                  show_progress=False)
    base = tmp_path / "gpt2"
    GPT2TokenizerFast(tokenizer_object=trainer._tokenizer, eos_token="<|endoftext|>").save_pretrained(str(base))
    assert_one_clean_error(train("--base_tokenizer_dir", str(base), "--input_file", str(domain), "--model_dir",
                                 str(tmp_path / "out"), "--vocab_size", "700"),
                           f"{base / 'tokenizer.json'} is a BPE model", "not supported")
    assert not (tmp_path / "out").exists()
