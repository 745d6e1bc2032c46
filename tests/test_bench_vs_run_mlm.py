"""bench/bench_vs_run_mlm.py end to end on the bundled sample (a handful of steps): both runs train, every
checkpoint of both is evaluated on both held-out sets with the same masks, and both models have learned something
(loss below the uniform guess ln(vocab)); the baseline's schedule is transformers' with the warmup one step ahead,
which is ours step for step (issue 29, item 4)."""

from __future__ import annotations

import math
import sys

import pytest
import torch

from tests.helpers import REPO

sys.path.insert(0, str(REPO / "bench"))
from bench_vs_run_mlm import baseline_schedule, main  # noqa: E402


def _rates(scheduler, steps: int) -> list[float]:
    rates = []
    for _ in range(steps):
        rates.append(scheduler.get_last_lr()[0])
        scheduler.optimizer.step()
        scheduler.step()
    return rates


def test_the_baseline_schedule_is_ours_and_transformers_warmup_one_step_later():
    from transformers import get_linear_schedule_with_warmup

    from lmpretrain.optim import lr_schedule

    def optimizer():
        return torch.optim.AdamW(torch.nn.Linear(2, 2).parameters(), lr=1e-3)

    warmup, steps = 30, 300
    baseline = _rates(baseline_schedule(optimizer(), warmup, steps), steps + 3)
    ours = _rates(lr_schedule(optimizer(), warmup_steps=warmup, train_steps=steps), steps + 3)
    theirs = _rates(get_linear_schedule_with_warmup(optimizer(), warmup, steps), steps + 3)
    assert baseline == ours
    assert theirs[0] == 0.0 and ours[0] == 1e-3 / warmup  # transformers' first update has a rate of 0, ours 1/warmup
    assert theirs[1:warmup + 1] == ours[:warmup]  # during warmup ours is theirs one step ahead ...
    assert theirs[warmup:] == ours[warmup:]  # ... and the decay is the same from step warmup on
    assert ours[warmup - 1] == ours[warmup] == 1e-3 and ours[steps:] == [0.0] * 3


@pytest.mark.slow  # 24-60 s on the shared 2 cores: two dataset builds, a run_pretraining.py process, and more
def test_the_benchmark_evaluates_both_runs_at_every_checkpoint(tiny_tokenizer_dir, sample_corpus, tmp_path):
    markdown = tmp_path / "vs.md"
    rows = main(["--tokenizer_dir", str(tiny_tokenizer_dir), "--corpus", str(sample_corpus), "--steps", "8",
                 "--warmup", "2", "--evals", "2", "--batch", "4", "--heldout_every", "4", "--eval_sequences", "8",
                 "--work", str(tmp_path / "work"), "--markdown", str(markdown)])
    vocab = sum(1 for _ in open(tiny_tokenizer_dir / "vocab.txt", encoding="utf-8"))
    sets = {"run_mlm.py chunks", "our packed instances"}
    assert {(step, run, held) for step, run, _, held, _ in rows} == \
        {(step, run, held) for step in (4, 8) for run in ("ours", "run_mlm.py-style") for held in sets}
    for step, run, wall, held, result in rows:
        assert wall > 0 and result["tokens"] > 20, (step, run, held, result)
        assert math.isfinite(result["loss"]) and result["loss"] < math.log(vocab), (step, run, held, result)
        assert 0.0 <= result["accuracy"] <= 1.0 and all(0.0 <= a <= 1.0 for a in result["by_kind"])
    # one evaluation: the same masked tokens for both models on each set
    for held in sets:
        assert len({result["tokens"] for _, _, _, h, result in rows if h == held}) == 1
    table = markdown.read_text(encoding="utf-8")
    assert "bench/bench_vs_run_mlm.py" in table and table.count("\n| 8 | ") == 4 and table.count("\n| 4 | ") == 4
