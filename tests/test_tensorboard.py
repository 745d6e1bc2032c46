"""TensorBoard: every loss term, learning rate, grad norm, throughput, MLM accuracy, eval loss and perplexity."""

from lmpretrain.trainer import train
from tests.test_run_pretraining import make_args, parameter_file  # noqa: F401  (module fixture)


def scalar_tags(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir))
    events.Reload()
    return {tag: [e.step for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_every_metric_is_written(sample_corpus, tiny_tokenizer_dir, parameter_file, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    train(make_args(sample_corpus, tiny_tokenizer_dir, out, parameter_file, "electra-test", run_name="tb"))
    tags = scalar_tags(out / "runs" / "tb")
    for tag in ("train/loss", "train/learning_rate", "train/grad_norm", "train/tokens_per_second",
                "train/generator_loss", "train/discriminator_loss", "train/mlm_accuracy",
                "train/discriminator_accuracy", "train/skipped_steps", "eval/generator_loss",
                "eval/discriminator_loss", "eval/perplexity", "eval/mlm_accuracy"):
        assert tag in tags, (tag, sorted(tags))
    assert tags["train/loss"] == list(range(1, 9))  # logging-steps 1
    assert tags["eval/perplexity"] == [0, 4, 8]  # before training, then every eval-steps


def test_a_resumed_run_keeps_every_scalar_once(sample_corpus, tiny_tokenizer_dir, parameter_file, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    train(make_args(sample_corpus, tiny_tokenizer_dir, out, parameter_file, "bert-test", run_name="tb", train_steps=4))
    train(make_args(sample_corpus, tiny_tokenizer_dir, out, parameter_file, "bert-test", run_name="tb", train_steps=8,
                    do_continue=True))
    tags = scalar_tags(out / "runs" / "tb")  # both event files, read as TensorBoard reads them
    assert tags["train/loss"] == list(range(1, 9))
    assert tags["eval/perplexity"] == [0, 4, 8]  # the eval at the resume step survives the new event file


def test_logging_dir_takes_the_events_and_the_view_command(sample_corpus, tiny_tokenizer_dir, parameter_file,  # noqa: F811
                                                             tmp_path, caplog):
    out, logs = tmp_path / "out", tmp_path / "tb-logs"
    with caplog.at_level("INFO", logger="lmpretrain"):
        train(make_args(sample_corpus, tiny_tokenizer_dir, out, parameter_file, "bert-test", run_name="tb",
                        train_steps=2, logging_dir=str(logs)))
    assert scalar_tags(logs / "tb")["train/loss"] == [1, 2]
    assert not (out / "runs").exists()
    assert f"tensorboard --logdir {logs}" in caplog.text


def test_the_first_window_after_a_resume_says_what_it_averages(sample_corpus, tiny_tokenizer_dir, tmp_path, caplog):
    import json

    from tests.test_run_pretraining import BASE

    params = tmp_path / "parameter.json"
    params.write_text(json.dumps({"bert-test": {**BASE, "logging-steps": 3, "eval-steps": 3}}))
    out = tmp_path / "out"
    train(make_args(sample_corpus, tiny_tokenizer_dir, out, params, "bert-test", train_steps=2))
    with caplog.at_level("INFO", logger="lmpretrain"):
        train(make_args(sample_corpus, tiny_tokenizer_dir, out, params, "bert-test", train_steps=6, do_continue=True))
    assert "resumed at step 2: the first logged window (step 3) averages the 1 step(s) since the resume, not the 3 " \
           "since step 0" in caplog.text
    assert scalar_tags(out / "runs" / "bert-test")["train/loss"] == [2, 3, 6]  # the last step, then multiples of 3


def test_a_fresh_run_over_old_events_in_an_outside_logging_dir_shows_alone(
        sample_corpus, tiny_tokenizer_dir, parameter_file, tmp_path, caplog):  # noqa: F811
    """--overwrite_output_dir removes the model dir's runs/, not a --logging_dir elsewhere: the new run purges from
    step 0, so that TensorBoard shows its curve alone (each step once, its own values), and says so."""
    import json

    out, logs = tmp_path / "out", tmp_path / "tb-logs"
    train(make_args(sample_corpus, tiny_tokenizer_dir, out, parameter_file, "bert-test", run_name="tb",
                    train_steps=4, logging_dir=str(logs), seed=1))
    with caplog.at_level("WARNING", logger="lmpretrain"):
        train(make_args(sample_corpus, tiny_tokenizer_dir, out, parameter_file, "bert-test", run_name="tb",
                        train_steps=3, logging_dir=str(logs), seed=2, overwrite_output_dir=True))
    assert "holds TensorBoard events of an earlier run" in caplog.text
    assert len(list((logs / "tb").glob("events.out.tfevents.*"))) == 2  # nothing deleted outside the model dir
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(logs / "tb"))
    events.Reload()
    shown = {e.step: e.value for e in events.Scalars("train/loss")}
    logged = {r["step"]: r["train/loss"] for r in map(json.loads, (out / "train_log.jsonl").read_text().splitlines())
              if "train/loss" in r}
    assert sorted(shown) == [1, 2, 3] and all(abs(shown[s] - logged[s]) < 1e-5 for s in shown)
    assert [e.step for e in events.Scalars("eval/perplexity")] == [0, 3]
