"""Everything a run checks and loads before long work starts, and how its model goes to and from disk."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from . import checkpoint as ckpt
from .config import ModelParams
from .errors import UserError
from .log import get_logger
from .models import Family, build_model, get_family, load_parameters, resolve_pretrained_shape, usable_positions
from .run_config import TrainArgs
from .tokenization import META_FILE, FastEncoder, check_tokenizer_matches, word_tokenizer_of

logger = get_logger(__name__)

# keys of the resolved config that change the model's shape: a checkpoint must agree on them to be resumed (and
# the family's own shape options, see Family.shape_fields)
SHAPE_KEYS = ("family", "number_of_layers", "hidden_size", "ffn_inner_hidden_size", "attention_heads")


@dataclass
class PreparedRun:
    args: TrainArgs
    params: ModelParams
    encoder: FastEncoder
    tokenizer_meta: dict

    @property
    def family(self) -> Family:
        return get_family(self.params.family)

    def build_model(self):
        pretrained = self.args.pretrained_model_name_or_path or self.params.pretrained_model_name_or_path
        if self.args.do_continue:
            pretrained = None  # weights come from the checkpoint
        return build_model(self.params, vocab_size=self.encoder.vocab_size, pad_token_id=self.encoder.pad_token_id,
                           seed=self.args.seed, pretrained_dir=pretrained,
                           resize_embeddings=self.args.resize_embeddings or self.params.resize_embeddings,
                           eos_token_id=self.encoder.sep_token_id)

    def resolved_config(self) -> dict:
        args = {k: v for k, v in asdict(self.args).items() if k != "extra"}
        return {"params": self.params.to_dict(), "args": args, "tokenizer_fingerprint": self.encoder.fingerprint}

    def write_checkpoint(self, directory: Path, model, training_state: dict) -> None:
        model.save_pretrained(directory)
        positions = usable_positions(next(iter(model.hf_models().values())).config)
        for part in self.family.parts:  # each part's dir is complete on its own: tokenizer files in every one
            ckpt.copy_tokenizer_files(self.args.tokenizer_dir, directory / part.folder, positions)
        (directory / ckpt.CONFIG_FILE).write_text(json.dumps(self.resolved_config(), indent=1, default=str),
                                                  encoding="utf-8")
        ckpt.save_training_state(directory, training_state)

    def load_checkpoint(self, path: Path, model) -> dict:
        """Check that a checkpoint fits this run, load its weights into ``model`` and return its training state."""
        saved = json.loads((path / ckpt.CONFIG_FILE).read_text(encoding="utf-8"))
        if saved.get("tokenizer_fingerprint") != self.encoder.fingerprint:
            raise UserError(f"{path} was trained with a different tokenizer than {self.args.tokenizer_dir}")
        now = self.params.to_dict()
        for key in SHAPE_KEYS + self.family.shape_fields():
            if saved["params"].get(key) != now.get(key):
                raise UserError(f"{path}: {key} is {saved['params'].get(key)!r} in the checkpoint but "
                                f"{now.get(key)!r} in {self.args.parameter_file} ({self.args.model_type})")
        load_weights(model, path)
        return ckpt.load_training_state(path)

    def export_final(self, checkpoint_dir: Path, model_dir: str, summary: dict, model=None) -> None:
        """Copy the final checkpoint's model and tokenizer files to the top of ``model_dir`` (each file atomically),
        check the copy against ``model`` (logits through transformers' Auto classes, ids through AutoTokenizer), and
        write ``train_summary.json`` last, so that its presence means a finished, verified model."""
        skip = {ckpt.MANIFEST, ckpt.STATE_FILE}
        (Path(model_dir) / "train_summary.json").unlink(missing_ok=True)  # an older run's must not vouch for this one
        for src in checkpoint_dir.rglob("*"):
            if src.is_dir() or src.name in skip:
                continue
            dest = Path(model_dir) / src.relative_to(checkpoint_dir)
            tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
            try:
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, tmp)
                os.replace(tmp, dest)
            except OSError as error:
                tmp.unlink(missing_ok=True)
                reason = ckpt.describe_write_failure(error, Path(model_dir))
                raise UserError(f"could not copy the final model to {dest}: {reason}; {checkpoint_dir} is complete "
                                f"and holds the same model") from None
        if model is not None:
            from .export import verify_export

            worst = verify_export(model, model_dir, self.encoder)
            logger.info("verified the export in %s: logits match the trained model (max difference %s), "
                        "AutoTokenizer ids match the training pipeline's", model_dir,
                        ", ".join(f"{k} {v:.2g}" for k, v in worst.items()))
        tmp = Path(model_dir) / f".train_summary.json.tmp-{os.getpid()}"
        tmp.write_text(json.dumps(summary, indent=1), encoding="utf-8")
        os.replace(tmp, Path(model_dir) / "train_summary.json")


def load_weights(model, path: Path) -> None:
    """Load each part (transformers model) of ``model`` from its HF dir in a checkpoint (the folder its family
    declares)."""
    hf_models = model.hf_models()
    for part in model.family.parts:
        name, hf_model, directory = part.name, hf_models[part.name], path / part.folder
        try:
            loaded = type(hf_model).from_pretrained(directory, dtype=torch.float32)
        except ckpt.LOAD_ERRORS as error:
            raise ckpt.CheckpointError(f"{directory}: the {name} weights cannot be loaded "
                                       f"({type(error).__name__}: {error})") from None
        missing, unexpected = hf_model.load_state_dict(loaded.state_dict(), strict=False)
        if missing or unexpected:
            raise ckpt.CheckpointError(f"{directory}: weights do not fit the model (missing {missing[:3]}, "
                                       f"unexpected {unexpected[:3]})")


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
    pretrained = args.pretrained_model_name_or_path or params.pretrained_model_name_or_path
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
    if args.do_whole_word_mask and get_family(params.family).collator == "causal":
        raise UserError(f"--do_whole_word_mask applies to masked LMs, not to the causal LM family "
                        f"({get_family(params.family).display})")
    if args.train_steps is not None and args.train_steps <= 0:
        raise UserError(f"--train_steps must be positive (got {args.train_steps})")
    _check_output_dir(Path(args.model_dir), "--model_dir")
    if args.cache_dir:
        _check_output_dir(Path(args.cache_dir), "--cache_dir")
    if args.do_continue and not ckpt.list_checkpoints(args.model_dir):
        raise UserError(f"--do_continue: no checkpoint-<step> folder in {args.model_dir}")
    if pretrained is not None and not args.do_continue:
        check_tokenizer_matches(pretrained, args.tokenizer_dir,
                                allow_different=args.resize_embeddings or params.resize_embeddings)
    encoder = FastEncoder.from_pretrained(args.tokenizer_dir, num_workers=args.num_workers or os.cpu_count() or 1)
    return PreparedRun(args=args, params=params, encoder=encoder, tokenizer_meta=meta)
