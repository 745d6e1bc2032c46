"""Show what the quick start produced, through transformers alone: tokenizer ids, perplexity, fill-mask."""

import json
import sys
from pathlib import Path

from transformers import AutoTokenizer, pipeline
from transformers.utils import logging as hf_logging

from lmpretrain.tokenization import FastEncoder

hf_logging.set_verbosity_error()  # fill-mask drops the NSP head and pooler of BertForPreTraining: expected
hf_logging.disable_progress_bar()
tokenizer_dir, model_dir = Path(sys.argv[1]), Path(sys.argv[2])
text = "吾輩は猫である。東京で2024年にPythonを学んだ。"
tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
ids = tokenizer(text)["input_ids"]
with FastEncoder.from_pretrained(tokenizer_dir) as encoder:
    same = encoder.encode_batch([text], add_special_tokens=True)[0] == ids
print(f"AutoTokenizer class: {type(tokenizer).__name__}; ids equal to FastEncoder's: {same}")
print("tokens:", " ".join(tokenizer.convert_ids_to_tokens(ids)))

summary = json.loads((model_dir / "train_summary.json").read_text(encoding="utf-8"))
before, after = summary["eval/perplexity_at_start"], summary["eval/perplexity"]
print(f"eval perplexity: {before:.1f} before training -> {after:.1f} after {summary['step']} steps")
if not same or not after < before:
    sys.exit("quick start: FAILED (ids differ from AutoTokenizer's, or the eval perplexity did not fall)")

fill = pipeline("fill-mask", model=str(model_dir), tokenizer=str(model_dir), device="cpu")
masked = f"今日は{fill.tokenizer.mask_token}がとても良い。"
print(f"fill-mask on {masked!r}:")
for guess in fill(masked, top_k=5):
    print(f"  {guess['token_str']!r:12} score {guess['score']:.3f}")
