"""End-to-end pretraining on the sample corpus: every family trains, checkpoints load in transformers,
resume equals an uninterrupted run, and bad input fails early with one clear line."""

import json

import pytest
import torch

from lmpretrain.run_config import TrainArgs
from lmpretrain.trainer import train
from tests.helpers import run_script

BASE = {"number-of-layers": 2, "hidden-size": 32, "sequence-length": 64, "ffn-inner-hidden-size": 64,
        "attention-heads": 2, "warmup-steps": 2, "learning-rate": 2e-3, "batch-size": {"-1": 8},
        "train-steps": 8, "save-steps": 4, "logging-steps": 1, "eval-steps": 4, "dropout": 0.0,
        "attention-dropout": 0.0, "eval-share": 0.1}
PRESETS = {"bert-test": BASE, "roberta-test": BASE, "gpt-test": BASE, "llama-test": BASE,
           "electra-test": {**BASE, "embedding-size": 16, "generator-size": "1/2", "mask-percent": 15}}


@pytest.fixture(scope="module")
def parameter_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("params") / "parameter.json"
    path.write_text(json.dumps(PRESETS))
    return path


def make_args(corpus, tokenizer, model_dir, parameter_file, model_type, **kw):
    return TrainArgs(input_file=[str(corpus)], tokenizer_dir=str(tokenizer), model_dir=str(model_dir),
                     model_type=model_type, parameter_file=str(parameter_file), num_workers=1,
                     max_eval_samples=32, **kw)


def losses(model_dir):
    lines = [json.loads(x) for x in (model_dir / "train_log.jsonl").read_text().splitlines()]
    return {r["step"]: r["train/loss"] for r in lines if "train/loss" in r}


AUTO = {"bert-test": "AutoModelForPreTraining", "roberta-test": "AutoModelForMaskedLM",
        "gpt-test": "AutoModelForCausalLM", "electra-test": "AutoModelForPreTraining",
        "modernbert-test": "AutoModelForMaskedLM", "llama-test": "AutoModelForCausalLM"}


@pytest.mark.parametrize("model_type", sorted(PRESETS))
def test_each_family_trains_and_exports(model_type, sample_corpus, tiny_tokenizer_dir, parameter_file, tmp_path):
    import transformers

    from lmpretrain.checkpoint import load_weights
    from lmpretrain.export import verify_export
    from lmpretrain.prepare import prepare_run

    args = make_args(sample_corpus, tiny_tokenizer_dir, tmp_path / "out", parameter_file, model_type,
                     train_steps=16)
    summary = train(args)
    curve = losses(tmp_path / "out")
    assert len(curve) == 16
    first, last = sum(curve[s] for s in (1, 2, 3)) / 3, sum(curve[s] for s in (14, 15, 16)) / 3
    assert last < first, curve
    assert summary["eval/perplexity"] < summary["eval/perplexity_at_start"]
    # the final model and a checkpoint load through transformers' Auto classes
    auto = getattr(transformers, AUTO[model_type])
    for directory in (tmp_path / "out", tmp_path / "out" / "checkpoint-8"):
        model = auto.from_pretrained(directory)
        assert model.config.hidden_size == 32
    if model_type == "electra-test":
        assert transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "out" / "generator")
    # faithful export: logits of the saved dir equal the trained model's, tokenizer ids equal FastEncoder's
    run = prepare_run(args)
    model = run.build_model()
    load_weights(model, tmp_path / "out")
    verify_export(model, tmp_path / "out", run.encoder)
    run.encoder.close()


def test_resume_equals_uninterrupted(sample_corpus, tiny_tokenizer_dir, parameter_file, tmp_path):
    import shutil

    straight = tmp_path / "straight"
    train(make_args(sample_corpus, tiny_tokenizer_dir, straight, parameter_file, "bert-test"))
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(straight / "checkpoint-4", resumed / "checkpoint-4")  # as if the run had died after step 4
    train(make_args(sample_corpus, tiny_tokenizer_dir, resumed, parameter_file, "bert-test", do_continue=True))
    a, b = losses(straight), losses(resumed)
    assert sorted(b) == [5, 6, 7, 8]
    for step in b:
        assert a[step] == pytest.approx(b[step], rel=1e-6, abs=1e-6), (step, a[step], b[step])
    from safetensors.torch import load_file

    final_a, final_b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    for name in final_a:
        torch.testing.assert_close(final_a[name], final_b[name], rtol=1e-5, atol=1e-6)


def test_script_smoke_writes_artifacts(sample_corpus, tiny_tokenizer_dir, parameter_file, tmp_path):
    out = tmp_path / "out"
    result = run_script("run_pretraining.py", "--input_file", str(sample_corpus), "--tokenizer_dir",
                        str(tiny_tokenizer_dir), "--model_dir", str(out), "--parameter_file", str(parameter_file),
                        "--model_type", "bert-test", "--train_steps", "4", "--do_whole_word_mask",
                        "--run_name", "smoke", "--num_workers", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "checkpoint-4" / "lmpretrain_checkpoint.json").is_file()
    assert list((out / "runs" / "smoke").glob("events.out.tfevents.*"))
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["step"] == 4
    assert "done:" in result.stderr


@pytest.mark.parametrize("extra, message", [
    (["--model_type", "bert-nope"], "--model_type 'bert-nope' is not in"),
    (["--model_type", "bert-test", "--fp16_type", "1"], "needs a CUDA GPU"),
    (["--model_type", "bert-test", "--do_continue"], "no checkpoint-<step> folder"),
    (["--model_type", "bert-test", "--mecab_dic_type", "unidic_lite"], "does not match the tokenizer"),
])
def test_bad_input_fails_early_with_one_line(extra, message, sample_corpus, tiny_tokenizer_dir, parameter_file,
                                              tmp_path):
    result = run_script("run_pretraining.py", "--input_file", str(sample_corpus), "--tokenizer_dir",
                        str(tiny_tokenizer_dir), "--model_dir", str(tmp_path / "out"), "--parameter_file",
                        str(parameter_file), *extra)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_tokenizer_dir_that_is_not_one(sample_corpus, parameter_file, tmp_path):
    (tmp_path / "tok").mkdir()
    result = run_script("run_pretraining.py", "--input_file", str(sample_corpus), "--tokenizer_dir",
                        str(tmp_path / "tok"), "--model_dir", str(tmp_path / "out"), "--parameter_file",
                        str(parameter_file), "--model_type", "bert-test")
    assert result.returncode == 2 and "is not a tokenizer dir" in result.stderr
    assert "Traceback" not in result.stderr


def test_do_continue_without_a_checkpoint_starts_over_in_a_used_dir(sample_corpus, tiny_tokenizer_dir, parameter_file,
                                                                    tmp_path):
    """A requeued job (always --do_continue) whose first try stopped before its first save starts from step 0; a dir
    holding a finished model but no checkpoint is refused, nothing in it touched (a missing dir: the row above)."""
    base = ["--input_file", str(sample_corpus), "--tokenizer_dir", str(tiny_tokenizer_dir), "--parameter_file",
            str(parameter_file), "--model_type", "bert-test", "--train_steps", "2", "--num_workers", "1",
            "--do_continue"]
    out = tmp_path / "requeued"
    out.mkdir()
    (out / "train_log.jsonl").write_text('{"step": 1, "train/loss": 9.0}\n')  # a log of the try that saved nothing
    result = run_script("run_pretraining.py", *base, "--model_dir", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "holds no checkpoint yet" in result.stderr and "starting from step 0" in result.stderr
    assert json.loads((out / "train_summary.json").read_text())["step"] == 2
    steps = [json.loads(x)["step"] for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and 9.0 not in [json.loads(x).get("train/loss") for x in
                                                  (out / "train_log.jsonl").read_text().splitlines()]

    finished = tmp_path / "finished"
    finished.mkdir()
    (finished / "train_summary.json").write_text('{"step": 5}')
    result = run_script("run_pretraining.py", *base, "--model_dir", str(finished))
    assert result.returncode == 2
    assert "holds a finished model (train_summary.json)" in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in finished.iterdir()) == ["train_summary.json"]
    assert (finished / "train_summary.json").read_text() == '{"step": 5}'
