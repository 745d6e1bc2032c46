"""The overlapped input pipeline (lmpretrain.data.loader): the same batches for 0, 1 and 2 workers, the same run,
workers that never outlive the loop, and (on a GPU) no host synchronisation inside a step's micro-batches."""

import json
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import time

import pytest
import torch

from lmpretrain.data import loader
from lmpretrain.data.loader import StepBatches, count_units, default_dataloader_workers, micro_batch_positions
from lmpretrain.data_setup import build_run_data
from lmpretrain.distributed import Layout
from lmpretrain.errors import UserError
from lmpretrain.prepare import place_run, prepare_run
from lmpretrain.run_config import TrainArgs
from lmpretrain.trainer import train
from tests.helpers import REPO, alive
from tests.test_run_pretraining import BASE

PRESETS = {"bert-test": {**BASE, "gradient-accumulation-steps": 2, "train-steps": 6, "save-steps": 3,
                         "logging-steps": 1, "eval-steps": 3, "whole-word-mask": True},
           "gpt-test": {**BASE, "train-steps": 4},
           "electra-test": {**BASE, "train-steps": 4, "embedding-size": 16, "generator-size": "1/2"}}


@pytest.fixture(scope="module")
def parameter_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("pipeline") / "parameter.json"
    path.write_text(json.dumps(PRESETS))
    return path


def make_args(corpus, tokenizer, model_dir, parameter_file, model_type="bert-test", **kw):
    return TrainArgs(input_file=[str(corpus)], tokenizer_dir=str(tokenizer), model_dir=str(model_dir),
                     model_type=model_type, parameter_file=str(parameter_file), num_workers=1,
                     max_eval_samples=16, **kw)


def _layout(rank: int, world_size: int, per_device: int) -> Layout:
    return Layout(rank=rank, world_size=world_size, local_rank=rank, local_world_size=world_size, node_rank=0,
                  num_nodes=1, node_batch_size=per_device * world_size, per_device_batch_size=per_device,
                  rank_offset=rank * per_device, global_batch_size=per_device * world_size,
                  device=torch.device("cpu"))


def _batches(data, layout, workers, *, next_position=0, steps=3, accumulation=2, pack=True):
    with StepBatches(data.train_dataset, data.collator, layout, next_position=next_position, steps=steps,
                     accumulation=accumulation, workers=workers, pack=pack) as batches:
        return [batches.next_step() for _ in range(steps)]


@pytest.mark.parametrize("model_type", ["bert-test", "gpt-test"])
def test_batches_are_identical_for_0_1_and_2_workers(model_type, sample_corpus, tiny_tokenizer_dir, parameter_file,
                                                     tmp_path):
    run = prepare_run(make_args(sample_corpus, tiny_tokenizer_dir, tmp_path / "out", parameter_file, model_type))
    try:
        data = build_run_data(place_run(run, _layout(0, 2, 4)), _layout(0, 2, 4))  # rank 0 builds the dataset cache
        layout = _layout(1, 2, 4)  # the second of two processes: its slice of each global batch
        # what the loop built in its own process before the pipeline existed
        expected = []
        for step in range(3):
            start = 40 + step * layout.global_batch_size + layout.rank_offset
            chunks = micro_batch_positions(list(range(start, start + 4)), 2)
            expected.append([data.collator([data.train_dataset[p] for p in chunk]) for chunk in chunks])
        for workers, pack in ((0, True), (1, True), (2, True), (1, False)):  # pack=False: each tensor on its own
            got = _batches(data, layout, workers, next_position=40, pack=pack)
            assert len(got) == 3
            for step_expected, step_got in zip(expected, got):
                assert len(step_got) == 2
                for want, (batch, units) in zip(step_expected, step_got):
                    assert sorted(batch) == sorted(want)
                    for key in want:
                        assert torch.equal(batch[key], want[key]), (workers, key)
                    assert units == count_units(want)
                    assert all(t.is_contiguous() for t in batch.values())
        # the collator travels to spawned workers by pickling: the copy masks the same way
        instances = [data.train_dataset[p] for p in range(8)]
        copy = pickle.loads(pickle.dumps(data.collator))
        for key, value in data.collator(instances).items():
            assert torch.equal(copy(instances)[key], value)
    finally:
        run.encoder.close()


def test_creating_the_pipeline_leaves_the_global_rng_alone(sample_corpus, tiny_tokenizer_dir, parameter_file,
                                                           tmp_path):
    run = prepare_run(make_args(sample_corpus, tiny_tokenizer_dir, tmp_path / "out", parameter_file))
    try:
        data = build_run_data(place_run(run, _layout(0, 1, 4)), _layout(0, 1, 4))
        torch.manual_seed(3)
        before = torch.get_rng_state()
        _batches(data, _layout(0, 1, 4), 1, steps=1)
        assert torch.equal(torch.get_rng_state(), before)  # dropout's stream is not moved at a start or a resume
    finally:
        run.encoder.close()


TIMINGS = ("train/tokens_per_second", "train/data_wait_fraction", "train/tflops_per_device", "train/mfu")


def _log(model_dir):
    return [json.loads(line) for line in (model_dir / "train_log.jsonl").read_text().splitlines()]


def _our_workers():
    return multiprocessing.active_children()  # DataLoader workers are multiprocessing children


def test_a_run_is_the_same_with_0_and_1_workers_and_leaves_no_worker(sample_corpus, tiny_tokenizer_dir,
                                                                    parameter_file, tmp_path):
    logs = {}
    for workers in (0, 1):
        out = tmp_path / f"w{workers}"
        train(make_args(sample_corpus, tiny_tokenizer_dir, out, parameter_file, dataloader_workers=workers))
        logs[workers] = [{k: v for k, v in row.items() if k not in TIMINGS} for row in _log(out)]
        assert not _our_workers()
    assert [r for r in logs[0] if "train/loss" in r] and logs[0] == logs[1]


def test_workers_are_shut_down_when_the_run_fails(sample_corpus, tiny_tokenizer_dir, parameter_file, tmp_path,
                                                  monkeypatch):
    from lmpretrain import trainer
    from tests.inject_nan import nan_from

    monkeypatch.setattr(trainer, "loss_hook", nan_from(2))
    with pytest.raises(UserError, match="NaN/inf for 2 consecutive steps"):
        train(make_args(sample_corpus, tiny_tokenizer_dir, tmp_path / "out", parameter_file, dataloader_workers=2,
                        max_nonfinite_steps=2))
    assert not _our_workers()


def test_bad_worker_count_is_one_error(sample_corpus, tiny_tokenizer_dir, parameter_file, tmp_path):
    with pytest.raises(UserError, match="--dataloader_workers must be 0"):
        prepare_run(make_args(sample_corpus, tiny_tokenizer_dir, tmp_path / "out", parameter_file,
                              dataloader_workers=-1))


def test_a_packed_batch_gives_back_each_tensor(monkeypatch):
    """What a worker sends: every dtype and shape the collators make (odd byte counts, an empty tensor, bool,
    float), through shared memory, pickling to another process's view, and the DataLoader's pin-memory step."""
    from multiprocessing.reduction import ForkingPickler

    from torch.utils.data._utils.pin_memory import pin_memory

    g = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(0, 30000, (3, 7), generator=g), "flags": torch.rand(5, generator=g) > 0.5,
             "empty": torch.zeros(0, dtype=torch.long), "weights": torch.rand(2, 3, generator=g),
             "small": torch.arange(3, dtype=torch.int16), "labels": torch.full((3, 7), -100)}
    for shared in (False, True):
        packed = loader.PackedBatch.pack(batch, shared=shared)
        assert packed.buffer.is_shared() == shared
        assert packed.buffer.numel() % 8 == 0 and packed.buffer.numel() < 2 * sum(t.nbytes + 8 for t in batch.values())
        received = pickle.loads(ForkingPickler.dumps(packed))
        monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self, *a: self.clone())  # no CUDA here
        for item in (packed, received, pin_memory((packed, {"samples": 3.0}))[0]):
            out = loader.to_device(item, torch.device("cpu"))
            assert list(out) == list(batch)
            for key, tensor in batch.items():
                assert out[key].dtype == tensor.dtype and torch.equal(out[key], tensor), key
                assert out[key].is_contiguous()
        monkeypatch.undo()


def test_default_worker_count():
    assert default_dataloader_workers(1, cores=2) == 1
    assert default_dataloader_workers(2, cores=2) == 0
    assert default_dataloader_workers(1, cores=1) == 0
    assert default_dataloader_workers(1, cores=64) == 2
    assert default_dataloader_workers(8, cores=16) == 1


_PARENT = """
import sys, time, torch
from lmpretrain.data.loader import StepBatches
from tests.test_input_pipeline import _layout

class Slow:
    def __len__(self): return 10 ** 9
    def __getitem__(self, p): time.sleep(0.01); return {"input_ids": torch.ones(4, dtype=torch.long), "position": p}

def collate(items):
    return {"input_ids": torch.stack([i["input_ids"] for i in items]),
            "attention_mask": torch.ones(len(items), 4, dtype=torch.long)}

with StepBatches(Slow(), collate, _layout(0, 1, 2), next_position=0, steps=10 ** 6, accumulation=1,
                 workers=2) as batches:
    batches.next_step()
    print(" ".join(str(w.pid) for w in batches._iterator._workers), flush=True)
    time.sleep(600)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_die_with_a_killed_parent():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", _PARENT], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2 and all(alive(p) for p in pids)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        # the workers check on their parent every few seconds; on a loaded machine a check can come much later, so
        # the bound only catches workers that never go (it failed at 20 s beside a second suite and four helpers)
        deadline = time.monotonic() + 300
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(alive(p) for p in pids)
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_no_host_synchronisation_inside_the_micro_batches(sample_corpus, tiny_tokenizer_dir, parameter_file,
                                                         tmp_path, monkeypatch):
    """The loop's part of each micro-batch (weighted loss, backward, device-side accumulation of loss and metrics)
    runs under ``torch.cuda.set_sync_debug_mode("error")``: a synchronisation there raises. The models' forward is
    left out here; the next test takes in a masked LM's heads."""
    _train_strictly(sample_corpus, tiny_tokenizer_dir, parameter_file, tmp_path, monkeypatch, "bert-test")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_no_host_synchronisation_from_the_backbone_on(sample_corpus, tiny_tokenizer_dir, parameter_file, tmp_path,
                                                      monkeypatch):
    """With the masked positions gathered by the collator's index list (on a GPU), a masked LM's heads (MLM on the
    masked rows, NSP), its loss terms and the whole backward run strictly too: strict from the output of the
    transformers backbone (whose own attention-mask preparation is transformers' business) to the clip."""
    _train_strictly(sample_corpus, tiny_tokenizer_dir, parameter_file, tmp_path, monkeypatch, "bert-test",
                    from_backbone=True)
    # a causal LM: its head on the positions with a next token, gathered the same way
    _train_strictly(sample_corpus, tiny_tokenizer_dir, parameter_file, tmp_path / "gpt", monkeypatch, "gpt-test",
                    from_backbone=True, micro_batches=4)
    # ELECTRA: the generator's head, the replacement draws (no data-dependent size with the gathered index), the
    # discriminator's head and the weighted RTD loss; lenient only inside each transformers backbone
    _train_strictly(sample_corpus, tiny_tokenizer_dir, parameter_file, tmp_path / "electra", monkeypatch,
                    "electra-test", from_backbone=True, micro_batches=4)


def _train_strictly(sample_corpus, tiny_tokenizer_dir, parameter_file, tmp_path, monkeypatch, model_type,
                    from_backbone=False, micro_batches=12):
    from lmpretrain import trainer

    original_loss, original_wrap, make = trainer.weighted_loss, trainer._wrap, trainer.make_precision
    inside = {"micro_batches": 0}

    def strict_loss(*args, **kwargs):  # the forward has run: from here to the clip, nothing may wait
        inside["micro_batches"] += 1
        torch.cuda.set_sync_debug_mode("error")
        return original_loss(*args, **kwargs)

    def lenient_forward(module, args):
        if module.training:
            torch.cuda.set_sync_debug_mode(0)

    def strict_heads(module, args, output):
        if module.training:
            torch.cuda.set_sync_debug_mode("error")

    def wrap(*args, **kwargs):
        module = original_wrap(*args, **kwargs)
        module.register_forward_pre_hook(lenient_forward)
        if from_backbone:  # lenient inside every transformers backbone (its own mask preparation), strict after
            for part in module.hf_models().values():
                part.base_model.register_forward_pre_hook(lenient_forward)
                part.base_model.register_forward_hook(strict_heads)
        return module

    class StrictPrecision:
        def __init__(self, precision):
            self._precision = precision

        def __getattr__(self, name):
            return getattr(self._precision, name)

        def clip(self, *args, **kwargs):  # the micro-batches are done: the step's one read follows
            torch.cuda.set_sync_debug_mode(0)
            return self._precision.clip(*args, **kwargs)

    monkeypatch.setattr(trainer, "make_precision", lambda *a: StrictPrecision(make(*a)))
    monkeypatch.setattr(trainer, "weighted_loss", strict_loss)
    monkeypatch.setattr(trainer, "_wrap", wrap)
    try:
        train(make_args(sample_corpus, tiny_tokenizer_dir, tmp_path / "out", parameter_file, model_type,
                        device="cuda", dataloader_workers=1, bf16=True))
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert inside["micro_batches"] == micro_batches  # bert-test: 6 steps x 2 micro-batches
