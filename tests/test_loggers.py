"""The experiment loggers, driven through a fake two-epoch run of three steps each and checked by reading back what
each one wrote: the CSV files, the MLflow file store (through MlflowClient) and W&B's offline run file."""

from __future__ import annotations

import csv
import json
import struct
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from cifarlab.config import Config
from cifarlab.errors import CifarlabError
from cifarlab.training.loggers import CSVLogger, MLflowLogger, WandbLogger, loggers_from_config

STEPS_PER_EPOCH = 3
VAL_TOP1 = [0.5, 0.6]  # per epoch
SUMMARY = {"best": 0.6, "best_epoch": 2, "final": {"epoch": 2, "val_top1": 0.6}, "params": 12345,
           "final_tta": {"val_loss": 0.8, "val_top1": 0.65, "val_top2": 0.8, "val_top3": 0.9}, "wall_seconds": 4.2}


def lr_at(step: int) -> float:
    return 0.05 - 0.005 * step  # distinct at every step, so a value logged at the wrong step shows


def loss_at(step: int) -> float:
    return 2.0 - 0.1 * step


def epoch_row(epoch: int) -> dict:
    last = (epoch + 1) * STEPS_PER_EPOCH - 1
    return {"type": "epoch", "epoch": epoch + 1, "train_loss": 1.5 - 0.1 * epoch, "train_top1": 0.3 + 0.1 * epoch,
            "train_time": 1.5, "images": 96, "lr": lr_at(last), "val_loss": 1.2 - 0.1 * epoch,
            "val_top1": VAL_TOP1[epoch], "val_top2": 0.7, "val_top3": 0.8, "eval_time": 0.2, "elapsed": 2.0 * epoch}


def make_trainer(tmp_path: Path, step: int = 0, epoch: int = 0) -> SimpleNamespace:
    run_dir = tmp_path / "seed001_small-20260101-000000"
    run_dir.mkdir(exist_ok=True)
    return SimpleNamespace(cfg=Config(model="resnet_small", recipe="seed001_small", lr=0.05), run_dir=run_dir,
                           state=SimpleNamespace(step=step, epoch=epoch))


def drive(logger, trainer, epochs=range(2), finish: bool = True) -> None:
    """The hooks in the order the trainer calls them, its step and epoch counters advancing as the trainer's do."""
    logger.on_fit_start(trainer)
    for epoch in epochs:
        logger.on_epoch_start(trainer, epoch)
        for _ in range(STEPS_PER_EPOCH):
            step = trainer.state.step
            trainer.state.step += 1
            logger.on_step_end(trainer, {"type": "step", "step": step, "epoch": epoch, "lr": lr_at(step),
                                         "loss": loss_at(step)})
        trainer.state.epoch += 1
        logger.on_epoch_end(trainer, epoch_row(epoch))
    if finish:
        logger.on_fit_end(trainer, SUMMARY)


# --- CSV ------------------------------------------------------------------------------------------------------

def read_csv(trainer) -> tuple[list[str], list[dict]]:
    with open(trainer.run_dir / "csv" / "version_0" / "metrics.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames), list(reader)


def test_csv_logger_writes_lightnings_layout(tmp_path):
    trainer = make_trainer(tmp_path)
    drive(CSVLogger(), trainer)

    folder = trainer.run_dir / "csv" / "version_0"
    assert sorted(p.name for p in folder.iterdir()) == ["hparams.yaml", "metrics.csv"]  # no temporary file left
    hparams = yaml.safe_load((folder / "hparams.yaml").read_text())
    assert hparams["lr"] == 0.05 and hparams["model"] == "resnet_small" and hparams["betas"] == [0.9, 0.999]

    header, rows = read_csv(trainer)
    assert "step" in header and header == sorted(header)
    steps = [r for r in rows if r["train_loss_step"]]
    assert [int(r["step"]) for r in steps] == list(range(6))
    assert [float(r["lr"]) for r in steps] == [lr_at(s) for s in range(6)]
    assert [int(r["epoch"]) for r in steps] == [0, 0, 0, 1, 1, 1]
    assert all(r["val_top1"] == "" for r in steps)  # an absent metric is an empty cell
    epochs = [r for r in rows if r["val_top1"]]
    assert [(int(r["step"]), int(r["epoch"]), float(r["val_top1"])) for r in epochs] == [(3, 0, 0.5), (6, 1, 0.6)]
    assert all(r["lr"] == "" and r["train_loss"] for r in epochs)
    final = [r for r in rows if r["final_tta_val_top1"]]
    assert [(int(r["step"]), float(r["final_tta_val_top1"]), float(r["best"])) for r in final] == [(6, 0.65, 0.6)]


def test_csv_resume_keeps_the_rows_before_its_checkpoint(tmp_path):
    # the first part logs two epochs but is killed before the second epoch's checkpoint is written ...
    drive(CSVLogger(), make_trainer(tmp_path), finish=False)
    resumed = make_trainer(tmp_path, step=3, epoch=1)  # ... so it resumes from the first's: 1 epoch, 3 steps done
    drive(CSVLogger(), resumed, epochs=[1])

    _, rows = read_csv(resumed)
    steps = [r for r in rows if r["train_loss_step"]]
    assert [(int(r["step"]), float(r["lr"])) for r in steps] == [(s, lr_at(s)) for s in range(6)]  # each once
    assert [(int(r["step"]), float(r["val_top1"])) for r in rows if r["val_top1"]] == [(3, 0.5), (6, 0.6)]
    assert [float(r["final_tta_val_top1"]) for r in rows if r["final_tta_val_top1"]] == [0.65]

    drive(CSVLogger(), make_trainer(tmp_path), epochs=[0], finish=False)  # a fresh run in the same directory
    _, rows = read_csv(resumed)
    assert [int(r["step"]) for r in rows] == [0, 1, 2, 3] and "final_tta_val_top1" not in rows[0]


# --- MLflow ---------------------------------------------------------------------------------------------------

def mlflow_run(uri: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("seed001_small")  # named after the recipe
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]

    def history(key: str) -> list[tuple[int, float]]:
        return sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))

    return run, history


@pytest.fixture
def mlflow_file_store(monkeypatch, tmp_path) -> str:
    # MLflow 3.x refuses its file store (in maintenance) unless asked for it
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return (tmp_path / "mlruns").as_uri()


def test_mlflow_logger(tmp_path, mlflow_file_store):
    uri = mlflow_file_store
    trainer = make_trainer(tmp_path)
    drive(MLflowLogger(uri), trainer)

    run, history = mlflow_run(uri)
    assert run.info.run_name == trainer.run_dir.name and run.info.status == "FINISHED"
    params = run.data.params
    assert params["lr"] == "0.05" and params["model"] == "resnet_small" and json.loads(params["betas"]) == [0.9, 0.999]
    assert history("lr") == [(s, lr_at(s)) for s in range(6)]  # the epoch rows' lr is not logged a second time
    assert history("train_loss_step") == [(s, loss_at(s)) for s in range(6)]
    assert history("val_top1") == [(3, 0.5), (6, 0.6)]
    assert history("final_tta_val_top1") == [(6, 0.65)] and history("best") == [(6, 0.6)]


def test_mlflow_interrupt_kills_the_run_and_resume_continues_it(tmp_path, mlflow_file_store):
    uri = mlflow_file_store
    trainer = make_trainer(tmp_path)
    logger = MLflowLogger(uri)
    drive(logger, trainer, epochs=[0], finish=False)
    logger.on_interrupt(trainer)
    run, _ = mlflow_run(uri)
    assert run.info.status == "KILLED"

    drive(MLflowLogger(uri), make_trainer(tmp_path, step=3, epoch=1), epochs=[1])
    run, history = mlflow_run(uri)  # still one run
    assert run.info.status == "FINISHED"
    assert history("lr") == [(s, lr_at(s)) for s in range(6)]
    assert history("val_top1") == [(3, 0.5), (6, 0.6)]


# --- Weights & Biases -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def _wandb_service():
    yield
    if "wandb" in sys.modules:
        sys.modules["wandb"].teardown()  # stops the wandb-core process the runs of this module started


@pytest.fixture
def wandb_offline(monkeypatch, tmp_path, _wandb_service):
    for name, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": tmp_path / "wandb-dir",
                        "WANDB_CONFIG_DIR": tmp_path / "wandb-config", "WANDB_CACHE_DIR": tmp_path / "wandb-cache",
                        "WANDB_DATA_DIR": tmp_path / "wandb-data", "WANDB_DISABLE_GIT": "true"}.items():
        monkeypatch.setenv(name, str(value))


def wandb_records(path: Path):
    """The protobuf records of a ``.wandb`` file. The file is a 7-byte header (``:W&B``, a 2-byte magic, a version
    byte) and then a LevelDB-style log: 32 KiB blocks of chunks, each a 7-byte header (CRC-32, little-endian
    length, type: 1 whole record, 2/3/4 its first/middle/last piece) and its bytes; a block's tail shorter than a
    chunk header is padding. wandb 0.31 writes it from its Go core and ships no Python reader."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, pieces = 32 * 1024, 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:  # zero padding to the end of the block
            pos += block - pos % block
            continue
        if pos + 7 + length > len(data):  # the writer has not flushed the rest yet
            break
        pieces += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pieces)
            pieces = b""
            yield record


def read_wandb(path: Path, timeout_s: float = 10.0) -> dict:
    """What an offline run recorded: its run record, config, history rows, summary, metric definitions, exit code.
    ``finish()`` returns before wandb-core has flushed the file, so this waits for the run's exit record."""
    deadline = time.monotonic() + timeout_s
    while True:
        run = _read_wandb(path)
        if run["exit_code"] is not None or time.monotonic() > deadline:
            return run
        time.sleep(0.02)


def _read_wandb(path: Path) -> dict:
    def name(item) -> str:
        return item.key or ".".join(item.nested_key)

    out: dict = {"config": {}, "history": [], "summary": {}, "metrics": [], "exit_code": None}
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out["run"] = record.run
            out["config"].update({name(i): json.loads(i.value_json) for i in record.run.config.update})
        elif kind == "config":
            out["config"].update({name(i): json.loads(i.value_json) for i in record.config.update})
        elif kind == "history":
            out["history"].append({name(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            out["summary"].update({name(i): json.loads(i.value_json) for i in record.summary.update})
        elif kind == "metric":
            out["metrics"].append(record.metric)
        elif kind == "exit":
            out["exit_code"] = record.exit.exit_code
    return out


def wandb_files(trainer) -> list[Path]:
    return sorted(trainer.run_dir.glob("wandb/offline-run-*/run-*.wandb"))


def test_wandb_logger_offline(tmp_path, wandb_offline):
    trainer = make_trainer(tmp_path)
    drive(WandbLogger("cifarlab-tests"), trainer)

    [path] = wandb_files(trainer)  # under the run directory
    run = read_wandb(path)
    assert run["run"].project == "cifarlab-tests" and run["run"].display_name == trainer.run_dir.name
    assert run["config"]["lr"] == 0.05 and run["config"]["model"] == "resnet_small"
    assert any(m.glob_name == "*" and m.step_metric == "global_step" for m in run["metrics"])
    steps = [h for h in run["history"] if "train_loss_step" in h]
    assert [(h["global_step"], h["lr"]) for h in steps] == [(s, lr_at(s)) for s in range(6)]
    epochs = [h for h in run["history"] if "val_top1" in h]
    assert [(h["global_step"], h["epoch"], h["val_top1"]) for h in epochs] == [(3, 0, 0.5), (6, 1, 0.6)]
    assert all("lr" not in h for h in epochs)
    assert run["summary"]["final_tta_val_top1"] == 0.65 and run["summary"]["best"] == 0.6
    assert run["exit_code"] == 0


def test_wandb_interrupt_exits_1_and_resume_continues_the_run(tmp_path, wandb_offline):
    trainer = make_trainer(tmp_path)
    logger = WandbLogger("cifarlab-tests")
    drive(logger, trainer, epochs=[0], finish=False)
    logger.on_interrupt(trainer)
    [first] = wandb_files(trainer)
    assert read_wandb(first)["exit_code"] == 1

    drive(WandbLogger("cifarlab-tests"), make_trainer(tmp_path, step=3, epoch=1), epochs=[1])
    files = wandb_files(trainer)
    assert len(files) == 2 and files[0].name == files[1].name  # offline, a resume writes the same run id anew
    second = read_wandb(next(p for p in files if p != first))
    assert [h["global_step"] for h in second["history"] if "train_loss_step" in h] == [3, 4, 5]
    assert second["exit_code"] == 0


# --- construction ---------------------------------------------------------------------------------------------

def test_loggers_from_config(tmp_path):
    assert loggers_from_config(Config()) == []  # every logger is off by default (and before the keys exist)
    cfg = SimpleNamespace(csv_log=True, mlflow=(tmp_path / "mlruns").as_uri(), wandb="cifarlab-tests")
    loggers = loggers_from_config(cfg)
    assert [type(x) for x in loggers] == [CSVLogger, MLflowLogger, WandbLogger]
    assert all(x.main_only for x in loggers)
    assert not (tmp_path / "mlruns").exists()  # nothing is started before the fit


@pytest.mark.parametrize("module, build, extra", [("mlflow", lambda: MLflowLogger("file:/x"), "cifarlab[mlflow]"),
                                                  ("wandb", lambda: WandbLogger("p"), "cifarlab[wandb]")])
def test_a_missing_package_is_a_cifarlab_error(monkeypatch, module, build, extra):
    for name in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
        monkeypatch.setitem(sys.modules, name, None)  # `import` of a None entry raises ImportError
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(CifarlabError, match=extra.replace("[", r"\[").replace("]", r"\]")):
        build()


# --- one real run, every logger ---------------------------------------------------------------------------------

def test_a_real_run_logs_the_same_figures_to_every_logger(tmp_path, mlflow_file_store, wandb_offline):
    """A short training run with --csv-log, --mlflow and --wandb (and TensorBoard): each records the run's params,
    every step's LR and every epoch's val top-1, as metrics.jsonl has them."""
    import cifarlab
    from datagen import make_cifar10_python

    make_cifar10_python(tmp_path, per_batch=20, test=10)
    run = cifarlab.train(data=str(tmp_path), model="resnet_small", recipe="seed001_small", epochs=2, batch_size=30,
                         lr=0.02, out=str(tmp_path / "run"), progress=False, report=False, csv_log=True,
                         mlflow=mlflow_file_store, wandb="cifarlab-tests", tensorboard=True)
    rows = [json.loads(x) for x in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    step_lrs = [(r["step"], r["lr"]) for r in rows if r["type"] == "step"]
    val_top1 = [r["val_top1"] for r in rows if r["type"] == "epoch"]
    steps_per_epoch = len(step_lrs) // 2
    assert len(step_lrs) == 2 * steps_per_epoch and len(val_top1) == 2

    header, csv_rows = read_csv(SimpleNamespace(run_dir=run.run_dir))
    hparams = yaml.safe_load((run.run_dir / "csv" / "version_0" / "hparams.yaml").read_text())
    assert hparams["lr"] == 0.02 and hparams["model"] == "resnet_small"
    assert [(int(r["step"]), float(r["lr"])) for r in csv_rows if r["lr"]] == step_lrs
    assert [float(r["val_top1"]) for r in csv_rows if r["val_top1"]] == val_top1

    mlrun, history = mlflow_run(mlflow_file_store)
    assert mlrun.data.params["lr"] == "0.02" and mlrun.info.status == "FINISHED"
    assert history("lr") == step_lrs
    assert history("val_top1") == [(steps_per_epoch, val_top1[0]), (2 * steps_per_epoch, val_top1[1])]

    [path] = sorted(run.run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    wb = read_wandb(path)
    assert wb["config"]["lr"] == 0.02 and wb["exit_code"] == 0
    assert [(h["global_step"], h["lr"]) for h in wb["history"] if "lr" in h] == step_lrs
    assert [h["val_top1"] for h in wb["history"] if "val_top1" in h] == val_top1

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run.run_dir / "tensorboard"))
    events.Reload()
    tb_lrs = events.Scalars("LR")
    assert [e.step for e in tb_lrs] == [s for s, _ in step_lrs]
    assert [e.value for e in tb_lrs] == pytest.approx([lr for _, lr in step_lrs], rel=1e-6)  # stored as float32
    assert "_hparams_/session_start_info" in events.summary_metadata  # the hparams view's record
