"""Everything a run checks before long work starts, and what it builds from that: the resolved config, the encoder,
the model."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from . import checkpoint as ckpt
from .config import ModelParams
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
from .run_config import RunConfig, TrainArgs
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

# keys of the resolved config that change the model's shape: a checkpoint must agree on them to be resumed (and
# the family's own shape options, see Family.shape_fields)
SHAPE_KEYS = ("family", "number_of_layers", "hidden_size", "ffn_inner_hidden_size", "attention_heads")


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

    def resolved_config(self) -> dict:
        args = {k: v for k, v in asdict(self.args).items() if k != "extra"}
        return {"params": self.params.to_dict(), "args": args, "tokenizer_fingerprint": self.encoder.fingerprint,
                "resolved": self.config.to_dict()}

    def check_checkpoint(self, path: Path, saved: dict) -> None:
        """Raise UserError unless a checkpoint's saved config (``resolved_config()`` then) fits this run."""
        if saved.get("tokenizer_fingerprint") != self.encoder.fingerprint:
            raise UserError(f"{path} was trained with a different tokenizer than {self.args.tokenizer_dir}")
        now = self.params.to_dict()
        for key in SHAPE_KEYS + self.family.shape_fields():
            if saved["params"].get(key) != now.get(key):
                raise UserError(f"{path}: {key} is {saved['params'].get(key)!r} in the checkpoint but "
                                f"{now.get(key)!r} in {self.args.parameter_file} ({self.args.model_type})")


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
    params = load_parameters(args.parameter_file, args.model_type)
    config = RunConfig.resolve(args, params)
    pretrained = config.pretrained_model_name_or_path
    params = resolve_pretrained_shape(params, pretrained)
    for name in args.input_file + (args.eval_file or []):
        if not Path(name).exists():
            raise UserError(f"--input_file/--eval_file: {name} does not exist")
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
    if args.train_steps is not None and args.train_steps <= 0:
        raise UserError(f"--train_steps must be positive (got {args.train_steps})")
    _check_output_dir(Path(args.model_dir), "--model_dir")
    _check_output_dir(Path(config.cache_dir), "--cache_dir" if args.cache_dir else "the dataset cache")
    if args.do_continue and not ckpt.list_checkpoints(args.model_dir):
        raise UserError(f"--do_continue: no checkpoint-<step> folder in {args.model_dir}")
    if pretrained is not None and not args.do_continue:
        check_tokenizer_matches(pretrained, args.tokenizer_dir,
                                allow_different=config.resize_embeddings)
    vocab_plan = None
    if pretrained is not None and config.resize_embeddings:
        vocab_plan = vocabulary_plan(pretrained, args.tokenizer_dir)
    encoder = FastEncoder.from_pretrained(args.tokenizer_dir, num_workers=config.num_workers)
    return PreparedRun(args=args, params=params, config=config, encoder=encoder, vocab_plan=vocab_plan)


def vocabulary_plan(pretrained: str, tokenizer_dir: str | Path) -> VocabPlan | None:
    """How the model at ``pretrained`` maps onto the tokenizer's vocabulary by token (its own tokenizer, in its
    dir, splits the tokens it lacks); None when the vocabularies are the same, or the model dir has no tokenizer
    files (then rows are kept by id, as transformers resizes, and the log says so)."""
    new = model_vocabulary(tokenizer_dir)
    old = model_vocabulary(pretrained, with_split=True)
    if old is None:
        logger.warning("no tokenizer files beside the model at %s: its embedding rows are kept by id, not by token "
                       "(put the tokenizer it was trained with into that dir to map them by token)", pretrained)
        return None
    if new is None or old.tokens == new.tokens:
        return None
    return plan_adaptation(old.tokens, new.tokens, split=old.split, old_roles=old.roles, new_roles=new.roles,
                           text_of=token_text)
