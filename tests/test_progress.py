"""No silent minutes (issue 28, item 2): a long evaluation gives its estimate, SentencePiece training says when it
starts, that it is still running and when it ended, and a process waiting for the job to join says what it awaits."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from lmpretrain import evaluation, log
from lmpretrain.trainer import train
from tests.helpers import REPO, wait_for
from tests.test_distributed_training import free_port
from tests.test_run_pretraining import make_args, parameter_file  # noqa: F401 (a fixture)


def test_heartbeat_says_the_phase_runs_until_it_ends(caplog):
    logger = logging.getLogger("lmpretrain.test")
    caplog.set_level(logging.INFO, logger="lmpretrain.test")
    beats = lambda: [r.getMessage() for r in caplog.records if r.getMessage().startswith("still busy")]  # noqa: E731
    with log.heartbeat("still busy", logger=logger, first_s=0.01, every_s=0.01):
        wait_for(lambda: len(beats()) >= 2, what="two heartbeat lines")
    assert all(line.endswith("s elapsed)") for line in beats())
    count = len(beats())
    with log.heartbeat("quiet", logger=logger, first_s=3600):
        pass  # a phase shorter than first_s says nothing, and ends at once
    assert len(beats()) == count and not [r for r in caplog.records if "quiet" in r.getMessage()]


@pytest.mark.parametrize(("seconds", "shown"), [(0, "0s"), (42.4, "42s"), (190, "3m10s"), (3900, "1h05m")])
def test_durations_read_as_a_person_writes_them(seconds, shown):
    assert log.duration(seconds) == shown


def test_a_long_evaluation_says_how_long_it_will_take(caplog, monkeypatch, sample_corpus, tiny_tokenizer_dir,
                                                      parameter_file, tmp_path):  # noqa: F811
    caplog.set_level(logging.INFO, logger="lmpretrain")
    monkeypatch.setattr(evaluation, "EVAL_NOTICE_S", 0.0)  # every evaluation counts as long
    train(make_args(sample_corpus, tiny_tokenizer_dir, tmp_path / "out", parameter_file, "bert-test", train_steps=4))
    notices = [r.getMessage() for r in caplog.records if r.getMessage().startswith("evaluating ")]
    assert len(notices) == 2  # the step-0 evaluation and the final one (eval-steps 4)
    assert all("eval instances in" in line and ": about " in line and "--max_eval_samples" in line
               for line in notices)
    caplog.clear()
    monkeypatch.setattr(evaluation, "EVAL_NOTICE_S", 3600.0)  # a short evaluation adds no line
    train(make_args(sample_corpus, tiny_tokenizer_dir, tmp_path / "out2", parameter_file, "bert-test", train_steps=4))
    assert not [r for r in caplog.records if r.getMessage().startswith("evaluating ")]


def test_sentencepiece_training_says_when_it_starts_and_ends(caplog, sample_corpus, tmp_path):
    pytest.importorskip("sentencepiece")
    from lmpretrain.tokenization import TokenizerSpec, train_tokenizer

    caplog.set_level(logging.INFO, logger="lmpretrain")
    spec = TokenizerSpec.from_flags(mecab_dic_type="none", tokenizer_type="sentencepiece", spm_model_type="unigram",
                                    vocab_size=2000, num_unused_tokens=5)
    train_tokenizer([str(sample_corpus)], tmp_path / "tok", spec, num_workers=1)
    lines = [r.getMessage() for r in caplog.records if "SentencePiece" in r.getMessage()]
    assert lines[0].startswith("training SentencePiece unigram on ") and "a line every 30s until it is done" in lines[0]
    assert lines[-1].startswith("trained SentencePiece unigram: ") and " pieces in " in lines[-1]


def test_a_process_waiting_for_the_job_to_join_says_what_it_awaits(tmp_path):
    """Rank 1 of a two-process job whose rank 0 (the store) never starts: a warning naming MASTER_ADDR:MASTER_PORT and
    the --peer_timeout bound while it waits, then the one-line error when the bound is reached."""
    port = free_port()
    code = ("import sys; from lmpretrain import distributed as d; from lmpretrain.log import setup_logging; "
            "setup_logging(); d.JOIN_NOTICE_S = 0.1; "
            "d.init_distributed({-1: 2}, device='cpu', join_timeout_s=float(sys.argv[1]))")
    env = {**os.environ, "PYTHONPATH": str(REPO), "RANK": "1", "LOCAL_RANK": "0", "WORLD_SIZE": "2",
           "LOCAL_WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    result = subprocess.run([sys.executable, "-c", code, "3"], env=env, capture_output=True, text=True)
    assert result.returncode == 1, result.stderr[-3000:]
    waiting = [line for line in result.stderr.splitlines() if "waiting for all 2 processes of the job" in line]
    assert waiting and "WARNING" in waiting[0], result.stderr[-3000:]
    assert f"MASTER_ADDR:MASTER_PORT 127.0.0.1:{port}" in waiting[0]
    assert "giving up after 3 s (--peer_timeout)" in waiting[0]
    assert result.stderr.strip().splitlines()[-1].startswith("error: rank 1: not all 2 processes of the job joined")


def test_a_run_logged_to_a_file_has_plain_lines(sample_corpus, tiny_tokenizer_dir, parameter_file,  # noqa: F811
                                                tmp_path):
    """Issue 28, item 5: stderr to a file (not a terminal), progress not turned off: no carriage-return bars, and a
    plain loss line at each logging step, the same steps and losses as train_log.jsonl."""
    import json

    env = {k: v for k, v in os.environ.items() if k != "LMP_NO_PROGRESS"}
    env.update(PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    out = tmp_path / "out"
    with open(tmp_path / "stderr.log", "w") as err:
        code = subprocess.run([sys.executable, str(REPO / "run_pretraining.py"), "--input_file", str(sample_corpus),
                               "--tokenizer_dir", str(tiny_tokenizer_dir), "--model_dir", str(out),
                               "--parameter_file", str(parameter_file), "--model_type", "bert-test",
                               "--train_steps", "3", "--num_workers", "1", "--max_eval_samples", "16"],
                              env=env, stdout=subprocess.DEVNULL, stderr=err).returncode
    text = (tmp_path / "stderr.log").read_text()
    assert code == 0, text[-3000:]
    assert "\r" not in text and "it/s]" not in text
    steps = [line.split("lmpretrain.trainer: ", 1)[1] for line in text.splitlines()
             if "lmpretrain.trainer: step " in line and "/3: loss " in line]
    logged = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    logged = [record for record in logged if "train/loss" in record]
    assert [line.split(":")[0] for line in steps] == [f"step {r['step']}/3" for r in logged] == \
        ["step 1/3", "step 2/3", "step 3/3"]  # logging-steps 1
    for line, record in zip(steps, logged):
        assert f"loss {record['train/loss']:.4f}, lr {record['train/learning_rate']:.2e}, " in line
        assert " tokens/s" in line and ("eta " in line) == (record["step"] < 3)


def test_plain_progress_says_where_a_phase_is(caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="lmpretrain.progress")
    monkeypatch.setattr(log, "PLAIN_PROGRESS_S", 0.0)  # a line at every update
    with log.PlainProgress(total=4, desc="eval", unit="batch") as bar:
        for _ in range(4):
            bar.update(1)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("eval: 1/4 batch (25%), ") and ", eta " in lines[0]
    assert lines[-1].startswith("eval: 4/4 batch (100%), ") and "eta" not in lines[-1]
    caplog.clear()
    monkeypatch.setattr(log, "PLAIN_PROGRESS_S", 3600.0)  # a short phase says nothing
    assert list(log.PlainProgress(range(3), desc="quick")) == [0, 1, 2]
    assert not caplog.records
