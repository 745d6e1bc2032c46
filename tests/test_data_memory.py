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


OPEN = textwrap.dedent("""
    import json, sys
    from lmpretrain.data.shards import TokenShards

    def status(field):
        return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(field + ":"))

    before = status("VmHWM")
    shards = TokenShards(sys.argv[1])
    opened = status("VmHWM")
    shards.verify(int(sys.argv[2]))
    print(json.dumps({"before_kb": before, "opened_kb": opened, "verified_kb": status("VmHWM"),
                      "file_kb": status("RssFile"), "sentences": shards.num_sentences}))
""")


def test_opening_and_verifying_a_cache_hold_nothing_per_sentence(tmp_path):
    """The open's offset check and the reuse's verify read the files in blocks: 4M sentences (32 MB of offsets,
    12 MB of ids) add a few MB to the peak, not the offsets (and a diff of them) or the whole cache as mapped pages."""
    import numpy as np

    from lmpretrain.data.cache import fingerprint_of
    from lmpretrain.data.shards import CHECKSUM, FORMAT_VERSION, MANIFEST, ShardWriter

    directory = tmp_path / "shards"
    directory.mkdir()
    writer = ShardWriter(directory, np.dtype(np.uint16))
    rng = np.random.default_rng(0)
    per_chunk = 1 << 18
    for _ in range(16):
        lengths = rng.integers(1, 3, per_chunk)
        total = int(lengths.sum())
        starts = rng.random(per_chunk) < 0.01
        writer.append(rng.integers(0, 1000, total).astype(np.uint16), rng.random(total) < 0.5, lengths, starts)
    sizes = writer.close()
    manifest = {"format_version": FORMAT_VERSION, "fingerprint": fingerprint_of({}), "components": {},
                "num_tokens": writer.num_tokens, "num_sentences": writer.num_sentences,
                "num_documents": writer.num_documents, "num_characters": 0, "dtype": "uint16", "vocab_size": 1000,
                "file_sizes": sizes, "checksum": CHECKSUM, "checksums": writer.checksums()}
    (directory / MANIFEST).write_text(json.dumps(manifest))
    out = subprocess.run([sys.executable, "-c", OPEN, str(directory), "1000"], cwd=REPO, capture_output=True,
                         text=True, timeout=120, env={"PATH": ""})
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["sentences"] == 16 * per_chunk
    offsets_mb = sizes["sentence_offsets.bin"] / 2**20
    opened_mb = (result["opened_kb"] - result["before_kb"]) / 1024
    verified_mb = (result["verified_kb"] - result["before_kb"]) / 1024
    print(f"{result}; offsets {offsets_mb:.0f} MB; open +{opened_mb:.1f} MB, verify +{verified_mb:.1f} MB")
    assert opened_mb < 6, f"opening the cache added {opened_mb:.1f} MB to the peak ({offsets_mb:.0f} MB of offsets)"
    assert verified_mb < 12, f"verifying the cache added {verified_mb:.1f} MB to the peak"
