"""--fp16_type levels and bf16 through torch.amp: what each level builds, bf16 training on the CPU, fp16 on a GPU."""

import pytest
import torch

from lmpretrain.errors import UserError
from lmpretrain.precision import make_precision
from lmpretrain.trainer import train
from tests.test_run_pretraining import losses, make_args, parameter_file  # noqa: F401  (module fixture)

CPU, GPU = torch.device("cpu"), torch.device("cuda")


def test_levels_map_to_torch_amp():
    assert make_precision(0, False, CPU).autocast_dtype is None
    bf16 = make_precision(0, True, CPU)
    assert (bf16.autocast_dtype, bf16.model_dtype, bf16.scaler) == (torch.bfloat16, torch.float32, None)
    with pytest.raises(UserError, match="needs a CUDA GPU"):
        make_precision(1, False, CPU)
    with pytest.raises(UserError, match="exclude each other"):
        make_precision(1, True, CPU)
    with pytest.raises(UserError, match="must be 0, 1, 2 or 3"):
        make_precision(4, False, CPU)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("level, autocast, model_dtype, scaled", [
    (1, torch.float16, torch.float32, True), (2, torch.float16, torch.float32, True),
    (3, None, torch.float16, False)])
def test_gpu_levels(level, autocast, model_dtype, scaled):
    p = make_precision(level, False, GPU)
    assert (p.autocast_dtype, p.model_dtype, p.scaler is not None) == (autocast, model_dtype, scaled)


def test_bf16_trains_on_the_cpu_and_follows_the_fp32_curve(sample_corpus, tiny_tokenizer_dir, parameter_file,  # noqa: F811
                                                            tmp_path):
    fp32, bf16 = tmp_path / "fp32", tmp_path / "bf16"
    train(make_args(sample_corpus, tiny_tokenizer_dir, fp32, parameter_file, "bert-test"))
    train(make_args(sample_corpus, tiny_tokenizer_dir, bf16, parameter_file, "bert-test", bf16=True))
    a, b = losses(fp32), losses(bf16)
    assert sorted(a) == sorted(b)
    for step in a:  # bf16 keeps 8 bits of mantissa: the same curve within a few percent, and not bit-identical
        assert b[step] == pytest.approx(a[step], rel=0.05)
    assert any(a[s] != b[s] for s in a)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("level", [1, 2, 3])
def test_fp16_levels_train_on_a_gpu(level, sample_corpus, tiny_tokenizer_dir, parameter_file, tmp_path):  # noqa: F811
    out = tmp_path / f"fp16-{level}"
    summary = train(make_args(sample_corpus, tiny_tokenizer_dir, out, parameter_file, "bert-test", fp16_type=level,
                              device="cuda"))
    curve = losses(out)
    assert all(v == v for v in curve.values()) and summary["step"] == 8


def test_fp16_loss_scaler_skips_overflow_steps_and_counts_them(sample_corpus, tiny_tokenizer_dir, tmp_path,
                                                             monkeypatch):
    """The --fp16_type 1/2 path (autocast + GradScaler), run on the CPU's fp16 autocast in place of a GPU: steps
    whose gradients overflow are skipped by the scaler, counted, and leave the weights as they were."""
    import json

    from safetensors.torch import load_file

    from lmpretrain import trainer
    from lmpretrain.precision import Precision
    from tests.inject_nan import nan_from
    from tests.test_run_pretraining import BASE

    params = tmp_path / "parameter.json"
    params.write_text(json.dumps({"bert-test": {**BASE, "save-steps": 1, "save-total-limit": 20}}))
    monkeypatch.setattr(trainer, "make_precision", lambda *a: Precision(
        "fp16 (level 1)", torch.float16, torch.float32, torch.amp.GradScaler("cpu"), "cpu"))
    monkeypatch.setattr(trainer, "loss_hook", nan_from(6))
    out = tmp_path / "out"
    summary = train(make_args(sample_corpus, tiny_tokenizer_dir, out, params, "bert-test", max_nonfinite_steps=10))
    assert summary["skipped_steps"] == 3  # steps 6, 7, 8
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["train/skipped_steps"] for r in log if "train/skipped_steps" in r] == [0, 0, 0, 0, 0, 1, 2, 3]
    scale = {s: torch.load(out / f"checkpoint-{s}" / "training_state.pt", weights_only=False)["scaler"]["scale"]
             for s in (5, 8)}
    assert scale[8] == scale[5] / 8  # halved at each overflow
    before, after = load_file(out / "checkpoint-5" / "model.safetensors"), load_file(out / "model.safetensors")
    for name in before:
        torch.testing.assert_close(after[name], before[name], rtol=0, atol=0)
