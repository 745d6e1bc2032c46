"""A downstream probe: fine-tune a copy of a model dir on a small task and report the task's metric over seeds.

A task dir holds ``train``, ``dev`` and ``test`` splits, each ``<split>.jsonl`` (one JSON object a line) or
``<split>.tsv`` (tab-separated, a header line naming the columns), with a text field (``text``, or ``text_a`` and
``text_b`` for a pair) and ``label``. Labels that are strings or integers make a classification task (accuracy);
JSON floats (in a TSV: numbers that are not all integers) make a regression task (Pearson and Spearman correlation).
The model dir is any Hugging Face dir with its tokenizer (an export, a ``checkpoint-N/``); it is loaded through
``AutoModelForSequenceClassification`` (encoders: their own head; causal LMs: the last non-pad token's state).
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import UserError
from .log import get_logger, progress

logger = get_logger(__name__)

SPLITS = ("train", "dev", "test")
TEXT_FIELDS = (("text",), ("text_a", "text_b"))
BASE_LEARNING_RATE, BASE_HIDDEN, MAX_LEARNING_RATE = 5e-5, 768, 1e-3


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


# ---- reading a task ----------------------------------------------------------------------------------------------

def _split_file(task_dir: Path, split: str) -> Path:
    found = [task_dir / f"{split}.{ext}" for ext in ("jsonl", "tsv") if (task_dir / f"{split}.{ext}").is_file()]
    if not found:
        raise UserError(f"{task_dir}: no {split}.jsonl or {split}.tsv (a task dir holds train, dev and test)")
    if len(found) > 1:
        raise UserError(f"{task_dir}: both {found[0].name} and {found[1].name}; keep one")
    return found[0]


def _rows(path: Path):
    """(line number, dict) for each record of a .jsonl or .tsv file."""
    with open(path, encoding="utf-8", newline="") as f:
        if path.suffix == ".jsonl":
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


def read_task(task_dir: str | Path) -> Task:
    """Read and check a task dir: every split present and non-empty, every record with a text and a label, and (for
    classification) at least two classes in train and no dev/test label that train lacks."""
    task_dir = Path(task_dir)
    if not task_dir.is_dir():
        raise UserError(f"{task_dir}: no such task dir")
    splits, suffixes = {}, set()
    for split in SPLITS:
        path = _split_file(task_dir, split)
        suffixes.add(path.suffix)
        splits[split] = [_example(path, number, row) for number, row in _rows(path)]
        if not splits[split]:
            raise UserError(f"{path}: empty split (no records)")
    kind = _kind(splits["train"], tsv=suffixes == {".tsv"})
    task = Task(task_dir.name, kind, splits)
    if kind == "regression":
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
    for examples in splits.values():  # 1 and "1" are one class, whatever the file format
        for example in examples:
            example.label = str(example.label)
    task.labels = sorted({example.label for example in splits["train"]})
    if len(task.labels) < 2:
        raise UserError(f"{_split_file(task_dir, 'train')}: one class only ({task.labels[0]!r}); a classification "
                        "task needs two or more")
    known = set(task.labels)
    for split in ("dev", "test"):
        for example in splits[split]:
            if example.label not in known:
                raise UserError(f"{example.where}: key 'label' has {example.label!r}, which no train record has")
    return task


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


def default_learning_rate(config) -> float:
    """5e-5 (BERT-base's fine-tuning rate) for a 768-wide model, scaled up for narrower ones, at most 1e-3."""
    hidden = getattr(config, "hidden_size", None) or BASE_HIDDEN
    return min(MAX_LEARNING_RATE, BASE_LEARNING_RATE * max(1.0, BASE_HIDDEN / hidden))


def _summarise(per_seed: list[dict]) -> tuple[dict, dict]:
    mean, std = {}, {}
    for split in SPLITS:
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
    task = read_task(task_dir)
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
    encoded = _encode(tokenizer, task, max_length)
    logger.info("task %s (%s): %s examples; %d seed(s) on %s", task.name, task.kind,
                "/".join(str(len(task.splits[s])) for s in SPLITS), settings.seeds, device)
    per_seed = [_fine_tune(model_dir, task, encoded, tokenizer, settings, settings.seed + k, device)
                for k in range(settings.seeds)]
    mean, std = _summarise(per_seed)
    results = {"model_dir": str(model_dir), "task_dir": str(task_dir), "task": task.name, "kind": task.kind,
               "labels": task.labels, "sizes": {s: len(task.splits[s]) for s in SPLITS},
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
    return (f"{results['task']}: " + ", ".join(parts) + f" ({len(results['per_seed'])} seed(s); test chance "
            f"{chance_}) -> {results['path']}")
