"""Dataset build benchmark: throughput, peak memory, worker scaling and cache reuse, against the original approach.

    .venv/bin/python bench/bench_dataset.py --corpus ../shared/corpora/ja_aozora_medium/train.txt \\
        [--tokenizer_dir DIR] [--scale 10] [--workers 1 2] [--original_max_chars N] [--json out.json]

For the corpus and a ``--scale``x concatenation of it, each build runs in a fresh subprocess with an empty cache
(so peak RSS is that build's alone): characters/s, tokens/s, peak RSS of the main process and of the largest
worker. Then the cache-reuse time (a second call finding the cache). The original tool's approach is measured on
the same text in the same run: transformers' ``BertJapaneseTokenizer`` (MeCab + WordPiece) line by line, ids kept in
Python lists. Without ``--tokenizer_dir`` a tokenizer is trained first (``lmpretrain.tokenization.train_tokenizer``, the
function behind train_tokenizer.py, with its defaults: ipadic + WordPiece, 32768 tokens). Where
``lmpretrain.tokenization`` is missing, a stand-in encoder (fugashi + tokenizers WordPiece, the same libraries) and a
vocabulary of frequent MeCab words are used instead, and the output says so.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

BUILD = textwrap.dedent("""
    import importlib, json, resource, sys, time
    from lmpretrain.data import build_or_load_dataset
    corpus, tok, cache, workers, factory = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
    if factory:
        module, _, name = factory.partition(":")
        factory = importlib.import_module(module)
        for part in name.split("."):
            factory = getattr(factory, part)
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    shards = build_or_load_dataset([corpus], tok, cache, num_workers=workers, encoder_factory=factory or None)
    seconds = time.perf_counter() - started
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime - before.ru_utime - before.ru_stime
    print(json.dumps({"seconds": seconds, "tokens": shards.num_tokens, "chars": shards.manifest["num_characters"],
                      "cpu_seconds": cpu,
                      "cache_bytes": sum(shards.manifest["file_sizes"].values()),
                      "rss_main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "rss_worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
""")

ORIGINAL = textwrap.dedent("""
    import json, resource, sys, time
    from pathlib import Path
    from transformers import AutoTokenizer, BertJapaneseTokenizer
    corpus, tok, max_chars = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    if (tok / "vocab.txt").is_file():
        meta = tok / "lmpretrain_tokenizer.json"
        dic = json.loads(meta.read_text()).get("mecab_dic_type", "ipadic") if meta.is_file() else "ipadic"
        tokenizer = BertJapaneseTokenizer(str(tok / "vocab.txt"), word_tokenizer_type="mecab",
                                          mecab_kwargs={"mecab_dic": dic})
    else:
        tokenizer = AutoTokenizer.from_pretrained(tok)
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    examples, chars, tokens = [], 0, 0
    with open(corpus, encoding="utf-8") as handle:  # the original: one line at a time, ids kept in Python lists
        for line in handle:
            line = line.strip()
            if not line:
                continue
            ids = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(line))
            examples.append(ids)
            chars += len(line)
            tokens += len(ids)
            if max_chars and chars >= max_chars:
                break
    seconds = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"seconds": seconds, "tokens": tokens, "chars": chars, "tokenizer": type(tokenizer).__name__,
                      "cpu_seconds": usage.ru_utime + usage.ru_stime - before.ru_utime - before.ru_stime,
                      "rss_main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
""")


def run_json(code: str, *args) -> dict:
    env = dict(os.environ, LMP_NO_PROGRESS="1", PYTHONPATH=str(REPO), TOKENIZERS_PARALLELISM="false")
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=REPO, env=env, capture_output=True,
                         text=True)
    if out.returncode != 0:
        raise SystemExit(f"benchmark step failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


class StandInEncoder:
    """MeCab (fugashi, ipadic) + a tokenizers WordPiece over ``vocab.txt``, with FastEncoder's API.

    For benchmarking the dataset build before ``lmpretrain.tokenization`` exists (``--encoder_factory
    bench.bench_dataset:StandInEncoder.from_pretrained``); the same two libraries the real encoder uses.
    """

    def __init__(self, tokenizer_dir: str):
        import fugashi
        import ipadic
        from tokenizers import Tokenizer, models, pre_tokenizers

        vocab = {t: i for i, t in enumerate(Path(tokenizer_dir, "vocab.txt").read_text(encoding="utf-8").split("\n"))
                 if t}
        self.vocab_size = len(vocab)
        self.pad_token_id, self.unk_token_id, self.cls_token_id = vocab["[PAD]"], vocab["[UNK]"], vocab["[CLS]"]
        self.sep_token_id, self.mask_token_id = vocab["[SEP]"], vocab["[MASK]"]
        self.all_special_ids = [self.pad_token_id, self.unk_token_id, self.cls_token_id, self.sep_token_id,
                                self.mask_token_id]
        self.fingerprint = hashlib.sha256(Path(tokenizer_dir, "vocab.txt").read_bytes()).hexdigest()
        self._tagger = fugashi.GenericTagger(ipadic.MECAB_ARGS + " -Owakati")
        self._wordpiece = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
        self._wordpiece.pre_tokenizer = pre_tokenizers.WhitespaceSplit()

    @classmethod
    def from_pretrained(cls, tokenizer_dir, num_workers: int = 1) -> StandInEncoder:
        return cls(str(tokenizer_dir))

    def encode_batch_with_word_starts(self, texts):
        encodings = self._wordpiece.encode_batch([self._tagger.parse(t) for t in texts], add_special_tokens=False)
        out = []
        for encoding in encodings:
            words = encoding.word_ids
            out.append((encoding.ids, [i == 0 or words[i] != words[i - 1] for i in range(len(words))]))
        return out

    def encode_batch(self, texts, add_special_tokens: bool = False):
        return [ids for ids, _ in self.encode_batch_with_word_starts(texts)]

    def close(self) -> None:
        pass


def standin_vocab(corpus: Path, model_dir: Path, vocab_size: int = 32768, sample_bytes: int = 8 << 20) -> None:
    """A WordPiece vocabulary from frequent MeCab words and all characters of the corpus's first bytes."""
    import collections

    import fugashi
    import ipadic

    tagger = fugashi.GenericTagger(ipadic.MECAB_ARGS + " -Owakati")
    words, chars = collections.Counter(), collections.Counter()
    with open(corpus, encoding="utf-8", errors="ignore") as handle:
        for line in handle.read(sample_bytes // 3).splitlines():
            if line.strip():
                words.update(tagger.parse(line.strip()).split())
                chars.update(line.strip())
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"[unused{i}]" for i in range(10)]
    vocab += [c for c, _ in chars.most_common() if not c.isspace()]
    vocab += ["##" + c for c, _ in chars.most_common() if not c.isspace()]
    seen = set(vocab)
    for word, _ in words.most_common():
        if len(vocab) >= vocab_size:
            break
        if word not in seen:
            vocab.append(word)
            seen.add(word)
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "vocab.txt").write_text("\n".join(vocab[:vocab_size]) + "\n", encoding="utf-8")


def train_tokenizer(corpus: Path, model_dir: Path) -> None:
    """MeCab (ipadic) + WordPiece, 32768 tokens: train_tokenizer.py's defaults."""
    from lmpretrain.tokenization import TokenizerSpec
    from lmpretrain.tokenization import train_tokenizer as train

    started = time.perf_counter()
    train([str(corpus)], model_dir, TokenizerSpec(mecab_dic_type="ipadic", tokenizer_type="wordpiece"),
          num_workers=os.cpu_count() or 1)
    print(f"trained a tokenizer in {time.perf_counter() - started:.0f} s -> {model_dir}", flush=True)


def describe(name: str, result: dict) -> str:
    rate = result["chars"] / result["seconds"]
    tokens_per_second = result["tokens"] / result["seconds"]
    line = (f"{name:<34} {result['seconds']:8.1f} s {rate / 1e6:7.2f} M chars/s {tokens_per_second / 1e6:6.2f} "
            f"M tokens/s  peak RSS main {result['rss_main_mb']:6.0f} MB")
    if "rss_worker_mb" in result:
        line += f", worker {result['rss_worker_mb']:5.0f} MB"
    line += f"; {result['chars'] / result['cpu_seconds'] / 1e6:.2f} M chars per CPU-second"
    return line


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--tokenizer_dir")
    parser.add_argument("--scale", type=int, default=10, help="also measure a concatenation of this many copies")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--original_max_chars", type=int, default=0,
                        help="stop the original approach after this many characters (0: the whole corpus)")
    parser.add_argument("--skip_original_scaled", action="store_true",
                        help="run the original approach on the 1x corpus only")
    parser.add_argument("--json", help="write all results here")
    parser.add_argument("--encoder_factory", default="",
                        help="module:callable making the encoder (default: lmpretrain.tokenization.FastEncoder)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench_dataset_") as tmp:
        tmp = Path(tmp)
        corpus = Path(args.corpus).resolve()
        tokenizer_dir = Path(args.tokenizer_dir) if args.tokenizer_dir else tmp / "tokenizer"
        encoder_factory = args.encoder_factory
        sys.path.insert(0, str(REPO))
        if not encoder_factory and importlib.util.find_spec("lmpretrain.tokenization") is None:
            print("lmpretrain.tokenization is not available: using the MeCab + WordPiece stand-in encoder", flush=True)
            encoder_factory = "bench.bench_dataset:StandInEncoder.from_pretrained"
        if not args.tokenizer_dir:
            if not encoder_factory:
                train_tokenizer(corpus, tokenizer_dir)
            else:
                standin_vocab(corpus, tokenizer_dir)
        corpora = {"1x": corpus}
        if args.scale > 1:
            scaled = tmp / f"corpus_x{args.scale}.txt"
            data = corpus.read_bytes()
            with open(scaled, "wb") as handle:
                for _ in range(args.scale):
                    handle.write(data)
            corpora[f"{args.scale}x"] = scaled
        results: dict[str, dict] = {}
        print(f"corpus {corpus} ({corpus.stat().st_size / 1e6:.1f} MB), {os.cpu_count()} CPUs", flush=True)
        for label, path in corpora.items():
            for workers in args.workers:
                cache = tmp / f"cache_{label}_{workers}"
                result = run_json(BUILD, path, tokenizer_dir, cache, workers, encoder_factory)
                results[f"build {label} workers={workers}"] = result
                print(describe(f"build {label} ({path.stat().st_size / 1e6:.0f} MB) workers={workers}", result),
                      flush=True)
                if workers == args.workers[-1]:
                    reuse = run_json(BUILD, path, tokenizer_dir, cache, workers, encoder_factory)
                    results[f"reuse {label}"] = reuse
                    print(f"{'cache reuse ' + label:<34} {reuse['seconds']:8.2f} s (cache "
                          f"{result['cache_bytes'] / 1e6:.0f} MB for a {path.stat().st_size / 1e6:.0f} MB corpus)",
                          flush=True)
            if label != "1x" and args.skip_original_scaled:
                continue
            original = run_json(ORIGINAL, path, tokenizer_dir, args.original_max_chars)
            results[f"original {label}"] = original
            print(describe(f"original ({original['tokenizer']}) {label}", original), flush=True)
        for label in corpora:
            if f"original {label}" in results:
                ours = results[f"build {label} workers={args.workers[-1]}"]
                original = results[f"original {label}"]
                speedup = (ours["chars"] / ours["seconds"]) / (original["chars"] / original["seconds"])
                per_cpu = (ours["chars"] / ours["cpu_seconds"]) / (original["chars"] / original["cpu_seconds"])
                print(f"speedup {label} (workers={args.workers[-1]}): {speedup:.1f}x in chars/s, {per_cpu:.1f}x in "
                      f"chars per CPU-second (the latter is robust to other load on the machine)", flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
