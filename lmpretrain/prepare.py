"""Everything a run checks before long work starts, and what it builds from that: the run description (phase (a):
flags and preset; phase (b): once the process layout is known), the encoder, the model."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

from . import checkpoint as ckpt
from .config import read_preset
from .data import cache_location, resolve_corpus_files
from .data.corpus import corpus_fingerprint
from .data.shards import CacheInvalid, read_manifest
from .data_setup import RunData, build_run_data
from .dataset_dir import check_dataset_tokenizer, corpus_fingerprint_of, read_dataset
from .distributed import Layout
from .errors import UserError
from .hub import local_dir, tokenizer_location
from .log import get_logger
from .models import (
    VocabPlan,
    build_model,
    get_family,
    parse_preset,
    plan_adaptation,
    resolve_pretrained_shape,
)
from .resume import newest_complete, trained_data_versions
from .run_config import TrainArgs
from .run_description import DataSettings, RunDescription, describe
from .run_dir import earlier_run_outputs, refuse_if_being_replaced
from .tokenization import (
    META_FILE,
    FastEncoder,
    check_auto_tokenizer_loads,
    check_causal_tokenizer,
    check_tokenizer_matches,
    model_vocabulary,
    token_text,
    word_tokenizer_of,
)

logger = get_logger(__name__)


class Resources:
    """What a run opens, beside its settings: the encoder, and the corpus fingerprints (hashed once, on first use)."""

    def __init__(self, encoder: FastEncoder):
        self.encoder = encoder
        self._fingerprints: dict | None = None

    def data_fingerprints(self, data: DataSettings) -> dict:
        """Content fingerprints of the corpus and of the --eval_file data (None: a held-out share), computed once
        and handed to the dataset cache, which then does not hash the files again."""
        if self._fingerprints is None:
            corpus = corpus_fingerprint_of(data.dataset_dir, read_dataset(data.dataset_dir)) if data.dataset_dir \
                else _files_fingerprint(data, data.input_files)  # a dataset's: what its shards record
            self._fingerprints = {"corpus": corpus,
                                  "eval": _files_fingerprint(data, data.eval_files) if data.eval_files else None}
        return self._fingerprints

    def close(self) -> None:
        self.encoder.close()


def _files_fingerprint(data: DataSettings, paths) -> list[dict]:
    if not data.check_cache:  # --disable_overwrite_cache: the cache is reused unchecked, what it records is trained on
        try:
            location = cache_location(data.cache_dir, list(paths), data.tokenizer_dir)
            return read_manifest(location)["components"]["corpus"]
        except (CacheInvalid, KeyError, TypeError):
            pass
    return corpus_fingerprint(resolve_corpus_files(list(paths)))


@dataclass(frozen=True)
class Run:
    """A prepared run: its description (:mod:`.run_description`: settings only, frozen) and the resources it opened.
    ``prepare_run`` makes the first phase's; ``settle_run`` the one the loop reads."""

    description: RunDescription
    resources: Resources

    @property
    def encoder(self) -> FastEncoder:
        return self.resources.encoder

    def data_fingerprints(self) -> dict:
        return self.resources.data_fingerprints(self.description.data)

    def build_model(self):
        """The family's model, seeded: from scratch, or continued from the pretrained model (a resumed run's weights
        come from its checkpoint)."""
        model, data, encoder = self.description.model, self.description.data, self.encoder
        return build_model(model.params, vocab_size=encoder.vocab_size, pad_token_id=encoder.pad_token_id,
                           seed=data.seed, pretrained_dir=None if self.description.outputs.resume else model.pretrained,
                           resize_embeddings=model.resize_embeddings, eos_token_id=encoder.sep_token_id,
                           cls_token_id=encoder.cls_token_id, vocab_plan=model.vocab_plan)

    def record(self, history: list | None = None) -> dict:
        """What each checkpoint records of its run (``lmpretrain_config.json``); --do_continue compares it.
        ``history``: the changes earlier resumes of this run accepted."""
        return {**self.description.record(), "fingerprints": {"tokenizer": self.encoder.fingerprint,
                                                              **self.data_fingerprints()},
                "history": list(history or [])}


def _check_tokenizer_flags(args: TrainArgs, meta: dict, flags: dict | None = None) -> None:
    """--mecab_dic_type / --tokenizer_type / --word_tokenizer are the original's flags; here they must agree with the
    tokenizer dir. ``flags``: the flag each key was given as, for messages (create_datasets.py's names)."""
    checks = {"mecab_dic_type": args.mecab_dic_type, "tokenizer_type": args.tokenizer_type,
              "word_tokenizer": args.word_tokenizer}
    if word_tokenizer_of(meta) is not None:  # also for dirs written before it was recorded
        meta = {**meta, "word_tokenizer": word_tokenizer_of(meta)}
    aliases = {"sentencepiece": "bpe"}
    for key, given in checks.items():
        if given is None or key not in meta:
            continue
        if aliases.get(given, given) != aliases.get(meta[key], meta[key]):
            flag = (flags or {}).get(key, key)
            raise UserError(f"--{flag} {given} does not match the tokenizer in {args.tokenizer_dir} "
                            f"({key} {meta[key]} recorded in {META_FILE})")


def _resume_from_checkpoint(args: TrainArgs) -> TrainArgs:
    """The original's --resume_from_checkpoint DIR as --do_continue: DIR must be the newest checkpoint-<step> in
    --model_dir, which is what --do_continue resumes (a run resumes in its own dir, from where it stopped)."""
    if args.resume_from_checkpoint is None:
        return args
    given = Path(args.resume_from_checkpoint)
    if not given.is_dir():
        raise UserError(f"--resume_from_checkpoint {given} is not a directory")
    if given.resolve().parent != Path(args.model_dir).resolve():
        raise UserError(f"--resume_from_checkpoint {given} is not in --model_dir {args.model_dir}: a run resumes in "
                        f"its own model dir (copy the checkpoint into --model_dir, or give its dir as --model_dir)")
    try:
        step = ckpt.step_of(given)
    except ValueError:
        raise UserError(f"--resume_from_checkpoint {given} is not a checkpoint-<step> folder") from None
    newest = newest_complete(Path(args.model_dir))
    if newest is None or newest[0].resolve() != given.resolve():
        what = f"its newest complete checkpoint is {newest[0].name}" if newest else "it holds no complete checkpoint"
        raise UserError(f"--resume_from_checkpoint {given}: a run resumes from the newest complete checkpoint in "
                        f"--model_dir {args.model_dir} (--do_continue), and {what}; move the newer ones out to "
                        f"resume from step {step}")
    return replace(args, do_continue=True)


def _check_output_dir(path: Path, flag: str) -> None:
    """Fail now, not after the dataset build, when an output dir cannot be written (nothing is created here)."""
    if path.exists():
        if not path.is_dir():
            raise UserError(f"{flag} {path} exists and is not a directory")
        if not os.access(path, os.W_OK | os.X_OK):
            raise UserError(f"{flag} {path} is not writable")
        return
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{flag} {path} cannot be created: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path} cannot be created: {parent} is not writable")


def prepare_run(args: TrainArgs) -> Run:
    """Phase (a): validate flags, parameter.json and the tokenizer dir, resolve the run description, open the
    encoder. Raises UserError on bad input, before any long work."""
    for name in args.input_file + (args.eval_file or []):
        if not Path(name).exists():
            raise UserError(f"--input_file/--eval_file: {name} does not exist")
        resolve_corpus_files(name)  # a FIFO, a directory without corpus files: said now, before any dir is made
    args = _resume_from_checkpoint(args)
    args = replace(args, tokenizer_dir=tokenizer_location(args.tokenizer_dir, "--tokenizer_dir"),  # hub: snapshots
                   pretrained_model_name_or_path=local_dir(args.pretrained_model_name_or_path,
                                                           "--pretrained_model_name_or_path"))
    preset = read_preset(args.parameter_file, args.model_type)  # read once
    params = parse_preset(args.model_type, preset, args.parameter_file,
                          continued=bool(args.pretrained_model_name_or_path))
    params = replace(params, pretrained_model_name_or_path=local_dir(params.pretrained_model_name_or_path,
                                                                     f"{args.model_type}.pretrained_model_name_or_path"),
                     pretrained_generator=local_dir(params.pretrained_generator,
                                                    f"{args.model_type}.pretrained_generator_model_name_or_path"))
    family = get_family(params.family)
    params = resolve_pretrained_shape(params, args.pretrained_model_name_or_path or
                                      params.pretrained_model_name_or_path, set(preset), str(args.parameter_file))
    description = describe(args, params, family)
    data, outputs = description.data, description.outputs
    tokenizer_dir = Path(data.tokenizer_dir)
    if not tokenizer_dir.is_dir():
        raise UserError(f"--tokenizer_dir {tokenizer_dir} is not a directory")
    meta_path = tokenizer_dir / META_FILE
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
    _check_tokenizer_flags(args, meta)
    check_auto_tokenizer_loads(tokenizer_dir, family.hf_model_types[0], family.display)
    if family.collator == "causal":
        check_causal_tokenizer(tokenizer_dir)
    if args.do_whole_word_mask and family.collator == "causal":
        raise UserError(f"--do_whole_word_mask applies to masked LMs, not to the causal LM family "
                        f"({family.display})")
    _check_output_dir(Path(outputs.model_dir), "--model_dir")
    _check_output_dir(Path(data.cache_dir), "--cache_dir" if args.cache_dir else "the dataset cache")
    if outputs.resume and outputs.overwrite_output_dir:
        raise UserError("--do_continue resumes the run in --model_dir and --overwrite_output_dir deletes it: "
                        "give one of them")
    if outputs.resume:  # what an interrupted --overwrite_output_dir left is no run: neither resumed nor started over
        refuse_if_being_replaced(outputs.model_dir)
    resume = outputs.resume and (bool(ckpt.list_checkpoints(outputs.model_dir)) or
                                 _start_over_or_refuse(Path(outputs.model_dir)))
    trained = trained_data_versions(outputs.model_dir) if resume else None
    if trained is not None:  # a resumed run keeps the held-out documents and the instances its checkpoint trained on
        if trained["instance_version"] != data.instance_version:
            logger.info("--do_continue: the checkpoint trained on instances of layout version %d: the run keeps them "
                        "(a new run gets version %d)", trained["instance_version"], data.instance_version)
        data = replace(data, **trained)
    pretrained = description.model.pretrained
    if pretrained is not None and not resume:
        check_tokenizer_matches(pretrained, data.tokenizer_dir, allow_different=description.model.resize_embeddings)
    vocab_plan = None
    if pretrained is not None and description.model.resize_embeddings:
        vocab_plan = vocabulary_plan(pretrained, data.tokenizer_dir, compose=params.new_token_init == "pieces")
    encoder = FastEncoder.from_pretrained(data.tokenizer_dir, num_workers=data.num_workers)
    if data.whole_word_mask and not encoder.has_word_boundaries:
        logger.warning("--do_whole_word_mask: the tokenizer in %s has no word boundaries (its tokenizer.json has no "
                       "pre-tokenizer), so whole-word masking treats each line as one word; train the "
                       "tokenizer with a word segmenter or a pre-tokenizer", data.tokenizer_dir)
    if data.dataset_dir:
        try:
            check_dataset_tokenizer(data.dataset_dir, read_dataset(data.dataset_dir), encoder.fingerprint,
                                    data.tokenizer_dir)
        except UserError:
            encoder.close()
            raise
    if family.collator == "mlm" and encoder.mask_token_id is None:
        encoder.close()
        raise UserError(f"the tokenizer in {data.tokenizer_dir} declares no mask token, which the masked LM family "
                        f"{family.display} needs")
    description = replace(description, model=replace(description.model, vocab_plan=vocab_plan), data=data,
                          outputs=replace(outputs, resume=resume))
    return Run(description, Resources(encoder))


def place_run(run: Run, layout: Layout) -> Run:
    """Phase (b), first half: what depends on the process layout (``RunDescription.placed``)."""
    return Run(run.description.placed(layout), run.resources)


def settle_run(run: Run, layout: Layout) -> tuple[Run, RunData | None]:
    """Phase (b): the run description the loop reads, settled on the process layout, and the datasets where this
    phase needs them: an epoch budget's steps need the training instances, so for it the dataset is built (or read
    from its cache) here and returned with it, before the model dir is settled (a token budget needs the global batch
    only). --build_dataset_only builds the dataset alone."""
    placed = place_run(run, layout)
    optim, build_only = placed.description.optim, placed.description.system.build_dataset_only
    data = build_run_data(placed, layout) if build_only or optim.budget[0] == "train-epochs" else None
    if build_only:
        return placed, data
    settled = Run(placed.description.settled(instances=len(data.train_dataset) if data is not None else None),
                  run.resources)
    kind, value = optim.budget
    if kind != "train-steps":
        logger.info("%s %g: %d train steps at global batch %d and sequence-length %d", kind, value,
                    settled.description.optim.train_steps, layout.global_batch_size,
                    settled.description.data.sequence_length)
    return settled, data


def _start_over_or_refuse(model_dir: Path) -> bool:
    """--do_continue into a dir without a checkpoint. A dir that a run has used but that holds no checkpoint and
    no finished model (a run preempted or stopped before its first save, or made by the job script, as a requeued
    job finds it) starts over from step 0 (returns False, the run does not resume), with a warning, as Megatron-LM's
    ``--load`` and transformers' examples (``get_last_checkpoint``) do without a checkpoint; a missing dir (a
    mistyped --model_dir, most likely) stays an error."""
    if not model_dir.is_dir():
        raise UserError(f"--do_continue: no checkpoint-<step> folder in {model_dir}, which does not exist (is "
                        f"--model_dir right? leave out --do_continue to start a new run)")
    if earlier_run_outputs(model_dir):  # a finished model without checkpoints: resuming it is not possible
        raise UserError(f"--do_continue: no checkpoint-<step> folder in {model_dir}, which holds a finished model "
                        f"({', '.join(earlier_run_outputs(model_dir)[:3])}); --overwrite_output_dir starts over")
    logger.warning("--do_continue: %s holds no checkpoint yet (the run stopped before its first save): starting "
                   "from step 0", model_dir)
    return False


def vocabulary_plan(pretrained: str, tokenizer_dir: str | Path, *, compose: bool = False) -> VocabPlan | None:
    """How the model at ``pretrained`` maps onto the tokenizer's vocabulary by token (its own tokenizer, in its
    dir, splits the tokens it lacks); None when the vocabularies are the same, or the model dir has no tokenizer
    files (then rows are kept by id, as transformers resizes, and the log says so). ``compose``: new tokens start as
    the mean of their pieces' rows instead of the mean embedding."""
    new = model_vocabulary(tokenizer_dir)
    old = model_vocabulary(pretrained, with_split=compose)
    if old is None:
        logger.warning("no tokenizer files beside the model at %s: its embedding rows are kept by id, not by token "
                       "(put the tokenizer it was trained with into that dir to map them by token)", pretrained)
        return None
    if new is None or old.tokens == new.tokens:
        return None
    return plan_adaptation(old.tokens, new.tokens, split=old.split if compose else None, old_roles=old.roles,
                           new_roles=new.roles, text_of=token_text)
