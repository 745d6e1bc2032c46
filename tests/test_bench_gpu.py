"""bench/bench_gpu.py keeps working where CI runs (a CPU): ``--smoke`` trains tiny presets with our loop and with
transformers' Trainer and prints one table row per case (issue 15, item 5)."""

import re
import subprocess
import sys

from tests.helpers import REPO


def test_bench_gpu_smoke_prints_a_row_per_case(tmp_path):
    markdown = tmp_path / "out.md"
    result = subprocess.run([sys.executable, str(REPO / "bench/bench_gpu.py"), "--smoke", "--peak_tflops", "0.001",
                             "--markdown", str(markdown)], capture_output=True, text=True, timeout=300,
                            env={"PATH": "/usr/bin:/bin", "LMP_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    table = markdown.read_text()
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in table.splitlines()
            if line.startswith("| ") and "@" in line}
    assert sorted(rows) == ["bert-tiny@32", "electra-tiny@32", "llama-tiny@32"]
    for name, cells in rows.items():
        ours_tokens, ours_mfu = float(cells[3].replace(",", "")), float(cells[6].rstrip("%"))
        assert ours_tokens > 0 and ours_mfu > 0, cells
        if name == "electra-tiny@32":  # generator + discriminator: no transformers class to compare with
            assert "no Trainer class" in cells[-1]
        else:
            assert float(cells[9].replace(",", "")) > 0 and re.match(r"[\d.]+×", cells[-1].strip(" |")), cells


def test_gpu_checks_script_runs_its_stages_and_keeps_their_output(tmp_path):
    """scripts/gpu_checks.sh, the one command a session with a lent GPU runs: here (no GPU) the CUDA tests are
    collected by their ``gpu`` mark and skip, the bench stages refuse at once, and every stage's output is kept."""
    import os

    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable}
    result = subprocess.run(["bash", str(REPO / "scripts/gpu_checks.sh"), str(out), "120"], capture_output=True,
                            text=True, timeout=300, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "== pytest-gpu: exit 0" in result.stdout
    collected = (out / "pytest-gpu.txt").read_text()
    # the fp16 levels, NCCL and the no-synchronisation tests are all marked gpu (skipped here, listed by -ra)
    assert re.search(r"\d+ (skipped|passed)", collected), collected[-2000:]
    if "skipped" in collected:
        for name in ("test_precision.py", "test_input_pipeline.py", "test_distributed_training.py"):
            assert name in collected, collected[-2000:]
    for stage in ("bench-bert", "bench-more"):
        assert "no CUDA GPU here" in (out / f"{stage}.txt").read_text()
    assert "gpu_checks: done in" in result.stdout
