"""Sharded training with FSDP2 (``--fsdp``) on the CPU with gloo on loopback: the same losses as one unsharded process
over the same global batch, tied and shared weights kept tied, sharded checkpoints written per rank and resumed on
another number of processes, the final model a plain HF dir."""

import json
import shutil
import subprocess
import sys

import pytest
import torch
import transformers
from safetensors.torch import load_file

from lmpretrain.run_config import parse_args
from lmpretrain.sharding import mesh_shape
from tests.test_distributed_training import PRESET, check, env, free_port, losses, script_args, torchrun

STEPS = (1, 2, 3, 4)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, sample_corpus, tiny_tokenizer_dir):
    root = tmp_path_factory.mktemp("fsdp")
    params = root / "parameter.json"
    params.write_text(json.dumps({
        "bert-single": {**PRESET, "batch-size": {"-1": 8}},
        "albert-single": {**PRESET, "batch-size": {"-1": 8}, "embedding-size": 16},
        "bert-sharded": {**PRESET, "batch-size": {"-1": 8}, "fsdp": "full_shard"},
        "bert-accumulated": {**PRESET, "batch-size": {"-1": 8}, "gradient-accumulation-steps": 2},
    }))
    return {"root": root, "params": params, "corpus": sample_corpus, "tokenizer": tiny_tokenizer_dir,
            "cache": root / "cache"}


def one_process(setup, out, model_type, *extra):
    proc = subprocess.run([sys.executable, *script_args(setup, out, model_type, *extra)], env=env(),
                          capture_output=True, text=True, timeout=600)
    check(proc)
    return proc


def two_processes(setup, out, model_type, *extra):
    proc = subprocess.run(torchrun("--nproc_per_node", "2", "--master_port", str(free_port()),
                                   *script_args(setup, out, model_type, *extra)),
                          env=env(), capture_output=True, text=True, timeout=600)
    check(proc)
    return proc


def assert_same_losses(reference, other, steps=STEPS):
    a, b = losses(reference), losses(other)
    assert sorted(b) == list(steps), b
    for step in steps:
        assert b[step] == pytest.approx(a[step], rel=1e-5, abs=1e-6), (step, a, b)


def assert_same_final_model(reference, other, folder=""):
    wa, wb = load_file(reference / folder / "model.safetensors"), load_file(other / folder / "model.safetensors")
    assert set(wa) == set(wb)
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], rtol=1e-4, atol=1e-6)


@pytest.fixture(scope="module")
def single(setup):
    out = setup["root"] / "single"
    one_process(setup, out, "bert-single")
    return out


@pytest.fixture(scope="module")
def full_shard(setup):
    out = setup["root"] / "full_shard"
    two_processes(setup, out, "bert-single", "--fsdp", "full_shard")
    return out


def test_the_flag_the_preset_and_use_deepspeed_resolve_into_the_run_description(setup, caplog):
    from lmpretrain.errors import UserError
    from lmpretrain.models import get_family
    from lmpretrain.models.presets import load_parameters
    from lmpretrain.run_description import describe

    def resolved(model_type, *flags):
        args = parse_args(["--input_file", "x", "--tokenizer_dir", "t", "--model_dir", "m", "--parameter_file",
                           str(setup["params"]), "--model_type", model_type, *flags])
        params = load_parameters(setup["params"], model_type)
        description = describe(args, params, get_family(params.family))
        assert description.model.gradient_checkpointing == ("--gradient_checkpointing" in flags)
        return description.system.fsdp

    assert resolved("bert-single") is None  # DDP, as before
    assert resolved("bert-sharded") == "full_shard"
    assert resolved("bert-sharded", "--fsdp", "hybrid_shard") == "hybrid_shard"  # the flag over the preset
    assert resolved("bert-single", "--gradient_checkpointing") is None
    with caplog.at_level("INFO"):
        assert resolved("bert-single", "--use_deepspeed") == "shard_grad_op"
    assert "--use_deepspeed: training with PyTorch's FSDP2 in shard_grad_op mode" in caplog.text
    with pytest.raises(UserError, match="--use_deepspeed means --fsdp shard_grad_op"):
        resolved("bert-single", "--use_deepspeed", "--fsdp", "full_shard")
    bad = setup["root"] / "bad.json"
    bad.write_text(json.dumps({"bert-bad": {**PRESET, "batch-size": {"-1": 8}, "fsdp": "zero3"}}))
    with pytest.raises(UserError, match=r"bert-bad\.fsdp.*'zero3'"):
        load_parameters(bad, "bert-bad")


def test_mesh_of_each_mode():
    from types import SimpleNamespace

    two_nodes = SimpleNamespace(world_size=8, num_nodes=2)
    assert mesh_shape("full_shard", two_nodes) == (8,) and mesh_shape("shard_grad_op", two_nodes) == (8,)
    assert mesh_shape("hybrid_shard", two_nodes) == (2, 4)  # replicated across nodes, sharded inside one
    assert mesh_shape("no_shard", two_nodes) == (8, 1)


def test_full_shard_on_two_processes_matches_one_unsharded_process(single, full_shard):
    assert_same_losses(single, full_shard)
    shards = full_shard / "checkpoint-2" / "sharded"
    assert {p.name for p in shards.iterdir()} >= {".metadata", "__0_0.distcp", "__1_0.distcp"}  # one file per rank
    assert not (full_shard / "checkpoint-2" / "model.safetensors").exists()
    assert (full_shard / "checkpoint-2" / "config.json").is_file()
    assert_same_final_model(single, full_shard)  # the export: gathered once, a plain HF dir
    loaded = transformers.AutoModelForPreTraining.from_pretrained(full_shard)
    assert loaded.get_output_embeddings().weight is loaded.get_input_embeddings().weight


def test_sharded_checkpoint_resumes_on_one_process(setup, single, full_shard):
    out = setup["root"] / "two_to_one"
    out.mkdir()
    shutil.copytree(full_shard / "checkpoint-2", out / "checkpoint-2")
    one_process(setup, out, "bert-single", "--fsdp", "full_shard", "--do_continue")
    assert_same_losses(single, out, steps=(3, 4))
    assert_same_final_model(single, out)


def test_one_process_checkpoint_resumes_sharded_on_two(setup, single):
    """The preset's fsdp in one process: nothing to shard, the checkpoints written by DCP all the same; two processes
    then resume it, resharded."""
    first = setup["root"] / "one_sharded"
    proc = one_process(setup, first, "bert-sharded", "--train_steps", "2")
    assert "nothing to shard" in proc.stderr
    assert (first / "checkpoint-2" / "sharded" / ".metadata").is_file()
    out = setup["root"] / "one_to_two"
    out.mkdir()
    shutil.copytree(first / "checkpoint-2", out / "checkpoint-2")
    two_processes(setup, out, "bert-sharded", "--do_continue")
    assert_same_losses(single, out, steps=(3, 4))
    assert_same_final_model(single, out)


def test_albert_shard_grad_op_by_use_deepspeed_matches_one_process(setup):
    """ALBERT's layer runs at every depth: one set of weights, in the root unit, kept shared."""
    reference, sharded = setup["root"] / "albert_single", setup["root"] / "albert_zero2"
    one_process(setup, reference, "albert-single")
    proc = two_processes(setup, sharded, "albert-single", "--use_deepspeed")
    assert proc.stderr.count("--use_deepspeed: training with PyTorch's FSDP2 in shard_grad_op mode") == 1
    assert_same_losses(reference, sharded)
    assert_same_final_model(reference, sharded)
    loaded = transformers.AutoModelForPreTraining.from_pretrained(sharded)
    assert loaded.get_output_embeddings().weight is loaded.get_input_embeddings().weight


def test_shard_grad_op_with_accumulation_reduces_once_a_step_and_matches_one_process(setup, single):
    """Two micro-batches a process, the reduce-scatter deferred to the last (sharding.defer_gradient_sync): the
    losses and final weights of one process over the same global batch without accumulation."""
    out = setup["root"] / "zero2_accumulated"
    two_processes(setup, out, "bert-accumulated", "--fsdp", "shard_grad_op")
    assert_same_losses(single, out)
    assert_same_final_model(single, out)


def test_continued_pretraining_sharded_on_two_processes_matches_one_process(setup, single):
    """--pretrained_model_name_or_path under --fsdp: rank 0 loads the model, rank 1 builds its structure from the
    config on the meta device and receives rank 0's weights (sharding.build_on_rank0): the losses and final weights
    of one unsharded process continuing from the same model."""
    reference, sharded = setup["root"] / "continued_single", setup["root"] / "continued_sharded"
    flags = ("--pretrained_model_name_or_path", str(single), "--train_steps", "2")
    one_process(setup, reference, "bert-single", *flags)
    proc = two_processes(setup, sharded, "bert-single", "--fsdp", "full_shard", *flags)
    assert f"continued pretraining from {single}" in proc.stderr
    assert_same_losses(reference, sharded, steps=(1, 2))
    assert losses(sharded)[1] < losses(single)[1]  # step 1 starts from the trained model, not from a new one
    assert_same_final_model(reference, sharded)


def test_frozen_kept_rows_stay_frozen_under_full_shard_as_in_one_process(setup, single, tmp_path_factory):
    """flozen-layers with vocabulary adaptation under --fsdp full_shard (and no_shard) on 2 processes:
    fully_shard replaces the embedding parameter by a DTensor one, so the row mask (train_rows_only's hook and
    ``frozen_rows``) is set again on it (sharding._keep_trained_rows): the kept rows stay bit for bit, the new rows
    train (no weight decay either), and the final model is the one of one unsharded process."""
    from lmpretrain.prepare import vocabulary_plan
    from lmpretrain.tokenization import TokenizerSpec, train_tokenizer

    root = tmp_path_factory.mktemp("fsdp-frozen")
    other = root / "tokenizer"
    train_tokenizer([str(setup["corpus"])], other, TokenizerSpec(mecab_dic_type="none", tokenizer_type="wordpiece",
                                                                 vocab_size=1200, min_frequency=1,
                                                                 limit_alphabet=400, num_unused_tokens=7),
                    num_workers=1)
    params = root / "parameter.json"
    params.write_text(json.dumps({"bert-frozen": {**PRESET, "batch-size": {"-1": 8}, "train-steps": 2,
                                                  "save-steps": 2, "learning-rate": 5e-3, "weight-decay": 0.1,
                                                  "resize-embeddings": True, "flozen-layers": 1}}))
    frozen_setup = {**setup, "params": params, "tokenizer": other, "cache": root / "cache"}
    flags = ("--pretrained_model_name_or_path", str(single))
    reference, sharded, replicated = root / "single", root / "sharded", root / "no_shard"
    one_process(frozen_setup, reference, "bert-frozen", *flags)
    two_processes(frozen_setup, sharded, "bert-frozen", "--fsdp", "full_shard", *flags)
    two_processes(frozen_setup, replicated, "bert-frozen", "--fsdp", "no_shard", *flags)  # a (2, 1) mesh
    plan = vocabulary_plan(str(single), other)
    name = "bert.embeddings.word_embeddings.weight"
    start = plan.apply(load_file(single / "model.safetensors")[name])
    kept = ~plan.trainable_rows()
    assert kept.any() and (~kept).any()
    for out in (reference, sharded, replicated):
        weights = load_file(out / "model.safetensors")[name]
        assert torch.equal(weights[kept], start[kept]), out  # frozen exactly (no weight decay either)
        assert not torch.equal(weights[~kept], start[~kept]), out  # the new rows trained
    for out in (sharded, replicated):
        assert_same_losses(reference, out, steps=(1, 2))
        assert_same_final_model(reference, out)


@pytest.mark.slow
def test_compiled_sharded_run_follows_the_uncompiled_one_and_logs_mfu(setup, full_shard):
    """--compile with --fsdp: each block compiled before it is sharded; the losses are the uncompiled sharded run's
    to float tolerance (fused kernels reorder sums; asserted at 1e-4 relative, passed); MFU and the data
    wait share are logged from the whole model's FLOPs on each process's own micro-batches."""
    out = setup["root"] / "full_shard_compiled"
    proc = two_processes(setup, out, "bert-single", "--fsdp", "full_shard", "--compile", "--peak_tflops", "2")
    assert "--compile with --fsdp: 2 blocks compiled one by one" in proc.stderr
    a, b = losses(full_shard), losses(out)
    assert sorted(b) == list(STEPS), b
    for step in STEPS:
        assert b[step] == pytest.approx(a[step], rel=1e-4), (step, a, b)
    logged = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    windows = [r for r in logged if "train/loss" in r]
    assert len(windows) == len(STEPS)
    for window in windows:
        assert window["train/mfu"] == pytest.approx(window["train/tflops_per_device"] / 2)
        assert 0 <= window["train/data_wait_fraction"] < 1
    assert_same_final_model(full_shard, out)  # the export's keys and weights: no "_orig_mod." from compilation


# --- the wrapping itself, in two spawned processes: every family's ties, every mode and mesh ------------------------
TINY = {"number-of-layers": 2, "hidden-size": 32, "sequence-length": 16, "ffn-inner-hidden-size": 64,
        "attention-heads": 4, "warmup-steps": 1, "learning-rate": 1e-3, "batch-size": {"-1": 4}, "train-steps": 2,
        "dropout": 0.0, "attention-dropout": 0.0}
CASES = [("bert", "full_shard", None), ("electra", "full_shard", None), ("albert", "shard_grad_op", None),
         ("debertav3", "full_shard", None), ("llama", "full_shard", None), ("bert", "no_shard", None),
         ("bert", "hybrid_shard", (1, 2)), ("bert", "hybrid_shard", (2, 1)),
         ("electra", "full_shard", None, "checkpointing"), ("gpt", "shard_grad_op", None, "checkpointing")]


def case_name(family, mode, mesh, *checkpointing) -> str:
    return " ".join([family, mode, str(tuple(mesh) if mesh else None), *checkpointing])


def tied_groups(model) -> list[list[str]]:
    """The names that share one parameter object (tied embeddings and heads, ELECTRA's shared embeddings)."""
    names = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(name)
    return sorted(sorted(group) for group in names.values() if len(group) > 1)


def _sharded_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import os

    import torch.distributed as dist

    from lmpretrain.distributed import Layout
    from lmpretrain.models import build_model, parse_preset
    from lmpretrain.sharding import gathered_model, shard_model, shard_units
    from tests.test_registry import a_batch

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    layout = Layout(rank, world, rank, world, 0, 1, 4, 2, 2 * rank, 4, torch.device("cpu"))
    results = {}
    from lmpretrain.sharding import checkpoint_activations

    for family, mode, mesh, *checkpointing in CASES:
        params = parse_preset(f"{family}-test", dict(TINY), "test")

        def build(params=params):
            return build_model(params, vocab_size=50, pad_token_id=0, seed=0, eos_token_id=3)

        reference, model = build(), build()
        groups, units = tied_groups(reference), len(shard_units(model))
        if checkpointing:
            checkpoint_activations(model)
        shard_model(model, mode, layout, mesh_dims=mesh)
        losses, reference_losses = [], []
        for net, record, share in ((reference, reference_losses, False), (model, losses, True)):
            optimizer = torch.optim.AdamW(net.parameters(), lr=1e-2)
            for step in range(3):
                torch.manual_seed(100 + step)
                batch = a_batch(net.family)  # two sequences: one per process when sharded
                if share:
                    batch = {k: v[rank:rank + 1] for k, v in batch.items()}
                out = net(batch)
                loss = sum(out[t.name] for t in net.family.loss_terms)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), 0.5)  # DTensor gradients when sharded
                optimizer.step()
                optimizer.zero_grad()
                value = loss.detach().clone()
                if share:
                    dist.all_reduce(value)
                    value /= world
                record.append(float(value))
        whole = gathered_model(model, build, is_main=rank == 0)
        if rank == 0:
            gathered, expected = whole.state_dict(), reference.state_dict()
            worst = max(float((gathered[k] - expected[k]).abs().max()) for k in expected)
            results[case_name(family, mode, mesh, *checkpointing)] = {
                "losses": losses, "reference": reference_losses, "worst": worst, "units": units,
                "ties": tied_groups(model) == groups, "tied_after": tied_groups(whole) == groups, "groups": groups,
                # DeBERTa-v3's GDES: the discriminator reads the generator's embedding module itself
                "gdes": family != "debertav3" or
                model.gdes.shared is model.generator.deberta.embeddings.word_embeddings}
    results["accumulation"] = _accumulation_case(rank, layout)
    if rank == 0:
        (__import__("pathlib").Path(out_dir) / "results.json").write_text(json.dumps(results))
    dist.destroy_process_group()


def _accumulation_case(rank: int, layout) -> dict:
    """shard_grad_op, two micro-batches: the gradients with the reduce-scatter deferred to the last one against one
    reduce-scatter per micro-batch; and the FLOPs a sharded model counts (MFU's numerator) against the whole model's."""
    from lmpretrain.models import BatchShape, build_model, parse_preset
    from lmpretrain.sharding import defer_gradient_sync, full_tensor, shard_model
    from tests.test_registry import a_batch

    params = parse_preset("llama-test", dict(TINY), "test")
    reference = build_model(params, vocab_size=50, pad_token_id=0, seed=0, eos_token_id=3)
    grads, unsynced = [], []
    for defer in (False, True):
        model = shard_model(build_model(params, vocab_size=50, pad_token_id=0, seed=0, eos_token_id=3),
                            "shard_grad_op", layout)
        batch = a_batch(model.family)
        for i, row in enumerate((rank, 1 - rank)):  # this process's two micro-batches
            if defer:
                defer_gradient_sync(model, defer=i == 0)
            model({k: v[row:row + 1] for k, v in batch.items()})["lm_loss"].backward()
            if defer and i == 0:  # nothing reduced nor resharded yet: whole local gradients on gathered weights
                unsynced.append(all(type(p).__name__ != "DTensor" and type(p.grad).__name__ != "DTensor" and
                                    p.grad.shape == p.shape for p in model.parameters()))
        grads.append({n: full_tensor(p.grad) for n, p in model.named_parameters()})
    shape = BatchShape(2, 16, predicted=30)
    return {"same": all(torch.allclose(grads[1][n], g, rtol=1e-5, atol=1e-7) for n, g in grads[0].items()),
            "unsynced": unsynced == [True], "resharded": all(type(p).__name__ == "DTensor" for p in model.parameters()),
            "flops": [model.train_flops(shape), reference.train_flops(shape)]}


@pytest.fixture(scope="module")
def sharded_cases(tmp_path_factory):
    import torch.multiprocessing as mp

    out = tmp_path_factory.mktemp("sharded_cases")
    mp.start_processes(_sharded_worker, args=(2, free_port(), str(out)), nprocs=2, start_method="spawn")
    return json.loads((out / "results.json").read_text())


@pytest.mark.parametrize("case", [case_name(*case) for case in CASES])
def test_each_family_trains_sharded_as_unsharded_with_its_ties_kept(sharded_cases, case):
    result = sharded_cases[case]
    assert result["losses"] == pytest.approx(result["reference"], rel=1e-5, abs=1e-6), result
    # the gathered weights after three AdamW steps of lr 1e-2: the unsharded model's, to 3% of one step (Adam
    # magnifies reduction-order noise in near-zero gradients)
    assert result["worst"] < 3e-4, result
    assert result["ties"] and result["tied_after"] and result["gdes"], result  # one parameter object per tie
    assert result["units"] >= (0 if case.startswith("albert") else 2), result  # blocks sharded on their own
    if case.startswith(("bert", "electra", "albert")):
        assert result["groups"], result  # there were ties to keep


def test_deferred_gradient_sync_gives_the_same_gradients_and_flops_count_the_whole_model(sharded_cases):
    result = sharded_cases["accumulation"]
    assert result["unsynced"] and result["same"] and result["resharded"], result
    flops, whole = result["flops"]
    assert flops == whole > 0  # a sharded model counts the whole model's FLOPs for its own micro-batch


# --- activation checkpointing, unsharded: every family -----------------------------------------------------------
@pytest.mark.parametrize("family", __import__("lmpretrain.models", fromlist=["family_names"]).family_names())
def test_gradient_checkpointing_gives_the_same_step_with_fewer_saved_activations(family):
    from lmpretrain.models import build_model, parse_preset
    from lmpretrain.sharding import checkpoint_activations
    from tests.test_registry import a_batch

    params = parse_preset(f"{family}-test", dict(TINY), "test")
    results = []
    for checkpointing in (False, True):
        model = build_model(params, vocab_size=50, pad_token_id=0, seed=0, eos_token_id=3).train()
        if checkpointing:
            checkpoint_activations(model)
        saved = []

        def pack(tensor, saved=saved):
            saved.append(tensor.numel())
            return tensor

        torch.manual_seed(100)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            out = model(a_batch(model.family))
            loss = sum(out[t.name] for t in model.family.loss_terms)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((float(loss.detach()), grads, sum(saved)))
    (loss, grads, saved), (loss_ckpt, grads_ckpt, saved_ckpt) = results
    assert loss_ckpt == loss
    assert set(grads_ckpt) == set(grads)
    for name, grad in grads.items():
        torch.testing.assert_close(grads_ckpt[name], grad, rtol=1e-5, atol=1e-7)
    assert saved_ckpt < saved  # the blocks' activations were not kept: recomputed in the backward


# --- on CUDA (scripts/gpu_checks.sh runs these where a GPU is lent) ------------------------------------------------
def _cuda_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import os
    from pathlib import Path

    import torch.distributed as dist

    from lmpretrain.distributed import Layout
    from lmpretrain.models import build_model, parse_preset
    from lmpretrain.sharding import compile_blocks, defer_gradient_sync, shard_model
    from tests.test_registry import a_batch

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    device = torch.device("cuda", rank)
    torch.cuda.set_device(device)
    dist.init_process_group("nccl", rank=rank, world_size=world, device_id=device)
    layout = Layout(rank, world, rank, world, 0, 1, 2 * world, 2, 2 * rank, 2 * world, device)
    params = parse_preset("llama-test", {**TINY, "number-of-layers": 3}, "test")
    runs = {}
    for name, mode, compiled in (("eager", "full_shard", False), ("compiled", "full_shard", True),
                                 ("zero2_compiled", "shard_grad_op", True)):
        model = build_model(params, vocab_size=50, pad_token_id=0, seed=0, eos_token_id=3).to(device)
        if compiled:
            compile_blocks(model)
        shard_model(model, mode, layout)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        batch = {k: v.to(device) for k, v in a_batch(model.family).items()}
        losses = []
        for _ in range(3):
            for i in range(2):  # two micro-batches (the same sequences): the reduce-scatter deferred under ZeRO-2
                if mode == "shard_grad_op":
                    defer_gradient_sync(model, defer=i == 0)
                loss = model(batch)["lm_loss"] / 2
                loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(float(loss.detach()) * 2)
        runs[name] = losses
    if rank == 0:
        Path(out_dir, "cuda.json").write_text(json.dumps(runs))
    dist.destroy_process_group()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_compiled_blocks_shard_on_cuda_with_the_eager_losses(tmp_path):
    """FSDP2 on NCCL (every GPU there is, up to 2), per-block torch.compile (inductor's GPU kernels) against eager,
    and shard_grad_op's deferred reduce-scatter: the same losses to float tolerance."""
    import torch.multiprocessing as mp

    world = min(2, torch.cuda.device_count())
    mp.start_processes(_cuda_worker, args=(world, free_port(), str(tmp_path)), nprocs=world, start_method="spawn")
    runs = json.loads((tmp_path / "cuda.json").read_text())
    for name in ("compiled", "zero2_compiled"):
        assert runs[name] == pytest.approx(runs["eager"], rel=1e-3), runs


# --- the low-memory build (sharding.build_on_rank0 / shard_from_rank0): rank 0 builds, the others on meta -----------
# Llama with tied embeddings (a tie and RoPE's non-persistent inverse frequencies), BERT (tied head, position ids),
# ELECTRA (shared embeddings), DeBERTa-v3 (GDES), ALBERT (a shared layer in the root unit), and Llama continued from
# a saved model (rank 0 loads it; the others build the structure from its config); ELECTRA with activation
# checkpointing applied before sharding, as the trainer does; a 2x1 hybrid mesh and no_shard (GPT, tied head):
# replicated placements take the whole tensor
RANK0_CASES = [("llama", {"tie-word-embeddings": True}, False, "full_shard", None),
               ("bert", {}, False, "full_shard", None), ("electra", {}, False, "full_shard", None),
               ("debertav3", {}, False, "shard_grad_op", None), ("albert", {}, False, "full_shard", None),
               ("llama", {}, True, "full_shard", None), ("bert", {}, False, "hybrid_shard", (2, 1)),
               ("gpt", {}, False, "no_shard", None)]


def rank0_case_name(family, options, pretrained, mode, mesh) -> str:
    return " ".join([family, *options, "pretrained" * pretrained, mode, str(mesh or "")]).replace("  ", " ").strip()


def _rank0_build_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import os
    from pathlib import Path

    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    from lmpretrain.distributed import Layout
    from lmpretrain.models import build_model, parse_preset
    from lmpretrain.sharding import build_on_rank0, checkpoint_activations, shard_from_rank0
    from tests.test_registry import a_batch

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    layout = Layout(rank, world, rank, world, 0, 1, 4, 2, 2 * rank, 4, torch.device("cpu"))
    results = {}
    for family, options, pretrained, mode, mesh in RANK0_CASES:
        params = parse_preset(f"{family}-test", {**TINY, **options}, "test")
        pretrained_dir = str(Path(out_dir, "pretrained")) if pretrained else None

        def build(params=params, pretrained_dir=pretrained_dir, vocab=51 if family == "electra" else 50):
            return build_model(params, vocab_size=vocab, pad_token_id=0, seed=0, eos_token_id=3,
                               pretrained_dir=pretrained_dir)  # ELECTRA: 51 rows, shards of 26 and 25 (padded)

        reference = build()  # today's build, on every rank
        rng_after_build = torch.get_rng_state()
        torch.manual_seed(12345)  # a state the low-memory build must leave behind it: rank 0's after its build
        model = build_on_rank0(build, layout)
        materialised = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers())
                           if t.device.type != "meta")
        if family == "electra":  # the trainer's order: activation checkpointing on the built model, then sharding
            checkpoint_activations(model)
        rng_same = torch.equal(torch.get_rng_state(), rng_after_build)
        shard_from_rank0(model, mode, layout, mesh_dims=mesh)
        sharded = all(type(p).__name__ == "DTensor" for p in model.parameters())
        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))  # on every rank
        expected = reference.state_dict()
        buffers, reference_buffers = dict(model.named_buffers()), dict(reference.named_buffers())
        batch = a_batch(model.family)
        torch.manual_seed(7)
        out = model(batch)
        torch.manual_seed(7)
        reference_out = reference(batch)
        terms = [t.name for t in model.family.loss_terms if t.name in out]
        results.setdefault(rank0_case_name(family, options, pretrained, mode, mesh), {})[rank] = {
            "materialised": materialised, "rng": rng_same,
            # every rank's gathered weights and its own buffers (persistent or not): the unsharded build's, exactly
            "weights": set(full) == set(expected) and all(torch.equal(full[k], expected[k]) for k in expected),
            "buffers": set(buffers) == set(reference_buffers) and
            all(torch.equal(b, reference_buffers[n]) for n, b in buffers.items()),
            "nonpersistent": sorted(n for n in buffers if n not in expected),
            "ties": tied_groups(model) == tied_groups(reference), "groups": tied_groups(reference),
            "gdes": family != "debertav3" or model.gdes.shared is model.generator.deberta.embeddings.word_embeddings,
            "sharded": sharded, "losses": [float(out[t].detach()) for t in terms],
            "reference": [float(reference_out[t].detach()) for t in terms]}
    gathered = [None] * world
    dist.all_gather_object(gathered, results)
    if rank == 0:
        merged = {case: {**by_rank, **gathered[1][case]} for case, by_rank in results.items()}
        Path(out_dir, "results.json").write_text(json.dumps(merged))
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def rank0_cases(tmp_path_factory):
    import torch.multiprocessing as mp

    from lmpretrain.models import build_model, parse_preset

    out = tmp_path_factory.mktemp("rank0_cases")
    model = build_model(parse_preset("llama-test", dict(TINY), "test"), vocab_size=50, pad_token_id=0, seed=3,
                        eos_token_id=3)
    model.save_pretrained(out / "pretrained")
    mp.start_processes(_rank0_build_worker, args=(2, free_port(), str(out)), nprocs=2, start_method="spawn")
    return {case: {int(rank): result for rank, result in by_rank.items()}
            for case, by_rank in json.loads((out / "results.json").read_text()).items()}


@pytest.mark.parametrize("case", [rank0_case_name(*case) for case in RANK0_CASES])
def test_only_rank_0_builds_the_whole_model_and_the_shards_hold_its_weights_exactly(rank0_cases, case):
    by_rank = rank0_cases[case]
    assert by_rank[1]["materialised"] == 0, by_rank  # rank 1 built on meta: not one byte of weights before sharding
    assert by_rank[0]["materialised"] > 0, by_rank
    for rank, result in by_rank.items():
        assert result["weights"] and result["buffers"], (rank, result)  # bit for bit the seeded (or loaded) build
        assert result["rng"] and result["sharded"], (rank, result)
        assert result["ties"] and result["gdes"], (rank, result)  # one parameter object per tie after to_empty
        assert result["losses"] == pytest.approx(result["reference"], rel=1e-6), (rank, result)
    if case.startswith("llama"):
        assert "model.model.rotary_emb.inv_freq" in by_rank[1]["nonpersistent"], by_rank
    if case.startswith(("llama tie", "bert", "electra", "albert", "gpt")):
        assert by_rank[0]["groups"], by_rank  # there were ties to keep
