"""Everything a run checks before long work starts, and what it builds from that: the resolved config, the encoder,
the model."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from . import checkpoint as ckpt
from .config import ModelParams, read_preset
from .data import cache_location, resolve_corpus_files
from .data.corpus import corpus_fingerprint
from .data.shards import CacheInvalid, read_manifest
from .errors import UserError
from .log import get_logger
from .models import (
    Family,
    VocabPlan,
    build_model,
    get_family,
    load_parameters,
    plan_adaptation,
    resolve_pretrained_shape,
)
from .resume import compare, judge
from .run_config import RunConfig, TrainArgs
from .run_dir import earlier_run_outputs
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

@dataclass
class PreparedRun:
    args: TrainArgs
    params: ModelParams
    config: RunConfig
    encoder: FastEncoder
    vocab_plan: VocabPlan | None = None
    """The pretrained model's embeddings, mapped by token to this tokenizer (None: same vocabulary, or no model)."""

    @property
    def family(self) -> Family:
        return get_family(self.params.family)

    def build_model(self):
        # a resumed run's weights come from its checkpoint
        pretrained = None if self.args.do_continue else self.config.pretrained_model_name_or_path
        return build_model(self.params, vocab_size=self.encoder.vocab_size, pad_token_id=self.encoder.pad_token_id,
                           seed=self.args.seed, pretrained_dir=pretrained,
                           resize_embeddings=self.config.resize_embeddings,
                           eos_token_id=self.encoder.sep_token_id, cls_token_id=self.encoder.cls_token_id,
                           vocab_plan=self.vocab_plan)

    history: list = field(default_factory=list)
    """The changes earlier resumes of this run accepted (saved with each checkpoint)."""
    _fingerprints: dict | None = field(default=None, repr=False)

    def data_fingerprints(self) -> dict:
        """Content fingerprints of the corpus and of the --eval_file data (None: a held-out share), computed once
        and handed to the dataset cache, which then does not hash the files again."""
        if self._fingerprints is None:
            eval_file = self.args.eval_file
            self._fingerprints = {"corpus": self._files_fingerprint(self.args.input_file),
                                  "eval": self._files_fingerprint(eval_file) if eval_file else None}
        return self._fingerprints

    def _files_fingerprint(self, paths: list[str]) -> list[dict]:
        if self.args.disable_overwrite_cache:  # the cache is reused unchecked: what it records is what is trained on
            try:
                location = cache_location(self.config.cache_dir, paths, self.args.tokenizer_dir)
                return read_manifest(location)["components"]["corpus"]
            except (CacheInvalid, KeyError, TypeError):
                pass
        return corpus_fingerprint(resolve_corpus_files(paths))

    def resolved_config(self, global_batch_size: int | None = None) -> dict:
        """What each checkpoint records of its run (``lmpretrain_config.json``); --do_continue compares it."""
        args = {k: v for k, v in asdict(self.args).items() if k != "extra"}
        config = {"params": self.params.to_dict(), "args": args, "tokenizer_fingerprint": self.encoder.fingerprint,
                  "resolved": self.config.to_dict(), "data": self.data_fingerprints(), "history": self.history}
        if global_batch_size is not None:
            config["global_batch_size"] = global_batch_size
        return config

    def check_checkpoint(self, path: Path, saved: dict, current: dict, *, announce: bool = False) -> None:
        """Raise UserError unless a checkpoint's saved config (``resolved_config()`` then) fits this run, as
        :mod:`lmpretrain.resume` judges it (``current``: this run's ``resolved_config``)."""
        judge(compare(saved, current, self.family.shape_fields()), path,
              accept_changed_run=self.args.accept_changed_run, announce=announce)


def _check_tokenizer_flags(args: TrainArgs, meta: dict) -> None:
    """--mecab_dic_type / --tokenizer_type / --word_tokenizer are the original's flags; here they must agree with the
    tokenizer dir."""
    checks = {"mecab_dic_type": args.mecab_dic_type, "tokenizer_type": args.tokenizer_type,
              "word_tokenizer": args.word_tokenizer}
    if word_tokenizer_of(meta) is not None:  # also for dirs written before it was recorded
        meta = {**meta, "word_tokenizer": word_tokenizer_of(meta)}
    aliases = {"sentencepiece": "bpe"}
    for key, given in checks.items():
        if given is None or key not in meta:
            continue
        if aliases.get(given, given) != aliases.get(meta[key], meta[key]):
            raise UserError(f"--{key} {given} does not match the tokenizer in {args.tokenizer_dir} "
                            f"({key} {meta[key]} recorded in {META_FILE})")


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


def prepare_run(args: TrainArgs) -> PreparedRun:
    """Validate flags, parameter.json and the tokenizer dir; open the encoder. Raises UserError on bad input."""
    params = load_parameters(args.parameter_file, args.model_type, continued=bool(args.pretrained_model_name_or_path))
    config = RunConfig.resolve(args, params)
    pretrained = config.pretrained_model_name_or_path
    params = resolve_pretrained_shape(params, pretrained, set(read_preset(args.parameter_file, args.model_type)))
    for name in args.input_file + (args.eval_file or []):
        if not Path(name).exists():
            raise UserError(f"--input_file/--eval_file: {name} does not exist")
        resolve_corpus_files(name)  # a FIFO, a directory without corpus files: said now, before any dir is made
    tokenizer_dir = Path(args.tokenizer_dir)
    if not tokenizer_dir.is_dir():
        raise UserError(f"--tokenizer_dir {tokenizer_dir} is not a directory")
    meta_path = tokenizer_dir / META_FILE
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
    _check_tokenizer_flags(args, meta)
    family = get_family(params.family)
    check_auto_tokenizer_loads(tokenizer_dir, family.hf_model_types[0], family.display)
    if family.collator == "causal":
        check_causal_tokenizer(tokenizer_dir)
    if args.do_whole_word_mask and get_family(params.family).collator == "causal":
        raise UserError(f"--do_whole_word_mask applies to masked LMs, not to the causal LM family "
                        f"({get_family(params.family).display})")
    if args.peak_tflops is not None and not (args.peak_tflops > 0 and math.isfinite(args.peak_tflops)):
        raise UserError(f"--peak_tflops must be a positive number of TFLOPS (got {args.peak_tflops})")
    if args.dataloader_workers is not None and args.dataloader_workers < 0:
        raise UserError(f"--dataloader_workers must be 0 (batches built in the loop's process) or more "
                        f"(got {args.dataloader_workers})")
    _check_output_dir(Path(args.model_dir), "--model_dir")
    _check_output_dir(Path(config.cache_dir), "--cache_dir" if args.cache_dir else "the dataset cache")
    if args.do_continue and args.overwrite_output_dir:
        raise UserError("--do_continue resumes the run in --model_dir and --overwrite_output_dir deletes it: "
                        "give one of them")
    if args.do_continue and not ckpt.list_checkpoints(args.model_dir):
        args = _start_over_or_refuse(args)
    if pretrained is not None and not args.do_continue:
        check_tokenizer_matches(pretrained, args.tokenizer_dir,
                                allow_different=config.resize_embeddings)
    vocab_plan = None
    if pretrained is not None and config.resize_embeddings:
        vocab_plan = vocabulary_plan(pretrained, args.tokenizer_dir, compose=params.new_token_init == "pieces")
    encoder = FastEncoder.from_pretrained(args.tokenizer_dir, num_workers=config.num_workers)
    if config.whole_word_mask and not encoder.has_word_boundaries:
        logger.warning("--do_whole_word_mask: the tokenizer in %s has no word boundaries (its tokenizer.json has no "
                       "pre-tokenizer), so whole-word masking treats each line as one word; train the "
                       "tokenizer with a word segmenter or a pre-tokenizer", args.tokenizer_dir)
    if family.collator == "mlm" and encoder.mask_token_id is None:
        encoder.close()
        raise UserError(f"the tokenizer in {args.tokenizer_dir} declares no mask token, which the masked LM family "
                        f"{family.display} needs")
    return PreparedRun(args=args, params=params, config=config, encoder=encoder, vocab_plan=vocab_plan)


def _start_over_or_refuse(args: TrainArgs) -> TrainArgs:
    """--do_continue into a dir without a checkpoint. A dir that a run has used but that holds no checkpoint and
    no finished model (a run preempted or stopped before its first save, or made by the job script, as a requeued
    job finds it) starts over from step 0, with a warning, as Megatron-LM's ``--load`` and transformers' examples
    (``get_last_checkpoint``) do without a checkpoint; a missing dir (a mistyped --model_dir, most likely) stays an
    error."""
    model_dir = Path(args.model_dir)
    if not model_dir.is_dir():
        raise UserError(f"--do_continue: no checkpoint-<step> folder in {model_dir}, which does not exist (is "
                        f"--model_dir right? leave out --do_continue to start a new run)")
    if earlier_run_outputs(model_dir):  # a finished model without checkpoints: resuming it is not possible
        raise UserError(f"--do_continue: no checkpoint-<step> folder in {model_dir}, which holds a finished model "
                        f"({', '.join(earlier_run_outputs(model_dir)[:3])}); --overwrite_output_dir starts over")
    logger.warning("--do_continue: %s holds no checkpoint yet (the run stopped before its first save): starting "
                   "from step 0", model_dir)
    return replace(args, do_continue=False)


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
