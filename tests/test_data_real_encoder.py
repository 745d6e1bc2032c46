"""The dataset build with the real FastEncoder (MeCab + subwords): shards equal the encoder's own output.

Uses the tokenizer tests' ``tiny_tokenizer_dir`` fixture; skipped where it (or the tokenization module) is absent.
"""

from __future__ import annotations

import numpy as np
import pytest

from lmpretrain.data import build_or_load_dataset, make_instances


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory, shared_corpus):
    path = tmp_path_factory.mktemp("real") / "corpus.txt"
    lines = shared_corpus("ja_aozora_small").read_text(encoding="utf-8").splitlines()[:600]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def real_tokenizer_dir(request, small_corpus, tmp_path_factory):
    tokenization = pytest.importorskip("lmpretrain.tokenization")
    try:
        return request.getfixturevalue("tiny_tokenizer_dir")
    except pytest.FixtureLookupError:
        pass
    directory = tmp_path_factory.mktemp("tok") / "tokenizer"
    spec = tokenization.TokenizerSpec(mecab_dic_type="ipadic", tokenizer_type="wordpiece", vocab_size=3000)
    tokenization.train_tokenizer([str(small_corpus)], directory, spec, num_workers=1)
    return directory


def test_shards_match_the_encoder_and_workers_agree(real_tokenizer_dir, small_corpus, tmp_path):
    from lmpretrain.tokenization import FastEncoder

    one = build_or_load_dataset([str(small_corpus)], str(real_tokenizer_dir), str(tmp_path / "c1"), num_workers=1,
                                chunk_chars=5000)
    two = build_or_load_dataset([str(small_corpus)], str(real_tokenizer_dir), str(tmp_path / "c2"), num_workers=2,
                                chunk_chars=5000, min_bytes_per_worker=0)
    assert np.array_equal(one.ids, two.ids) and np.array_equal(one.sentence_offsets, two.sentence_offsets)
    encoder = FastEncoder.from_pretrained(real_tokenizer_dir)
    try:
        sentences = [s for s in small_corpus.read_text(encoding="utf-8").splitlines() if s.strip()]
        encoded = [e for e in encoder.encode_batch_with_word_starts(sentences) if len(e[0])]
        assert one.num_sentences == len(encoded)
        for i in range(0, len(encoded), 37):
            assert one.sentence(i).tolist() == list(encoded[i][0])
            assert one.word_starts(i).tolist() == [bool(w) for w in encoded[i][1]]
        dataset = make_instances(one, "sentence_pairs", sequence_length=64, cls_id=encoder.cls_token_id,
                                 sep_id=encoder.sep_token_id, seed=0)
        instance = dataset[0]
        assert len(instance["input_ids"]) <= 64 and instance["input_ids"][0] == encoder.cls_token_id
    finally:
        encoder.close()


@pytest.mark.parametrize("length", [128, 512])
def test_every_layout_covers_and_fills_on_the_sample_corpus(sample_corpus, tiny_tokenizer_dir, tmp_path, length):
    """Issue 29 on the bundled corpus (layout version 2): every layout covers >= 95% of the corpus's tokens an epoch,
    the MLM layouts fill >= 97% of each 128-token sequence (at 512 the corpus is a few sequences: a last, partial one
    may alone be 5%) and more than version 1's whole lines."""
    from lmpretrain.data import LAYOUTS
    from lmpretrain.tokenization import FastEncoder

    shards = build_or_load_dataset([str(sample_corpus)], str(tiny_tokenizer_dir), str(tmp_path / "c"), num_workers=1)
    with FastEncoder.from_pretrained(tiny_tokenizer_dir) as encoder:
        marks = encoder.sentence_marks()
        for name in LAYOUTS:
            figures = {}
            for version in (1, 2):
                dataset = make_instances(shards, name, sequence_length=length, cls_id=encoder.cls_token_id,
                                         sep_id=encoder.sep_token_id, seed=0, version=version, sentence_marks=marks)
                real, covered, _ = dataset.epoch_tokens()
                figures[version] = covered / shards.num_tokens, real / (len(dataset) * length)
            assert figures[2][0] >= 0.95, (name, figures)
            if name in ("packed_sentences", "whole_lines"):
                assert figures[2][1] >= (0.97 if length == 128 else 0.94), (name, figures)
                assert figures[2][1] > figures[1][1], (name, figures)


def test_long_lines_are_cut_at_sentence_ends(sample_corpus, tiny_tokenizer_dir, tmp_path):
    """A document written as one long line (a paragraph) is cut into its sentences for pairing: every piece but a
    document's last ends with a sentence end (。), none longer than a segment; in-order pairs join them back."""
    from lmpretrain.data.instances import _document_sentences, split_long_lines
    from lmpretrain.tokenization import FastEncoder

    paragraphs = tmp_path / "paragraphs.txt"
    documents = sample_corpus.read_text(encoding="utf-8").split("\n\n")
    paragraphs.write_text("\n\n".join("".join(d.split()) for d in documents) + "\n", encoding="utf-8")
    shards = build_or_load_dataset([str(paragraphs)], str(tiny_tokenizer_dir), str(tmp_path / "c"), num_workers=1)
    assert shards.num_sentences == shards.num_documents  # one line per document
    with FastEncoder.from_pretrained(tiny_tokenizer_dir) as encoder:
        marks = encoder.sentence_marks()
        period = encoder.encode_batch(["。"])[0][-1]
        sentences, _ = _document_sentences(shards, np.arange(shards.num_documents))
        start, end, line = split_long_lines(shards, sentences, 60, marks)
        assert len(start) > 5 * shards.num_documents and (end - start <= 60).all()
        last = np.r_[line[1:] != line[:-1], True]
        ends = np.asarray(shards.ids)[end - 1]
        assert np.mean(ends[~last] == period) > 0.9  # the rest: a sentence longer than 60 tokens, cut at a word
        dataset = make_instances(shards, "sentence_pairs", sequence_length=64, cls_id=encoder.cls_token_id,
                                 sep_id=encoder.sep_token_id, seed=0, sentence_marks=marks)
        assert dataset.epoch_tokens()[1] == shards.num_tokens
