"""Experiment trackers behind one small writer: ``--report_to {tensorboard,wandb,mlflow,none,all}``.

transformers' convention: several trackers may be named (``--report_to wandb mlflow`` or ``wandb,mlflow``), ``all``
is every installed one, ``none`` none; the default is TensorBoard, as before. Each backend gets the same scalars at
the same steps, the run description's ``record()`` as its config (wandb) or params (MLflow), and the final summary.
Rank 0 alone writes (the loop's ``Trackers`` is empty elsewhere).

A resumed run (``--do_continue``) continues the same tracker run: its W&B id and MLflow run id are kept in
``<model_dir>/lmpretrain_trackers.json``, written when a run starts from step 0 and read when one resumes.
wandb and mlflow are optional: naming one that is not installed is one error saying what to install.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path

from .errors import UserError
from .fsutil import atomic_write_text
from .log import MetricsWriter, get_logger, is_main_process

logger = get_logger(__name__)

TRACKERS = ("tensorboard", "wandb", "mlflow")
"""What --report_to names (besides ``all`` and ``none``)."""
IDS_FILE = "lmpretrain_trackers.json"
"""In the model dir: the tracker runs of the run in it (W&B id, MLflow run id and store), for --do_continue."""
_PACKAGE = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


def installed(name: str) -> bool:
    return importlib.util.find_spec(_PACKAGE[name]) is not None


def resolve_report_to(values: list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """--report_to as given (each value may be comma-separated) -> the trackers, in TRACKERS order. None:
    TensorBoard (today's default). UserError for an unknown name, ``none`` with others, or a named tracker that is
    not installed (``all`` takes the installed ones only, as in transformers)."""
    if values is None:
        return ("tensorboard",)
    names = [part.strip().lower() for value in values for part in value.split(",") if part.strip()]
    unknown = [name for name in names if name not in (*TRACKERS, "all", "none")]
    if unknown:
        raise UserError(f"--report_to {', '.join(unknown)}: not a tracker; choose from "
                        f"{', '.join((*TRACKERS, 'all', 'none'))}")
    if "none" in names:
        if len(set(names)) > 1:
            raise UserError(f"--report_to {' '.join(names)}: 'none' reports to no tracker and cannot be given with "
                            f"others")
        return ()
    if "all" in names:
        return tuple(name for name in TRACKERS if installed(name))
    missing = [name for name in TRACKERS if name in names and not installed(name)]
    if missing:
        extras = " and ".join(f'pip install {name} (or pip install ".[{name}]")' for name in missing)
        raise UserError(f"--report_to {', '.join(missing)}: {' and '.join(missing)} is not installed; {extras}")
    return tuple(name for name in TRACKERS if name in names)


def flat_params(record: dict, prefix: str = "") -> dict[str, str]:
    """A nested record as flat ``group.key`` -> text (MLflow's params are flat strings)."""
    flat = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flat_params(value, f"{name}."))
        else:
            flat[name] = value if isinstance(value, str) else json.dumps(value, default=str)
    return flat


class TensorBoardTracker:
    """Scalars under ``<logging_dir>/<run_name>/`` (:class:`~lmpretrain.log.MetricsWriter`), as before."""

    name = "tensorboard"

    def __init__(self, log_dir: str, purge_step: int | None):
        self._log_dir = log_dir
        self._writer = MetricsWriter(log_dir, purge_step=purge_step)
        self.ids: dict = {}

    def scalars(self, values: dict[str, float], step: int) -> None:
        if self._writer is None:  # after the loop (the downstream probes' results): a new event file beside
            self._writer = MetricsWriter(self._log_dir)
        self._writer.scalars(values, step)

    def summary(self, values: dict) -> None:
        pass  # TensorBoard has no summary: the last scalars and train_summary.json hold it

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def finish(self, failed: bool = False) -> None:
        self.close()


class WandbTracker:
    """A W&B run: ``WANDB_PROJECT`` (default ``lmpretrain``), named by --run_name, its files under --logging_dir
    (``WANDB_DIR`` overrides); ``WANDB_MODE=offline`` keeps it on disk for ``wandb sync``. A resume passes the saved
    id with ``resume="allow"``."""

    name = "wandb"

    def __init__(self, *, run_name: str, logging_dir: str, config: dict, saved: dict | None):
        import wandb

        Path(logging_dir).mkdir(parents=True, exist_ok=True)
        kwargs = {"id": saved["id"], "resume": "allow"} if saved else {}
        self._run = wandb.init(project=os.environ.get("WANDB_PROJECT", "lmpretrain"), name=run_name,
                               dir=os.environ.get("WANDB_DIR", logging_dir), config=config, **kwargs)
        if saved:
            self._run.config.update(config, allow_val_change=True)
        self.ids = {"id": self._run.id, "project": self._run.project}

    def scalars(self, values: dict[str, float], step: int) -> None:
        self._run.log(dict(values), step=step)

    def summary(self, values: dict) -> None:
        self._run.summary.update(dict(values))

    def close(self) -> None:
        pass  # kept open for the summary: finish() ends the run

    def finish(self, failed: bool = False) -> None:
        if self._run is not None:
            self._run.finish(exit_code=1 if failed else 0)
            self._run = None


class MlflowTracker:
    """An MLflow run in experiment ``MLFLOW_EXPERIMENT_NAME`` (default ``lmpretrain``) of the store
    ``MLFLOW_TRACKING_URI``, else a local file store ``<logging_dir>/mlruns`` (no server, no network). The params
    are the run description's record, flat; a resume reopens the saved run id in the same store and adds the params
    the run does not have yet (MLflow refuses to change a param: what a resume changed is in train_log.jsonl)."""

    name = "mlflow"

    def __init__(self, *, run_name: str, logging_dir: str, config: dict, saved: dict | None):
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            store = Path(logging_dir).absolute() / "mlruns"
            # its .trash too: mlflow caches a store per URI, and one cached in this process before an
            # --overwrite_output_dir removed the dir would not recreate it
            (store / ".trash").mkdir(parents=True, exist_ok=True)
            uri = store.as_uri()
            # mlflow 3 keeps the file store in maintenance mode behind this switch; the user's own setting wins
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self._client = MlflowClient(tracking_uri=uri)
        experiment_name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "lmpretrain")
        experiment = self._client.get_experiment_by_name(experiment_name)
        experiment_id = experiment.experiment_id if experiment else self._client.create_experiment(experiment_name)
        run = None
        if saved and saved.get("tracking_uri") == uri:
            try:
                run = self._client.get_run(saved["run_id"])
                self._client.update_run(run.info.run_id, status="RUNNING")
            except Exception as error:  # noqa: BLE001  (deleted, or another store: a new run, said out loud)
                logger.warning("--report_to mlflow: cannot reopen MLflow run %s (%s): starting a new one",
                               saved["run_id"], error)
                run = None
        elif saved:
            logger.warning("--report_to mlflow: the run was tracked in %s, this process tracks in %s: starting a new "
                           "MLflow run", saved.get("tracking_uri"), uri)
        if run is None:
            run = self._client.create_run(experiment_id, run_name=run_name)
        self._run_id = run.info.run_id
        known = set(run.data.params)
        params = [Param(k, v[:6000]) for k, v in flat_params(config).items() if k not in known]
        for start in range(0, len(params), 100):  # log_batch's limit
            self._client.log_batch(self._run_id, params=params[start:start + 100])
        self.ids = {"run_id": self._run_id, "tracking_uri": uri, "experiment_id": experiment_id}
        self._open = True

    def _metrics(self, values: dict, step: int, prefix: str = "") -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        metrics = [Metric(f"{prefix}{k}", float(v), stamp, step) for k, v in values.items()
                   if isinstance(v, (int, float))]
        for start in range(0, len(metrics), 1000):
            self._client.log_batch(self._run_id, metrics=metrics[start:start + 1000])

    def scalars(self, values: dict[str, float], step: int) -> None:
        self._metrics(values, step)

    def summary(self, values: dict) -> None:
        self._metrics(values, int(values.get("step", 0)), prefix="summary/")

    def close(self) -> None:
        pass  # kept open for the summary: finish() ends the run

    def finish(self, failed: bool = False) -> None:
        if self._open:
            self._client.set_terminated(self._run_id, status="FAILED" if failed else "FINISHED")
            self._open = False


class Trackers:
    """The loop's one metrics writer: every tracker of --report_to (none on ranks other than 0).

    A context manager for the loop: leaving it closes TensorBoard as before and keeps the others open for
    :meth:`finish` (the final summary); leaving it on an error finishes every tracker as failed."""

    def __init__(self, trackers: list):
        self.trackers = trackers

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.trackers)

    def scalars(self, values: dict[str, float], step: int) -> None:
        for tracker in self.trackers:
            tracker.scalars(values, step)

    def __enter__(self) -> Trackers:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.finish(failed=True)
        else:
            for tracker in self.trackers:
                tracker.close()

    def finish(self, summary: dict | None = None, *, failed: bool = False) -> None:
        """Log the final summary (if any) and end every tracker's run."""
        for tracker in self.trackers:
            try:
                if summary is not None and not failed:
                    tracker.summary(summary)
            finally:
                tracker.finish(failed=failed)
        self.trackers = []


def open_trackers(report_to: tuple[str, ...], *, model_dir: str, logging_dir: str, run_name: str, config: dict,
                  resumed: bool, purge_step: int | None) -> Trackers:
    """The trackers of ``report_to`` for this process (rank 0; none elsewhere). ``resumed``: continue the tracker
    runs saved in the model dir (a run from step 0 starts new ones and replaces what the dir saved); ``config``:
    the run's record; ``purge_step``: TensorBoard's."""
    if not is_main_process():
        return Trackers([])
    ids_path = Path(model_dir) / IDS_FILE
    saved = {}
    if resumed and ids_path.is_file():
        try:
            saved = json.loads(ids_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            logger.warning("%s cannot be read: the trackers start new runs", ids_path)
    trackers = []
    try:
        for name in report_to:
            if name == "tensorboard":
                trackers.append(TensorBoardTracker(str(Path(logging_dir) / run_name), purge_step))
                logger.info("TensorBoard: tensorboard --logdir %s", logging_dir)
                continue
            cls = WandbTracker if name == "wandb" else MlflowTracker
            tracker = cls(run_name=run_name, logging_dir=logging_dir, config=config, saved=saved.get(name))
            verb = "continues" if saved.get(name) else "started"
            logger.info("%s: %s run %s", name, verb, next(iter(tracker.ids.values())))
            trackers.append(tracker)
    except BaseException:
        Trackers(trackers).finish(failed=True)
        raise
    ids = {tracker.name: tracker.ids for tracker in trackers if tracker.ids}
    if ids or not resumed:  # a run from step 0 never leaves an earlier run's ids behind
        ids = {**saved, **ids}
        if ids:
            atomic_write_text(ids_path, json.dumps(ids, indent=2) + "\n")
        else:
            ids_path.unlink(missing_ok=True)
    return Trackers(trackers)
