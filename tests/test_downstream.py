"""The downstream probe (evaluate_downstream.py) and the task builder (scripts/make_author_task.py): a model pretrained
here fits a learnable synthetic task far above chance, seeds are reproducible, the JSON's mean and spread are the
seeds' own, causal LMs and regression work, and bad task dirs are one clear error naming file, line and key."""

from __future__ import annotations

import json
import random
import statistics

import pytest

from tests.helpers import run_script
from tests.test_bad_input import check_one_clear_error, run_in_process
from tests.test_run_pretraining import make_args

PROBE = "evaluate_downstream.py"
ONE_THREAD = {"OMP_NUM_THREADS": "1", "LMP_NO_PROGRESS": "1"}  # two cores shared: more threads only fight
TINY = {"bert-test": {"number-of-layers": 2, "hidden-size": 32, "sequence-length": 64, "ffn-inner-hidden-size": 64,
                      "attention-heads": 2, "warmup-steps": 2, "learning-rate": 2e-3, "batch-size": {"-1": 8},
                      "train-steps": 16, "save-steps": 16, "logging-steps": 4, "eval-steps": 16, "dropout": 0.0,
                      "attention-dropout": 0.0, "eval-share": 0.1}}


def sample_lines(sample_corpus) -> list[str]:
    return [line.strip() for line in sample_corpus.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path, rows) -> None:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")


@pytest.fixture(scope="module")
def reversal_task(tmp_path_factory, sample_corpus):
    """Sentences of the sample corpus, half of them written backwards: label "reversed" or "forward" (learnable from
    the tokens alone; balanced, so chance is 0.5)."""
    lines = sample_lines(sample_corpus)
    random.Random(0).shuffle(lines)
    rows = [{"text": line[::-1], "label": "reversed"} if i % 2 else {"text": line, "label": "forward"}
            for i, line in enumerate(lines[:160])]
    task = tmp_path_factory.mktemp("tasks") / "reversal"
    task.mkdir()
    for split, part in (("train", rows[:96]), ("dev", rows[96:128]), ("test", rows[128:160])):
        write_jsonl(task / f"{split}.jsonl", part)
    return task


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, sample_corpus, tiny_tokenizer_dir):
    from lmpretrain.trainer import train

    root = tmp_path_factory.mktemp("pretrained")
    (root / "parameter.json").write_text(json.dumps(TINY))
    train(make_args(sample_corpus, tiny_tokenizer_dir, root / "bert", root / "parameter.json", "bert-test"))
    return root / "bert"


PROBE_FLAGS = ["--epochs", "6", "--batch_size", "8", "--learning_rate", "3e-3"]


def test_probe_fits_a_learnable_task_and_reports_seeds(pretrained, reversal_task, tmp_path):
    out = tmp_path / "probe"
    result = run_script(PROBE, "--model_dir", str(pretrained), "--task", str(reversal_task), "--output_dir", str(out),
                        "--seeds", "2", *PROBE_FLAGS, env=ONE_THREAD)
    assert result.returncode == 0, result.stderr
    results = json.loads((out / "downstream_results.json").read_text())
    assert results["kind"] == "classification" and results["labels"] == ["forward", "reversed"]
    assert results["sizes"] == {"train": 96, "dev": 32, "test": 32}
    assert results["chance"]["train"] == {"accuracy": 0.5}
    assert [r["seed"] for r in results["per_seed"]] == [0, 1]
    assert results["per_seed"][0]["learning_rate"] == 3e-3 and results["per_seed"][0]["steps"] == 6 * 12
    for split in ("train", "dev", "test"):
        values = [r[split]["accuracy"] for r in results["per_seed"]]
        assert all(0 <= v <= 1 for v in values)
        assert results["mean"][split]["accuracy"] == pytest.approx(statistics.fmean(values))
        assert results["std"][split]["accuracy"] == pytest.approx(statistics.stdev(values))
    # the model fits the task's train split far above chance (measured: 0.99 and 1.0 for both seeds)
    assert min(r["train"]["accuracy"] for r in results["per_seed"]) >= 0.8, results["per_seed"]
    assert results["mean"]["dev"]["accuracy"] > 0.6, results["per_seed"]
    mean, std = results["mean"]["test"]["accuracy"], results["std"]["test"]["accuracy"]
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith("reversal: dev accuracy") and f"test accuracy {mean:.4f} ± {std:.4f}" in summary
    assert str(out / "downstream_results.json") in summary
    # deterministic per seed: seed 1 alone gives seed 1's numbers again
    again = tmp_path / "again"
    result = run_script(PROBE, "--model_dir", str(pretrained), "--task", str(reversal_task), "--output_dir",
                        str(again), "--seeds", "1", "--seed", "1", *PROBE_FLAGS, env=ONE_THREAD)
    assert result.returncode == 0, result.stderr
    assert json.loads((again / "downstream_results.json").read_text())["per_seed"] == results["per_seed"][1:]


def test_causal_lm_and_regression(tiny_tokenizer_dir, sample_corpus, tmp_path):
    """A GPT-2 dir whose config has no pad token id classifies its last non-pad token; float labels are a regression
    reported as Pearson and Spearman."""
    import torch
    import transformers

    from lmpretrain.downstream import ProbeSettings, evaluate

    model_dir = tmp_path / "gpt2"
    config = transformers.GPT2Config(vocab_size=2100, n_positions=64, n_embd=32, n_layer=1, n_head=2)
    assert config.pad_token_id is None
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(config).save_pretrained(model_dir)
    transformers.AutoTokenizer.from_pretrained(tiny_tokenizer_dir).save_pretrained(model_dir)
    lines = sample_lines(sample_corpus)[:48]
    task = tmp_path / "lengths"
    task.mkdir()
    for split, part in (("train", lines[:32]), ("dev", lines[32:40]), ("test", lines[40:48])):
        write_jsonl(task / f"{split}.jsonl", [{"text": x, "label": len(x) / 10.0} for x in part])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        results = evaluate(model_dir, task, tmp_path / "out", ProbeSettings(seeds=1, epochs=1, batch_size=8))
    finally:  # the process's thread count is every later test's: an in-process run with other threads than its
        torch.set_num_threads(threads)  # subprocess twin reduces in another order (test_fault_tolerance's reference)
    assert results["kind"] == "regression" and results["labels"] == []
    for split in ("train", "dev", "test"):
        assert set(results["per_seed"][0][split]) == {"pearson", "spearman"}
        assert all(-1 <= v <= 1 for v in results["per_seed"][0][split].values())
    assert results["std"]["test"] == {"pearson": 0.0, "spearman": 0.0}  # one seed: no spread


def test_default_learning_rate():
    from types import SimpleNamespace

    from lmpretrain.downstream import default_learning_rate

    assert default_learning_rate(SimpleNamespace(hidden_size=768)) == 5e-5  # BERT-base's fine-tuning rate
    assert default_learning_rate(SimpleNamespace(hidden_size=256)) == pytest.approx(1.5e-4)  # scaled by 768 / width
    assert default_learning_rate(SimpleNamespace(hidden_size=32)) == 1e-3  # at most 1e-3
    assert default_learning_rate(SimpleNamespace(hidden_size=1024)) == 5e-5  # never below 5e-5


def test_correlations_match_numpy():
    import numpy as np

    from lmpretrain.downstream import _ranks, metrics

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=50), rng.normal(size=50)
    y = y + x
    found = metrics("regression", x.tolist(), y.tolist())
    assert found["pearson"] == pytest.approx(np.corrcoef(x, y)[0, 1])
    ranks = lambda v: np.argsort(np.argsort(v)).astype(float)  # noqa: E731 - no ties in continuous draws
    assert found["spearman"] == pytest.approx(np.corrcoef(ranks(x), ranks(y))[0, 1])
    assert _ranks([3.0, 1.0, 3.0, 2.0]) == [2.5, 0.0, 2.5, 1.0]  # ties share their mean rank


def good_rows():
    return [{"text": "良い", "label": "a"}, {"text": "悪い", "label": "b"}]


BAD_TASKS = [
    ("missing dev", {"dev.jsonl": None}, "no dev.jsonl or dev.tsv"),
    ("no label", {"train.jsonl": '{"text": "x", "label": "a"}\n{"text": "y"}\n'}, "train.jsonl:2: no 'label'"),
    ("no text", {"dev.jsonl": '{"sentence": "x", "label": "a"}\n'},
     "dev.jsonl:1: no text field (key 'text', or 'text_a' and 'text_b')"),
    ("unseen label", {"test.jsonl": '{"text": "x", "label": "a"}\n{"text": "y", "label": "c"}\n'},
     "test.jsonl:2: key 'label' has 'c', which no train record has"),
    ("one class", {"train.jsonl": '{"text": "x", "label": "a"}\n'}, "train.jsonl: one class only ('a')"),
    ("empty split", {"test.jsonl": "\n"}, "test.jsonl: empty split"),
    ("bad json", {"dev.jsonl": '{"text": "x", "label": "a"}\n{"text": \n'}, "dev.jsonl:2: not valid JSON"),
    ("two formats", {"dev.tsv": "text\tlabel\nx\ta\n"}, "both dev.jsonl and dev.tsv"),
    ("tsv fields", {"dev.jsonl": None, "dev.tsv": "text\tlabel\nx\ta\textra\n"}, "dev.tsv:2: 3 fields where"),
]


@pytest.mark.parametrize("name,files,message", BAD_TASKS, ids=[row[0] for row in BAD_TASKS])
def test_bad_task_is_one_clear_error(name, files, message, tmp_path, capsys):
    task = tmp_path / "task"
    task.mkdir()
    for split in ("train", "dev", "test"):
        write_jsonl(task / f"{split}.jsonl", good_rows())
    for file, text in files.items():
        if text is None:
            (task / file).unlink()
        else:
            (task / file).write_text(text, encoding="utf-8")
    # a model dir is not even needed: the task is checked first
    code, err = run_in_process(PROBE, ["--model_dir", str(tmp_path / "none"), "--task", str(task), "--output_dir",
                                       str(tmp_path / "out")], capsys)
    assert code == 2
    check_one_clear_error(code, err, message)
    assert str(task) in err
    assert not (tmp_path / "out").exists()


def test_tsv_task_reads_like_jsonl(tmp_path):
    from lmpretrain.downstream import read_task

    (tmp_path / "t").mkdir()
    for split in ("train", "dev", "test"):
        (tmp_path / "t" / f"{split}.tsv").write_text("text_a\ttext_b\tlabel\n犬\t猫\t1\n空\t海\t0\n", encoding="utf-8")
    task = read_task(tmp_path / "t")
    assert task.kind == "classification" and task.labels == ["0", "1"]
    assert task.splits["dev"][0].texts == ("犬", "猫") and task.splits["dev"][0].where.endswith("dev.tsv:2")
    for split in ("train", "dev", "test"):
        (tmp_path / "t" / f"{split}.tsv").write_text("text\tlabel\n犬\t0.5\n空\t2\n", encoding="utf-8")
    assert read_task(tmp_path / "t").kind == "regression"


# ---- the task builder ----------------------------------------------------------------------------------------------

def _split_works(task_dir, works_text):
    """For each split, the works (by index) its paragraphs come from."""
    where = {p: w for w, paragraphs in enumerate(works_text) for p in paragraphs}
    found = {}
    for split in ("train", "dev", "test"):
        rows = [json.loads(line) for line in (task_dir / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]
        texts = [row[key] for row in rows for key in ("text", "text_a", "text_b") if key in row]
        found[split] = {where[t] for t in texts}
    return found


def test_same_work_task_is_split_by_work_and_reproducible(sample_corpus, tmp_path):
    from lmpretrain.author_task import read_works

    result = run_script("scripts/make_author_task.py", "--corpus", str(sample_corpus), "--output_dir",
                        str(tmp_path / "a"), "--pairs", "200", "40", "40")
    assert result.returncode == 0, result.stderr
    assert "same_work task: train 200" in result.stdout
    info = json.loads((tmp_path / "a" / "task.json").read_text())
    works = read_works(sample_corpus, 20, 400)
    found = _split_works(tmp_path / "a", works)
    assert {split: sorted(ws) for split, ws in found.items()} == info["works"]
    assert not (found["train"] & found["dev"] or found["train"] & found["test"] or found["dev"] & found["test"])
    rows = [json.loads(line) for line in (tmp_path / "a" / "train.jsonl").read_text().splitlines()]
    assert sum(row["label"] == "same" for row in rows) == 100 and info["test_chance_accuracy"] == 0.5
    from lmpretrain.author_task import build_task

    build_task(sample_corpus, tmp_path / "b", pairs=(200, 40, 40))
    for split in ("train", "dev", "test"):
        assert (tmp_path / "a" / f"{split}.jsonl").read_bytes() == (tmp_path / "b" / f"{split}.jsonl").read_bytes()


def test_author_task_keeps_every_author_in_train(sample_corpus, tmp_path):
    from lmpretrain.author_task import build_task, read_works

    authors = tmp_path / "authors.tsv"
    authors.write_text("work\tauthor\n" + "".join(f"{w}\t作者{w % 3}\n" for w in range(24)),
                       encoding="utf-8")
    info = build_task(sample_corpus, tmp_path / "task", authors=authors)
    found = _split_works(tmp_path / "task", read_works(sample_corpus, 20, 400))
    assert not (found["train"] & found["dev"] or found["train"] & found["test"] or found["dev"] & found["test"])
    assert len(found["dev"]) == len(found["test"]) == 3  # one work of each author
    from lmpretrain.downstream import read_task

    task = read_task(tmp_path / "task")  # a valid probe task: every dev/test author is in train
    assert task.labels == ["作者0", "作者1", "作者2"] and info["test_chance_accuracy"] == pytest.approx(1 / 3)


def test_author_task_bad_authors_file(sample_corpus, tmp_path, capsys):
    authors = tmp_path / "authors.tsv"
    authors.write_text("work\tauthor\n0\tA\n99\tB\n", encoding="utf-8")
    code, err = run_in_process("scripts/make_author_task.py", ["--corpus", str(sample_corpus), "--output_dir",
                                                              str(tmp_path / "t"), "--authors", str(authors)], capsys)
    check_one_clear_error(code, err, f"{authors}:3: key 'work' 99 is not a document of the corpus (0..23)")


def test_same_work_task_from_aozora(shared_corpus, tmp_path):
    from lmpretrain.author_task import build_task, read_works

    corpus = shared_corpus("ja_aozora_small")
    info = build_task(corpus, tmp_path / "task", pairs=(300, 60, 60))
    found = _split_works(tmp_path / "task", read_works(corpus, 20, 400))
    assert not (found["train"] & found["dev"] or found["train"] & found["test"] or found["dev"] & found["test"])
    assert info["sizes"] == {"train": 300, "dev": 60, "test": 60} and len(found["train"]) >= 10


def _rows(task_dir, split):
    return [json.loads(line) for line in (task_dir / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]


def test_continuation_task_pairs_a_paragraph_with_its_next_or_another_works(sample_corpus, tmp_path):
    from lmpretrain.author_task import build_task, read_lines, read_works

    result = run_script("scripts/make_author_task.py", "--corpus", str(sample_corpus), "--output_dir",
                        str(tmp_path / "a"), "--kind", "continuation", "--pairs", "200", "40", "40")
    assert result.returncode == 0, result.stderr
    assert "continuation task: train 200" in result.stdout
    info = json.loads((tmp_path / "a" / "task.json").read_text())
    assert info["kind"] == "continuation" and info["test_chance_accuracy"] == 0.5
    lines = read_lines(sample_corpus)
    assert [[p[:400] for p in work if len(p) >= 20] for work in lines] == read_works(sample_corpus, 20, 400)
    where = {p[cut]: w for w, work in enumerate(lines) for p in work for cut in (slice(-400, None), slice(400))}
    found = _split_works(tmp_path / "a", [[p for p, w in where.items() if w == v] for v in range(len(lines))])
    assert {split: sorted(ws) for split, ws in found.items()} == info["works"]
    assert not (found["train"] & found["dev"] or found["train"] & found["test"] or found["dev"] & found["test"])
    adjacent = {(work[i][-400:], work[i + 1][:400]) for work in lines for i in range(len(work) - 1)}
    for split in ("train", "dev", "test"):
        rows = _rows(tmp_path / "a", split)
        assert len(rows) == info["sizes"][split] and sum(row["label"] == "next" for row in rows) == len(rows) // 2
        assert {row["label"] for row in rows} == {"next", "other"}
        for row in rows:
            assert len(row["text_a"]) >= 20 and len(row["text_b"]) >= 20
            if row["label"] == "next":  # B is the line right after A in its work
                assert (row["text_a"], row["text_b"]) in adjacent
            else:  # B comes from another work of the same split
                assert where[row["text_a"]] != where[row["text_b"]]
                assert where[row["text_b"]] in info["works"][split]
    build_task(sample_corpus, tmp_path / "b", pairs=(200, 40, 40), kind="continuation")
    for split in ("train", "dev", "test"):
        assert (tmp_path / "a" / f"{split}.jsonl").read_bytes() == (tmp_path / "b" / f"{split}.jsonl").read_bytes()
    build_task(sample_corpus, tmp_path / "c", pairs=(200, 40, 40), kind="continuation", seed=1)
    assert (tmp_path / "c" / "train.jsonl").read_bytes() != (tmp_path / "a" / "train.jsonl").read_bytes()
    build_task(sample_corpus, tmp_path / "d", pairs=(200, 40, 40), kind="continuation", max_chars=12)
    cut = {(work[i][-12:], work[i + 1][:12]) for work in lines for i in range(len(work) - 1)}  # A's end, B's start
    rows = _rows(tmp_path / "d", "train")
    assert all((row["text_a"], row["text_b"]) in cut for row in rows if row["label"] == "next")
    assert any(len(line) > 12 for work in lines for line in work)
    from lmpretrain.downstream import read_task

    assert read_task(tmp_path / "a").labels == ["next", "other"]  # a valid pair-classification task for the probe


def test_continuation_task_bad_input(sample_corpus, tmp_path, capsys):
    few = tmp_path / "few.txt"  # five works of two long paragraphs each: one short of the six a split by work needs
    few.write_text("".join(f"作品{w}の最初の段落はこのように二十文字より長く書かれている。\n"
                           f"作品{w}の次の段落もまた二十文字より長く書かれているのである。\n\n" for w in range(5)),
                   encoding="utf-8")
    code, err = run_in_process("scripts/make_author_task.py", ["--corpus", str(few), "--output_dir",
                                                              str(tmp_path / "t"), "--kind", "continuation"], capsys)
    check_one_clear_error(code, err, "5 documents with two adjacent paragraphs of 20 characters or more; "
                                     "the continuation task needs at least 6")
    code, err = run_in_process("scripts/make_author_task.py", ["--corpus", str(sample_corpus), "--output_dir",
                                                              str(tmp_path / "t"), "--kind", "author"], capsys)
    check_one_clear_error(code, err, "the author task needs an authors file (--authors)")
    code, err = run_in_process("scripts/make_author_task.py", ["--corpus", str(sample_corpus), "--output_dir",
                                                              str(tmp_path / "t"), "--kind", "next"], capsys)
    assert code == 2 and "invalid choice: 'next'" in err
    from lmpretrain.author_task import build_task
    from lmpretrain.errors import UserError

    with pytest.raises(UserError, match="unknown task kind 'next'"):
        build_task(sample_corpus, tmp_path / "t", kind="next")
    assert not (tmp_path / "t").exists()  # nothing written on bad input


def test_continuation_task_from_aozora(shared_corpus, tmp_path):
    from lmpretrain.author_task import build_task, read_lines

    corpus = shared_corpus("ja_aozora_small")
    info = build_task(corpus, tmp_path / "task", pairs=(300, 60, 60), kind="continuation")
    lines = read_lines(corpus)
    where = {p[cut]: w for w, work in enumerate(lines) for p in work for cut in (slice(-400, None), slice(400))}
    found = _split_works(tmp_path / "task", [[p for p, w in where.items() if w == v] for v in range(len(lines))])
    assert not (found["train"] & found["dev"] or found["train"] & found["test"] or found["dev"] & found["test"])
    assert info["sizes"] == {"train": 300, "dev": 60, "test": 60} and len(found["train"]) >= 10
    assert sum(row["label"] == "next" for row in _rows(tmp_path / "task", "test")) == 30
