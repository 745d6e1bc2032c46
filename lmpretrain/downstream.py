"""A downstream probe: fine-tune a copy of a model dir on a small task and report the task's metric over seeds.

A task dir holds ``train``, ``dev`` and ``test`` splits, each ``<split>.jsonl`` (one JSON object a line) or
``<split>.tsv`` (tab-separated, a header line naming the columns), with a text field (``text``, or ``text_a`` and
``text_b`` for a pair) and ``label``. Labels that are strings or integers make a classification task (accuracy);
JSON floats (in a TSV: numbers that are not all integers) make a regression task (Pearson and Spearman correlation).
JGLUE datasets are read as the user has them locally (nothing is downloaded): a dir named ``marc_ja-v*``,
``jnli-v*``, ``jsts-v*`` or ``jcola-v*`` (or any dir with ``task_format="jglue-<name>"``) holding JGLUE's own files,
``train-v<version>.json`` and ``valid-v<version>.json`` (JSON lines; JCoLA's ``in_domain_train-v1.0.json(l)`` and
``in_domain_valid-v1.0.json``), with their own fields: MARC-ja ``sentence`` (or ``text``) and ``label``
positive/negative; JNLI ``sentence1``, ``sentence2`` and ``label`` entailment/contradiction/neutral; JSTS
``sentence1``, ``sentence2`` and a float ``label`` 0-5 (a regression: Pearson and Spearman); JCoLA ``sentence`` and
``label`` 0/1. JGLUE publishes train and valid (its test labels are held back; papers report on valid), so: ``test``
is ``valid-v*.json`` and ``dev`` is a seeded share of ``train-v*.json`` (``dev_share``, default 10%, ``split_seed``
0), taken out of train. Where a labelled ``test-v*.json`` is there too (newer releases), ``dev`` is valid and
``test`` is test. The results record where each split came from.

The model dir is any Hugging Face dir with its tokenizer (an export, a ``checkpoint-N/``); it is loaded through
``AutoModelForSequenceClassification`` (encoders: their own head; causal LMs: the last non-pad token's state). With
``zero_shot`` a causal LM is not fine-tuned: each label's verbalizer text is scored as a continuation of the
example's prompt (the sum of its tokens' log-likelihoods) and the best-scoring label is the prediction.
"""

from __future__ import annotations

import csv
import json
import math
import random
import re
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import UserError
from .log import get_logger, progress

logger = get_logger(__name__)

SPLITS = ("train", "dev", "test")
TEXT_FIELDS = (("text",), ("text_a", "text_b"))
BASE_LEARNING_RATE, BASE_HIDDEN, MAX_LEARNING_RATE = 5e-5, 768, 1e-3


@dataclass(frozen=True)
class JGlueFormat:
    kind: str
    fields: tuple[str, ...]  # the text fields, in order (a second one: a pair)
    labels: tuple | None  # the allowed labels (None: a number)
    label_words: dict  # the zero-shot verbalizers (label -> text) and prompt when none are given
    prompt: str


# the JGLUE datasets' own fields (github.com/yahoojapan/JGLUE README and preprocess/marc-ja/scripts/marc-ja.py, which
# writes {"sentence", "label", "review_id"}; JCoLA: github.com/osekilab/JCoLA data/jcola-v1.0/*.json)
JGLUE = {
    "marc_ja": JGlueFormat("classification", ("sentence",), ("positive", "negative"),
                           {"positive": "良い", "negative": "悪い"}, "{text}\nこの商品の評価は"),
    "jnli": JGlueFormat("classification", ("sentence1", "sentence2"), ("entailment", "contradiction", "neutral"),
                        {"entailment": "含意", "contradiction": "矛盾", "neutral": "中立"},
                        "{text_a}\n{text_b}\n関係:"),
    "jsts": JGlueFormat("regression", ("sentence1", "sentence2"), None, {}, ""),
    "jcola": JGlueFormat("classification", ("sentence",), (0, 1), {"1": "正しい", "0": "誤り"},
                         "{text}\nこの文は文法的に"),
}
TASK_FORMATS = ("plain",) + tuple(f"jglue-{name}" for name in JGLUE)
# JGLUE's file names: <split>-v<version>.json (JCoLA: in_domain_<split>-v<version>.json or .jsonl)
_JGLUE_FILE = re.compile(r"^(?:in_domain_)?(train|valid|test)-v[0-9.]+\.jsonl?$")
_JGLUE_DIR = re.compile(r"^(marc_ja|jnli|jsts|jcola)(?:-v[0-9.]+)?$")


@dataclass
class Example:
    texts: tuple[str, ...]
    label: object
    where: str  # file:line, for errors


@dataclass
class Task:
    name: str
    kind: str  # "classification" or "regression"
    splits: dict[str, list[Example]]
    labels: list = field(default_factory=list)  # classification: the train labels, sorted; index = class id
    task_format: str = "plain"
    sources: dict = field(default_factory=dict)  # split -> where its records came from

    def target(self, example: Example):
        return float(example.label) if self.kind == "regression" else self.labels.index(example.label)


@dataclass
class ProbeSettings:
    seeds: int = 3
    seed: int = 0
    learning_rate: float | None = None  # None: 5e-5 scaled by 768 / hidden size, at most 1e-3
    epochs: int = 3
    batch_size: int = 16
    max_length: int = 128
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    device: str | None = None  # None: cuda when present
    zero_shot: bool = False  # causal LMs: score each label's verbalizer, no fine-tuning
    label_words: dict | None = None  # zero-shot: label -> verbalizer text (None: the JGLUE format's, or the label)
    prompt: str | None = None  # zero-shot: a template with {text} (or {text_a} and {text_b})
    task_format: str | None = None  # None: plain, or JGLUE's by the dir's name
    dev_share: float = 0.1  # JGLUE without test labels: the share of train held out as dev


# ---- reading a task ----------------------------------------------------------------------------------------------

def _split_file(task_dir: Path, split: str) -> Path:
    found = [task_dir / f"{split}.{ext}" for ext in ("jsonl", "tsv") if (task_dir / f"{split}.{ext}").is_file()]
    if not found:
        raise UserError(f"{task_dir}: no {split}.jsonl or {split}.tsv (a task dir holds train, dev and test; a JGLUE "
                        "dir is named marc_ja-v*, jnli-v*, jsts-v*, jcola-v*, or give --task_format jglue-<name>)")
    if len(found) > 1:
        raise UserError(f"{task_dir}: both {found[0].name} and {found[1].name}; keep one")
    return found[0]


def _rows(path: Path, jsonl: bool = False):
    """(line number, dict) for each record of a .jsonl (or, ``jsonl``, any JSON-lines file) or .tsv file."""
    with open(path, encoding="utf-8", newline="") as f:
        if jsonl or path.suffix == ".jsonl":
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise UserError(f"{path}:{number}: not valid JSON ({error.msg})") from None
                if not isinstance(row, dict):
                    raise UserError(f"{path}:{number}: a JSON object is expected, not {type(row).__name__}")
                yield number, row
            return
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if not header:
            raise UserError(f"{path}:1: no header line (a .tsv names its columns on its first line)")
        for row in reader:
            number = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise UserError(f"{path}:{number}: {len(row)} fields where the header has {len(header)}")
            yield number, dict(zip(header, row))


def _example(path: Path, number: int, row: dict) -> Example:
    where = f"{path}:{number}"
    for names in TEXT_FIELDS:
        if all(name in row for name in names):
            texts = tuple(row[name] for name in names)
            break
    else:
        raise UserError(f"{where}: no text field (key 'text', or 'text_a' and 'text_b')")
    if not all(isinstance(text, str) for text in texts):
        raise UserError(f"{where}: the text fields must be strings")
    if "label" not in row or row["label"] is None or row["label"] == "":
        raise UserError(f"{where}: no 'label'")
    if not isinstance(row["label"], (str, int, float)):
        raise UserError(f"{where}: key 'label' must be a string or a number, not {type(row['label']).__name__}")
    return Example(texts, row["label"], where)


def _kind(examples: list[Example], tsv: bool) -> str:
    labels = [example.label for example in examples]
    if tsv:  # every value is a string: numbers that are not all integers mean a regression
        try:
            numbers = [float(label) for label in labels]
        except ValueError:
            return "classification"
        return "classification" if all(x.is_integer() for x in numbers) else "regression"
    if any(isinstance(label, float) for label in labels):
        bad = next((e for e in examples if isinstance(e.label, str)), None)
        if bad is not None:
            raise UserError(f"{bad.where}: key 'label' is a string where other labels are floats (a regression)")
        return "regression"
    return "classification"


def _finish(task: Task, train_file: Path) -> Task:
    """Check a read task: numbers in a regression; two or more train classes and no unseen dev/test label in a
    classification (whose labels become strings: 1 and "1" are one class, whatever the file format)."""
    splits = task.splits
    if task.kind == "regression":
        for examples in splits.values():
            for example in examples:
                try:
                    value = float(example.label)
                except ValueError:
                    raise UserError(f"{example.where}: key 'label' is not a number ({example.label!r}) in a "
                                    "regression task") from None
                if not math.isfinite(value):
                    raise UserError(f"{example.where}: key 'label' is not a finite number")
        return task
    for examples in splits.values():
        for example in examples:
            example.label = str(example.label)
    task.labels = sorted({example.label for example in splits["train"]})
    if len(task.labels) < 2:
        raise UserError(f"{train_file}: one class only ({task.labels[0]!r}); a classification task needs two or more")
    known = set(task.labels)
    for split in ("dev", "test"):
        for example in splits[split]:
            if example.label not in known:
                raise UserError(f"{example.where}: key 'label' has {example.label!r}, which no train record has")
    return task


def task_format_of(task_dir: Path, task_format: str | None) -> str:
    """``task_format`` when given, else a JGLUE format for a dir named like JGLUE's (``jnli-v1.1``) that has no
    ``train.jsonl``/``train.tsv``, else "plain"."""
    if task_format is not None:
        if task_format not in TASK_FORMATS:
            raise UserError(f"--task_format {task_format}: unknown (one of {', '.join(TASK_FORMATS)})")
        return task_format
    found = _JGLUE_DIR.match(task_dir.name)
    if found and not any((task_dir / f"train.{ext}").is_file() for ext in ("jsonl", "tsv")):
        return f"jglue-{found.group(1)}"
    return "plain"


def read_task(task_dir: str | Path, task_format: str | None = None, *, dev_share: float = 0.1,
              split_seed: int = 0) -> Task:
    """Read and check a task dir: every split present and non-empty, every record with a text and a label, and (for
    classification) at least two classes in train and no dev/test label that train lacks. A JGLUE dir (by name, or
    ``task_format="jglue-<name>"``) is read with its own files and fields (see the module's docstring)."""
    task_dir = Path(task_dir)
    if not task_dir.is_dir():
        raise UserError(f"{task_dir}: no such task dir")
    task_format = task_format_of(task_dir, task_format)
    if task_format != "plain":
        return _read_jglue(task_dir, task_format, dev_share, split_seed)
    splits, suffixes, sources = {}, set(), {}
    for split in SPLITS:
        path = _split_file(task_dir, split)
        suffixes.add(path.suffix)
        sources[split] = path.name
        splits[split] = [_example(path, number, row) for number, row in _rows(path)]
        if not splits[split]:
            raise UserError(f"{path}: empty split (no records)")
    kind = _kind(splits["train"], tsv=suffixes == {".tsv"})
    return _finish(Task(task_dir.name, kind, splits, sources=sources), _split_file(task_dir, "train"))


def _jglue_files(task_dir: Path, name: str) -> dict[str, Path]:
    found: dict[str, list[Path]] = {}
    for path in sorted(task_dir.iterdir()):
        match = _JGLUE_FILE.match(path.name)
        if match and path.is_file():
            found.setdefault(match.group(1), []).append(path)
    for split, paths in found.items():
        if len(paths) > 1:
            raise UserError(f"{task_dir}: several JGLUE {split} files ({', '.join(p.name for p in paths)}); keep one")
    for split in ("train", "valid"):
        if split not in found:
            raise UserError(f"{task_dir}: no JGLUE {split} file ({split}-v<version>.json) for --task_format "
                            f"jglue-{name} (JGLUE ships train and valid; nothing is downloaded)")
    return {split: paths[0] for split, paths in found.items()}


def _jglue_example(path: Path, number: int, row: dict, name: str, spec: JGlueFormat) -> Example:
    where = f"{path}:{number}"
    fields = spec.fields
    if name == "marc_ja" and "sentence" not in row and "text" in row:
        fields = ("text",)
    for key in fields + ("label",):
        if key not in row or row[key] is None:
            raise UserError(f"{where}: no '{key}' (a JGLUE {name} record has {', '.join(spec.fields)} and label)")
    texts = tuple(row[key] for key in fields)
    if not all(isinstance(text, str) for text in texts):
        raise UserError(f"{where}: the text fields ({', '.join(fields)}) must be strings")
    label = row["label"]
    if spec.labels is None:
        if isinstance(label, bool) or not isinstance(label, (int, float)):
            raise UserError(f"{where}: key 'label' must be a number (a {name} similarity), not {label!r}")
        label = float(label)
    elif label not in spec.labels or isinstance(label, bool):
        raise UserError(f"{where}: key 'label' has {label!r}; a JGLUE {name} label is one of "
                        f"{', '.join(map(repr, spec.labels))}")
    return Example(texts, label, where)


def _read_jglue(task_dir: Path, task_format: str, dev_share: float, split_seed: int) -> Task:
    name = task_format.removeprefix("jglue-")
    spec = JGLUE[name]
    files = _jglue_files(task_dir, name)
    read = {}
    for split, path in files.items():
        read[split] = [_jglue_example(path, number, row, name, spec) for number, row in _rows(path, jsonl=True)]
        if not read[split]:
            raise UserError(f"{path}: empty split (no records)")
    if "test" in files:  # a release with test labels: train, valid, test as they are
        splits = {"train": read["train"], "dev": read["valid"], "test": read["test"]}
        sources = {"train": files["train"].name, "dev": files["valid"].name, "test": files["test"].name}
    else:  # train and valid only: dev is a seeded share of train, taken out of it; valid is the test split
        if not 0 < dev_share < 1:
            raise UserError(f"--dev_share {dev_share}: must be between 0 and 1")
        train = read["train"]
        if len(train) < 2:
            raise UserError(f"{files['train']}: {len(train)} record; a dev split is taken out of train, which needs "
                            "two or more")
        order = list(range(len(train)))
        random.Random(split_seed).shuffle(order)
        held = set(order[:max(1, min(len(train) - 1, round(dev_share * len(train))))])
        splits = {"train": [e for i, e in enumerate(train) if i not in held],
                  "dev": [e for i, e in enumerate(train) if i in held], "test": read["valid"]}
        sources = {"train": f"{files['train'].name} less dev",
                   "dev": f"{len(held)} records ({dev_share:g}) of {files['train'].name}, seed {split_seed}",
                   "test": files["valid"].name}
    task = Task(task_dir.name, spec.kind, splits, task_format=task_format, sources=sources)
    return _finish(task, files["train"])


# ---- metrics -----------------------------------------------------------------------------------------------------

def _ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for k in range(start, end + 1):  # ties share their mean rank
            ranks[order[k]] = (start + end) / 2
        start = end + 1
    return ranks


def pearson(x: list[float], y: list[float]) -> float:
    mx, my = statistics.fmean(x), statistics.fmean(y)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sx, sy = math.sqrt(sum((a - mx) ** 2 for a in x)), math.sqrt(sum((b - my) ** 2 for b in y))
    return sxy / (sx * sy) if sx > 0 and sy > 0 else 0.0


def metrics(kind: str, predictions: list, targets: list) -> dict[str, float]:
    if kind == "regression":
        return {"pearson": pearson(predictions, targets), "spearman": pearson(_ranks(predictions), _ranks(targets))}
    return {"accuracy": sum(p == t for p, t in zip(predictions, targets)) / len(targets)}


def chance(task: Task, split: str) -> dict[str, float]:
    """The metric of always answering the train split's most frequent class (classification), or 0 correlation."""
    if task.kind == "regression":
        return {"pearson": 0.0, "spearman": 0.0}
    train = [e.label for e in task.splits["train"]]
    majority = max(task.labels, key=train.count)
    return {"accuracy": sum(e.label == majority for e in task.splits[split]) / len(task.splits[split])}


# ---- fine-tuning -------------------------------------------------------------------------------------------------

def _encode(tokenizer, task: Task, max_length: int) -> dict[str, list[dict]]:
    encoded = {}
    for split, examples in task.splits.items():
        columns = list(zip(*(e.texts for e in examples)))
        batch = tokenizer(*columns, truncation=True, max_length=max_length)
        encoded[split] = [{key: batch[key][i] for key in batch} | {"labels": task.target(e)}
                          for i, e in enumerate(examples)]
    return encoded


def _max_length(tokenizer, config, wanted: int) -> int:
    limits = [wanted]
    if 0 < getattr(tokenizer, "model_max_length", 0) < 1_000_000:
        limits.append(tokenizer.model_max_length)
    for name in ("max_position_embeddings", "n_positions"):
        if isinstance(getattr(config, name, None), int):
            limits.append(getattr(config, name))
            break
    return min(limits)


def _batches(rows: list[dict], batch_size: int, tokenizer, keys: set[str], order=None):
    import torch

    order = list(range(len(rows)) if order is None else order)
    for start in range(0, len(order), batch_size):
        chunk = [{k: v for k, v in rows[i].items() if k in keys or k == "labels"}
                 for i in order[start:start + batch_size]]
        labels = [row.pop("labels") for row in chunk]
        batch = tokenizer.pad(chunk, return_tensors="pt")
        batch["labels"] = torch.tensor(labels)
        yield batch


def _load(model_dir: Path, task: Task, device):
    from transformers import AutoModelForSequenceClassification

    extra = ({"num_labels": 1, "problem_type": "regression"} if task.kind == "regression" else
             {"num_labels": len(task.labels), "problem_type": "single_label_classification",
              "id2label": dict(enumerate(task.labels)), "label2id": {x: i for i, x in enumerate(task.labels)}})
    try:
        model = AutoModelForSequenceClassification.from_pretrained(model_dir, **extra)
    except (OSError, ValueError, KeyError) as error:
        raise UserError(f"{model_dir}: cannot be loaded for sequence classification ({error})") from None
    return model.to(device)


def _predict(model, rows, settings: ProbeSettings, tokenizer, keys, kind: str, device) -> tuple[list, list]:
    import torch

    predictions, targets = [], []
    model.eval()
    with torch.no_grad():
        for batch in _batches(rows, settings.batch_size * 2, tokenizer, keys):
            batch = {k: v.to(device) for k, v in batch.items()}
            logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits.float()
            predictions += logits.squeeze(-1).tolist() if kind == "regression" else logits.argmax(-1).tolist()
            targets += batch["labels"].tolist()
    return predictions, targets


def _fine_tune(model_dir: Path, task: Task, encoded, tokenizer, settings: ProbeSettings, seed: int, device) -> dict:
    import inspect

    import torch
    from transformers import get_linear_schedule_with_warmup

    torch.manual_seed(seed)  # the head's initialisation and dropout
    model = _load(model_dir, task, device)
    if model.config.pad_token_id is None:  # causal LMs: the last non-pad token is the one classified
        model.config.pad_token_id = tokenizer.pad_token_id
    accepted = set(inspect.signature(model.forward).parameters)
    keys = {"input_ids", "attention_mask"} | ({"token_type_ids"} & accepted
                                              if getattr(model.config, "type_vocab_size", 0) else set())
    lr = settings.learning_rate or default_learning_rate(model.config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=settings.weight_decay)
    steps_per_epoch = math.ceil(len(encoded["train"]) / settings.batch_size)
    total = steps_per_epoch * settings.epochs
    schedule = get_linear_schedule_with_warmup(optimizer, int(settings.warmup_ratio * total), total)
    order_rng = torch.Generator().manual_seed(seed)  # the data order: one permutation per epoch from the seed
    losses = []
    with progress(total=total, desc=f"fine-tune seed {seed}", unit="step") as bar:
        for _ in range(settings.epochs):
            model.train()
            order = torch.randperm(len(encoded["train"]), generator=order_rng).tolist()
            for batch in _batches(encoded["train"], settings.batch_size, tokenizer, keys, order):
                loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(loss.item())
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.4f}")
    result = {"seed": seed, "learning_rate": lr, "steps": total, "final_train_loss": statistics.fmean(losses[-10:])}
    for split in SPLITS:
        predictions, targets = _predict(model, encoded[split], settings, tokenizer, keys, task.kind, device)
        result[split] = metrics(task.kind, predictions, targets)
    return result


# ---- zero-shot scoring (causal LMs) -----------------------------------------------------------------------------

def zero_shot_words(task: Task, settings: ProbeSettings) -> tuple[dict[str, str], str]:
    """(label -> verbalizer text, prompt template): the settings', else the JGLUE format's, else each label's own
    text and the example's text(s) on lines of their own."""
    if task.kind != "classification":
        raise UserError(f"--zero_shot scores label words: the task {task.name} is a {task.kind}, not a "
                        "classification")
    spec = JGLUE.get(task.task_format.removeprefix("jglue-"))
    words = settings.label_words or (spec.label_words if spec else {label: label for label in task.labels})
    words = {str(label): text for label, text in words.items()}
    missing = [label for label in task.labels if label not in words]
    if missing:
        raise UserError(f"--label_words: no verbalizer for label(s) {', '.join(map(repr, missing))} (give every "
                        f"label of the task: {', '.join(map(repr, task.labels))})")
    if any(not isinstance(text, str) or not text.strip() for text in words.values()):
        raise UserError("--label_words: every verbalizer must be a non-empty string")
    pair = len(task.splits["train"][0].texts) == 2
    prompt = settings.prompt or (spec.prompt if spec else "{text_a}\n{text_b}\n" if pair else "{text}\n")
    try:
        prompt.format(**_prompt_fields(task.splits["train"][0].texts))
    except (KeyError, IndexError, ValueError) as error:
        raise UserError(f"--prompt {prompt!r}: not a template of this task's fields ({error!r}; use {{text}}, or "
                        "{text_a} and {text_b} for a pair)") from None
    return {label: words[label] for label in task.labels}, prompt


def _prompt_fields(texts: tuple[str, ...]) -> dict[str, str]:
    return {"text": texts[0], "text_a": texts[0]} | ({"text_b": texts[1]} if len(texts) > 1 else {})


def continuation_ids(tokenizer, prompt: str, continuation: str, max_length: int) -> tuple[list[int], list[int]]:
    """The prompt's ids (with the tokenizer's leading special tokens, without a trailing end/separator token; cut
    from the left to fit) and the continuation's ids (no special tokens)."""
    context = tokenizer(prompt)["input_ids"]
    while context and context[-1] in {tokenizer.eos_token_id, tokenizer.sep_token_id} - {None}:
        context = context[:-1]
    if not context:  # a continuation needs a token to follow
        context = [tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id]
    target = tokenizer(continuation, add_special_tokens=False)["input_ids"]
    keep = max(1, max_length - len(target))
    return context[-keep:], target[:max_length - 1]


def continuation_log_likelihoods(model, pairs: list[tuple[list[int], list[int]]], device) -> list[float]:
    """For each (context ids, continuation ids): the sum of the continuation tokens' log-probabilities."""
    import torch

    width = max(len(c) + len(t) for c, t in pairs)
    ids = torch.zeros(len(pairs), width, dtype=torch.long)
    mask = torch.zeros(len(pairs), width, dtype=torch.long)
    for row, (context, target) in enumerate(pairs):
        ids[row, :len(context) + len(target)] = torch.tensor(context + target)
        mask[row, :len(context) + len(target)] = 1
    with torch.no_grad():
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
    log_probs = torch.log_softmax(logits, dim=-1)
    scores = []
    for row, (context, target) in enumerate(pairs):
        positions = torch.arange(len(context) - 1, len(context) + len(target) - 1, device=log_probs.device)
        scores.append(log_probs[row, positions, torch.tensor(target, device=log_probs.device)].sum().item())
    return scores


def _zero_shot(model_dir: Path, task: Task, tokenizer, config, settings: ProbeSettings, max_length: int,
               device) -> dict:
    from transformers import AutoModelForCausalLM

    words, prompt = zero_shot_words(task, settings)
    architectures = getattr(config, "architectures", None) or []
    if not any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
        raise UserError(f"{model_dir}: --zero_shot needs a causal LM (GPT-2, Llama, ...), not "
                        f"{', '.join(architectures) or 'a model without architectures'}")
    model = AutoModelForCausalLM.from_pretrained(model_dir).to(device).eval()
    result = {"seed": None, "zero_shot": True, "label_words": words, "prompt": prompt}
    labels = list(words)
    for split in ("dev", "test"):
        predictions, targets = [], []
        with progress(total=len(task.splits[split]), desc=f"zero-shot {split}", unit="example") as bar:
            for example in task.splits[split]:
                text = prompt.format(**_prompt_fields(example.texts))
                pairs = [continuation_ids(tokenizer, text, words[label], max_length) for label in labels]
                scores = continuation_log_likelihoods(model, pairs, device)
                predictions.append(max(range(len(labels)), key=scores.__getitem__))
                targets.append(task.target(example))
                bar.update(1)
        result[split] = metrics(task.kind, predictions, targets)
    return result


def default_learning_rate(config) -> float:
    """5e-5 (BERT-base's fine-tuning rate) for a 768-wide model, scaled up for narrower ones, at most 1e-3."""
    hidden = getattr(config, "hidden_size", None) or BASE_HIDDEN
    return min(MAX_LEARNING_RATE, BASE_LEARNING_RATE * max(1.0, BASE_HIDDEN / hidden))


def _summarise(per_seed: list[dict]) -> tuple[dict, dict]:
    mean, std = {}, {}
    for split in (s for s in SPLITS if s in per_seed[0]):
        names = per_seed[0][split]
        values = {name: [result[split][name] for result in per_seed] for name in names}
        mean[split] = {name: statistics.fmean(v) for name, v in values.items()}
        std[split] = {name: statistics.stdev(v) if len(v) > 1 else 0.0 for name, v in values.items()}
    return mean, std


def evaluate(model_dir: str | Path, task_dir: str | Path, output_dir: str | Path, settings: ProbeSettings) -> dict:
    """Fine-tune ``settings.seeds`` fresh copies of ``model_dir`` on the task; write and return the results."""
    import torch
    from transformers import AutoConfig, AutoTokenizer

    model_dir, output_dir = Path(model_dir), Path(output_dir)
    task = read_task(task_dir, settings.task_format, dev_share=settings.dev_share)
    if not (model_dir / "config.json").is_file():
        raise UserError(f"{model_dir}: no config.json (give an exported model dir or a checkpoint-N/ folder)")
    for name, value in (("--seeds", settings.seeds), ("--epochs", settings.epochs),
                        ("--batch_size", settings.batch_size), ("--max_length", settings.max_length)):
        if value < 1:
            raise UserError(f"{name} must be at least 1, not {value}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    except (OSError, ValueError) as error:
        raise UserError(f"{model_dir}: no usable tokenizer ({error})") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    config = AutoConfig.from_pretrained(model_dir)
    device = torch.device(settings.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    max_length = _max_length(tokenizer, config, settings.max_length)
    encoded = None if settings.zero_shot else _encode(tokenizer, task, max_length)
    logger.info("task %s (%s): %s examples; %s on %s", task.name, task.kind,
                "/".join(str(len(task.splits[s])) for s in SPLITS),
                "zero-shot" if settings.zero_shot else f"{settings.seeds} seed(s)", device)
    if settings.zero_shot:  # deterministic: one run, whatever --seeds says
        per_seed = [_zero_shot(model_dir, task, tokenizer, config, settings, max_length, device)]
    else:
        per_seed = [_fine_tune(model_dir, task, encoded, tokenizer, settings, settings.seed + k, device)
                    for k in range(settings.seeds)]
    mean, std = _summarise(per_seed)
    results = {"model_dir": str(model_dir), "task_dir": str(task_dir), "task": task.name, "kind": task.kind,
               "task_format": task.task_format, "splits": task.sources, "labels": task.labels,
               "sizes": {s: len(task.splits[s]) for s in SPLITS},
               "chance": {s: chance(task, s) for s in SPLITS}, "max_length": max_length, "device": str(device),
               "settings": asdict(settings), "per_seed": per_seed, "mean": mean, "std": std}
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / "downstream_results.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    results["path"] = str(path)
    return results


def summary_line(results: dict) -> str:
    parts = []
    for split in ("dev", "test"):
        for name, value in results["mean"][split].items():
            parts.append(f"{split} {name} {value:.4f} ± {results['std'][split][name]:.4f}")
    chance_ = ", ".join(f"{k} {v:.4f}" for k, v in results["chance"]["test"].items())
    runs = "zero-shot" if results["per_seed"][0].get("zero_shot") else f"{len(results['per_seed'])} seed(s)"
    return (f"{results['task']}: " + ", ".join(parts) + f" ({runs}; test chance "
            f"{chance_}) -> {results['path']}")
