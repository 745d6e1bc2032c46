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
