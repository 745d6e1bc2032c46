"""Token budgets (issue 18, item 4): train-steps / train-epochs / train-tokens resolve to steps, the learning-rate
schedule follows them, a one-epoch run takes the steps the dataset build reported, and bad budgets fail early."""

import json
import math

import pytest
import torch

from lmpretrain.data import EpochOrder
from lmpretrain.errors import UserError
from lmpretrain.models import get_family, parse_preset
from lmpretrain.optim import lr_schedule
from lmpretrain.resume import CONTINUES, compare
from lmpretrain.run_config import TrainArgs, budget_steps, parse_args
from lmpretrain.run_description import describe
from tests.helpers import run_script

PRESET = {"number-of-layers": 1, "hidden-size": 16, "sequence-length": 32, "ffn-inner-hidden-size": 32,
          "attention-heads": 2, "warmup-steps": 1, "learning-rate": 1e-3, "batch-size": {"-1": 6},
          "logging-steps": 1, "save-steps": 1000, "dropout": 0.0, "attention-dropout": 0.0, "eval-share": 0.1}


def preset(**keys):
    return parse_preset("gpt-test", {**PRESET, **keys}, "parameter.json")


def args(**kw) -> TrainArgs:
    return TrainArgs(input_file=["c.txt"], tokenizer_dir="t", model_dir="m", model_type="gpt-test", **kw)


def optim(flags: TrainArgs, params):
    """The optimisation settings of the run description's first phase."""
    return describe(flags, params, get_family(params.family)).optim


# --- budgets to steps ----------------------------------------------------------------------------------------------

def test_token_budget_is_megatrons_steps_times_global_batch_times_sequence_length():
    per_step = 6 * 32
    assert budget_steps(("train-tokens", 10 * per_step), global_batch_size=6, sequence_length=32) == 10
    assert budget_steps(("train-tokens", 11 * per_step - 1), global_batch_size=6, sequence_length=32) == 10  # down
    with pytest.raises(UserError, match=r"train-tokens 191 is less than one step: a step trains 192 tokens"):
        budget_steps(("train-tokens", per_step - 1), global_batch_size=6, sequence_length=32)


@pytest.mark.parametrize("instances, batch", [(24, 6), (27, 6), (5, 2)])
def test_one_epoch_sees_every_instance_at_most_once_and_all_where_the_batch_divides(instances, batch):
    steps = budget_steps(("train-epochs", 1), global_batch_size=batch, sequence_length=32, instances=instances)
    assert steps == instances // batch
    order = EpochOrder(instances, seed=3)
    seen = [order.locate(p) for p in range(steps * batch)]  # the positions a run of `steps` steps draws
    assert {epoch for epoch, _ in seen} == {0}
    indices = [index for _, index in seen]
    assert len(set(indices)) == len(indices) == instances - instances % batch
    # two epochs: positions run on into the next epoch's order, rounded down to whole steps once, at the end
    assert budget_steps(("train-epochs", 2), global_batch_size=batch, sequence_length=32,
                        instances=instances) == 2 * instances // batch
    assert budget_steps(("train-epochs", 0.5), global_batch_size=6, sequence_length=32, instances=24) == 2
    with pytest.raises(UserError, match="train-epochs 0.1 is less than one step"):
        budget_steps(("train-epochs", 0.1), global_batch_size=6, sequence_length=32, instances=24)


def test_exactly_one_budget_decides_and_a_flag_replaces_the_presets():
    assert optim(args(), preset(**{"train-steps": 7})).train_steps == 7
    config = optim(args(), preset(**{"train-tokens": 1920}))
    assert (config.train_steps, config.budget) == (None, ("train-tokens", 1920))
    assert config.with_steps(global_batch_size=6, sequence_length=32).train_steps == 10
    # any budget flag replaces any budget key of the preset, as --train_steps always has
    config = optim(args(train_steps=3), preset(**{"train-epochs": 2}))
    assert (config.train_steps, config.budget) == (3, ("train-steps", 3))
    config = optim(args(train_epochs=1.0), preset(**{"train-steps": 100}))
    assert config.budget == ("train-epochs", 1.0)
    assert config.with_steps(global_batch_size=6, sequence_length=32, instances=40).train_steps == 6
    assert parse_args(["--input_file", "c", "--tokenizer_dir", "t", "--model_dir", "m", "--model_type", "x",
                       "--train_tokens", "2e9"]).train_tokens == 2_000_000_000


def test_warmup_ratio_is_a_share_of_the_resolved_steps_rounded_up():
    ratio = {"warmup-ratio": 0.1}
    params = parse_preset("gpt-test", {**{k: v for k, v in PRESET.items() if k != "warmup-steps"}, **ratio,
                                       "train-tokens": 1920 * 3}, "parameter.json")
    config = optim(args(), params)
    assert config.warmup_steps is None
    assert config.with_steps(global_batch_size=6, sequence_length=32).warmup_steps == 3  # ceil(0.1 x 30)
    assert optim(args(train_steps=25), params).warmup_steps == 3  # ceil(2.5)
    assert optim(args(), preset(**{"train-steps": 9})).warmup_steps == 1  # warmup-steps as given
    with pytest.raises(UserError, match="gpt-test.warmup-steps: given together with warmup-ratio"):
        preset(**{"train-steps": 9}, **ratio)
    with pytest.raises(UserError, match=r"gpt-test.warmup-steps: missing \(or give warmup-ratio instead\)"):
        parse_preset("gpt-test", {k: v for k, v in PRESET.items() if k != "warmup-steps"} | {"train-steps": 9}, "p")


@pytest.mark.parametrize("keys, message", [
    ({"train-steps": 10, "train-tokens": 1000}, "gpt-test.train-steps: given together with train-tokens"),
    ({"train-epochs": 0}, "gpt-test.train-epochs: must be positive"),
    ({"train-epochs": -1}, "gpt-test.train-epochs: must be positive"),
    ({"train-tokens": 0}, "gpt-test.train-tokens: must be positive"),
    ({"train-tokens": 1.5e3}, None),  # a whole number written as a float is accepted
    ({}, "gpt-test.train-steps: missing (or give train-epochs or train-tokens instead)"),
    ({"train-steps": 1, "lr-schedule": "exp"}, "gpt-test.lr-schedule: expected one of 'linear', 'cosine'"),
    ({"train-steps": 1, "min-lr-ratio": 1.5}, "gpt-test.min-lr-ratio: expected a value in"),
])
def test_bad_budget_keys_name_the_key(keys, message):
    if message is None:
        assert preset(**keys).train_tokens == 1500
        return
    with pytest.raises(UserError) as error:
        preset(**keys)
    assert message in str(error.value)


@pytest.mark.parametrize("flags, message", [
    (dict(train_steps=5, train_tokens=100), "--train_steps and --train_tokens are given together"),
    (dict(train_epochs=0.0), "--train_epochs must be positive (got 0)"),
    (dict(train_epochs=-2.0), "--train_epochs must be positive (got -2)"),
    (dict(train_steps=0), "--train_steps must be positive (got 0)"),
])
def test_bad_budget_flags(flags, message):
    with pytest.raises(UserError) as error:
        optim(args(**flags), preset(**{"train-steps": 10}))
    assert message in str(error.value)


def test_a_build_alone_counts_the_epoch_at_the_global_batch_of_every_listed_node():
    from lmpretrain.distributed import preset_global_batch_size

    assert preset_global_batch_size({0: 160, 1: 96}) == 256
    assert preset_global_batch_size({-1: 128}) == 128
    assert preset_global_batch_size({-1: 128}, num_nodes=4) == 512
    assert preset_global_batch_size({-1: 64, 2: 32}) == 64 + 64 + 32  # nodes 0 and 1 take the -1 default


# --- the schedule ----------------------------------------------------------------------------------------------------

def _rates(make, steps: int) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = make(optimizer)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


@pytest.mark.parametrize("ratio", [0.0, 0.1])
def test_cosine_schedule_is_transformers_after_warmup(ratio):
    from transformers import get_cosine_schedule_with_warmup, get_cosine_with_min_lr_schedule_with_warmup

    warmup, total = 4, 30
    ours = _rates(lambda o: lr_schedule(o, warmup_steps=warmup, train_steps=total, schedule="cosine",
                                        min_lr_ratio=ratio), total + 1)
    if ratio:
        reference = _rates(lambda o: get_cosine_with_min_lr_schedule_with_warmup(o, warmup, total, min_lr_rate=ratio),
                           total + 1)
    else:
        reference = _rates(lambda o: get_cosine_schedule_with_warmup(o, warmup, total), total + 1)
    assert ours[warmup:] == pytest.approx(reference[warmup:], rel=1e-12, abs=1e-15)
    assert ours[-1] == pytest.approx(ratio)  # the end of the decay: min-lr-ratio x learning-rate
    # warmup as the linear schedule has always done it: the first update already has a rate (transformers': 0)
    assert ours[:warmup] == pytest.approx([(s + 1) / warmup for s in range(warmup)])
    assert ours[warmup + 13] == pytest.approx(ratio + (1 - ratio) * 0.5 * (1 + math.cos(math.pi * 13 / 26)))


def test_linear_schedule_is_unchanged_and_transformers_after_warmup():
    from transformers import get_linear_schedule_with_warmup

    ours = _rates(lambda o: lr_schedule(o, warmup_steps=3, train_steps=20), 22)
    reference = _rates(lambda o: get_linear_schedule_with_warmup(o, 3, 20), 22)
    assert ours[3:] == reference[3:]  # bit for bit
    floored = _rates(lambda o: lr_schedule(o, warmup_steps=3, train_steps=20, min_lr_ratio=0.2), 22)
    assert floored[3:] == pytest.approx([0.2 + 0.8 * r for r in reference[3:]])


# --- resume --------------------------------------------------------------------------------------------------------

def test_min_lr_ratio_flag_replaces_the_presets_and_is_checked():
    assert optim(args(), preset(**{"train-steps": 9})).min_lr_ratio == 0.0
    assert optim(args(), preset(**{"train-steps": 9, "min-lr-ratio": 0.1})).min_lr_ratio == 0.1
    assert optim(args(min_lr_ratio=0.05), preset(**{"train-steps": 9, "min-lr-ratio": 0.1})) \
        .min_lr_ratio == 0.05
    assert parse_args(["--input_file", "c", "--tokenizer_dir", "t", "--model_dir", "m", "--model_type", "x",
                       "--min_lr_ratio", "0.1"]).min_lr_ratio == 0.1
    for bad in (-0.1, 1.5):
        with pytest.raises(UserError, match=rf"--min_lr_ratio {bad}: a share of the learning rate, from 0 to 1"):
            optim(args(min_lr_ratio=bad), preset(**{"train-steps": 9}))
    saved = {"params": {"min_lr_ratio": 0.0}, "args": {}, "resolved": {"train_steps": 10, "min_lr_ratio": 0.0}}
    current = {"params": {"min_lr_ratio": 0.0}, "args": {}, "resolved": {"train_steps": 10, "min_lr_ratio": 0.1}}
    assert [(c.name, c.kind) for c in compare(saved, current)] == [("min lr ratio", CONTINUES)]


def test_a_changed_budget_continues_the_run():
    saved = {"params": {}, "args": {}, "resolved": {"train_steps": 10, "budget": ["train-epochs", 1],
                                                    "lr_schedule": "linear"}}
    current = {"params": {}, "args": {}, "resolved": {"train_steps": 20, "budget": ["train-tokens", 3840],
                                                      "lr_schedule": "cosine"}}
    changes = {c.name: c.kind for c in compare(saved, current)}
    assert changes == {"train steps": CONTINUES, "train budget": CONTINUES, "lr schedule": CONTINUES}
    older = {"params": {}, "args": {}, "resolved": {"train_steps": 10}}  # a checkpoint from before budgets
    assert compare(older, {**current, "resolved": {**current["resolved"], "train_steps": 10}}) == []


# --- real runs --------------------------------------------------------------------------------------------------------

@pytest.fixture()
def small_corpus(sample_corpus, tmp_path):
    path = tmp_path / "small.txt"
    path.write_text("\n".join(sample_corpus.read_text(encoding="utf-8").splitlines()[:120]) + "\n", encoding="utf-8")
    return path


def test_a_token_budget_below_one_step_fails_before_the_build(small_corpus, tiny_tokenizer_dir, tmp_path):
    from lmpretrain.trainer import train

    parameter_file = tmp_path / "parameter.json"
    parameter_file.write_text(json.dumps({"gpt-test": {**PRESET, "train-tokens": 100}}))
    with pytest.raises(UserError, match=r"train-tokens 100 is less than one step: a step trains 192 tokens"):
        train(TrainArgs(input_file=[str(small_corpus)], tokenizer_dir=str(tiny_tokenizer_dir),
                        model_dir=str(tmp_path / "out"), model_type="gpt-test", parameter_file=str(parameter_file),
                        num_workers=1))
    assert not (tmp_path / "out" / "cache").exists()  # nothing tokenized


@pytest.mark.slow
def test_one_epoch_takes_the_steps_the_build_reported(small_corpus, tiny_tokenizer_dir, tmp_path):
    from lmpretrain.checkpoint import load_training_state
    from lmpretrain.data.epochs import EPOCHS_FILE

    parameter_file = tmp_path / "parameter.json"
    parameter_file.write_text(json.dumps({"gpt-test": {**PRESET, "train-epochs": 1, "lr-schedule": "cosine",
                                                       "min-lr-ratio": 0.5}}))
    common = ["--input_file", str(small_corpus), "--tokenizer_dir", str(tiny_tokenizer_dir), "--model_dir",
              str(tmp_path / "out"), "--parameter_file", str(parameter_file), "--model_type", "gpt-test",
              "--num_workers", "1", "--dataloader_workers", "0", "--max_eval_samples", "8"]
    built = run_script("run_pretraining.py", *common, "--build_dataset_only")
    assert built.returncode == 0, built.stderr
    [metadata] = (tmp_path / "out" / "cache").glob(f"*/{EPOCHS_FILE}")
    [epoch] = json.loads(metadata.read_text()).values()
    assert f"{epoch['steps_per_epoch']} steps at global batch 6" in built.stderr + built.stdout
    assert epoch["steps_per_epoch"] == epoch["instances"] // 6 >= 3
    assert epoch["tokens_per_epoch"] == epoch["steps_per_epoch"] * 6 * 32

    trained = run_script("run_pretraining.py", *common, "--min_lr_ratio", "0.1")  # the flag over the preset's
    assert trained.returncode == 0, trained.stderr
    steps = epoch["steps_per_epoch"]
    summary = json.loads((tmp_path / "out" / "train_summary.json").read_text())
    assert summary["step"] == steps
    # the epoch's real tokens, each document's end token included, all inside its train-tokens budget
    assert epoch["tokens"] < summary["tokens_seen"] <= epoch["tokens_per_epoch"]
    log = [json.loads(line) for line in (tmp_path / "out" / "train_log.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in log if "train/loss" in r) == steps
    assert [r["train/learning_rate"] for r in log if "train/loss" in r][-1] == pytest.approx(1e-4)  # cosine's end
    # the data position after the run: the epoch's positions, no more; the sampler maps them to distinct instances
    # of epoch 0 (test above), here all of them (84 instances, 14 steps of 6: the corpus was cut so that they divide)
    state = load_training_state(tmp_path / "out" / f"checkpoint-{steps}")
    assert state["train_state"]["next_position"] == steps * 6 == epoch["instances"] - epoch["instances_not_reached"]
    config = json.loads((tmp_path / "out" / f"checkpoint-{steps}" / "lmpretrain_config.json").read_text())
    assert config["optim"]["train_steps"] == steps and config["optim"]["budget"] == ["train-epochs", 1]
