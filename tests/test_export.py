"""Hugging Face exports: a tiny ELECTRA is trained, extract_electra_model.py splits it, and the parts load through
transformers' Auto classes with the training-time logits, the training pipeline's token ids, a working fill-mask
pipeline and a discriminator that spots replaced tokens. Bad input to the extraction fails cleanly, writing nothing."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
from pathlib import Path

import pytest
import torch

from lmpretrain.errors import UserError, run_cli
from lmpretrain.export import PROBE_TEXTS
from lmpretrain.run_config import TrainArgs
from lmpretrain.trainer import train
from tests.helpers import run_script

REPO = Path(__file__).resolve().parent.parent
TINY = {"number-of-layers": 2, "hidden-size": 32, "sequence-length": 64, "ffn-inner-hidden-size": 64,
        "attention-heads": 2, "warmup-steps": 4, "batch-size": {"-1": 8}, "logging-steps": 4, "dropout": 0.0,
        "attention-dropout": 0.0, "eval-share": 0.1}
PRESETS = {
    # 24 steps at a high learning rate: enough for the discriminator to tell replaced tokens (AUC ~0.7), in seconds
    "electra-x": {**TINY, "learning-rate": 1e-2, "train-steps": 24, "save-steps": 12, "eval-steps": 12,
                  "embedding-size": 16, "generator-size": "1/2", "mask-percent": 15},
    "bert-x": {**TINY, "learning-rate": 2e-3, "train-steps": 8, "save-steps": 8, "eval-steps": 8},
}


def make_args(setup: dict, model_type: str, model_dir: Path, **kw) -> TrainArgs:
    return TrainArgs(input_file=[str(setup["corpus"])], tokenizer_dir=str(setup["tokenizer"]), model_dir=str(model_dir),
                     model_type=model_type, parameter_file=str(setup["parameter_file"]), num_workers=1,
                     max_eval_samples=16, cache_dir=str(setup["root"] / "cache"), **kw)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, sample_corpus, tiny_tokenizer_dir):
    """A tiny ELECTRA and a tiny BERT, trained in this process; every verify_export call made by training recorded."""
    from lmpretrain import export

    root = tmp_path_factory.mktemp("export")
    setup = {"root": root, "corpus": sample_corpus, "tokenizer": tiny_tokenizer_dir,
             "parameter_file": root / "parameter.json"}
    setup["parameter_file"].write_text(json.dumps(PRESETS))
    calls = []
    real = export.verify_export

    def spy(model, export_dir, encoder=None):
        result = real(model, export_dir, encoder)
        calls.append({"export_dir": Path(export_dir), "family": model.family.name, "encoder": encoder is not None,
                      "result": result})
        return result

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(export, "verify_export", spy)
        train(make_args(setup, "electra-x", root / "electra"))
        train(make_args(setup, "bert-x", root / "bert"))
    return {**setup, "electra": root / "electra", "checkpoint": root / "electra" / "checkpoint-24",
            "bert": root / "bert", "verify_calls": calls}


@pytest.fixture(scope="module")
def extracted(trained):
    """extract_electra_model.py run as a user would, on the last checkpoint, both parts."""
    out = trained["root"] / "hf"
    result = run_script("extract_electra_model.py", "--input_dir", str(trained["checkpoint"]), "--output_dir",
                        str(out), "--parameter_file", str(trained["parameter_file"]), "--model_type", "electra-x",
                        "--generator", "--discriminator")
    assert result.returncode == 0, result.stderr[-3000:]
    return {"dir": out, "stdout": result.stdout, "stderr": result.stderr}


def texts(corpus: Path, n: int = 24) -> list[str]:
    lines = [line for line in corpus.read_text(encoding="utf-8").splitlines() if line.strip()]
    return lines[:n] + PROBE_TEXTS


# ---------------------------------------------------------------------------------------------------------------
# verification at the end of training and after extraction (issue 7, item 2)
# ---------------------------------------------------------------------------------------------------------------

def test_training_verifies_its_final_export(trained):
    calls = trained["verify_calls"]
    assert [(c["export_dir"], c["family"], c["encoder"]) for c in calls] == [
        (trained["electra"], "electra", True), (trained["bert"], "bert", True)]
    assert set(calls[0]["result"]) == {"discriminator", "generator"}
    assert all(v <= 1e-4 for c in calls for v in c["result"].values())
    assert (trained["electra"] / "train_summary.json").is_file()


def test_training_fails_when_the_export_is_not_faithful(trained, tmp_path, monkeypatch):
    from lmpretrain import export

    monkeypatch.setattr(export, "ATOL", -1.0)  # any difference at all now counts as unfaithful
    with pytest.raises(UserError, match="exported logits differ from the trained model's"):
        train(make_args(trained, "bert-x", tmp_path / "bert", train_steps=2))
    assert not (tmp_path / "bert" / "train_summary.json").exists()  # no finished model is claimed


def test_extraction_verifies_what_it_wrote(extracted):
    assert "extracted and verified" in extracted["stdout"]
    for part in ("discriminator", "generator"):
        assert f"checked {part}: logits match the checkpoint's" in extracted["stderr"]
        assert "AutoTokenizer ids match the training pipeline's" in extracted["stderr"]


# ---------------------------------------------------------------------------------------------------------------
# the extracted dirs: loads, tokenizer, logits, pipelines, replaced-token detection
# ---------------------------------------------------------------------------------------------------------------

def test_extracted_parts_load_with_auto_classes(extracted):
    import transformers

    gen, disc = extracted["dir"] / "generator", extracted["dir"] / "discriminator"
    assert type(transformers.AutoModelForMaskedLM.from_pretrained(gen)).__name__ == "ElectraForMaskedLM"
    assert type(transformers.AutoModel.from_pretrained(gen)).__name__ == "ElectraModel"
    assert type(transformers.ElectraForPreTraining.from_pretrained(disc)).__name__ == "ElectraForPreTraining"
    assert type(transformers.AutoModelForPreTraining.from_pretrained(disc)).__name__ == "ElectraForPreTraining"
    assert type(transformers.AutoModel.from_pretrained(disc)).__name__ == "ElectraModel"
    assert transformers.AutoConfig.from_pretrained(gen).hidden_size == 16
    assert transformers.AutoConfig.from_pretrained(disc).hidden_size == 32
    assert sorted(p.name for p in extracted["dir"].iterdir()) == ["discriminator", "generator"]  # no leftovers


def test_extracted_tokenizers_give_the_training_pipelines_ids(trained, extracted):
    from transformers import AutoTokenizer

    from lmpretrain.tokenization import FastEncoder

    sample = texts(trained["corpus"])
    with FastEncoder.from_pretrained(trained["tokenizer"]) as encoder:
        expected = encoder.encode_batch(sample, add_special_tokens=True)
    for part in ("generator", "discriminator"):
        directory = extracted["dir"] / part
        for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
            assert (directory / name).is_file(), (part, name)
        tokenizer = AutoTokenizer.from_pretrained(directory)
        assert type(tokenizer).__name__ == "BertJapaneseTokenizer"
        assert tokenizer(sample)["input_ids"] == expected, part


def test_extracted_logits_equal_the_training_time_model(trained, extracted):
    """The training-time model (shared embeddings, tied generator head) against the exported dirs."""
    from transformers import AutoModelForMaskedLM, AutoModelForPreTraining, AutoTokenizer

    from lmpretrain.checkpoint import load_weights
    from lmpretrain.prepare import prepare_run

    run = prepare_run(make_args(trained, "electra-x", trained["electra"]))
    try:
        model = run.build_model()
    finally:
        run.encoder.close()
    load_weights(model, trained["checkpoint"])
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(extracted["dir"] / "discriminator")
    batch = tokenizer(texts(trained["corpus"], 8), padding=True, truncation=True, max_length=64, return_tensors="pt")
    generator = AutoModelForMaskedLM.from_pretrained(extracted["dir"] / "generator").eval()
    discriminator = AutoModelForPreTraining.from_pretrained(extracted["dir"] / "discriminator").eval()
    with torch.no_grad():
        torch.testing.assert_close(generator(**batch).logits, model.generator(**batch).logits, rtol=0, atol=1e-5)
        torch.testing.assert_close(discriminator(**batch).logits, model.discriminator(**batch).logits, rtol=0,
                                   atol=1e-5)


def test_fill_mask_pipeline_on_bert_and_on_the_generator(trained, extracted):
    from transformers import pipeline

    for directory in (trained["bert"], extracted["dir"] / "generator"):
        fill = pipeline("fill-mask", model=str(directory), tokenizer=str(directory), device="cpu")
        predictions = fill("私たちの小さな[MASK]では、朝から薄い雲が広がっていました。", top_k=3)
        assert len(predictions) == 3, directory
        scores = [p["score"] for p in predictions]
        assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1
        assert all(p["token_str"] and "[MASK]" not in p["sequence"] for p in predictions)


def test_discriminator_flags_replaced_tokens_better_than_chance(trained, extracted):
    """Mask 15% of the tokens, fill them from the generator's samples, and rank tokens by the discriminator's score:
    the area under the ROC curve of replaced vs original tokens must clearly beat chance (0.5)."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer, ElectraForPreTraining

    tokenizer = AutoTokenizer.from_pretrained(extracted["dir"] / "generator")
    generator = AutoModelForMaskedLM.from_pretrained(extracted["dir"] / "generator").eval()
    discriminator = ElectraForPreTraining.from_pretrained(extracted["dir"] / "discriminator").eval()
    lines = [line for line in trained["corpus"].read_text(encoding="utf-8").splitlines() if line.strip()][:200]
    batch = tokenizer(lines, padding=True, truncation=True, max_length=64, return_tensors="pt")
    ids, real = batch["input_ids"], batch["attention_mask"].bool()
    scored = real & (ids != tokenizer.cls_token_id) & (ids != tokenizer.sep_token_id)
    rng = torch.Generator().manual_seed(0)
    masked = (torch.rand(ids.shape, generator=rng) < 0.15) & scored
    with torch.no_grad():
        logits = generator(input_ids=ids.masked_fill(masked, tokenizer.mask_token_id),
                           attention_mask=batch["attention_mask"]).logits[masked]
        samples = torch.multinomial(torch.softmax(logits, -1), 1, generator=rng).squeeze(1)
        corrupted = ids.clone()
        corrupted[masked] = samples
        score = discriminator(input_ids=corrupted, attention_mask=batch["attention_mask"]).logits[scored]
    replaced = (corrupted != ids)[scored]
    assert replaced.sum() > 100 and (~replaced).sum() > 100
    positives, negatives = score[replaced], score[~replaced]
    auc = float((positives[:, None] > negatives[None, :]).float().mean()
                + 0.5 * (positives[:, None] == negatives[None, :]).float().mean())
    assert auc > 0.6, auc


# ---------------------------------------------------------------------------------------------------------------
# --generator / --discriminator alone; bad input
# ---------------------------------------------------------------------------------------------------------------

def _script_main(name: str):
    spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), REPO / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def extract_in_process(argv: list[str], capsys) -> tuple[int, str]:
    """Run extract_electra_model.py's main as the script would (run_cli); returns (exit code, stderr)."""
    handlers, level = logging.root.handlers[:], logging.root.level
    try:
        try:
            code = run_cli(_script_main("extract_electra_model.py"), argv)
        except SystemExit as exit_:  # argparse
            code = exit_.code
    finally:
        logging.root.handlers[:] = handlers
        logging.root.setLevel(level)
    return code, capsys.readouterr().err


def test_generator_only_and_discriminator_only(trained, tmp_path, capsys):
    out = tmp_path / "hf"
    code, err = extract_in_process(["--input_dir", str(trained["checkpoint"]), "--output_dir", str(out),
                                    "--generator"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["generator"]
    code, err = extract_in_process(["--input_dir", str(trained["checkpoint"]), "--output_dir", str(out),
                                    "--discriminator"], capsys)
    assert code == 0, err  # adding the other part next to the first is fine
    assert sorted(p.name for p in out.iterdir()) == ["discriminator", "generator"]
    assert (out / "discriminator" / "model.safetensors").is_file() and (out / "generator" / "vocab.txt").is_file()


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]] | None:
    if not directory.exists():
        return None
    return {str(p.relative_to(directory)): (p.read_bytes() if p.is_file() else b"", p.stat().st_mtime_ns)
            for p in sorted(directory.rglob("*"))}


def _copy_checkpoint(trained, tmp_path, change=None) -> Path:
    path = tmp_path / "checkpoint-24"
    shutil.copytree(trained["checkpoint"], path)
    if change:
        change(path)
    return path


def _truncate(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(1000)


def _without_manifest(path: Path) -> None:
    (path / "lmpretrain_checkpoint.json").unlink()


def _temporary_checkpoint(trained, tmp_path) -> Path:
    """What a killed run leaves while writing checkpoint-24: its hidden temp folder, tokenizer files half-copied."""
    path = tmp_path / f".checkpoint-24.tmp-{os.getpid()}"
    shutil.copytree(trained["checkpoint"], path)
    _without_manifest(path)
    (path / "tokenizer_config.json").unlink()
    return path


def _existing_part(out: Path) -> None:
    (out / "discriminator").mkdir(parents=True)
    (out / "discriminator" / "config.json").write_text('{"model_type": "bert"}')
    (out / "discriminator" / "model.safetensors").write_bytes(b"the user's model")


def _existing_model(out: Path) -> None:
    out.mkdir(parents=True)
    (out / "config.json").write_text('{"model_type": "bert"}')


BAD_EXTRACTIONS = {
    "bert checkpoint": (lambda t, tmp: t["bert"] / "checkpoint-8", None, ["--generator", "--discriminator"],
                        "is not an ELECTRA or DeBERTa-v3 checkpoint (model_type 'bert', generator/ missing)"),
    "missing weights": (lambda t, tmp: _copy_checkpoint(t, tmp, lambda p: (p / "generator" / "model.safetensors")
                                                        .unlink()),
                        None, ["--generator"], "generator/model.safetensors is missing"),
    "truncated weights": (lambda t, tmp: _copy_checkpoint(t, tmp, lambda p: _truncate(p / "model.safetensors")),
                          None, ["--discriminator"], "model.safetensors is truncated or changed (1000 bytes"),
    "truncated weights, no manifest": (
        lambda t, tmp: _copy_checkpoint(t, tmp, lambda p: (_without_manifest(p),
                                                           _truncate(p / "generator" / "model.safetensors"))),
        None, ["--generator", "--discriminator"], "has no lmpretrain_checkpoint.json"),
    "no manifest": (lambda t, tmp: _copy_checkpoint(t, tmp, _without_manifest), None, ["--generator"],
                    "its files cannot be checked, so nothing is extracted from it"),
    "a checkpoint being written": (lambda t, tmp: _temporary_checkpoint(t, tmp), None, ["--discriminator"],
                                   "is the temporary folder of a checkpoint being written"),
    "output part already holds a model": (lambda t, tmp: t["checkpoint"], _existing_part,
                                          ["--generator", "--discriminator"], "already exists and is not empty"),
    "output dir is a model dir": (lambda t, tmp: t["checkpoint"], _existing_model, ["--generator"],
                                  "already holds a model (config.json)"),
    "neither part": (lambda t, tmp: t["checkpoint"], None, [], "nothing to extract: pass --generator, "
                                                               "--discriminator or both"),
    "not an electra preset": (lambda t, tmp: t["checkpoint"], None, ["--generator", "--parameter_file", "PARAMS",
                                                                     "--model_type", "bert-x"],
                              "--model_type bert-x is a bert preset, not an ELECTRA or DeBERTa-v3 one"),
}


@pytest.mark.parametrize("case", sorted(BAD_EXTRACTIONS))
def test_bad_extraction_is_one_clear_error_and_writes_nothing(case, trained, tmp_path, capsys):
    make_input, prepare_output, flags, message = BAD_EXTRACTIONS[case]
    input_dir = make_input(trained, tmp_path)
    out = tmp_path / "hf"
    if prepare_output:
        prepare_output(out)
    before_out, before_in = snapshot(out), snapshot(input_dir)
    flags = [str(trained["parameter_file"]) if f == "PARAMS" else f for f in flags]
    code, err = extract_in_process(["--input_dir", str(input_dir), "--output_dir", str(out), *flags], capsys)
    assert code == 2, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], err
    assert "Traceback" not in err
    assert snapshot(out) == before_out  # nothing written, nothing overwritten (not even a hidden temp dir)
    assert snapshot(input_dir) == before_in


def test_bad_extraction_in_a_real_process(trained, tmp_path):
    result = run_script("extract_electra_model.py", "--input_dir", str(trained["bert"] / "checkpoint-8"),
                        "--output_dir", str(tmp_path / "hf"), "--generator")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "is not an ELECTRA or DeBERTa-v3 checkpoint" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "hf").exists()


def test_full_disk_during_extraction_is_one_clear_error(trained, tmp_path, capsys):
    import subprocess

    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        code, err = extract_in_process(["--input_dir", str(trained["checkpoint"]), "--output_dir", str(disk / "hf"),
                                        "--generator", "--discriminator"], capsys)
        assert code == 2
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "no space left on device" in errors[0] and "Traceback" not in err, err
        assert list((disk / "hf").iterdir()) == []  # no part, not even a hidden partial one
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_a_finished_runs_model_dir_extracts_too(trained, tmp_path, capsys):
    """The final model at the top of --model_dir has no manifest, but train_summary.json vouches for it."""
    out = tmp_path / "hf"
    code, err = extract_in_process(["--input_dir", str(trained["electra"]), "--output_dir", str(out), "--generator",
                                    "--discriminator"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["discriminator", "generator"]


def test_extraction_stopped_between_its_renames_is_rerun_as_it_was(trained, extracted, tmp_path):
    """Killed (SIGKILL) after the first part was renamed into place and before the second: the same command run
    again replaces the part the stopped extraction left and writes both, the same bytes as an uninterrupted one."""
    import signal
    import subprocess
    import sys

    from lmpretrain.export import EXTRACTING_MARKER
    from tests.helpers import wait_for

    out, ready = tmp_path / "hf", tmp_path / "ready"
    command = ["extract_electra_model.py", "--input_dir", str(trained["checkpoint"]), "--output_dir", str(out),
               "--generator", "--discriminator"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "LMP_NO_PROGRESS": "1"}
    proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "stop_at.py"), "extract-rename:2", str(ready),
                             *command], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(ready.is_file, proc, what="the second rename")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    placed = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert len(placed) == 1 and (out / EXTRACTING_MARKER).is_file()  # half an extraction, and the mark saying so

    again = run_script(*command)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"removed {placed[0]} from {out}" in again.stderr
    assert sorted(p.name for p in out.iterdir()) == ["discriminator", "generator"]  # no marker, no temp folder
    for part in ("generator", "discriminator"):
        assert (out / part / "model.safetensors").read_bytes() == \
            (extracted["dir"] / part / "model.safetensors").read_bytes(), part


def test_a_running_extraction_into_the_same_dir_is_refused(trained, tmp_path, capsys):
    import socket

    from lmpretrain.export import EXTRACTING_MARKER

    out = tmp_path / "hf"
    out.mkdir()
    (out / EXTRACTING_MARKER).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getppid(),
                                                     "parts": ["generator"]}))
    code, err = extract_in_process(["--input_dir", str(trained["checkpoint"]), "--output_dir", str(out),
                                    "--generator"], capsys)
    assert code == 2
    assert f"--output_dir {out} is being written by another extraction (pid {os.getppid()})" in err
    assert sorted(p.name for p in out.iterdir()) == [EXTRACTING_MARKER]


def test_a_checkpoint_left_by_an_interrupted_overwrite_is_not_extracted(trained, tmp_path, capsys):
    from lmpretrain.run_dir import REPLACING_FILE

    run = tmp_path / "run"
    shutil.copytree(trained["checkpoint"], run / "checkpoint-24")
    (run / REPLACING_FILE).write_text("{}")
    code, err = extract_in_process(["--input_dir", str(run / "checkpoint-24"), "--output_dir", str(tmp_path / "hf"),
                                    "--generator"], capsys)
    assert code == 2 and "was being cleared by --overwrite_output_dir when it was stopped" in err
    assert not (tmp_path / "hf").exists()
