"""evaluate_perplexity.py: a trained model dir's (and a checkpoint's) perplexity on a file equals what the trainer's
final evaluation logged on that file as --eval_file, for a masked LM and a causal LM."""

import json
import shutil

import pytest

from lmpretrain.trainer import train
from tests.helpers import run_script
from tests.test_run_pretraining import BASE, make_args

PRESETS = {"bert-ppl": BASE, "gpt-ppl": BASE}  # eval every 4 steps, checkpoints at 4 and 8


@pytest.fixture(scope="module")
def split_corpus(sample_corpus, tmp_path_factory):
    """The sample's documents: the first 80% to train on, the rest to evaluate."""
    docs = sample_corpus.read_text(encoding="utf-8").strip().split("\n\n")
    cut = len(docs) * 4 // 5
    root = tmp_path_factory.mktemp("ppl-corpus")
    (root / "train.txt").write_text("\n\n".join(docs[:cut]) + "\n", encoding="utf-8")
    (root / "eval.txt").write_text("\n\n".join(docs[cut:]) + "\n", encoding="utf-8")
    return root / "train.txt", root / "eval.txt"


@pytest.fixture(scope="module")
def parameter_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("ppl-params") / "parameter.json"
    path.write_text(json.dumps(PRESETS))
    return path


def _measure(model_dir, eval_file, *extra):
    result = run_script("evaluate_perplexity.py", "--model_dir", str(model_dir), "--input_file", str(eval_file),
                        "--max_samples", "32", "--num_workers", "1", *extra)
    assert result.returncode == 0, result.stderr
    summary, payload = result.stdout.strip().splitlines()[-2:]
    measured = json.loads(payload)
    assert summary.startswith(f"{model_dir}: perplexity {measured['perplexity']:.4f}")
    return measured


@pytest.mark.parametrize("model_type", ["bert-ppl", "gpt-ppl"])
def test_perplexity_equals_the_trainers_final_eval(model_type, split_corpus, tiny_tokenizer_dir, parameter_file,
                                                   tmp_path):
    train_file, eval_file = split_corpus
    out = tmp_path / "out"
    summary = train(make_args(train_file, tiny_tokenizer_dir, out, parameter_file, model_type,
                              eval_file=[str(eval_file)]))
    expected = summary["eval/perplexity"]
    measured = _measure(out, eval_file, "--batch_size", "5")  # another batch size: the same masks, the same loss
    assert measured["recorded_run"] and measured["family"] == model_type.split("-")[0]
    assert measured["perplexity"] == pytest.approx(expected, rel=1e-4)
    assert measured["term"] == ("mlm_loss" if model_type == "bert-ppl" else "lm_loss")
    # an earlier checkpoint measures what the run logged at its step
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    at_4 = next(r["eval/perplexity"] for r in log if r.get("step") == 4 and "eval/perplexity" in r)
    assert at_4 != pytest.approx(expected, rel=1e-3)
    assert _measure(out / "checkpoint-4", eval_file)["perplexity"] == pytest.approx(at_4, rel=1e-4)
    # a plain HF dir (no run record): the family from config.json, the default masking and seed, which this run used
    plain = tmp_path / "plain"
    shutil.copytree(out, plain, ignore=shutil.ignore_patterns("lmpretrain_config.json", "checkpoint-*", "runs",
                                                               "cache", "*.jsonl", "train_summary.json"))
    measured = _measure(plain, eval_file)
    assert not measured["recorded_run"] and measured["sequence_length"] == BASE["sequence-length"]
    assert measured["perplexity"] == pytest.approx(expected, rel=1e-4)


def test_bad_model_dir_is_one_line(split_corpus, tmp_path):
    result = run_script("evaluate_perplexity.py", "--model_dir", str(tmp_path), "--input_file", str(split_corpus[1]))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "holds no config.json" in result.stderr
