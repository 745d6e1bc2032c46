"""convert_checkpoint.py and extract_electra_model.py on sharded checkpoints (``--fsdp``): a 2-process full_shard run's
checkpoint, converted in one process, is the run's own export at that step; an ELECTRA run's sharded checkpoint
extracts into the same parts as the run's (unsharded) final model dir does."""

import json
import shutil

import pytest
import torch
import transformers
from safetensors.torch import load_file

from lmpretrain.errors import UserError
from lmpretrain.export import PROBE_TEXTS
from tests.helpers import run_script
from tests.test_distributed_training import PRESET
from tests.test_fsdp import assert_same_final_model, one_process, two_processes

ELECTRA = {**PRESET, "batch-size": {"-1": 8}, "embedding-size": 16, "generator-size": "1/2", "mask-percent": 15,
           "train-steps": 3}


@pytest.fixture(scope="module")
def setup(tmp_path_factory, sample_corpus, tiny_tokenizer_dir):
    root = tmp_path_factory.mktemp("convert")
    params = root / "parameter.json"
    params.write_text(json.dumps({"bert-single": {**PRESET, "batch-size": {"-1": 8}, "train-steps": 3},
                                  "electra-single": ELECTRA}))
    return {"root": root, "params": params, "corpus": sample_corpus, "tokenizer": tiny_tokenizer_dir,
            "cache": root / "cache"}


@pytest.fixture(scope="module")
def bert_sharded(setup):
    out = setup["root"] / "bert_full_shard"
    two_processes(setup, out, "bert-single", "--fsdp", "full_shard")
    return out


def assert_same_tensors(reference, other, folder=""):
    """Bit for bit: the same weights, under the same names."""
    wa, wb = load_file(reference / folder / "model.safetensors"), load_file(other / folder / "model.safetensors")
    assert set(wa) == set(wb)
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name


def logits(model_dir, auto=transformers.AutoModelForPreTraining):
    model = auto.from_pretrained(model_dir).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    with torch.no_grad():
        out = model(**tokenizer(list(PROBE_TEXTS), return_tensors="pt", padding=True))
    return model, out


def test_a_sharded_checkpoint_converts_into_the_runs_own_export(setup, bert_sharded):
    checkpoint = bert_sharded / "checkpoint-3"
    assert (checkpoint / "sharded" / "__1_0.distcp").is_file() and not (checkpoint / "model.safetensors").exists()
    out = setup["root"] / "converted-3"
    result = run_script("convert_checkpoint.py", "--checkpoint_dir", str(checkpoint), "--output_dir", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "converted and verified" in result.stdout
    assert_same_tensors(bert_sharded, out)  # the run's final export (gathered on rank 0) at that step
    assert not (out / "training_state.pt").exists() and not (out / "sharded").exists()
    assert not list(out.glob(".*")) and not list(setup["root"].glob(".converted-3*"))  # no leftovers
    ours, expected = logits(out), logits(bert_sharded)
    assert type(ours[0]).__name__ == "BertForPreTraining"
    torch.testing.assert_close(ours[1].prediction_logits, expected[1].prediction_logits, rtol=0, atol=0)
    torch.testing.assert_close(ours[1].seq_relationship_logits, expected[1].seq_relationship_logits, rtol=0, atol=0)
    assert ours[0].get_output_embeddings().weight is ours[0].get_input_embeddings().weight  # tied, as exported


def test_an_earlier_sharded_checkpoint_and_an_unsharded_one_convert(setup, bert_sharded):
    """Step 2 of the sharded run; the same step of one unsharded process (its checkpoint a plain HF dir already):
    the same model within the tolerance sharded and unsharded training agree to."""
    single = setup["root"] / "bert_single"
    one_process(setup, single, "bert-single")
    sharded_out, plain_out = setup["root"] / "sharded-2", setup["root"] / "plain-2"
    from lmpretrain.convert import convert_checkpoint

    convert_checkpoint(bert_sharded / "checkpoint-2", sharded_out)
    convert_checkpoint(single / "checkpoint-2", plain_out)
    assert_same_tensors(single / "checkpoint-2", plain_out)  # unsharded: its own weights, copied
    assert_same_final_model(plain_out, sharded_out)
    transformers.AutoModelForPreTraining.from_pretrained(sharded_out)


def test_conversion_refuses_bad_input_and_writes_nothing(setup, bert_sharded, tmp_path):
    from lmpretrain.convert import convert_checkpoint

    with pytest.raises(UserError, match="no lmpretrain_checkpoint.json"):
        convert_checkpoint(bert_sharded, tmp_path / "a")  # the model dir, not a checkpoint
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    with pytest.raises(UserError, match="not an empty directory"):
        convert_checkpoint(bert_sharded / "checkpoint-3", busy)
    broken = tmp_path / "checkpoint-3"
    shutil.copytree(bert_sharded / "checkpoint-3", broken)
    shard = broken / "sharded" / "__1_0.distcp"
    shard.write_bytes(shard.read_bytes()[:-8])
    with pytest.raises(UserError, match="truncated"):
        convert_checkpoint(broken, tmp_path / "b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "checkpoint-3"]


# --- ELECTRA: extraction from a sharded checkpoint and from the sharded run's model dir ----------------------------
def extract(input_dir, output_dir):
    result = run_script("extract_electra_model.py", "--input_dir", str(input_dir), "--output_dir", str(output_dir),
                        "--generator", "--discriminator")
    assert result.returncode == 0, result.stderr[-3000:]
    return output_dir


@pytest.mark.slow  # a 2-process ELECTRA run and two extractions: ~47 s on this loaded machine
def test_electra_parts_extract_from_a_sharded_checkpoint_as_from_the_unsharded_model(setup):
    """The sharded checkpoint's parts are bit for bit those extracted from the run's final model dir (the whole model,
    gathered by the run: an unsharded HF dir); that sharded training equals unsharded training is test_fsdp.py's."""
    sharded = setup["root"] / "electra_full_shard"
    two_processes(setup, sharded, "electra-single", "--fsdp", "full_shard")
    assert (sharded / "checkpoint-3" / "sharded" / ".metadata").is_file()
    from_checkpoint = extract(sharded / "checkpoint-3", setup["root"] / "parts-from-shards")
    from_model_dir = extract(sharded, setup["root"] / "parts-from-model-dir")  # the run's gathered final model
    for part in ("generator", "discriminator"):
        assert_same_tensors(from_model_dir, from_checkpoint, part)
        assert not (from_checkpoint / part / "sharded").exists()
    transformers.AutoModelForMaskedLM.from_pretrained(from_checkpoint / "generator")
    transformers.AutoModelForPreTraining.from_pretrained(from_checkpoint / "discriminator")
    assert not list(setup["root"].glob(".lmp-unsharded-*"))  # the scratch conversion is gone


def test_perplexity_of_a_sharded_checkpoint_equals_its_conversions(setup, bert_sharded):
    """evaluate_perplexity.py reads a --fsdp checkpoint's shards (before: it looked for model.safetensors and failed):
    the same loss as on the converted dir of the same step, which holds the same weights and the same run record."""
    from lmpretrain.convert import convert_checkpoint
    from lmpretrain.perplexity import evaluate_model_dir

    checkpoint = bert_sharded / "checkpoint-3"
    converted = setup["root"] / "perplexity-converted-3"
    convert_checkpoint(checkpoint, converted)
    kwargs = dict(max_samples=32, cache_dir=str(setup["root"] / "ppl-cache"), num_workers=1)
    sharded = evaluate_model_dir(checkpoint, [str(setup["corpus"])], **kwargs)
    plain = evaluate_model_dir(converted, [str(setup["corpus"])], **kwargs)
    assert sharded["instances"] == plain["instances"] > 0
    assert sharded["loss"] == pytest.approx(plain["loss"], rel=1e-6)
