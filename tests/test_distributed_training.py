"""Multi-process training on the CPU with gloo on loopback: the same updates as one process over the same
global batch, whatever the layout; resume across layouts; a killed rank stops the job in bounded time."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import REPO

PRESET = {"number-of-layers": 2, "hidden-size": 32, "sequence-length": 64, "ffn-inner-hidden-size": 64,
          "attention-heads": 2, "warmup-steps": 1, "learning-rate": 2e-3, "train-steps": 4, "save-steps": 1,
          "logging-steps": 1, "eval-steps": 100, "dropout": 0.0, "attention-dropout": 0.0, "eval-share": 0.1,
          "save-total-limit": 10}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, sample_corpus, tiny_tokenizer_dir):
    root = tmp_path_factory.mktemp("dist")
    params = root / "parameter.json"
    params.write_text(json.dumps({
        "bert-single": {**PRESET, "batch-size": {"-1": 8}},
        "bert-nodes": {**PRESET, "batch-size": {"0": 3, "1": 5}},
        "bert-long": {**PRESET, "batch-size": {"-1": 4}, "train-steps": 100000, "save-steps": 100000},
    }))
    return {"root": root, "params": params, "corpus": sample_corpus, "tokenizer": tiny_tokenizer_dir,
            "cache": root / "cache"}


def script_args(setup, model_dir, model_type, *extra):
    return [str(REPO / "run_pretraining.py"), "--input_file", str(setup["corpus"]), "--tokenizer_dir",
            str(setup["tokenizer"]), "--model_dir", str(model_dir), "--parameter_file", str(setup["params"]),
            "--model_type", model_type, "--cache_dir", str(setup["cache"]), "--num_workers", "1",
            "--max_eval_samples", "16", *extra]


def env():
    e = dict(os.environ, PYTHONPATH=str(REPO), GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1",
             LMP_NO_PROGRESS="1", HF_HUB_OFFLINE="1")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        e.pop(name, None)
    return e


def torchrun(*args):
    return [sys.executable, "-m", "torch.distributed.run", *args]


def losses(model_dir):
    lines = [json.loads(x) for x in (model_dir / "train_log.jsonl").read_text().splitlines()]
    return {r["step"]: r["train/loss"] for r in lines if "train/loss" in r}


def check(proc):
    assert proc.returncode == 0, proc.stderr[-4000:]


@pytest.fixture(scope="module")
def single(setup):
    out = setup["root"] / "single"
    check(subprocess.run([sys.executable, *script_args(setup, out, "bert-single")], env=env(), capture_output=True,
                         text=True, timeout=600))
    return out


def assert_same_run(reference, other, steps=(1, 2, 3, 4)):
    a, b = losses(reference), losses(other)
    for step in steps:
        assert b[step] == pytest.approx(a[step], rel=1e-5, abs=1e-6), (step, a, b)
    # weights after the first step (the gradients of step 1 through the same optimizer) and at the end
    for step in (1, 4):
        wa = load_file(reference / f"checkpoint-{step}" / "model.safetensors")
        wb = load_file(other / f"checkpoint-{step}" / "model.safetensors")
        for name in wa:
            torch.testing.assert_close(wb[name], wa[name], rtol=1e-4, atol=1e-6)


@pytest.fixture(scope="module")
def two_procs(setup):
    """The single run's job as two processes on one node (torchrun); its checkpoints are resumed below."""
    out = setup["root"] / "two_procs"
    check(subprocess.run(torchrun("--nproc_per_node", "2", "--master_port", str(free_port()),
                                  *script_args(setup, out, "bert-single")),
                         env=env(), capture_output=True, text=True, timeout=600))
    return out


def metrics(model_dir):
    """Per-term metrics of each logged step (train/mlm_loss, train/nsp_accuracy, ...; loss, rates, throughput out)."""
    lines = [json.loads(x) for x in (model_dir / "train_log.jsonl").read_text().splitlines()]
    shared = ("train/loss", "train/learning_rate", "train/grad_norm", "train/tokens_per_second",
              "train/skipped_steps", "train/data_wait_fraction", "train/tflops_per_device", "train/mfu")
    return {r["step"]: {k: v for k, v in r.items() if k.startswith("train/") and k not in shared}
            for r in lines if "train/loss" in r}


def test_two_processes_on_one_node_match_single_process(single, two_procs):
    assert_same_run(single, two_procs)
    # every per-term metric is the global batch's value, not rank 0's share (dropout is off in PRESET)
    a, b = metrics(single), metrics(two_procs)
    assert {"train/mlm_loss", "train/nsp_loss", "train/mlm_accuracy", "train/nsp_accuracy"} <= set(a[1])
    for step in (1, 2, 3, 4):
        assert set(b[step]) == set(a[step])
        for key, value in a[step].items():
            assert b[step][key] == pytest.approx(value, rel=1e-5, abs=1e-6), (step, key, a[step], b[step])


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices (NCCL)")
def test_two_gpus_with_nccl_match_single_process(setup, tmp_path):
    """NCCL reduces only CUDA tensors: the loop's CPU bookkeeping must still be summed (fp32, tolerance of GPU math)."""
    def run(out, *launcher):  # the default device is cuda:<local rank>
        command = [*(launcher or [sys.executable]), *script_args(setup, out, "bert-single")]
        check(subprocess.run(command, env=env(), capture_output=True, text=True, timeout=600))

    one, two = tmp_path / "one_gpu", tmp_path / "two_gpus"
    run(one)
    run(two, *torchrun("--nproc_per_node", "2", "--master_port", str(free_port())))
    a, b = losses(one), losses(two)
    for step in (1, 2, 3, 4):
        assert b[step] == pytest.approx(a[step], rel=1e-4), (step, a, b)


def test_two_nodes_with_different_batch_sizes_match_single_process(setup, single):
    out = setup["root"] / "two_nodes"
    port = str(free_port())
    procs = [subprocess.Popen(torchrun("--nnodes", "2", "--node_rank", str(node), "--nproc_per_node", "1",
                                       "--master_addr", "127.0.0.1", "--master_port", port,
                                       *script_args(setup, out, "bert-nodes")),
                              env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for node in (0, 1)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-4000:]
    assert_same_run(single, out)


def test_legacy_launcher_with_local_rank_flag(setup, single):
    out = setup["root"] / "legacy"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.launch", "--nproc_per_node", "2",
                           "--master_port", str(free_port()), *script_args(setup, out, "bert-single")],
                          env=env(), capture_output=True, text=True, timeout=600)
    check(proc)
    assert_same_run(single, out, steps=(1, 2))


def test_resume_two_process_checkpoint_in_one_process(setup, single, two_procs):
    import shutil

    out = setup["root"] / "resumed_single"
    out.mkdir()
    shutil.copytree(two_procs / "checkpoint-2", out / "checkpoint-2")
    check(subprocess.run([sys.executable, *script_args(setup, out, "bert-single", "--do_continue")], env=env(),
                         capture_output=True, text=True, timeout=600))
    a, b = losses(single), losses(out)
    assert sorted(b) == [3, 4]
    for step in (3, 4):
        assert b[step] == pytest.approx(a[step], rel=1e-5, abs=1e-6)


def test_two_processes_resume_together_past_a_corrupt_checkpoint(setup, single):
    """Rank 0 checks the checksums and chooses; rank 1 loads its choice (it could not tell a same-size corruption)."""
    import shutil

    out = setup["root"] / "resumed_two"
    out.mkdir()
    for step in (2, 3):
        shutil.copytree(single / f"checkpoint-{step}", out / f"checkpoint-{step}")
    weights = out / "checkpoint-3" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-100:] = bytes(100)  # same size, other bytes: only a checksum sees it
    weights.write_bytes(bytes(data))
    proc = subprocess.run(torchrun("--nproc_per_node", "2", "--master_port", str(free_port()),
                                   *script_args(setup, out, "bert-single", "--do_continue")),
                          env=env(), capture_output=True, text=True, timeout=600)
    check(proc)
    fallbacks = [line for line in proc.stderr.splitlines() if "falling back to checkpoint-2" in line]
    assert fallbacks and not any("[rank 1]" in line for line in fallbacks)  # rank 1 hashed nothing
    a, b = losses(single), losses(out)
    assert sorted(b) == [3, 4]
    for step in (3, 4):
        assert b[step] == pytest.approx(a[step], rel=1e-5, abs=1e-6)


def test_killed_rank_stops_the_other_in_bounded_time(setup):
    out = setup["root"] / "killed"
    port = str(free_port())
    procs = [subprocess.Popen(torchrun("--nnodes", "2", "--node_rank", str(node), "--nproc_per_node", "1",
                                       "--master_addr", "127.0.0.1", "--master_port", port,
                                       *script_args(setup, out, "bert-long", "--peer_timeout", "10")),
                              env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
             for node in (0, 1)]
    deadline = time.time() + 300
    while not (out / "train_log.jsonl").is_file() or not (out / "train_log.jsonl").read_text().strip():
        assert time.time() < deadline, "training never started"
        assert all(p.poll() is None for p in procs), procs[0].stderr.read()[-3000:]
        time.sleep(0.5)
    # node 1 dies as a lost machine would: its worker and its launcher, at once
    workers = subprocess.run(["pgrep", "-P", str(procs[1].pid)], capture_output=True, text=True).stdout.split()
    for pid in [*workers, str(procs[1].pid)]:
        os.kill(int(pid), signal.SIGKILL)
    started = time.time()
    try:
        procs[0].wait(timeout=120)
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    stderr = procs[0].stderr.read()
    assert procs[0].returncode != 0, stderr[-3000:]
    # the surviving rank's one line names the rank that is gone (the launcher's own report may follow it)
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "rank 1" in errors[0], stderr[-3000:]
    assert "Traceback" not in stderr.split(errors[0])[0], stderr[-3000:]  # no backend traceback before it
    assert time.time() - started < 120


def test_node_local_dirs_build_one_cache_per_node_and_train_as_one_process(setup, single, tmp_path):
    """The original README's multi-node commands on clusters without a shared filesystem: every node runs the same
    command with a relative --model_dir (and so a node-local dataset cache under it) from its own working dir. The job
    finds the dir is not shared (through its store), each node's local rank 0 builds the cache on its node while the
    node's other process waits for it, and the run trains as the single process does; node 0's dir holds the
    checkpoints and the final model, node 1's only its own cache."""
    homes = [tmp_path / f"node{node}" for node in (0, 1)]

    def launch(node: int, nproc: int, port: str, *extra: str, homes=homes):
        homes[node].mkdir(exist_ok=True)
        base = script_args(setup, "out", "bert-nodes", *extra)
        at = base.index("--cache_dir")
        del base[at:at + 2]  # the default: out/cache, on this "node's" disk
        err = open(tmp_path / f"node{node}.err", "w")
        proc = subprocess.Popen(torchrun("--nnodes", "2", "--node_rank", str(node), "--nproc_per_node", str(nproc),
                                         "--master_addr", "127.0.0.1", "--master_port", port, *base),
                                cwd=homes[node], env=env(), stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True)
        err.close()
        return proc

    from tests.helpers import wait_for_exit

    def job(*extra: str, homes=homes) -> tuple[str, str]:
        port = str(free_port())
        procs = [launch(0, 1, port, *extra, homes=homes), launch(1, 2, port, *extra, homes=homes)]  # node 1: 2
        try:
            codes = [wait_for_exit(p, *(tmp_path / f"node{n}.err" for n in (0, 1)), stall=300) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGKILL)
        err0, err1 = ((tmp_path / f"node{n}.err").read_text() for n in (0, 1))
        assert codes == [0, 0], (err0[-3000:], err1[-3000:])
        return err0, err1

    err0, _ = job()
    said = [line for line in err0.splitlines() if "is not shared by the job's 2 nodes" in line]
    assert len(said) == 1 and "each node's local rank 0 builds the dataset cache on its own node" in said[0], err0
    for home in homes:  # one complete cache per node, built there
        assert len(list((home / "out" / "cache").glob("*/manifest.json"))) == 1
        assert not list((home / "out" / "cache").glob(".lmpretrain-shared-*"))  # the probes are gone
    assert "built the dataset cache" in err0
    assert_same_run(single, homes[0] / "out")
    assert (homes[0] / "out" / "train_summary.json").is_file()
    assert sorted(p.name for p in (homes[1] / "out").iterdir()) == ["cache"]

    # a resume with the checkpoints on node 0's disk alone: node 1's processes get rank 0's weights and state
    import shutil

    again = [tmp_path / f"resume{node}" for node in (0, 1)]
    (again[0] / "out").mkdir(parents=True)
    shutil.copytree(homes[0] / "out" / "checkpoint-2", again[0] / "out" / "checkpoint-2")
    shutil.copytree(homes[1] / "out", again[1] / "out")  # node 1's cache (its own disk keeps it)
    err0, _ = job("--do_continue", homes=again)
    assert "do not see checkpoint-2" not in err0  # the line names the path
    assert "rank 0 sends them its weights and training state" in err0, err0[-3000:]
    a, b = losses(single), losses(again[0] / "out")
    assert sorted(b) == [3, 4]
    for step in (3, 4):
        assert b[step] == pytest.approx(a[step], rel=1e-5, abs=1e-6)
    assert sorted(p.name for p in (again[1] / "out").iterdir()) == ["cache"]


def test_a_node_whose_script_fails_before_joining_ends_the_other_within_peer_timeout(setup, tmp_path):
    """Node 1 is launched with a --node_rank that disagrees with its launcher's, so its script stops before joining
    the process group: node 0 does not wait for it the collective timeout (half an hour) but ends after
    --peer_timeout with one line saying that not every process joined."""
    from tests.helpers import wait_for_exit

    out, port = tmp_path / "out", str(free_port())

    def launch(node: int, script_node_rank: int):
        err = open(tmp_path / f"node{node}.err", "w")
        proc = subprocess.Popen(torchrun("--nnodes", "2", "--node_rank", str(node), "--nproc_per_node", "1",
                                         "--master_addr", "127.0.0.1", "--master_port", port,
                                         *script_args(setup, out, "bert-nodes", "--peer_timeout", "6",
                                                      "--node_rank", str(script_node_rank))),
                                env=env(), stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        err.close()
        return proc

    procs = [launch(0, 0), launch(1, 0)]
    try:
        codes = [wait_for_exit(p, tmp_path / f"node{n}.err", stall=120) for n, p in enumerate(procs)]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    assert codes[0] != 0 and codes[1] != 0
    err0, err1 = ((tmp_path / f"node{n}.err").read_text() for n in (0, 1))
    assert "error: --node_rank 0 disagrees with the launcher's GROUP_RANK=1" in err1, err1[-3000:]
    errors = [line for line in err0.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err0[-3000:]
    assert "rank 0: not all 2 processes of the job joined within 6 s (--peer_timeout" in errors[0]
    assert "Traceback" not in err0.split(errors[0])[0], err0[-3000:]  # no backend traceback before it
    assert not out.exists() or not list(out.glob("checkpoint-*"))
