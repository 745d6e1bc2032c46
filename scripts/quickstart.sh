#!/usr/bin/env bash
# The whole pipeline on the bundled sample corpus, on the CPU. Measured with the installs already done, on a 2-core
# machine shared with other jobs (load average about 5): 8 min 17 s, 484 s of it the 300 training steps; a first run
# adds the installs, and a busier machine takes longer (see README.md, "Set up and run").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh requirements.txt
PY=.venv/bin/python
OUT=out/quickstart
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
rm -rf "$OUT"

echo "== 1/3 train a MeCab (ipadic) + WordPiece tokenizer on samples/ja_sample.txt"
$PY train_tokenizer.py --input_file samples/ja_sample.txt --model_dir "$OUT/tokenizer" \
    --mecab_dic_type ipadic --tokenizer_type wordpiece --vocab_size 3000 --min_frequency 1 --num_files 2

echo "== 2/3 pretrain bert-tiny on the CPU"
$PY run_pretraining.py --input_file samples/ja_sample.txt --tokenizer_dir "$OUT/tokenizer" \
    --model_dir "$OUT/bert-tiny" --parameter_file parameter.json --model_type bert-tiny --do_whole_word_mask

echo "== 3/3 load the result with transformers"
$PY scripts/quickstart_demo.py "$OUT/tokenizer" "$OUT/bert-tiny"
