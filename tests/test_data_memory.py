"""Bounded memory: the peak RSS of a build does not grow with the corpus (an 8x larger corpus, same peak)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tests.helpers import REPO
from tests.test_data_fakes import fake_tokenizer_dir, make_documents, write_txt

BUILD = textwrap.dedent("""
    import json, resource, sys
    from lmpretrain.data import build_or_load_dataset
    from tests.test_data_fakes import FakeEncoder
    corpus, tok, cache = sys.argv[1:4]
    shards = build_or_load_dataset([corpus], tok, cache, num_workers=1, chunk_chars=1 << 16,
                                   encoder_factory=FakeEncoder.from_pretrained)
    # VmHWM, not ru_maxrss: after fork + exec, ru_maxrss reports at least the parent's (pytest's) RSS
    peak = [int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")]
    print(json.dumps({"tokens": shards.num_tokens,
                      "rss_kb": peak[0] if peak else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
""")


def peak_rss(corpus, tok, cache) -> dict:
    out = subprocess.run([sys.executable, "-c", BUILD, str(corpus), str(tok), str(cache)], cwd=REPO,
                         capture_output=True, text=True, timeout=120, env={"LMP_NO_PROGRESS": "1", "PATH": ""})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_peak_rss_does_not_grow_with_corpus_size(tmp_path):
    base = write_txt(tmp_path / "base.txt", make_documents(300, seed=0, max_sentences=40, max_words=20)).read_bytes()
    small, big = tmp_path / "small.txt", tmp_path / "big.txt"
    text = base * 4  # ~1.7 MB
    small.write_bytes(text)
    big.write_bytes(text * 8)
    tok = fake_tokenizer_dir(tmp_path / "tok")
    a = peak_rss(small, tok, tmp_path / "cache")
    b = peak_rss(big, tok, tmp_path / "cache")
    assert b["tokens"] == 8 * a["tokens"]
    growth_mb = (b["rss_kb"] - a["rss_kb"]) / 1024
    corpus_mb = (len(text) * 7) / 2**20
    # keeping the extra tokens as Python ints alone would cost ~36 bytes each
    print(f"small {a}, big {b}, growth {growth_mb:.1f} MB for {corpus_mb:.1f} MB more corpus")
    assert growth_mb < 8, f"peak RSS grew {growth_mb:.1f} MB for {corpus_mb:.1f} MB more corpus"
