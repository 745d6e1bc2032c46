"""Hub names (org/name[@rev]) for --tokenizer_dir, --pretrained_model_name_or_path and --base_tokenizer_dir,
resolved through huggingface_hub's cache: a local hub cache in a temporary HF_HOME, offline (never the network)."""

import json

import pytest

from lmpretrain.errors import UserError
from lmpretrain.hub import hub_name, local_dir
from tests.helpers import run_script
from tests.test_run_pretraining import BASE

REPO, REVISION = "lmp-test/tiny-bert-ja", "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def hub_home(tmp_path_factory, tiny_tokenizer_dir):
    """HF_HOME with the hub cache layout (hub/models--ORG--NAME/{refs/main, snapshots/<rev>/}) of a tiny
    BertForPreTraining and the MeCab WordPiece tokenizer saved by transformers (a BertJapaneseTokenizer, as a
    published Japanese BERT is)."""
    from transformers import AutoTokenizer, BertConfig, BertForPreTraining

    home = tmp_path_factory.mktemp("hf_home")
    repo = home / "hub" / f"models--{REPO.replace('/', '--')}"
    snapshot = repo / "snapshots" / REVISION
    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    assert type(tokenizer).__name__ == "BertJapaneseTokenizer"
    tokenizer.save_pretrained(snapshot)
    BertForPreTraining(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
                       ).save_pretrained(snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    assert not (snapshot / "lmpretrain_tokenizer.json").exists()
    return home


@pytest.fixture
def offline_cache(hub_home, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_home / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return hub_home / "hub" / f"models--{REPO.replace('/', '--')}" / "snapshots" / REVISION


def test_a_hub_name_resolves_to_its_cached_snapshot(offline_cache, tmp_path):
    assert local_dir(REPO, "--tokenizer_dir") == str(offline_cache)
    assert local_dir(f"{REPO}@{REVISION}", "--tokenizer_dir") == str(offline_cache)
    assert local_dir(str(tmp_path), "--tokenizer_dir") == str(tmp_path)  # a dir stays a dir
    for path in (str(tmp_path / "missing"), "./missing", "tok/vocab.txt", "a/b/c"):  # paths are not hub names
        assert hub_name(path) is None and local_dir(path, "--tokenizer_dir") == path
    with pytest.raises(UserError) as error:
        local_dir("lmp-test/absent", "--tokenizer_dir")
    assert str(error.value).startswith("--tokenizer_dir lmp-test/absent: not a directory, and the hub model "
                                       "lmp-test/absent is not found locally and the hub is offline (HF_HUB_OFFLINE=1)")
    with pytest.raises(UserError, match="at revision main2 is not found locally and the hub is offline"):
        local_dir(f"{REPO}@main2", "--pretrained_model_name_or_path")


def test_the_fast_encoder_reads_a_hub_bert_japanese_tokenizer_as_transformers_does(offline_cache, sample_corpus):
    from transformers import AutoTokenizer

    from lmpretrain.tokenization import FastEncoder

    lines = [line for line in sample_corpus.read_text(encoding="utf-8").splitlines() if line.strip()][:50]
    encoder = FastEncoder.from_pretrained(local_dir(REPO, "--tokenizer_dir"), num_workers=1)
    try:
        assert encoder.encode_batch(lines) == \
            AutoTokenizer.from_pretrained(offline_cache)(lines, add_special_tokens=False)["input_ids"]
    finally:
        encoder.close()


def test_continued_pretraining_from_hub_names_offline(hub_home, sample_corpus, tmp_path):
    """The script, in a subprocess with HF_HOME at the local cache and HF_HUB_OFFLINE=1: tokenizer and model by hub
    name; the run starts from the hub model's weights; a name that is not cached is one error line."""
    from transformers import BertForPreTraining

    params = tmp_path / "parameter.json"
    further = {k: v for k, v in BASE.items() if k not in ("number-of-layers", "hidden-size", "ffn-inner-hidden-size",
                                                          "attention-heads")}
    params.write_text(json.dumps({"bert-continued": {**further, "train-steps": 2, "save-steps": 2}}))
    env = {"HF_HOME": str(hub_home), "HF_HUB_CACHE": str(hub_home / "hub"), "HF_HUB_OFFLINE": "1",
           "LMP_NO_PROGRESS": "1"}
    common = ["--input_file", str(sample_corpus), "--parameter_file", str(params), "--model_type", "bert-continued",
              "--num_workers", "1", "--max_eval_samples", "16"]
    result = run_script("run_pretraining.py", *common, "--tokenizer_dir", REPO, "--pretrained_model_name_or_path",
                        f"{REPO}@{REVISION}", "--model_dir", str(tmp_path / "out"), env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    snapshot = hub_home / "hub" / f"models--{REPO.replace('/', '--')}" / "snapshots" / REVISION
    start = BertForPreTraining.from_pretrained(snapshot).bert.encoder.layer[0].attention.self.query.weight
    trained = BertForPreTraining.from_pretrained(tmp_path / "out").bert.encoder.layer[0].attention.self.query.weight
    assert trained.shape == start.shape and 0 < (trained - start).abs().max() < 0.1  # moved from the hub weights
    assert (tmp_path / "out" / "vocab.txt").read_text() == (snapshot / "vocab.txt").read_text()

    result = run_script("run_pretraining.py", *common, "--tokenizer_dir", "lmp-test/absent", "--model_dir",
                        str(tmp_path / "out2"), env=env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(
        "error: --tokenizer_dir lmp-test/absent: not a directory, and the hub model lmp-test/absent is not found "
        "locally and the hub is offline (HF_HUB_OFFLINE=1)")


def test_train_tokenizer_extends_a_hub_tokenizer(offline_cache, tmp_path):
    import importlib.util

    from tests.helpers import REPO as ROOT

    words = tmp_path / "words.txt"
    words.write_text("ハブ由来語\n", encoding="utf-8")
    spec = importlib.util.spec_from_file_location("train_tokenizer", ROOT / "train_tokenizer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--base_tokenizer_dir", REPO, "--add_words", str(words), "--model_dir", str(tmp_path / "ext")])
    base = (offline_cache / "vocab.txt").read_text(encoding="utf-8").splitlines()
    extended = (tmp_path / "ext" / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert extended[:len(base)] == base and extended[len(base):] == ["ハブ由来語"]
