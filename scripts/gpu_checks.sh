#!/usr/bin/env bash
# The GPU checks in one command, for a CUDA machine lent for minutes (issues 15, 24): the CUDA tests, then
# bench/bench_gpu.py's and bench/bench_sharding.py's cases in order of importance until the time budget is spent.
# Every result lands in OUTDIR.
#
#   bash scripts/gpu_checks.sh OUTDIR [BUDGET_SECONDS]     # default budget 480 s
#
# Wheels under .whl/ (scripts/fetch_gpu_wheels.sh, on a machine with a package index) are installed first into
# /tmp/site, for an image that lacks a pin; torch is the machine's own CUDA build.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: gpu_checks.sh OUTDIR [BUDGET_SECONDS]}
budget=${2:-480}
mkdir -p "$out"
py=${PYTHON:-python3}
start=$SECONDS
left() { echo $(( budget - (SECONDS - start) )); }
export PYTHONUNBUFFERED=1 LMP_NO_PROGRESS=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if compgen -G ".whl/*" > /dev/null; then
    "$py" -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --upgrade --target /tmp/site \
        .whl/* > "$out/pip.txt" 2>&1 || { echo "installing .whl/ failed: $out/pip.txt"; tail -5 "$out/pip.txt"; }
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
{ nvidia-smi; "$py" -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'device', torch.cuda.get_device_name(0)); print('transformers', transformers.__version__)"; } 2>&1 | tee "$out/machine.txt"

stage() {  # stage NAME SECONDS COMMAND...: run under the time left (at most SECONDS); skipped when none is left
    local name=$1 limit=$2; shift 2
    local t; t=$(left); (( t < limit )) && limit=$t
    if (( limit < 30 )); then echo "== $name: skipped, budget spent"; return; fi
    echo "== $name (at most ${limit}s): $*"
    local began=$SECONDS
    timeout "$limit" "$@" > "$out/$name.txt" 2>&1
    echo "== $name: exit $? after $(( SECONDS - began ))s"; tail -25 "$out/$name.txt"
}
# the CUDA tests: fp16 levels, the input pipeline's no-synchronisation tests (BERT, GPT, ELECTRA), NCCL (2 GPUs),
# FSDP2 on NCCL (tests/test_fsdp.py: per-block compile, shard_grad_op's deferred reduce-scatter; sharded vs 1 GPU)
stage pytest-gpu 240 "$py" -m pytest -q -m gpu -p no:cacheprovider -o addopts=-ra
# the issue's goal first: BERT-base at sequence 128, bf16, eager and compiled, against Trainer
stage bench-bert 300 "$py" bench/bench_gpu.py --only bert-base@128 --markdown "$out/bench-bert.md"
# issue 24: per-GPU state and step time of full_shard / shard_grad_op against DDP, llama-135m (N above the GPU
# count is skipped: one GPU gives the N=1 row, the CUDA path and its memory)
stage bench-sharding 240 "$py" bench/bench_sharding.py --device cuda --nprocs 1 2 4 8 --seq_len 1024 --batch 4 \
    --warmup 3 --steps 10 --markdown "$out/bench-sharding.md"
stage bench-more 600 "$py" bench/bench_gpu.py --only roberta-base@128 electra-base@128 gpt2-small@1024 \
    --modes eager --markdown "$out/bench-more.md"
echo "gpu_checks: done in $(( SECONDS - start ))s; results in $out"
