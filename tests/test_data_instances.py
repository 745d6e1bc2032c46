"""Instance builders: length, specials, NSP balance, coverage per epoch, eval/train disjointness, determinism."""

from __future__ import annotations

import dataclasses
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest

from lmpretrain.data import LAYOUTS, build_or_load_dataset, instance_labels, make_instances, split_eval
from lmpretrain.errors import UserError
from tests.test_data_fakes import FakeEncoder, doc_of_token, fake_tokenizer_dir, make_documents, write_txt

CLS, SEP = FakeEncoder.cls_token_id, FakeEncoder.sep_token_id
SPECIALS = set(FakeEncoder.all_special_ids)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("inst")
    # some documents have a sentence longer than the sequence length (max_words=40 words of up to 3 chars)
    docs = make_documents(60, seed=3, min_sentences=1, max_sentences=15, max_words=40)
    corpus = write_txt(root / "corpus.txt", docs)
    tok = fake_tokenizer_dir(root / "tok")
    return build_or_load_dataset([str(corpus)], str(tok), str(root / "cache"), num_workers=1,
                                 encoder_factory=FakeEncoder.from_pretrained)


def make(shards, layout, length=32, seed=0, version=1, **kw):
    """The instances of ``layout``; the tests above the version 2 section check the builders of version 1 (kept
    for resuming the runs that trained on them)."""
    return make_instances(shards, layout, sequence_length=length, cls_id=CLS, sep_id=SEP, seed=seed, version=version,
                          **kw)


def docs_tokens(shards, docs):
    return [shards.document(int(d)).tolist() for d in docs]


@pytest.mark.parametrize("layout", ["sentence_pairs", "packed_sentences", "whole_lines", "causal_blocks"])
def test_instances_fit_and_keep_their_specials(shards, layout):
    dataset = make(shards, layout)
    for position in range(len(dataset)):
        instance = dataset[position]
        ids = instance["input_ids"]
        assert ids.dtype == np.int64 and 1 <= len(ids) <= 32
        assert instance["word_starts"].dtype == bool and len(instance["word_starts"]) == len(ids)
        assert instance["position"] == position
        assert instance["word_starts"][np.isin(ids, list(SPECIALS))].all()
        if layout == "causal_blocks":
            assert CLS not in ids
            continue
        assert ids[0] == CLS and ids[-1] == SEP and (ids == CLS).sum() == 1
        if layout == "sentence_pairs":
            assert (ids == SEP).sum() == 2
            types = instance["token_type_ids"]
            first_sep = int(np.flatnonzero(ids == SEP)[0])
            assert first_sep >= 2 and len(ids) - first_sep >= 3  # A and B are both non-empty
            assert (types[:first_sep + 1] == 0).all() and (types[first_sep + 1:] == 1).all()
            assert instance["next_sentence_label"] in (0, 1)


@pytest.mark.parametrize("layout", ["packed_sentences", "whole_lines", "causal_blocks"])
def test_every_token_is_covered_once_per_epoch(shards, layout):
    train_docs, _ = split_eval(shards, 0.2, seed=5)
    dataset = make(shards, layout, doc_ids=train_docs)
    instances = [dataset[p] for p in range(len(dataset))]  # epoch 0, shuffled order
    by_index = {dataset.locate(i["position"])[1]: i["input_ids"] for i in instances}
    assert sorted(by_index) == list(range(len(dataset)))
    stream = np.concatenate([by_index[i] for i in range(len(dataset))]).tolist()
    content = [t for t in stream if t not in SPECIALS]
    expected = [t for doc in docs_tokens(shards, train_docs) for t in doc]
    assert content == expected
    if layout == "causal_blocks":  # one end-of-document token after each document
        assert stream.count(SEP) == len(train_docs)
        assert max(len(i["input_ids"]) for i in instances) == 32
    if layout == "whole_lines":  # lines of one document per instance
        for ids in by_index.values():
            assert len({doc_of_token(t) for t in ids if t not in SPECIALS}) == 1
    if layout == "packed_sentences":  # packed across documents, a [SEP] where the document changes
        crossing = 0
        for ids in by_index.values():
            body = ids[1:-1].tolist()
            for a, b in zip(body, body[1:]):
                if a not in SPECIALS and b not in SPECIALS:
                    assert doc_of_token(a) == doc_of_token(b)
            crossing += body.count(SEP)
        assert crossing > 0


def test_bert_chunks_cover_each_sentence_once_and_nsp_is_balanced(shards):
    dataset = make(shards, "sentence_pairs", length=64)
    first = dataset.chunk_first
    assert first[0] == 0 and first[-1] == len(dataset.sentences) and (np.diff(first) > 0).all()
    for c in range(len(dataset)):  # a chunk never spans two documents
        assert len(set(dataset.sentence_doc[first[c]:first[c + 1]].tolist())) == 1
    labels = [dataset[p]["next_sentence_label"] for p in range(4 * len(dataset))]
    share_random = np.mean(labels)
    single = np.mean(np.diff(first) == 1)  # single-sentence chunks are always random (as in BERT)
    assert abs(share_random - (0.5 + 0.5 * single)) < 0.06
    short = np.mean(dataset.chunk_target < 64 - 3)
    assert 0.03 < short < 0.2


def test_bert_not_next_pairs_are_consecutive_and_random_ones_come_from_another_document(shards):
    dataset = make(shards, "sentence_pairs", length=64)
    for p in range(len(dataset)):
        instance = dataset[p]
        ids = instance["input_ids"]
        sep = int(np.flatnonzero(ids == SEP)[0])
        a_docs = {doc_of_token(t) for t in ids[1:sep]}
        b_docs = {doc_of_token(t) for t in ids[sep + 1:-1]}
        assert len(a_docs) == 1 and len(b_docs) == 1
        assert (a_docs == b_docs) == (instance["next_sentence_label"] == 0)


def test_eval_and_train_documents_are_disjoint_and_random_b_stays_in_its_split(shards):
    train_docs, eval_docs = split_eval(shards, 0.25, seed=11)
    assert len(eval_docs) == 15 and len(train_docs) == 45
    assert not set(train_docs.tolist()) & set(eval_docs.tolist())
    assert sorted(train_docs.tolist() + eval_docs.tolist()) == list(range(shards.num_documents))
    assert np.array_equal(split_eval(shards, 0.25, seed=11)[1], eval_docs)
    for docs, layout in [(train_docs, "sentence_pairs"), (eval_docs, "sentence_pairs"),
                         (eval_docs, "packed_sentences"), (eval_docs, "causal_blocks")]:
        dataset = make(shards, layout, doc_ids=docs)
        seen = {doc_of_token(int(t)) for p in range(len(dataset)) for t in dataset[p]["input_ids"]
                if t not in SPECIALS}
        assert seen <= set(docs.tolist())


def test_order_is_a_pure_function_of_seed_and_position(shards):
    a, b = make(shards, "sentence_pairs", seed=9), make(shards, "sentence_pairs", seed=9)
    n = len(a)
    for p in [0, 1, n - 1, n, 3 * n + 5]:
        x, y = a[p], b[p]
        assert np.array_equal(x["input_ids"], y["input_ids"]) and x["next_sentence_label"] == y["next_sentence_label"]
    other = make(shards, "sentence_pairs", seed=10)
    assert any(not np.array_equal(a[p]["input_ids"], other[p]["input_ids"]) for p in range(10))


def test_each_epoch_is_a_fresh_permutation_of_all_instances(shards):
    dataset = make(shards, "packed_sentences")
    n = len(dataset)
    epoch0 = [dataset.locate(p)[1] for p in range(n)]
    epoch1 = [dataset.locate(p)[1] for p in range(n, 2 * n)]
    assert sorted(epoch0) == sorted(epoch1) == list(range(n))
    assert epoch0 != epoch1
    assert dataset.locate(n + 3) == (1, epoch1[3])


def test_bert_pairs_differ_between_epochs_but_positions_repeat(shards):
    dataset = make(shards, "sentence_pairs")
    n = len(dataset)
    labels = Counter()
    for p in range(n):
        index = dataset.locate(p)[1]
        q = n + [dataset.locate(n + k)[1] for k in range(n)].index(index)
        labels[(dataset[p]["next_sentence_label"], dataset[q]["next_sentence_label"])] += 1
    assert labels[(0, 1)] + labels[(1, 0)] > 0  # the NSP choice is redrawn each epoch


def test_bad_layout_and_tiny_length_are_user_errors(shards):
    with pytest.raises(UserError, match="unknown instance layout"):
        make(shards, "t5")
    with pytest.raises(UserError, match="too short"):
        make(shards, "sentence_pairs", length=4)
    with pytest.raises(UserError, match="no documents"):
        make(shards, "causal_blocks", doc_ids=[])


def test_a_resumed_run_on_another_layout_sees_the_same_masked_batches(shards):
    """(seed, step) -> batch: data order, instance contents and masks, whatever the number of processes."""
    import torch

    from lmpretrain.data import positions_for_step
    from lmpretrain.masking import MaskingConfig, MLMCollator

    def run(start_step, steps, rank_offset=0, rank_count=None):
        dataset = make(shards, "sentence_pairs", length=64, seed=3)
        collator = MLMCollator(MaskingConfig(whole_word=True), vocab_size=FakeEncoder().vocab_size, pad_token_id=0,
                               mask_token_id=FakeEncoder.mask_token_id, special_token_ids=sorted(SPECIALS), seed=3)
        layout = SimpleNamespace(rank_offset=rank_offset, per_device_batch_size=rank_count or 8 - rank_offset)
        # as the training loop draws them: next_position starts at the step's and grows by the global batch (8)
        return [collator([dataset[p] for p in positions_for_step((start_step + i) * 8, layout)]) for i in range(steps)]

    uninterrupted = run(0, 32)
    assert 29 * 8 < len(make(shards, "sentence_pairs", length=64, seed=3)) < 32 * 8  # steps 29-31 cross into epoch 1
    resumed = run(29, 3)
    halves = [run(29, 3, 0, 5), run(29, 3, 5, 3)]  # the same steps on two processes
    for step in range(3):
        expected = uninterrupted[29 + step]
        for key in ("input_ids", "labels", "token_type_ids", "next_sentence_label", "positions"):
            assert torch.equal(resumed[step][key], expected[key])
        ours = [h[step] for h in halves]
        length = max(b["input_ids"].shape[1] for b in ours)
        for key in ("input_ids", "labels"):
            joined = torch.cat([torch.nn.functional.pad(b[key], (0, length - b[key].shape[1]),
                                                        value=0 if key == "input_ids" else -100) for b in ours])
            width = min(length, expected[key].shape[1])
            assert torch.equal(joined[:, :width], expected[key][:, :width])


def test_a_corpus_smaller_than_one_batch_is_one_clear_error(tmp_path, monkeypatch):

    from lmpretrain import data_setup
    from lmpretrain.data import cache as cache_module

    monkeypatch.setattr(cache_module, "default_encoder_factory", FakeEncoder.from_pretrained)
    corpus = write_txt(tmp_path / "tiny.txt", make_documents(3, seed=0, max_sentences=2))
    tok = fake_tokenizer_dir(tmp_path / "tok")
    from lmpretrain.models import get_family, parse_preset
    from lmpretrain.run_config import TrainArgs
    from lmpretrain.run_description import describe

    flags = TrainArgs(input_file=[str(corpus)], tokenizer_dir=str(tok), model_dir=str(tmp_path / "out"),
                      model_type="bert-x", cache_dir=str(tmp_path / "cache"), num_workers=1, seed=0)
    preset = {"number-of-layers": 1, "hidden-size": 16, "sequence-length": 128, "ffn-inner-hidden-size": 32,
              "attention-heads": 2, "warmup-steps": 1, "learning-rate": 1e-3, "batch-size": {"-1": 64},
              "train-steps": 1, "eval-share": 0.0}
    description = describe(flags, parse_preset("bert-x", preset, "p"), get_family("bert"))
    description = dataclasses.replace(description, data=dataclasses.replace(description.data, instance_version=1))
    description = description.placed(SimpleNamespace(global_batch_size=64, local_world_size=1, num_nodes=1,
                                                     device=SimpleNamespace(type="cpu")))
    run = SimpleNamespace(description=description, encoder=FakeEncoder(),
                          data_fingerprints=lambda: {"corpus": None, "eval": None})
    with pytest.raises(UserError, match=r"tiny\.txt yields 3 training instances, fewer than one global batch \(64\)"):
        data_setup.build_run_data(run, SimpleNamespace(rank=0, global_batch_size=64, distributed=False, num_nodes=1))


def _segments(instance):
    """(A, B) of a pair instance, read back through its [SEP] and token types."""
    ids, types = instance["input_ids"], instance["token_type_ids"]
    sep = int(np.flatnonzero(ids == SEP)[0])
    assert (types[:sep + 1] == 0).all() and (types[sep + 1:] == 1).all() and ids[-1] == SEP
    return ids[1:sep].tolist(), ids[sep + 1:-1].tolist()


def test_sentence_order_swaps_half_of_the_pairs_and_single_sentence_chunks_take_a_random_b(shards):
    dataset = make(shards, "sentence_order", length=64)
    chunk_sizes = np.diff(dataset.chunk_first)
    swapped, single_seen = [], 0
    for p in range(4 * len(dataset)):
        instance = dataset[p]
        label = instance["sentence_order_label"]
        assert "next_sentence_label" not in instance and label in (0, 1)
        a, b = _segments(instance)
        assert a and b
        if chunk_sizes[dataset.locate(p)[1]] == 1:  # no second segment to swap with: B from another document
            assert label == 1 and {doc_of_token(t) for t in a} != {doc_of_token(t) for t in b}
            single_seen += 1
        else:  # both segments from the chunk's own document
            assert len({doc_of_token(t) for t in a + b}) == 1
            swapped.append(label)
    assert single_seen > 0 and len(swapped) > 400
    assert abs(np.mean(swapped) - 0.5) < 0.06


def test_a_swapped_pair_is_the_in_order_pair_with_a_and_b_exchanged(shards):
    """Every swap draw taken (nsp_probability 1) against none (0): the same chunk split at the same sentence, the
    segments exchanged; the in-order pair is the chunk's sentences as they stand in the document."""
    in_order = make(shards, "sentence_order", length=128, nsp_probability=0.0)
    swapped = make(shards, "sentence_order", length=128, nsp_probability=1.0)
    compared = 0
    for p in range(4 * len(in_order)):
        index = in_order.locate(p)[1]
        lo, hi = int(in_order.chunk_first[index]), int(in_order.chunk_first[index + 1])
        if hi - lo == 1:
            continue
        x, y = in_order[p], swapped[p]
        assert (x["sentence_order_label"], y["sentence_order_label"]) == (0, 1)
        (a, b), (b2, a2) = _segments(x), _segments(y)
        if len(a) + len(b) < len(in_order._collect(lo, hi)[0]):
            continue  # truncated: each side is cut by its own draw
        assert (a2, b2) == (a, b) and a + b == in_order._collect(lo, hi)[0].tolist()
        compared += 1
    assert compared > 100


def test_sentence_order_is_a_pure_function_of_seed_and_position_on_its_own_stream(shards):
    a, b = make(shards, "sentence_order", seed=9), make(shards, "sentence_order", seed=9)
    n = len(a)
    for p in [3 * n + 5, 0, n - 1, 1, n]:  # any order of building
        x, y = a[p], b[p]
        assert np.array_equal(x["input_ids"], y["input_ids"])
        assert x["sentence_order_label"] == y["sentence_order_label"]
    other = make(shards, "sentence_order", seed=10)
    assert any(not np.array_equal(a[p]["input_ids"], other[p]["input_ids"]) for p in range(10))
    pairs = make(shards, "sentence_pairs", seed=9)  # the same chunks, their own draws
    assert np.array_equal(pairs.chunk_first, a.chunk_first)
    assert any(not np.array_equal(a[p]["input_ids"], pairs[p]["input_ids"]) for p in range(10))


def test_sentence_order_minimum_length_and_collated_label(shards):
    import torch

    from lmpretrain.masking import MaskingConfig, MLMCollator

    with pytest.raises(UserError, match="too short for sentence_order"):
        make(shards, "sentence_order", length=4)
    tiny = make(shards, "sentence_order", length=5)
    assert all(len(tiny[p]["input_ids"]) == 5 for p in range(20))  # [CLS] a [SEP] b [SEP]
    dataset = make(shards, "sentence_order", length=64)
    instances = [dataset[p] for p in range(16)]
    batch = MLMCollator(MaskingConfig(), vocab_size=FakeEncoder().vocab_size, pad_token_id=0,
                        mask_token_id=FakeEncoder.mask_token_id, special_token_ids=sorted(SPECIALS), seed=0)(instances)
    assert batch["sentence_order_label"].dtype == torch.int64
    assert batch["sentence_order_label"].tolist() == [i["sentence_order_label"] for i in instances]
    assert "next_sentence_label" not in batch and batch["token_type_ids"].shape == batch["input_ids"].shape


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_each_layout_is_what_its_declaration_says(shards, name):
    """Its instances carry exactly its declared labels (and token types where declared), the collators pass every
    one on, and its minimum sequence length is the shortest one accepted."""
    import torch

    from lmpretrain.masking import CausalLMCollator, MaskingConfig, MLMCollator

    layout = LAYOUTS[name]
    with pytest.raises(UserError, match=f"too short for {name}"):
        make(shards, name, length=layout.minimum_length - 1)
    assert len(make(shards, name, length=layout.minimum_length)) > 0
    dataset = make(shards, name)
    instances = [dataset[p] for p in range(12)]
    expected = {"input_ids", "word_starts", "position", *layout.label_names} | (
        {"token_type_ids"} if layout.token_types else set())
    assert all(set(instance) == expected for instance in instances)
    for label in layout.labels:
        assert {i[label.name] for i in instances} <= set(range(label.classes))
    mlm = MLMCollator(MaskingConfig(), vocab_size=FakeEncoder().vocab_size, pad_token_id=0,
                      mask_token_id=FakeEncoder.mask_token_id, special_token_ids=sorted(SPECIALS), seed=0)
    for batch in (mlm(instances), CausalLMCollator(pad_token_id=0)(instances)):
        assert set(instance_labels()) & set(batch) == set(layout.label_names)
        for label in layout.label_names:
            assert torch.equal(batch[label], torch.tensor([i[label] for i in instances]))


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_an_epochs_coverage_and_fill_are_what_its_instances_hold(shards, name):
    """``epoch_tokens``: the real tokens of an epoch's instances (counted here by building each one) and the corpus
    tokens they hold from their own place; the epoch report states both as coverage and fill."""
    from lmpretrain.data.epochs import describe_epoch, epoch_stats

    train_docs, _ = split_eval(shards, 0.2, seed=5)
    dataset = make(shards, name, doc_ids=train_docs)
    instances = [dataset[p] for p in range(len(dataset))]
    real, covered, exact = dataset.epoch_tokens()
    assert exact and real == sum(len(i["input_ids"]) for i in instances)
    corpus = sum(len(doc) for doc in docs_tokens(shards, train_docs))
    content = sum(int((~np.isin(i["input_ids"], list(SPECIALS))).sum()) for i in instances)
    if name in ("sentence_pairs", "sentence_order"):  # a random B holds tokens from another place
        own = [i for i in instances if i[LAYOUTS[name].label_names[0]] == 0]
        assert sum(len(i["input_ids"]) - 3 for i in own) <= covered < content
    else:
        assert covered == content == corpus
    epoch = epoch_stats(shards, train_docs, len(dataset), global_batch_size=4, sequence_length=32,
                        epoch_tokens=(real, covered, exact))
    assert epoch["coverage"] == round(covered / corpus, 4) and epoch["fill"] == round(real / (len(dataset) * 32), 4)
    assert f"coverage {100 * epoch['coverage']:.1f}% ({covered} of the corpus tokens an epoch)" in describe_epoch(epoch)
    assert f"fill {100 * epoch['fill']:.1f}% ({real} real tokens" in describe_epoch(epoch)


# ---- layout version 2 (issue 29): every token counts ---------------------------------------------------------------

def test_version_1_stays_reachable_and_an_unknown_version_is_refused(shards):
    from lmpretrain.data import INSTANCE_VERSION

    assert INSTANCE_VERSION == 2
    for name in LAYOUTS:
        old, new = make(shards, name, version=1), make(shards, name, version=2)
        assert type(old) is LAYOUTS[name].earlier[1] or type(old).__name__ == "PackedSentenceDataset"
        if name != "causal_blocks":
            assert type(old) is not type(new)
    with pytest.raises(UserError, match="version 3 is not one this code builds"):
        make(shards, "sentence_pairs", version=3)


@pytest.mark.parametrize("layout", ["packed_sentences", "whole_lines"])
def test_packed_text_fills_every_instance_keeps_whole_words_and_covers_the_corpus_once(shards, layout):
    train_docs, _ = split_eval(shards, 0.2, seed=5)
    dataset = make(shards, layout, doc_ids=train_docs, version=2)
    by_index = {dataset.locate(p)[1]: dataset[p] for p in range(len(dataset))}
    stream = []
    for index in range(len(dataset)):
        ids, starts = by_index[index]["input_ids"], by_index[index]["word_starts"]
        assert ids[0] == CLS and ids[-1] == SEP and (ids == CLS).sum() == 1
        assert starts[1]  # an instance starts with a whole word: none is split between two instances
        if index < len(dataset) - 1:
            assert len(ids) >= 32 - 3  # full, but for a word moved to the next instance
        body = ids[1:-1].tolist()
        assert body[0] != SEP and body[-1] != SEP
        for a, b in zip(body, body[1:]):  # a [SEP] inside an instance exactly where the document changes
            if SEP not in (a, b):
                assert doc_of_token(a) == doc_of_token(b)
            elif a == SEP:
                assert doc_of_token(b) != doc_of_token(stream[-1] if stream else body[0])
            stream += [a] if a != SEP else []
        stream.append(body[-1])
    assert stream == [t for doc in docs_tokens(shards, train_docs) for t in doc]  # every token once, in order
    real, covered, _ = dataset.epoch_tokens()
    assert covered == sum(len(d) for d in docs_tokens(shards, train_docs)) and real / (len(dataset) * 32) > 0.9


@pytest.mark.parametrize("layout", ["sentence_pairs", "sentence_order"])
def test_pairs_cover_every_token_of_the_corpus_each_epoch(shards, layout):
    """Long lines are cut into pieces (here at word starts: the fake vocabulary has no sentence ends), an in-order
    pair is never truncated, and the pieces a random B replaces start the next chunk: an epoch's own text, in index
    order, is the corpus."""
    train_docs, _ = split_eval(shards, 0.2, seed=5)
    dataset = make(shards, layout, length=32, doc_ids=train_docs, version=2)
    label = LAYOUTS[layout].label_names[0]
    own_text, labels = [], []
    for index in range(len(dataset)):
        position = [p for p in range(len(dataset)) if dataset.locate(p)[1] == index][0]
        instance = dataset[position]
        a, b = _segments(instance)
        assert a and b and len(instance["input_ids"]) <= 32
        chunk = dataset.chunk_first[index], dataset.chunk_first[index + 1]
        if layout == "sentence_order" and chunk[1] - chunk[0] > 1:
            own_text += (b + a) if instance[label] else (a + b)
            labels.append(instance[label])
        elif instance[label] == 0:
            own_text += a + b
            labels.append(0)
        else:
            own_text += a
            assert {doc_of_token(t) for t in a} != {doc_of_token(t) for t in b}
            if layout == "sentence_pairs":
                labels.append(1)
    assert own_text == [t for doc in docs_tokens(shards, train_docs) for t in doc]
    assert dataset.epoch_tokens()[1] == len(own_text)
    single = np.mean(np.diff(dataset.chunk_first) == 1)
    assert abs(np.mean(labels) - (0.5 + 0.5 * single if layout == "sentence_pairs" else 0.5)) < 0.1
    short = np.mean(dataset.chunk_target < 32 - 3)
    assert 0.03 < short < 0.2  # BERT's short-sequence probability (0.1) per chunk, as before


def test_pairs_are_a_pure_function_of_seed_and_position(shards):
    for layout in ("sentence_pairs", "sentence_order"):
        a, b = make(shards, layout, seed=9, version=2), make(shards, layout, seed=9, version=2)
        n = len(a)
        for p in [3 * n + 5, 0, n - 1, 1, n]:
            assert np.array_equal(a[p]["input_ids"], b[p]["input_ids"])


@pytest.mark.parametrize("share", [0.02, 0.05, 0.1, 0.25])
def test_the_token_split_holds_out_close_to_its_share_of_the_tokens(shards, share):
    """Version 2 (what new runs use): the held-out share of the tokens is as close to eval-share as whole documents
    allow, whatever the sizes of the documents the seed draws (version 1 counts documents)."""
    from lmpretrain.data import EVAL_SPLIT_TOKENS

    offsets = np.asarray(shards.sentence_offsets)[np.asarray(shards.document_offsets)]
    sizes = np.diff(offsets)
    largest = sizes.max() / sizes.sum()
    for seed in range(10):
        train_docs, eval_docs = split_eval(shards, share, seed, EVAL_SPLIT_TOKENS)
        assert sorted(train_docs.tolist() + eval_docs.tolist()) == list(range(shards.num_documents))
        assert len(eval_docs) >= 1 and len(train_docs) >= 1
        held = sizes[eval_docs].sum() / sizes.sum()
        assert abs(held - share) <= largest / 2 + 1e-9, (seed, held)
        assert np.array_equal(split_eval(shards, share, seed, EVAL_SPLIT_TOKENS)[1], eval_docs)  # deterministic
    assert len(split_eval(shards, 0.0, 1, EVAL_SPLIT_TOKENS)[1]) == 0
