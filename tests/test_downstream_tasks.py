"""The downstream probe's task formats and modes (issue 27): JGLUE datasets read from their own files (MARC-ja, JNLI,
JSTS, JCoLA, written here in JGLUE's exact format), the zero-shot option for causal LMs against a hand computation
with transformers' model, hub names as --model_dir (a temporary offline HF cache), and the probe on every exportable
family's output on the CPU."""

from __future__ import annotations

import json

import pytest

from tests.test_bad_input import check_one_clear_error, run_in_process
from tests.test_downstream import PROBE, sample_lines, write_jsonl

# ---- JGLUE ------------------------------------------------------------------------------------------------------

# records in the datasets' own field layout (github.com/yahoojapan/JGLUE datasets/*-v1.x/*.json: one JSON object a
# line; MARC-ja as preprocess/marc-ja/scripts/marc-ja.py writes it; JCoLA as github.com/osekilab/JCoLA ships it)
def marc_ja(i, label):
    return {"sentence": f"レビュー{i}は{'良い' if label == 'positive' else '悪い'}。", "label": label,
            "review_id": f"R{i:05d}"}


def jnli(i, label):
    return {"sentence_pair_id": str(i), "yjcaptions_id": f"{i}-{i + 1}-{i + 2}", "sentence1": f"犬{i}が走っています。",
            "sentence2": f"動物{i}が動いています。", "label": label}


def jsts(i, label):
    return {"sentence_pair_id": str(i), "yjcaptions_id": f"{i}-{i + 1}-{i + 2}", "sentence1": f"バス{i}が走る。",
            "sentence2": f"車{i}が走る。", "label": label}


def jcola(i, label):
    return {"uid": i, "source": "Kuno_1973", "label": label, "diacritic": "g" if label else "*",
            "sentence": f"文{i}である。", "original": f"文{i}である。"}


FORMATS = {  # name: (record maker, labels cycled through, dir name, train file, valid file)
    "marc_ja": (marc_ja, ["positive", "negative"], "marc_ja-v1.1", "train-v1.1.json", "valid-v1.1.json"),
    "jnli": (jnli, ["entailment", "contradiction", "neutral"], "jnli-v1.3", "train-v1.3.json", "valid-v1.3.json"),
    "jsts": (jsts, [4.4, 0.0, 2.6, 3.8, 1.2], "jsts-v1.1", "train-v1.1.json", "valid-v1.1.json"),
    "jcola": (jcola, [1, 0], "jcola-v1.0", "in_domain_train-v1.0.jsonl", "in_domain_valid-v1.0.json"),
}


def write_lines(path, rows) -> None:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")


def jglue_dir(root, name, n_train=20, n_valid=6, test=False, dir_name=None):
    make, labels, default_dir, train_file, valid_file = FORMATS[name]
    directory = root / (dir_name or default_dir)
    directory.mkdir(parents=True)
    write_lines(directory / train_file, [make(i, labels[i % len(labels)]) for i in range(n_train)])
    write_lines(directory / valid_file, [make(100 + i, labels[i % len(labels)]) for i in range(n_valid)])
    if test:
        write_lines(directory / train_file.replace("train", "test"),
                    [make(200 + i, labels[i % len(labels)]) for i in range(4)])
    return directory


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_jglue_dir_is_read_with_its_own_fields_dev_from_train_valid_as_test(name, tmp_path):
    from lmpretrain.downstream import read_task

    make, labels, _, train_file, valid_file = FORMATS[name]
    task = read_task(jglue_dir(tmp_path, name))
    assert task.task_format == f"jglue-{name}"
    assert task.kind == ("regression" if name == "jsts" else "classification")
    assert {s: len(x) for s, x in task.splits.items()} == {"train": 18, "dev": 2, "test": 6}  # 10% of 20 held out
    assert task.sources == {"train": f"{train_file} less dev", "dev": f"2 records (0.1) of {train_file}, seed 0",
                            "test": valid_file}
    fields = {"marc_ja": ("sentence",), "jnli": ("sentence1", "sentence2"), "jsts": ("sentence1", "sentence2"),
              "jcola": ("sentence",)}[name]
    train_rows = [make(i, labels[i % len(labels)]) for i in range(20)]
    seen = [e.texts for e in task.splits["train"] + task.splits["dev"]]
    assert sorted(seen) == sorted(tuple(row[f] for f in fields) for row in train_rows)  # dev is taken out of train
    assert task.splits["test"][0].texts == tuple(make(100, labels[0])[f] for f in fields)
    assert task.splits["test"][0].where.endswith(f"{valid_file}:1")
    if name == "jsts":
        assert task.labels == [] and task.splits["test"][0].label == 4.4
    else:
        assert task.labels == sorted(str(x) for x in labels)
    # the same seed gives the same dev; another seed or share another one
    again = read_task(jglue_dir(tmp_path / "again", name))
    assert [e.texts for e in again.splits["dev"]] == [e.texts for e in task.splits["dev"]]
    other = read_task(jglue_dir(tmp_path / "other", name), dev_share=0.25, split_seed=1)
    assert len(other.splits["dev"]) == 5 and other.sources["dev"] == f"5 records (0.25) of {train_file}, seed 1"


def test_jglue_with_a_labelled_test_file_and_task_format_flag(tmp_path):
    from lmpretrain.downstream import read_task

    task = read_task(jglue_dir(tmp_path, "jnli", test=True))  # a release with test labels: dev = valid, test = test
    assert {s: len(x) for s, x in task.splits.items()} == {"train": 20, "dev": 6, "test": 4}
    assert task.sources == {"train": "train-v1.3.json", "dev": "valid-v1.3.json", "test": "test-v1.3.json"}
    # any dir name with --task_format; JCoLA's out-of-domain valid file is not the test split
    directory = jglue_dir(tmp_path, "jcola", dir_name="my-jcola")
    write_lines(directory / "out_of_domain_valid-v1.0.json", [jcola(300, 1), jcola(301, 0)])
    task = read_task(directory, "jglue-jcola")
    assert task.sources["test"] == "in_domain_valid-v1.0.json" and task.labels == ["0", "1"]
    assert read_task(directory.parent / "jnli-v1.3", "jglue-jnli").task_format == "jglue-jnli"


BAD_JGLUE = [
    ("unknown label", "jnli", "train-v1.3.json", 3, {"label": "maybe"},
     "train-v1.3.json:3: key 'label' has 'maybe'; a JGLUE jnli label is one of 'entailment', 'contradiction', "
     "'neutral'"),
    ("missing field", "jnli", "valid-v1.3.json", 2, {"sentence2": None},
     "valid-v1.3.json:2: no 'sentence2' (a JGLUE jnli record has sentence1, sentence2 and label)"),
    ("missing label", "marc_ja", "valid-v1.1.json", 4, {"label": None}, "valid-v1.1.json:4: no 'label'"),
    ("jsts label not a number", "jsts", "train-v1.1.json", 5, {"label": "high"},
     "train-v1.1.json:5: key 'label' must be a number (a jsts similarity), not 'high'"),
    ("jcola label not 0/1", "jcola", "in_domain_train-v1.0.jsonl", 1, {"label": "g"},
     "in_domain_train-v1.0.jsonl:1: key 'label' has 'g'; a JGLUE jcola label is one of 0, 1"),
]


@pytest.mark.parametrize("case", BAD_JGLUE, ids=[c[0] for c in BAD_JGLUE])
def test_bad_jglue_file_is_one_clear_error(case, tmp_path, capsys):
    _, name, file, line, change, message = case
    directory = jglue_dir(tmp_path, name)
    rows = [json.loads(x) for x in (directory / file).read_text(encoding="utf-8").splitlines()]
    rows[line - 1].update(change)
    write_lines(directory / file, rows)
    code, err = run_in_process(PROBE, ["--model_dir", str(tmp_path / "none"), "--task", str(directory),
                                       "--output_dir", str(tmp_path / "out")], capsys)
    check_one_clear_error(code, err, message)
    assert str(directory / file) in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", ["no valid", "bad json", "two versions", "unknown format"])
def test_bad_jglue_dir_is_one_clear_error(case, tmp_path, capsys):
    directory = jglue_dir(tmp_path, "jnli")
    extra = []
    if case == "no valid":
        (directory / "valid-v1.3.json").unlink()
        message = "no JGLUE valid file (valid-v<version>.json) for --task_format jglue-jnli"
    elif case == "bad json":
        with open(directory / "train-v1.3.json", "a", encoding="utf-8") as f:
            f.write('{"sentence1": \n')
        message = f"{directory / 'train-v1.3.json'}:21: not valid JSON"
    elif case == "two versions":
        (directory / "train-v1.1.json").write_text((directory / "train-v1.3.json").read_text(encoding="utf-8"))
        message = "several JGLUE train files (train-v1.1.json, train-v1.3.json); keep one"
    else:
        extra, message = ["--task_format", "jglue-jsquad"], "argument --task_format: invalid choice: 'jglue-jsquad'"
    code, err = run_in_process(PROBE, ["--model_dir", str(tmp_path / "none"), "--task", str(directory),
                                       "--output_dir", str(tmp_path / "out"), *extra], capsys)
    check_one_clear_error(code, err, message)


# ---- zero-shot (causal LMs) ----------------------------------------------------------------------------------------

def causal_dir(kind, tokenizer_dir, path):
    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    if kind == "gpt2":
        model = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=len(tokenizer), n_positions=64,
                                                                     n_embd=32, n_layer=1, n_head=2))
    else:
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
            num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def hand_score(model, tokenizer, prompt: str, word: str) -> float:
    """The continuation's summed log-likelihood, computed directly: one unpadded sequence, the prompt's ids without
    the tokenizer's trailing [SEP], then the word's ids."""
    import torch

    context = tokenizer(prompt)["input_ids"]
    assert context[-1] == tokenizer.sep_token_id
    context = context[:-1]
    target = tokenizer(word, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([context + target])).logits[0]
    log_probs = torch.log_softmax(logits.double(), dim=-1)
    return sum(log_probs[len(context) - 1 + j, t].item() for j, t in enumerate(target))


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_zero_shot_equals_a_hand_computation(kind, tiny_tokenizer_dir, sample_corpus, tmp_path):
    import torch
    import transformers

    from lmpretrain.downstream import (
        ProbeSettings,
        continuation_ids,
        continuation_log_likelihoods,
        evaluate,
    )

    model_dir = causal_dir(kind, tiny_tokenizer_dir, tmp_path / kind)
    words = {"forward": "普通の文", "reversed": "逆さまの文です"}  # verbalizers of different lengths: padding matters
    lines = sample_lines(sample_corpus)[:40]
    rows = [{"text": x[::-1], "label": "reversed"} if i % 2 else {"text": x, "label": "forward"}
            for i, x in enumerate(lines)]
    task = tmp_path / "task"
    task.mkdir()
    for split, part in (("train", rows[:20]), ("dev", rows[20:30]), ("test", rows[30:40])):
        write_jsonl(task / f"{split}.jsonl", part)
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    prompt = "{text}\n判定:"
    # one example: the batched, padded scores equal the direct computation
    text = prompt.format(text=rows[21]["text"])
    pairs = [continuation_ids(tokenizer, text, w, 64) for w in words.values()]
    found = continuation_log_likelihoods(model, pairs, torch.device("cpu"))
    expected = [hand_score(model, tokenizer, text, w) for w in words.values()]
    assert found == pytest.approx(expected, abs=1e-4)
    # the whole run: its accuracy is the hand computation's, on dev and test
    results = evaluate(model_dir, task, tmp_path / "out",
                       ProbeSettings(zero_shot=True, label_words=words, prompt=prompt, device="cpu"))
    for split, part in (("dev", rows[20:30]), ("test", rows[30:40])):
        hand = []
        for row in part:
            scores = {label: hand_score(model, tokenizer, prompt.format(text=row["text"]), w)
                      for label, w in words.items()}
            hand.append(max(scores, key=scores.get) == row["label"])
        assert results["mean"][split]["accuracy"] == pytest.approx(sum(hand) / len(hand))
        assert results["std"][split]["accuracy"] == 0.0
    assert len(results["per_seed"]) == 1 and results["per_seed"][0]["zero_shot"] is True
    assert results["per_seed"][0]["label_words"] == words and "train" not in results["mean"]


def test_zero_shot_cli_with_jglue_defaults_and_its_errors(tiny_tokenizer_dir, tmp_path, capsys):
    model_dir = causal_dir("gpt2", tiny_tokenizer_dir, tmp_path / "gpt2")
    directory = jglue_dir(tmp_path, "jnli")
    code, _ = run_in_process(PROBE, ["--model_dir", str(model_dir), "--task", str(directory), "--output_dir",
                                     str(tmp_path / "out"), "--zero_shot"], capsys)
    assert code == 0
    results = json.loads((tmp_path / "out" / "downstream_results.json").read_text(encoding="utf-8"))
    assert results["per_seed"][0]["label_words"] == {"contradiction": "矛盾", "entailment": "含意", "neutral": "中立"}
    assert results["per_seed"][0]["prompt"] == "{text_a}\n{text_b}\n関係:" and results["task_format"] == "jglue-jnli"
    assert results["splits"] == {"train": "train-v1.3.json less dev", "test": "valid-v1.3.json",
                                 "dev": "2 records (0.1) of train-v1.3.json, seed 0"}
    assert results["sizes"] == {"train": 18, "dev": 2, "test": 6}
    assert 0 <= results["mean"]["test"]["accuracy"] <= 1
    words = tmp_path / "labels.json"
    words.write_text(json.dumps({"entailment": "はい", "neutral": "たぶん"}), encoding="utf-8")
    cases = [
        (["--label_words", str(words)], "--label_words: no verbalizer for label(s) 'contradiction'"),
        (["--label_words", '{"entailment": 1}'], "--label_words: a JSON object mapping each label"),
        (["--prompt", "{premise}"], "--prompt '{premise}': not a template of this task's fields"),
    ]
    for extra, message in cases:
        code, err = run_in_process(PROBE, ["--model_dir", str(model_dir), "--task", str(directory), "--output_dir",
                                           str(tmp_path / "o2"), "--zero_shot", *extra], capsys)
        check_one_clear_error(code, err, message)
    code, err = run_in_process(PROBE, ["--model_dir", str(model_dir), "--task", str(jglue_dir(tmp_path, "jsts")),
                                       "--output_dir", str(tmp_path / "o3"), "--zero_shot"], capsys)
    check_one_clear_error(code, err, "--zero_shot scores label words: the task jsts-v1.1 is a regression")
    code, err = run_in_process(PROBE, ["--model_dir", str(model_dir), "--task", str(directory), "--output_dir",
                                       str(tmp_path / "o4"), "--prompt", "{text}"], capsys)
    check_one_clear_error(code, err, "--label_words and --prompt go with --zero_shot")


# ---- hub names as --model_dir ---------------------------------------------------------------------------------------

from tests.test_hub_names import REPO as HUB_REPO  # noqa: E402
from tests.test_hub_names import hub_home, offline_cache  # noqa: E402,F401 - the offline HF cache fixtures


def test_a_hub_name_as_model_dir_is_its_cached_snapshot(offline_cache, sample_corpus, tmp_path, capsys):  # noqa: F811
    lines = sample_lines(sample_corpus)[:24]
    task = tmp_path / "task"
    task.mkdir()
    for split, part in (("train", lines[:12]), ("dev", lines[12:18]), ("test", lines[18:24])):
        write_jsonl(task / f"{split}.jsonl", [{"text": x, "label": str(i % 2)} for i, x in enumerate(part)])
    out = tmp_path / "out"
    code, err = run_in_process(PROBE, ["--model_dir", HUB_REPO, "--task", str(task), "--output_dir", str(out),
                                       "--seeds", "1", "--epochs", "1", "--device", "cpu"], capsys)
    assert code == 0, err
    results = json.loads((out / "downstream_results.json").read_text(encoding="utf-8"))
    assert results["model_dir"] == str(offline_cache) and results["sizes"] == {"train": 12, "dev": 6, "test": 6}
    code, err = run_in_process(PROBE, ["--model_dir", "lmp-test/absent", "--task", str(task), "--output_dir",
                                       str(tmp_path / "o2")], capsys)
    check_one_clear_error(code, err, "--model_dir lmp-test/absent: not a directory, and the hub model lmp-test/absent "
                                     "is not found locally and the hub is offline (HF_HUB_OFFLINE=1)")


# ---- every exportable family's output ----------------------------------------------------------------------------

FAMILY_BASE = {"number-of-layers": 2, "hidden-size": 32, "sequence-length": 32, "ffn-inner-hidden-size": 64,
               "attention-heads": 2, "warmup-steps": 1, "learning-rate": 1e-3, "batch-size": {"-1": 4},
               "train-steps": 2, "save-steps": 2, "logging-steps": 1, "eval-steps": 2, "eval-share": 0.1}
FAMILIES = {  # model type: (preset extras, tokenizer (dic, algorithm), the classification class transformers picks)
    "bert-x": ({}, ("ipadic", "wordpiece"), "BertForSequenceClassification"),
    "roberta-x": ({}, ("ipadic", "wordpiece"), "RobertaForSequenceClassification"),
    "electra-x": ({"embedding-size": 16, "generator-size": "1/2"}, ("ipadic", "wordpiece"),
                  "ElectraForSequenceClassification"),
    "deberta-v3-x": ({"position-buckets": 16}, ("ipadic", "wordpiece"), "DebertaV2ForSequenceClassification"),
    "modernbert-x": ({"local-attention": 16}, ("none", "bpe"), "ModernBertForSequenceClassification"),
    "albert-x": ({"embedding-size": 16}, ("ipadic", "wordpiece"), "AlbertForSequenceClassification"),
    "gpt-x": ({}, ("ipadic", "wordpiece"), "GPT2ForSequenceClassification"),
    "llama-x": ({"num-key-value-heads": 1}, ("none", "bpe"), "LlamaForSequenceClassification"),
}


@pytest.fixture(scope="module")
def tiny_task(tmp_path_factory, sample_corpus):
    lines = sample_lines(sample_corpus)[:32]
    rows = [{"text": x[::-1], "label": "reversed"} if i % 2 else {"text": x, "label": "forward"}
            for i, x in enumerate(lines)]
    task = tmp_path_factory.mktemp("family-task") / "reversal"
    task.mkdir()
    for split, part in (("train", rows[:16]), ("dev", rows[16:24]), ("test", rows[24:32])):
        write_jsonl(task / f"{split}.jsonl", part)
    return task


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_the_probe_runs_on_every_familys_export(model_type, tiny_task, sample_corpus, tokenizer_factory, tmp_path):
    """Each family trained here for 2 steps and exported; the probe fine-tunes its export (the ELECTRA run's dir is
    the discriminator) on the CPU with the head transformers picks for it, and reports its metrics."""
    import torch
    import transformers

    from lmpretrain.downstream import ProbeSettings, evaluate
    from lmpretrain.trainer import train
    from tests.test_run_pretraining import make_args

    extra, (dic, algorithm), head = FAMILIES[model_type]
    params = tmp_path / "parameter.json"
    params.write_text(json.dumps({model_type: {**FAMILY_BASE, **extra}}))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(make_args(sample_corpus, tokenizer_factory(dic, algorithm), tmp_path / "out", params, model_type))
        results = evaluate(tmp_path / "out", tiny_task, tmp_path / "probe",
                           ProbeSettings(seeds=1, epochs=1, batch_size=8, max_length=32, device="cpu"))
    finally:  # the process's thread count is every later test's (see test_downstream's regression test)
        torch.set_num_threads(threads)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "out", num_labels=2)
    assert type(model).__name__ == head
    run = results["per_seed"][0]
    assert run["steps"] == 2 and torch.isfinite(torch.tensor(run["final_train_loss"]))
    assert results["labels"] == ["forward", "reversed"] and results["max_length"] == 32
    for split in ("train", "dev", "test"):
        assert 0 <= run[split]["accuracy"] <= 1 and results["mean"][split] == run[split]
    if model_type in ("bert-x", "electra-x"):  # an encoder cannot be probed zero-shot: one clear error
        from lmpretrain.errors import UserError

        with pytest.raises(UserError, match="--zero_shot needs a causal LM"):
            evaluate(tmp_path / "out", tiny_task, tmp_path / "zs", ProbeSettings(zero_shot=True, device="cpu"))
