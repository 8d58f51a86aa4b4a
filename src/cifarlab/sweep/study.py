"""Running a sweep: an Optuna study in an SQL storage, and a worker loop any number of machines can join.

Every worker runs the same command against the same storage. Optuna hands each of them different trials;
each trial is an ordinary run directory. Workers send a heartbeat; a worker that dies (SIGKILL, power
loss) leaves its trial RUNNING with a stale heartbeat, and the next worker to look marks it FAIL and
queues a copy with the same parameters, which one worker then runs. A worker stops when the study has
its number of finished trials, waiting while the last ones run elsewhere in case their workers die.
"""

from __future__ import annotations

import logging
import random
import re
import socket
import time
import warnings
from pathlib import Path
from typing import Any

from ..errors import CifarlabError, Diverged, Interrupted
from ..files import make_dir
from .spec import SweepSpec, load_sweep

log = logging.getLogger("cifarlab")

SQLITE_NAME = "study.db"


def _optuna():
    try:
        import optuna
    except ImportError:
        raise CifarlabError("sweeps need Optuna: pip install optuna") from None
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # cifarlab logs each trial itself
    # heartbeats, stale-trial retries and the matplotlib plots are marked experimental; they are what we use
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def storage_url(storage: str | None, sweep_dir: Path) -> str:
    """An SQLAlchemy URL: an SQLite file in the sweep directory by default. A plain ``postgresql://`` URL
    gets whichever PostgreSQL driver is installed (SQLAlchemy 2.1 would otherwise demand psycopg 3)."""
    if not storage:
        return f"sqlite:///{(sweep_dir / SQLITE_NAME).resolve()}"
    if Path(storage).is_dir():
        return f"sqlite:///{(Path(storage) / SQLITE_NAME).resolve()}"
    for prefix in ("postgresql://", "postgres://"):
        if storage.startswith(prefix):
            return _postgres_driver() + storage[len(prefix):]
    return storage


def _postgres_driver() -> str:
    for module, scheme in (("psycopg2", "postgresql+psycopg2://"), ("psycopg", "postgresql+psycopg://")):
        try:
            __import__(module)
            return scheme
        except ImportError:
            continue
    raise CifarlabError("a PostgreSQL storage needs a driver: pip install 'cifarlab[postgres]' (psycopg2-binary)")


def open_storage(url: str, heartbeat_seconds: int | None = None, max_retry: int = 2):
    optuna = _optuna()
    kwargs: dict[str, Any] = {}
    if heartbeat_seconds:
        kwargs = {"heartbeat_interval": heartbeat_seconds, "grace_period": 2 * heartbeat_seconds,
                  "heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry)}
    engine = {"pool_pre_ping": True} if url.startswith("postgresql") else {}
    for attempt in range(4):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine, **kwargs)
        except Exception as exc:  # SQLAlchemy/driver errors: unreachable server, bad credentials, bad file
            # Workers starting together race to create the tables (PostgreSQL then reports a duplicate type);
            # once one has made them, the others open the storage on a second try.
            if attempt == 3 or url.startswith("sqlite"):
                raise CifarlabError(f"cannot open sweep storage {_redact(url)}: {_redact(str(exc), url)}") from None
            time.sleep(0.5 + random.random() * (attempt + 1))


def _redact(text: str, url: str | None = None) -> str:
    """`text` (a URL, or an error message quoting `url`) without credentials: user:password@ and ?password=."""
    if url is not None:
        text = text.replace(url, _redact(url))
        for secret in re.findall(r"(?:://[^/@]*:([^/@]+)@)|(?:[?&]password=([^&\s]+))", url):
            text = text.replace(next(s for s in secret if s), "***") if any(secret) else text
        return text
    text = re.sub(r"(?i)([?&]password=)[^&\s]*", r"\1***", text)
    if "@" in text and "://" in text:
        scheme, rest = text.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return text


def make_sampler(spec: SweepSpec, seed_offset: int = 0):
    """The spec's sampler. A seeded random/TPE sampler joining a study that already has trials (a restart, a
    second worker) is seeded `seed + seed_offset`: with the bare seed it would draw trial 0's values again."""
    optuna = _optuna()
    opts = {k: v for k, v in spec.sampler.items() if k != "name"}
    if seed_offset and isinstance(opts.get("seed"), int) and spec.sampler["name"] != "grid":
        opts["seed"] += seed_offset
    name = spec.sampler["name"]
    try:
        if name == "grid":
            return optuna.samplers.GridSampler({k: p.grid() for k, p in spec.space.items()}, **opts)
        if name == "random":
            return optuna.samplers.RandomSampler(**opts)
        return optuna.samplers.TPESampler(**opts)
    except TypeError as exc:
        raise CifarlabError(f"sweep: bad option for the {name} sampler: {exc}") from None


def make_pruner(spec: SweepSpec):
    optuna = _optuna()
    opts = {k: v for k, v in spec.pruner.items() if k != "name"}
    cls = {"none": optuna.pruners.NopPruner, "median": optuna.pruners.MedianPruner,
           "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
           "hyperband": optuna.pruners.HyperbandPruner}[spec.pruner["name"]]
    try:
        return cls(**opts)
    except TypeError as exc:
        raise CifarlabError(f"sweep: bad option for the {spec.pruner['name']} pruner: {exc}") from None


def _finished(trials) -> int:
    """Trials that count towards the study's total: complete, pruned, or failed on their own (a diverged
    loss, a bad value); not those whose worker died, which are re-queued."""
    from optuna.trial import TrialState

    return sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED)
               or (t.state == TrialState.FAIL and "error" in t.user_attrs) for t in trials)


def run_sweep(path: str | Path, *, trials: int | None = None, storage: str | None = None,
              out: str | Path | None = None, overrides: dict[str, Any] | None = None):
    """Join (or start) the sweep described by the file at `path` and run trials until it has enough.
    Returns the Optuna study."""
    optuna = _optuna()
    from optuna.trial import TrialState

    from ..api import train

    spec = load_sweep(path)
    overrides = dict(overrides or {})
    clash = sorted(k for k in overrides if k in spec.space)
    if clash:
        raise CifarlabError(f"sweep: {', '.join(clash)} searched by the sweep; remove it from the command line")
    if trials is not None:
        spec.trials = trials
    sweep_dir = Path(out) if out else Path("runs") / "sweeps" / spec.name
    make_dir(sweep_dir)
    url = storage_url(storage, sweep_dir)
    store = open_storage(url, spec.heartbeat_seconds, spec.max_retry)
    study = optuna.create_study(study_name=spec.name, storage=store, sampler=make_sampler(spec),
                                pruner=make_pruner(spec), direction=spec.direction, load_if_exists=True)
    if "sweep" not in study.user_attrs:
        study.set_user_attr("sweep", spec.to_dict())
    existing = len(study.get_trials(deepcopy=False))
    if existing:
        study.sampler = make_sampler(spec, seed_offset=existing)
    if spec.enqueue and not study.get_trials(deepcopy=False):  # a new study: its first points, once
        for point in spec.enqueue:
            study.enqueue_trial({k: spec.space[k].labels()[spec.space[k].choices.index(v)]
                                 if spec.space[k].kind == "categorical" else v for k, v in point.items()},
                                skip_if_exists=True)
    host = socket.gethostname()

    fatal: list[CifarlabError] = []

    def objective(trial) -> float:
        params = {k: p.suggest(trial) for k, p in spec.space.items()}
        run_dir = sweep_dir / "trials" / f"trial-{trial.number:04d}"
        trial.set_user_attr("run_dir", str(run_dir.resolve()))
        trial.set_user_attr("host", host)
        log.info("trial %d on %s: %s", trial.number, host, ", ".join(f"{k}={v}" for k, v in trial.params.items()))
        values: list[float] = []

        def on_epoch(row: dict) -> None:
            if spec.metric not in row:
                raise CifarlabError(f"sweep: metric '{spec.metric}' is not in the epoch rows (is there a val split?)")
            values.append(row[spec.metric])
            trial.report(row[spec.metric], row["epoch"])
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {row['epoch']}")

        cfg = spec.trial_config(params, overrides)
        cfg.setdefault("progress", False)
        trial.set_user_attr("config", cfg)  # what `sweep show` turns into the best recipe
        try:
            train(spec.recipe, out=str(run_dir), on_epoch=on_epoch, report=spec.trial_reports, **cfg)
        except optuna.TrialPruned:
            log.info("trial %d pruned after %d epochs (%s %.4f)", trial.number, len(values), spec.metric, values[-1])
            raise
        except Diverged as exc:  # this configuration cannot train: record why, count it, go on
            trial.set_user_attr("error", str(exc))
            log.warning("trial %d failed: %s", trial.number, exc)
            return float("nan")  # Optuna's way to mark a trial FAIL without a traceback
        except CifarlabError as exc:  # a user error (bad data path, bad value): stop this worker with one line
            trial.set_user_attr("user_error", str(exc))
            fatal.append(exc)
            study.stop()
            return float("nan")  # FAIL without Optuna logging a traceback; not counted, not retried
        except (Interrupted, KeyboardInterrupt):
            # stopped by the user: the trial is FAIL; queue its parameters again so the sweep loses nothing
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number}, skip_if_exists=False)
            raise
        best = max(values) if spec.direction == "maximize" else min(values)
        log.info("trial %d complete: %s %.4f", trial.number, spec.metric, best)
        return best

    deadline = time.monotonic() + 60 * spec.timeout_minutes if spec.timeout_minutes else None
    while True:
        optuna.storages.fail_stale_trials(study)  # trials of dead workers become FAIL and are re-queued
        all_trials = study.get_trials(deepcopy=False)
        done = _finished(all_trials)
        if done >= spec.trials:
            break
        if deadline is not None and time.monotonic() >= deadline:
            log.info("sweep %s: time budget of %g min used", spec.name, spec.timeout_minutes)
            break
        waiting = sum(t.state == TrialState.WAITING for t in all_trials)
        running = sum(t.state == TrialState.RUNNING for t in all_trials)
        if not waiting and done + running >= spec.trials:
            time.sleep(min(5.0, spec.heartbeat_seconds))  # the rest run elsewhere; take over if a worker dies
            continue
        study.optimize(objective, n_trials=1)
        if fatal:
            raise fatal[0]
    log.info("sweep %s: %d finished trials in %s", spec.name, _finished(study.get_trials(deepcopy=False)),
             _redact(url))
    return study
