"""Sweeps: sweep files, a whole sweep on SQLite, pruning, failed trials, and two workers on PostgreSQL."""

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from cifarlab.cli import main
from cifarlab.config import make_config
from cifarlab.errors import CifarlabError
from cifarlab.sweep import load_sweep, parse_sweep, run_sweep
from cifarlab.sweep.show import load_study
from cifarlab.sweep.study import storage_url
from datagen import make_cifar10_python

BASE = {"recipe": "seed001_small", "overrides": {"batch_size": 32, "val_split": 0.2, "cyclic_step_size": 3}}


def write_sweep(path, **fields):
    path.write_text(yaml.safe_dump({**BASE, **fields}))
    return path


# ---- sweep files ----------------------------------------------------------------------------------------

def test_space_entries_are_parsed_with_their_types():
    spec = parse_sweep({**BASE, "space": {"optimizer": ["sgd", "adam"],
                                          "lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True},
                                          "batch_size": {"type": "int", "low": 32, "high": 128, "step": 32},
                                          "augment": [[], [{"name": "flip"}]]}})
    assert spec.space["lr"].log and spec.space["batch_size"].grid() == [32, 64, 96, 128]
    assert spec.metric == "val_top1" and spec.direction == "maximize" and spec.sampler == {"name": "tpe"}
    # non-scalar choices travel through Optuna as their YAML text and come back as the values
    assert spec.space["augment"].labels() == ["[]", "[{name: flip}]"]
    assert parse_sweep({**BASE, "metric": "val_loss", "space": {"lr": [0.1]}}).direction == "minimize"


def test_dotted_keys_set_one_entry_of_a_dict_key():
    spec = parse_sweep({**BASE, "space": {"model_args.width": [8, 16]}})
    assert spec.trial_config({"model_args.width": 16})["model_args"] == {"width": 16}


@pytest.mark.parametrize("raw, match", [
    ({"space": {"lr": [0.1]}, "smapler": "tpe"}, "unknown key"),
    ({"space": {"learning_rate": [0.1]}}, "'learning_rate' is not a config key"),
    ({"space": {"lr": {"type": "float", "low": 1, "high": 0}}}, "low <= high"),
    ({"space": {"lr": {"type": "normal"}}}, "use categorical, int or float"),
    ({"space": {"lr": {"type": "float", "low": 0.01, "high": 0.1}}, "sampler": "grid"}, "grid sampler needs a list"),
    ({"space": {"lr": [0.1]}, "sampler": "annealing"}, "unknown sampler 'annealing'"),
    ({"space": {"lr": [0.1]}, "pruner": {"name": "median", "warmup": 2}}, None),
    ({"space": {"lr": [0.1]}, "metric": "accuracy"}, "metric 'accuracy'"),
    ({"space": {}}, "'space' must map"),
])
def test_bad_sweep_files_are_refused_with_the_reason(raw, match, tmp_path):
    if match is None:  # an option the pruner does not take is caught when the pruner is built
        from cifarlab.sweep.study import make_pruner

        with pytest.raises(CifarlabError, match="bad option for the median pruner"):
            make_pruner(parse_sweep({**BASE, **raw}))
        return
    with pytest.raises(CifarlabError, match=match):
        parse_sweep({**BASE, **raw})


def test_bundled_study_002_sweeps_reproduce_its_grids():
    root = os.path.join(os.path.dirname(__file__), "..", "recipes", "sweeps")
    grid = load_sweep(os.path.join(root, "seed002_grid.yaml"))
    assert grid.sampler["name"] == "grid" and grid.trials == 36  # 3 optimizers x 2 LR x 2 L2 x 3 batch sizes
    assert grid.space["optimizer"].choices == ["sgd", "adam", "adamw"]
    assert sorted(grid.space["batch_size"].choices) == [32, 64, 256]
    dropout = load_sweep(os.path.join(root, "seed002_dropout.yaml"))
    assert dropout.space["dropout"].choices == [0.1, 0.2, 0.5, 0.7] and dropout.trials == 4


def test_postgres_urls_get_an_installed_driver(tmp_path):
    url = storage_url("postgresql://u:p@db.example:5432/sweeps", tmp_path)
    assert url.startswith(("postgresql+psycopg2://", "postgresql+psycopg://"))
    assert url.endswith("u:p@db.example:5432/sweeps")
    assert storage_url(None, tmp_path) == f"sqlite:///{(tmp_path / 'study.db').resolve()}"


# ---- sweeps on SQLite -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweepdata")
    make_cifar10_python(root, per_batch=40, test=20)  # 200 images: 160 train / 40 val
    return root


def test_trial_reports_off_skips_each_trials_plots(small_data, tmp_path):
    f = write_sweep(tmp_path / "s.yaml", name="quiet", sampler="grid", space={"lr": [0.05]}, trial_reports=False)
    code = main(["sweep", "run", str(f), "--out", str(tmp_path / "sw"), "--data", str(small_data), "--epochs", "1"])
    assert code == 0
    run_dir = Path(load_study(tmp_path / "sw").trials[0].user_attrs["run_dir"])
    assert (run_dir / "best.pt").is_file() and (run_dir / "summary.json").is_file()
    assert not (run_dir / "report.html").exists() and not list(run_dir.glob("*.png"))
    with pytest.raises(CifarlabError, match="trial_reports must be true or false"):
        parse_sweep({**BASE, "space": {"lr": [0.05]}, "trial_reports": "no thanks"})


def test_four_trial_sweep_then_show(small_data, tmp_path, capsys):
    f = write_sweep(tmp_path / "s.yaml", name="four", sampler="grid",
                    space={"optimizer": ["sgd", "adam"], "lr": [0.05, 0.002]})
    code = main(["sweep", "run", str(f), "--out", str(tmp_path / "sw"), "--data", str(small_data), "--epochs", "2"])
    assert code == 0
    study = load_study(tmp_path / "sw")
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4
    assert sorted((t.params["optimizer"], t.params["lr"]) for t in complete) == [
        ("adam", 0.002), ("adam", 0.05), ("sgd", 0.002), ("sgd", 0.05)]
    for t in complete:  # each trial is an ordinary run directory with the epochs it reported
        assert os.path.isfile(os.path.join(t.user_attrs["run_dir"], "best.pt"))
        assert os.path.isfile(os.path.join(t.user_attrs["run_dir"], "report.html"))  # trial_reports: true
        assert sorted(t.intermediate_values) == [1, 2]
        assert t.value == max(t.intermediate_values.values())
    capsys.readouterr()

    assert main(["sweep", "show", str(tmp_path / "sw")]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["trial", "state", "val_top1"]
    values = [float(line.split()[2]) for line in lines[1:5]]
    assert values == sorted(values, reverse=True) and values[0] == pytest.approx(study.best_value)
    best = yaml.safe_load((tmp_path / "sw" / "best.yaml").read_text())
    assert best["optimizer"] == study.best_params["optimizer"] and best["lr"] == study.best_params["lr"]
    assert best["epochs"] == 2 and best["batch_size"] == 32
    make_config(str(tmp_path / "sw" / "best.yaml"))  # a ready recipe file
    for png in ("history.png", "importances.png", "parallel.png", "intermediate.png"):
        assert (tmp_path / "sw" / png).stat().st_size > 5000, png
    page = (tmp_path / "sw" / "report.html").read_text()
    assert 'data-file="importances.png"' in page and f"{study.best_value:.4f}" in page


def test_median_pruner_stops_a_hopeless_trial_early(small_data, tmp_path):
    # trial 0 (lr 0.05) learns; trial 1 (lr 1e-7) cannot move in 4 epochs. With one finished trial as its
    # reference, the median pruner stops trial 1 at its first report.
    f = write_sweep(tmp_path / "p.yaml", name="prune", sampler="tpe", metric="val_loss", trials=2,
                    pruner={"name": "median", "n_startup_trials": 1, "n_warmup_steps": 0},
                    space={"lr": {"type": "float", "low": 1e-8, "high": 0.1, "log": True}},
                    enqueue=[{"lr": 0.05}, {"lr": 1e-7}])
    study = run_sweep(f, out=tmp_path / "sw", overrides={"data": str(small_data), "epochs": 4})
    by_lr = {t.params["lr"]: t for t in study.trials}
    assert by_lr[0.05].state == TrialState.COMPLETE and len(by_lr[0.05].intermediate_values) == 4
    assert by_lr[1e-7].state == TrialState.PRUNED and len(by_lr[1e-7].intermediate_values) < 4


def test_a_diverging_trial_is_recorded_and_the_sweep_goes_on(small_data, tmp_path):
    f = write_sweep(tmp_path / "d.yaml", name="diverge", sampler="grid", space={"lr": [1e12, 0.05]})
    study = run_sweep(f, out=tmp_path / "sw", overrides={"data": str(small_data), "epochs": 1})
    by_lr = {t.params["lr"]: t for t in study.trials}
    assert by_lr[1e12].state == TrialState.FAIL and "diverged" in by_lr[1e12].user_attrs["error"]
    assert by_lr[0.05].state == TrialState.COMPLETE and len(study.trials) == 2


@pytest.mark.parametrize("argv, match", [
    (["sweep", "run", "no-such-sweep.yaml"], "sweep file no-such-sweep.yaml not found"),
    (["sweep", "show", "."], "holds no study.db"),
    (["sweep", "show", "sqlite:////nonexistent-dir/study.db"], "cannot open sweep storage"),
])
def test_sweep_user_errors_are_one_line(argv, match, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1 and "Traceback" not in err


def test_a_user_error_in_a_trial_stops_the_worker_with_one_line(small_data, tmp_path, capsys):
    f = write_sweep(tmp_path / "u.yaml", name="usererr", space={"lr": [0.1, 0.2]}, sampler="grid")
    assert main(["sweep", "run", str(f), "--out", str(tmp_path / "sw"), "--data", str(small_data),
                 "--val-split", "5000"]) == 2
    err = capsys.readouterr().err
    assert "val_split 5000.0 leaves no training images" in err and "Traceback" not in err and err.count("\n") == 1
    study = load_study(tmp_path / "sw")
    assert len(study.trials) == 1 and study.trials[0].state == TrialState.FAIL  # stopped at once, not counted
    assert "error" not in study.trials[0].user_attrs


def test_command_line_overrides_may_not_clash_with_the_space(small_data, tmp_path):
    f = write_sweep(tmp_path / "c.yaml", space={"lr": [0.1, 0.2]})
    with pytest.raises(CifarlabError, match="lr searched by the sweep"):
        run_sweep(f, out=tmp_path / "sw", overrides={"lr": 0.3})


# ---- two workers on PostgreSQL --------------------------------------------------------------------------

def _pg_tool(name):
    found = shutil.which(name) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found if isinstance(found, str) else (found[-1] if found else None)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """A PostgreSQL server on loopback: the one .ci/run started (CIFARLAB_TEST_POSTGRES), or a fresh cluster
    in a temporary directory (initdb + pg_ctl, as the postgres user when run as root)."""
    if os.environ.get("CIFARLAB_TEST_POSTGRES"):
        yield os.environ["CIFARLAB_TEST_POSTGRES"]
        return
    initdb, pg_ctl = _pg_tool("initdb"), _pg_tool("pg_ctl")
    if not (initdb and pg_ctl):
        if os.environ.get("CI"):
            pytest.fail("CI must run the PostgreSQL test: install Debian's postgresql package (.ci/run does)")
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    root = tempfile.mkdtemp(prefix="cifarlab-pg-", dir="/tmp")
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_pg:
        shutil.chown(root, "postgres")
    data, port = os.path.join(root, "data"), _free_port()
    subprocess.run(as_pg + [initdb, "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8"], check=True,
                   capture_output=True)
    subprocess.run(as_pg + [pg_ctl, "-D", data, "-l", os.path.join(root, "log"), "-w", "-o",
                            f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start"], check=True,
                   capture_output=True)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(as_pg + [pg_ctl, "-D", data, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def _worker(sweep_file, url, out, data, log):
    cmd = [sys.executable, "-m", "cifarlab", "sweep", "run", str(sweep_file), "--storage", url, "--out", str(out),
           "--data", str(data)]
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_two_workers_on_postgres_one_killed_mid_trial(small_data, tmp_path, postgres_url):
    name = f"pg{int(time.time() * 1000) % 10**9}"  # a fresh study even on a long-lived server
    f = write_sweep(tmp_path / "pg.yaml", name=name, sampler="grid", heartbeat_seconds=1,
                    overrides={**BASE["overrides"], "epochs": 4}, space={"lr": [0.01, 0.02, 0.03, 0.04]})
    logs = [open(tmp_path / f"worker{i}.log", "w") for i in range(2)]
    a = _worker(f, postgres_url, tmp_path / "a", small_data, logs[0])
    b = _worker(f, postgres_url, tmp_path / "b", small_data, logs[1])
    try:
        # kill worker a once one of its trials has trained a few steps
        deadline = time.time() + 120
        while time.time() < deadline:
            runs = glob.glob(str(tmp_path / "a" / "trials" / "*" / "metrics.jsonl"))
            if any('"type": "step"' in open(p).read() for p in runs) and a.poll() is None:
                break
            time.sleep(0.2)
        else:
            pytest.fail("worker a never started a trial:\n" + (tmp_path / "worker0.log").read_text()[-3000:])
        a.send_signal(signal.SIGKILL)
        a.wait()
        assert b.wait(timeout=240) == 0, (tmp_path / "worker1.log").read_text()[-3000:]
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.kill()
        for fh in logs:
            fh.close()

    study = load_study(postgres_url, name)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert sorted(t.params["lr"] for t in complete) == [0.01, 0.02, 0.03, 0.04]  # all done, none twice
    assert len(failed) == 1 and str(tmp_path / "a") in failed[0].user_attrs["run_dir"]  # the killed one
    retry = [t for t in complete if t.system_attrs.get("failed_trial") == failed[0].number]
    assert len(retry) == 1 and retry[0].params == failed[0].params
    assert str(tmp_path / "b") in retry[0].user_attrs["run_dir"]  # the surviving worker ran it
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    optuna.delete_study(study_name=name, storage=study._storage)
