"""Experiment loggers: callbacks that record a run's config and metrics where other tools can read them.

* :class:`CSVLogger` writes PyTorch Lightning's CSV layout into the run directory
  (``csv/version_0/hparams.yaml`` and ``csv/version_0/metrics.csv``), so scripts written for Lightning runs read
  cifarlab runs unchanged.
* :class:`MLflowLogger` logs to an MLflow tracking store (a ``file:`` directory, a database or a server).
* :class:`WandbLogger` logs to Weights & Biases (online, or offline to sync later, as ``WANDB_MODE`` says).
* :class:`TensorBoardLogger` writes TensorBoard scalars (per step and per epoch) and its hparams view.

All three log the same figures against the same x-axis, the global optimizer step:

* per step, at the step's 0-based index: ``lr`` and ``train_loss_step`` (that step's loss);
* per epoch, at the number of steps done (the epoch's last step index + 1): the epoch row's numbers (``train_loss``,
  ``train_top1``, ``val_loss``, ``val_top1``, ``val_top2``, ``val_top3``, times, ...) and ``epoch``. The row's ``lr``
  is left out: it is the last step's LR, already logged at that step, and logging it again one step later would put
  two different LRs at the step where the next epoch's first LR is logged. ``epoch`` is the 0-based index of the
  epoch the figures belong to, as Lightning logs it (metrics.jsonl numbers completed epochs from 1);
* at the end of the run: ``final_tta_val_*`` (the final evaluation with test-time augmentation, when there was one),
  ``best`` and ``best_epoch``.

A resumed run continues what its earlier part wrote: the CSV keeps its rows up to the checkpoint it resumed from,
and the MLflow and W&B runs are continued (their ids are kept in the run directory), not started anew.

mlflow and wandb are optional; each is imported only when its logger is built. Which loggers a run gets comes from
its config (:func:`loggers_from_config`).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import numbers
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ..errors import CifarlabError
from ..files import atomic_write, make_dir, write_text
from .callbacks import Callback

if TYPE_CHECKING:
    from .trainer import Trainer

CSV_DIR = Path("csv", "version_0")  # Lightning's <name>/version_<n>; one run directory holds one run
MLFLOW_RUN_FILE = "mlflow_run.json"  # which MLflow run a resumed run continues
WANDB_RUN_FILE = "wandb_run.json"  # which W&B run a resumed run continues
_NOT_LOGGED_PER_EPOCH = ("type", "epoch", "lr")  # lr: see the module docstring


# --- what every logger records ------------------------------------------------------------------------------------

def config_params(cfg: Any) -> dict[str, Any]:
    """The run's config as plain YAML/JSON data (a dataclass as its fields; tuples as lists)."""
    params = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(vars(cfg))
    return json.loads(json.dumps(params, default=str))  # tuples -> lists, anything exotic (a Path) -> str


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _plain_number(value: Any) -> float:
    return int(value) if isinstance(value, numbers.Integral) else float(value)  # a count stays a count ("96")


def epoch_metrics(row: dict[str, Any]) -> dict[str, float]:
    """An epoch row's numeric figures, with ``epoch`` as the epoch's 0-based index (Lightning's convention)."""
    out = {k: _plain_number(v) for k, v in row.items() if k not in _NOT_LOGGED_PER_EPOCH and _is_number(v)}
    out["epoch"] = row["epoch"] - 1  # the row numbers completed epochs from 1; the steps logged their 0-based epoch
    return out


def final_figures(summary: dict[str, Any]) -> dict[str, float]:
    """The figures only the end of a run knows: ``final_tta_val_*``, ``best`` and ``best_epoch``."""
    out = {f"final_tta_{k}": float(v) for k, v in (summary.get("final_tta") or {}).items() if _is_number(v)}
    if _is_number(summary.get("best")):  # None (and best_epoch -1) until an epoch is recorded
        out.update(best=float(summary["best"]), best_epoch=int(summary["best_epoch"]))
    return out


def _resuming(trainer: Trainer) -> bool:
    return trainer.state.step > 0  # a fresh run starts at step 0; a resumed one at its checkpoint's step


def _write_json(path: Path, data: dict) -> None:
    write_text(path, json.dumps(data) + "\n")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


# --- CSV ------------------------------------------------------------------------------------------------------

class CSVLogger(Callback):
    """Lightning's CSVLogger files in ``RUN_DIR/csv/version_0``: ``hparams.yaml`` and ``metrics.csv``.

    ``metrics.csv`` has one row per logged step, epoch and end of run, with a ``step`` column and one column per
    metric name, sorted by name; a cell is empty where its row has no such metric. Rows are appended as they come;
    when a row brings a new column (the first epoch's figures, the final ones) the file is rewritten whole, into a
    temporary file that then replaces it, so a reader or a kill never sees half a file.
    """

    main_only = True

    def __init__(self) -> None:
        self.path: Path | None = None
        self.columns: list[str] = []

    def on_fit_start(self, trainer: Trainer) -> None:
        folder = Path(trainer.run_dir) / CSV_DIR
        make_dir(folder)
        write_text(folder / "hparams.yaml", yaml.safe_dump(config_params(trainer.cfg), sort_keys=False))
        self.path = folder / "metrics.csv"
        self.columns = []
        if not _resuming(trainer):
            self.path.unlink(missing_ok=True)  # a fresh run in a reused directory starts a fresh file
        elif self.path.exists():
            # A resumed run keeps what its earlier part logged up to the checkpoint it resumed from; rows logged
            # after that checkpoint (before a kill) will be logged again, so they go.
            columns, rows = self._read()
            steps_done, epochs_done = trainer.state.step, trainer.state.epoch
            kept = [r for r in rows if _logged_before(r, steps_done, epochs_done)]
            self.columns = sorted(set(columns) | {"step"})
            self._rewrite(kept)

    def on_step_end(self, trainer: Trainer, step_log: dict[str, Any]) -> None:
        self._log({"step": step_log["step"], "epoch": step_log["epoch"], "lr": step_log["lr"],
                   "train_loss_step": step_log["loss"]})

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        self._log({"step": trainer.state.step, **epoch_metrics(row)})

    def on_fit_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        figures = final_figures(summary)
        if figures:
            self._log({"step": trainer.state.step, **figures})

    def _log(self, row: dict[str, Any]) -> None:
        assert self.path is not None, "on_fit_start was not called"
        if set(row) - set(self.columns) or not self.path.exists():
            self.columns = sorted(set(self.columns) | set(row))
            self._rewrite(self._read()[1] + [row] if self.path.exists() else [row])
        else:
            with open(self.path, "a", newline="") as fh:
                csv.DictWriter(fh, fieldnames=self.columns, restval="").writerow(row)

    def _read(self) -> tuple[list[str], list[dict[str, str]]]:
        assert self.path is not None
        with open(self.path, newline="") as fh:
            reader = csv.DictReader(fh, restval="")
            rows = list(reader)
            return list(reader.fieldnames or []), rows

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        assert self.path is not None
        with atomic_write(self.path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=self.columns, restval="")
            writer.writeheader()
            writer.writerows(rows)


def _logged_before(row: dict[str, str], steps_done: int, epochs_done: int) -> bool:
    """Whether a metrics.csv row was logged before the checkpoint a run resumes from (it holds what was done)."""
    try:
        if row.get("train_loss_step", "") != "":  # a step row: its step index
            return int(row["step"]) < steps_done
        if row.get("train_loss", "") != "":  # an epoch row: its epoch index
            return int(float(row["epoch"])) < epochs_done
        return int(row["step"]) <= steps_done  # an end-of-run row
    except (KeyError, ValueError):
        return False  # a torn line from a kill mid-write


# --- MLflow ---------------------------------------------------------------------------------------------------

class MLflowLogger(Callback):
    """Logs to MLflow through an :class:`mlflow.tracking.MlflowClient` bound to ``tracking_uri``.

    The client API with an explicit run id is used instead of ``mlflow.start_run``/``mlflow.log_metric``: those
    keep the active run and the tracking URI in process-wide state, which a sweep running several trials in one
    process, or the user's own MLflow code, would share with us.

    The experiment is named after the recipe (or the model when there is none); the run after the run directory.
    Step figures are buffered and sent in batches (at each epoch's end, and every few seconds within an epoch) so a
    remote server costs one request per batch, not one per step.
    """

    main_only = True
    flush_every_s = 5.0  # longest a step's figures wait before they are sent

    def __init__(self, tracking_uri: str):
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise CifarlabError("MLflow logging needs mlflow: pip install 'cifarlab[mlflow]'") from None
        self._client_class = MlflowClient
        self.tracking_uri = tracking_uri
        if tracking_uri.startswith("file:"):  # MLflow 3 refuses file stores unless allowed; the user asked for one
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client: Any = None
        self.run_id: str | None = None
        self._pending: list[Any] = []
        self._sent_at = 0.0

    def on_fit_start(self, trainer: Trainer) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self._start(trainer)
        except MlflowException as e:  # an unreachable server, a refused store (file: needs MLFLOW_ALLOW_FILE_STORE)
            raise CifarlabError(f"MLflow logging could not start: {e.message}") from e

    def _start(self, trainer: Trainer) -> None:
        self.client = self._client_class(tracking_uri=self.tracking_uri)  # this client's URI; the global is untouched
        run_dir = Path(trainer.run_dir)
        self.run_id = self._continued_run(trainer)
        if self.run_id is not None:
            # params were logged by the run's first part; MLflow refuses changed values (a resume with more epochs)
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            cfg = trainer.cfg
            experiment_id = self._experiment(getattr(cfg, "recipe", "") or getattr(cfg, "model", "") or "cifarlab")
            run = self.client.create_run(experiment_id, run_name=run_dir.name, tags={"cifarlab.run_dir": str(run_dir)})
            self.run_id = run.info.run_id
            self._log_params(cfg)
        _write_json(run_dir / MLFLOW_RUN_FILE, {"tracking_uri": self.tracking_uri, "run_id": self.run_id})
        self._sent_at = time.monotonic()

    def on_step_end(self, trainer: Trainer, step_log: dict[str, Any]) -> None:
        self._add({"lr": step_log["lr"], "train_loss_step": step_log["loss"]}, step_log["step"])
        if len(self._pending) >= self._batch_size() or time.monotonic() - self._sent_at >= self.flush_every_s:
            self._flush()

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        self._add(epoch_metrics(row), trainer.state.step)
        self._flush()

    def on_interrupt(self, trainer: Trainer) -> None:
        self._end("KILLED")

    def on_fit_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        self._add(final_figures(summary), trainer.state.step)
        self._end("FINISHED")

    def _continued_run(self, trainer: Trainer) -> str | None:
        """The run a resumed run's earlier part logged to, if it is in this store and not deleted."""
        from mlflow.exceptions import MlflowException

        saved = _read_json(Path(trainer.run_dir) / MLFLOW_RUN_FILE)
        if not _resuming(trainer) or saved.get("tracking_uri") != self.tracking_uri or not saved.get("run_id"):
            return None
        try:
            run = self.client.get_run(saved["run_id"])
        except MlflowException:
            return None
        return run.info.run_id if run.info.lifecycle_stage == "active" else None

    def _experiment(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            try:
                return self.client.create_experiment(name)
            except MlflowException:  # another process (a sweep worker) created it since we looked
                experiment = self.client.get_experiment_by_name(name)
                if experiment is None:
                    raise
        if experiment.lifecycle_stage != "active":
            raise CifarlabError(f"MLflow experiment {name!r} is deleted: restore it (mlflow experiments restore) "
                                "or delete it for good (mlflow gc) first")
        return experiment.experiment_id

    def _log_params(self, cfg: Any) -> None:
        from mlflow.entities import Param
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

        params = []
        for key, value in config_params(cfg).items():
            text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
            params.append(Param(key, text[:MAX_PARAM_VAL_LENGTH]))  # MLflow refuses longer values
        for i in range(0, len(params), MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(self.run_id, params=params[i:i + MAX_PARAMS_TAGS_PER_BATCH], synchronous=True)

    def _add(self, figures: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now_ms = int(time.time() * 1000)
        self._pending.extend(Metric(key, float(value), now_ms, int(step)) for key, value in figures.items())

    @staticmethod
    def _batch_size() -> int:
        from mlflow.utils.validation import MAX_METRICS_PER_BATCH

        return MAX_METRICS_PER_BATCH

    def _flush(self) -> None:
        if self.run_id is None:
            return
        size = self._batch_size()
        while self._pending:
            self.client.log_batch(self.run_id, metrics=self._pending[:size], synchronous=True)
            del self._pending[:size]
        self._sent_at = time.monotonic()

    def _end(self, status: str) -> None:
        if self.run_id is None:
            return
        self._flush()
        self.client.set_terminated(self.run_id, status=status)
        self.run_id = None


# --- Weights & Biases -------------------------------------------------------------------------------------------

class WandbLogger(Callback):
    """Logs to a Weights & Biases project; files (and offline runs, to ``wandb sync``) go to ``RUN_DIR/wandb``.

    ``WANDB_MODE`` (online, offline, disabled) and the other ``WANDB_*`` variables are left to wandb to read.

    The x-axis is a custom ``global_step`` metric (``define_metric("*", step_metric="global_step")``) rather than
    ``log(step=...)``: W&B's own step must never decrease and merges everything logged at one step into one row,
    and an epoch's figures belong at the step where the next epoch's first step is logged. With the custom axis
    each log call is its own row (W&B's ``_step`` just counts them) and every chart plots against ``global_step``.
    """

    main_only = True

    def __init__(self, project: str):
        try:
            import wandb
        except ImportError:
            raise CifarlabError("W&B logging needs wandb: pip install 'cifarlab[wandb]'") from None
        self._wandb = wandb
        self.project = project
        self.run: Any = None

    def on_fit_start(self, trainer: Trainer) -> None:
        run_dir = Path(trainer.run_dir)
        saved = _read_json(run_dir / WANDB_RUN_FILE)
        resume: dict[str, Any] = {}
        if _resuming(trainer) and saved.get("project") == self.project and saved.get("id"):
            resume = {"id": saved["id"], "resume": "allow", "allow_val_change": True}  # a resume may add epochs
        try:
            self.run = self._wandb.init(project=self.project, name=run_dir.name, dir=str(run_dir),
                                        config=config_params(trainer.cfg), **resume)
        except self._wandb.errors.Error as e:  # not logged in, no network, a bad project name ...
            raise CifarlabError(f"W&B logging could not start: {e}") from e
        self.run.define_metric("global_step")
        self.run.define_metric("*", step_metric="global_step")
        _write_json(run_dir / WANDB_RUN_FILE, {"project": self.project, "id": self.run.id})

    def on_step_end(self, trainer: Trainer, step_log: dict[str, Any]) -> None:
        self.run.log({"lr": step_log["lr"], "train_loss_step": step_log["loss"], "global_step": step_log["step"]})

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        self.run.log({**epoch_metrics(row), "global_step": trainer.state.step})

    def on_interrupt(self, trainer: Trainer) -> None:
        if self.run is not None:
            self.run.finish(exit_code=1)
            self.run = None

    def on_fit_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.summary.update(final_figures(summary))
            self.run.finish()
            self.run = None


# --- TensorBoard ---------------------------------------------------------------------------------------------

class TensorBoardLogger(Callback):
    """Scalars under the names TensorBoard users know from the PyTorch tutorials (Loss/…, Accuracy/…, LR), and the
    hparams view (the run's settings beside its final figures) at the end."""

    main_only = True

    def on_fit_start(self, trainer: Trainer) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise CifarlabError("tensorboard logging needs the tensorboard package: "
                                "pip install 'cifarlab[tensorboard]'") from None
        self.writer = SummaryWriter(str(trainer.run_dir / "tensorboard"))

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        tb = self.writer
        for s in trainer.epoch_state.steps:
            tb.add_scalar("LR", s["lr"], s["step"])
            tb.add_scalar("Loss/train_step", s["loss"], s["step"])
        epoch = row["epoch"]
        tb.add_scalar("Loss/train", row["train_loss"], epoch)
        tb.add_scalar("Accuracy/train", row["train_top1"], epoch)
        if "val_loss" in row:
            tb.add_scalar("Loss/val", row["val_loss"], epoch)
            for k in ("top1", "top2", "top3"):
                tb.add_scalar(f"Accuracy/val_{k}", row[f"val_{k}"], epoch)
        tb.flush()

    def on_fit_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        final = {**summary.get("final", {}), **(summary.get("final_tta") or {})}
        figures = {f"hparam/{k}": v for k, v in final.items() if k.startswith("val_") and isinstance(v, float)}
        figures.setdefault("hparam/train_loss", final.get("train_loss", float("nan")))
        params = {k: v if isinstance(v, (int, float, str, bool)) else json.dumps(v)
                  for k, v in config_params(trainer.cfg).items()}  # the hparams view takes scalars and text
        self.writer.add_hparams(params, figures, run_name=".")
        self.writer.close()

    def on_interrupt(self, trainer: Trainer) -> None:
        self.writer.close()


# --- from the config ------------------------------------------------------------------------------------------

def loggers_from_config(cfg: Any) -> list[Callback]:
    """The loggers a config asks for: ``tensorboard`` and ``csv_log`` (bool), ``mlflow`` (tracking URI) and
    ``wandb`` (project); an empty value is off. A logger whose package is missing raises :class:`CifarlabError`
    here, before training."""
    loggers: list[Callback] = []
    if getattr(cfg, "tensorboard", False):
        loggers.append(TensorBoardLogger())
    if getattr(cfg, "csv_log", False):
        loggers.append(CSVLogger())
    if getattr(cfg, "mlflow", ""):
        loggers.append(MLflowLogger(cfg.mlflow))
    if getattr(cfg, "wandb", ""):
        loggers.append(WandbLogger(cfg.wandb))
    return loggers
