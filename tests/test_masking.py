import numpy as np
import pytest
import torch

from lmpretrain.errors import UserError
from lmpretrain.masking import CausalLMCollator, MaskingConfig, MLMCollator

VOCAB, PAD, UNK, CLS, SEP, MASK = 1000, 0, 1, 2, 3, 4
SPECIALS = [PAD, UNK, CLS, SEP, MASK]


def make_instances(count, seed=0, min_len=20, max_len=128, first_position=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        n = int(rng.integers(min_len, max_len + 1))
        ids = rng.integers(10, VOCAB, n)
        ids[0], ids[-1] = CLS, SEP
        starts = rng.random(n) < 0.6  # words of 1-4 tokens
        starts[0] = starts[-1] = True
        out.append({"input_ids": ids, "word_starts": starts, "position": first_position + i})
    return out


def collator(**kw):
    return MLMCollator(MaskingConfig(**kw), vocab_size=VOCAB, pad_token_id=PAD, mask_token_id=MASK,
                       special_token_ids=SPECIALS, seed=123)


def word_groups(instance):
    starts = instance["word_starts"]
    ids = np.cumsum(starts) - 1
    return ids


@pytest.mark.parametrize("kw", [{}, {"whole_word": True}, {"span": True}])
def test_rate_specials_and_padding(kw):
    instances = make_instances(1500)
    batch = collator(**kw)(instances)
    chosen = batch["labels"] != -100
    maskable = (batch["attention_mask"] == 1) & (batch["labels"].new_tensor(0) == 0)
    original = torch.where(chosen, batch["labels"], batch["input_ids"])
    assert not chosen[batch["attention_mask"] == 0].any(), "padding was chosen"
    assert not torch.isin(original[chosen], torch.tensor(SPECIALS)).any(), "a special token was chosen"
    n_maskable = ((batch["attention_mask"] == 1) & ~torch.isin(original, torch.tensor(SPECIALS))).sum()
    rate = float(chosen.sum() / n_maskable)
    low, high = (0.145, 0.155) if not kw else (0.14, 0.16)
    assert low <= rate <= high, rate
    assert maskable.any()


def test_replacement_split_bert_and_electra():
    instances = make_instances(2000)
    for kw, expect in (({}, (0.8, 0.1, 0.1)), ({"mask_token_prob": 0.85, "random_token_prob": 0.0}, (0.85, 0, 0.15))):
        batch = collator(**kw)(instances)
        chosen = batch["labels"] != -100
        got = batch["input_ids"][chosen]
        orig = batch["labels"][chosen]
        masked = (got == MASK).float().mean().item()
        unchanged = (got == orig).float().mean().item()
        random_share = 1 - masked - unchanged
        assert abs(masked - expect[0]) < 0.015 and abs(unchanged - expect[2]) < 0.015
        assert abs(random_share - expect[1]) < 0.015
        replaced = got[(got != MASK) & (got != orig)]
        assert not torch.isin(replaced, torch.tensor(SPECIALS)).any(), "random replacement drew a special token"


@pytest.mark.parametrize("kw", [{"whole_word": True}, {"span": True}])
def test_words_are_never_split(kw):
    instances = make_instances(400)
    batch = collator(**kw)(instances)
    chosen = (batch["labels"] != -100).numpy()
    for row, inst in enumerate(instances):
        groups = word_groups(inst)
        n = len(inst["input_ids"])
        row_chosen = chosen[row, :n]
        for word in np.unique(groups):
            members = row_chosen[(groups == word) & ~np.isin(inst["input_ids"], SPECIALS)]
            assert members.all() or not members.any(), f"row {row} word {word} split"


@pytest.mark.parametrize("kw", [{"whole_word": True}, {"span": True}])
def test_an_unk_inside_a_word_and_a_cut_after_cls_keep_words_whole(kw):
    """[UNK] for an unknown character inside a MeCab word is never masked and does not split its word."""
    rng = np.random.default_rng(7)
    instances = make_instances(400, seed=7)
    for instance in instances:
        ids, starts = instance["input_ids"], instance["word_starts"]
        inside = np.flatnonzero(~starts[1:-1]) + 1  # continuation tokens
        ids[rng.choice(inside, size=min(3, len(inside)), replace=False)] = UNK
        starts[1] = False  # the instance begins mid-word (a segment cut), right after [CLS]
    chosen = (collator(**kw)(instances)["labels"] != -100).numpy()
    whole_with_unk = 0
    for row, instance in enumerate(instances):
        ids = instance["input_ids"]
        groups = word_groups(instance)
        row_chosen = chosen[row, :len(ids)]
        assert not row_chosen[ids == UNK].any()
        for word in np.unique(groups):
            in_word = groups == word
            members = row_chosen[in_word & ~np.isin(ids, SPECIALS)]
            assert members.all() or not members.any(), f"row {row} word {word} split"
            whole_with_unk += int(members.any() and (ids[in_word] == UNK).any())
    assert whole_with_unk > 20


def test_span_lengths_follow_geometric_in_words():
    config = MaskingConfig(span=True, mlm_probability=0.15)
    col = MLMCollator(config, vocab_size=VOCAB, pad_token_id=PAD, mask_token_id=MASK, special_token_ids=SPECIALS,
                      seed=5)
    rng = np.random.default_rng(1)
    instances = []
    for i in range(300):  # one token per word: span length in words = run length in tokens (when not merged)
        ids = rng.integers(10, VOCAB, 512)
        instances.append({"input_ids": ids, "word_starts": np.ones(512, bool), "position": i})
    chosen = (col(instances)["labels"] != -100).numpy()
    runs = []
    for row in chosen:
        padded = np.concatenate([[0], row.astype(int), [0]])
        edges = np.flatnonzero(np.diff(padded))
        runs.extend(edges[1::2] - edges[::2])
    assert max(runs) <= 3 * 10  # merged neighbours at most; a single span never exceeds 10 words
    assert 2.5 < np.mean(runs) < 6.0  # Geometric(0.2) clipped at 10 has mean ~3.9 words


@pytest.mark.parametrize("kw", [{}, {"whole_word": True}, {"span": True}])
def test_masks_depend_only_on_seed_position_and_content(kw):
    instances = make_instances(12)
    col = collator(**kw)
    full = col(instances)
    # the same instances, alone and in another order, padded differently
    for i in (0, 5, 11):
        alone = col([instances[i]])
        n = len(instances[i]["input_ids"])
        assert torch.equal(alone["labels"][0, :n], full["labels"][i, :n])
        assert torch.equal(alone["input_ids"][0, :n], full["input_ids"][i, :n])
    reordered = col(instances[::-1])
    assert torch.equal(reordered["labels"][0, :len(instances[11]["input_ids"])],
                       full["labels"][11, :len(instances[11]["input_ids"])])
    # a new position (the next epoch) gives a fresh choice
    again = col([dict(instances[0], position=10_000)])
    n = len(instances[0]["input_ids"])
    assert not torch.equal(again["labels"][0, :n], full["labels"][0, :n])


def test_bert_fields_and_padding_multiple():
    inst = make_instances(3, max_len=30)
    for i, x in enumerate(inst):
        x["token_type_ids"] = np.zeros(len(x["input_ids"]), dtype=np.int64)
        x["next_sentence_label"] = i % 2
    batch = collator()(inst)
    assert batch["input_ids"].shape[1] % 8 == 0
    assert batch["next_sentence_label"].tolist() == [0, 1, 0]
    assert batch["token_type_ids"].shape == batch["input_ids"].shape
    assert batch["positions"].tolist() == [0, 1, 2]


def test_causal_collator_labels():
    inst = make_instances(2, max_len=20)
    batch = CausalLMCollator(pad_token_id=PAD)(inst)
    n0 = len(inst[0]["input_ids"])
    assert torch.equal(batch["labels"][0, :n0], torch.as_tensor(inst[0]["input_ids"]))
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()


def test_bad_config_names_every_field():
    with pytest.raises(UserError, match="mlm_probability.*mask_token_prob \\+ random_token_prob"):
        MaskingConfig(mlm_probability=1.5, mask_token_prob=0.9, random_token_prob=0.2).validate()


@pytest.mark.parametrize("kw", [{}, {"whole_word": True}, {"span": True},
                                {"mask_token_prob": 0.85, "random_token_prob": 0.0}])
def test_a_fresh_collator_with_the_same_seed_repeats_the_masks_and_another_seed_does_not(kw):
    instances = make_instances(16)
    first, again = collator(**kw)(instances), collator(**kw)(instances)  # e.g. a resumed run's new collator
    assert torch.equal(first["input_ids"], again["input_ids"]) and torch.equal(first["labels"], again["labels"])
    other = MLMCollator(MaskingConfig(**kw), vocab_size=VOCAB, pad_token_id=PAD, mask_token_id=MASK,
                        special_token_ids=SPECIALS, seed=124)(instances)
    assert not torch.equal(other["labels"], first["labels"])


@pytest.mark.parametrize("algorithm", ["wordpiece", "bpe", "unigram"])
def test_whole_word_masking_keeps_mecab_words_whole_with_every_subword_algorithm(algorithm, tokenizer_factory,
                                                                                  sample_corpus, tmp_path):
    """Word starts come from the dataset (MeCab words), so no ``##`` or offset mapping is needed, for any vocabulary."""
    from transformers import AutoTokenizer

    from lmpretrain.data import build_or_load_dataset
    from lmpretrain.data import make_instances as make_dataset
    from lmpretrain.tokenization import FastEncoder
    from lmpretrain.tokenization.segmenters import get_segmenter

    tok = tokenizer_factory("ipadic", algorithm)
    shards = build_or_load_dataset([str(sample_corpus)], str(tok), str(tmp_path / "cache"), num_workers=1)
    # the dataset's word starts: one per MeCab word, exactly where a subword begins a word (## / ▁ conventions)
    lines = [line for line in sample_corpus.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert shards.num_sentences == len(lines)
    pieces_of = AutoTokenizer.from_pretrained(tok).convert_ids_to_tokens
    segmenter = get_segmenter("mecab", {"mecab_dic_type": "ipadic"})
    continuation = 0
    for i in range(0, len(lines), 5):
        starts = shards.word_starts(i)
        assert starts.sum() == len(segmenter.words(lines[i]))
        pieces = pieces_of(shards.sentence(i).tolist())
        expected = ([not p.startswith("##") for p in pieces] if algorithm == "wordpiece"
                    else [p.startswith("\u2581") for p in pieces])
        assert starts.tolist() == expected
        continuation += int((~starts).sum())
    assert continuation > 100  # multi-token words are common: the check below is not vacuous

    with FastEncoder.from_pretrained(tok) as encoder:
        dataset = make_dataset(shards, "packed_sentences", sequence_length=128, cls_id=encoder.cls_token_id,
                               sep_id=encoder.sep_token_id, seed=0)
        collate = MLMCollator(MaskingConfig(whole_word=True), vocab_size=encoder.vocab_size,
                              pad_token_id=encoder.pad_token_id, mask_token_id=encoder.mask_token_id,
                              special_token_ids=encoder.all_special_ids, seed=1)
        specials = encoder.all_special_ids
    instances = [dataset[p] for p in range(300)]
    chosen = (collate(instances)["labels"] != -100).numpy()
    whole_multi_token_words = 0
    for row, instance in enumerate(instances):
        ids = instance["input_ids"]
        groups = np.cumsum(instance["word_starts"]) - 1
        row_chosen = chosen[row, :len(ids)]
        for word in np.unique(groups):
            members = row_chosen[(groups == word) & ~np.isin(ids, specials)]
            assert members.all() or not members.any(), f"instance {row}: word {word} split"
            whole_multi_token_words += int(len(members) > 1 and members.all())
    maskable = sum(int((~np.isin(i["input_ids"], specials)).sum()) for i in instances)
    assert 0.135 < chosen.sum() / maskable < 0.165
    assert whole_multi_token_words > 50
