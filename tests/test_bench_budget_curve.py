"""bench/budget_curve.py: the point with no recipe, the seconds of a command that was cut off, two benches at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cifarlab.files import RunLock
from datagen import load_bench

BENCH = Path(__file__).parents[1] / "bench"


@pytest.fixture(scope="module")
def curve():
    return load_bench("budget_curve")


@pytest.fixture()
def common(curve):
    return sys.modules["common"]  # bench/common.py, as budget_curve.py imported it: where commands are run


def _summary(run_dir: Path, recipe: str, epochs: int = 3, wall: float = 290.0) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "summary.json").write_text(json.dumps({
        "model": recipe, "recipe": recipe, "epochs_run": epochs, "final": {"val_top1": 0.88},
        "final_tta": {"val_top1": 0.9}, "wall_seconds": wall}))


def test_auto_names_no_recipe_and_its_rows_say_which_the_run_chose(curve, common, tmp_path, monkeypatch):
    run_dir = tmp_path / "auto-5min-s0"
    cmd = curve.train_command("auto", 5, 0, "data.tar.gz", run_dir, ["--threads", "2"])
    assert "--recipe" not in cmd and cmd[cmd.index("--time-budget") + 1] == "5"
    assert cmd[-2:] == ["--threads", "2"] and cmd[cmd.index("--out") + 1] == str(run_dir)
    named = curve.train_command("fast94", 5, 0, "data.tar.gz", run_dir, [])
    assert named[named.index("--recipe") + 1] == "fast94"

    seen = []

    def fake_run(cmd, **kwargs):  # the run chooses fast94_select for itself, as the probe would
        seen.append(cmd)
        _summary(run_dir, "fast94_select")
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(common.subprocess, "run", fake_run)
    row = curve.run_one("auto", 5, 0, "data.tar.gz", run_dir, [])
    assert row["recipe"] == "auto" and row["chosen"] == "fast94_select" and len(seen) == 1
    assert row["command_seconds"] is not None and row["command_seconds"] >= 0
    other = dict(row, seed=1, chosen="fast94", val_top1_tta=0.8, run_seconds=310.0, command_seconds=330.0)
    md = curve.table([row, other])
    line = md.splitlines()[2]
    assert line.startswith("| auto (fast94_select/fast94) | 5 | 2 | 3.0 | 88.00% | 85.00% | 310 | 330 |")
    assert line.endswith("| +3.3% / +10.0% |")  # the longest of the seeds, against 300 s


def test_a_cut_off_command_keeps_its_seconds_and_the_next_call_resumes_it(curve, common, tmp_path, monkeypatch):
    run_dir = tmp_path / "fast94-10.7min-s0"
    clock = iter([100.0, 160.0, 200.0, 230.5])  # two commands: 60 s cut off, then 30.5 s to the end
    monkeypatch.setattr(common.time, "perf_counter", lambda: next(clock))

    def cut_off(cmd, **kwargs):  # the run made its folder and its checkpoint, then Ctrl-C reached the bench
        run_dir.mkdir(parents=True)
        (run_dir / "last.pt").write_bytes(b"checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(common.subprocess, "run", cut_off)
    with pytest.raises(KeyboardInterrupt):
        curve.run_one("fast94", 10.7, 0, "data.tar.gz", run_dir, ["--threads", "2"])
    assert (run_dir / "command_seconds.txt").read_text() == "60.0\n"

    seen = []

    def resumed(cmd, **kwargs):
        seen.append(cmd)
        _summary(run_dir, "fast94", epochs=13, wall=635.2)
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(common.subprocess, "run", resumed)
    row = curve.run_one("fast94", 10.7, 0, "data.tar.gz", run_dir, ["--threads", "2"])
    assert seen[0][seen[0].index("--resume") + 1] == str(run_dir) and "--recipe" not in seen[0]
    assert row["command_seconds"] == pytest.approx(90.5) and row["epochs"] == 13
    assert (run_dir.parent / f"{run_dir.name}.log").is_file()  # one log, appended to by both commands


def test_a_failed_command_that_made_no_folder_leaves_nothing_and_says_so(curve, common, tmp_path, monkeypatch):
    run_dir = tmp_path / "nope-5min-s0"
    monkeypatch.setattr(common.subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, 2))
    with pytest.raises(SystemExit, match="failed with exit 2"):
        curve.run_one("nope", 5, 0, "data.tar.gz", run_dir, [])
    assert not run_dir.exists()


def test_a_second_bench_on_the_same_point_is_refused_before_it_runs_or_counts(curve, common, tmp_path, monkeypatch,
                                                                              capsys):
    run_dir = tmp_path / "fast94-5min-s0"
    run_dir.mkdir()
    (run_dir / "last.pt").write_bytes(b"checkpoint")  # the first bench's run, part-way
    (run_dir / "command_seconds.txt").write_text("60.0\n")
    seen = []
    monkeypatch.setattr(common.subprocess, "run", lambda cmd, **kw: seen.append(cmd))
    first = RunLock(tmp_path, ".fast94-5min-s0.lock").acquire()  # as the first bench holds it while it trains
    try:
        with pytest.raises(SystemExit) as refused:
            curve.run_one("fast94", 5, 0, "data.tar.gz", run_dir, [])
    finally:
        first.release()
    err = capsys.readouterr().err
    assert refused.value.code == 2 and err.count("\n") == 1
    assert f"in use by process {os.getpid()} (a bench training fast94-5min-s0 there)" in err
    assert seen == [] and (run_dir / "command_seconds.txt").read_text() == "60.0\n"
    assert not (tmp_path / "fast94-5min-s0.log").exists()

    def finish(cmd, **kwargs):  # once the first bench is gone, the point is resumed, not started again
        seen.append(cmd)
        _summary(run_dir, "fast94")
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(common.subprocess, "run", finish)
    clock = iter([10.0, 12.5])
    monkeypatch.setattr(common.time, "perf_counter", lambda: next(clock))
    row = curve.run_one("fast94", 5, 0, "data.tar.gz", run_dir, [])
    assert "--resume" in seen[0] and row["command_seconds"] == pytest.approx(62.5)
    curve.run_one("fast94", 5, 0, "data.tar.gz", run_dir, [])  # a finished point is read, not run again
    assert len(seen) == 1


CHILD = """
import os, pathlib, signal, sys, time
folder = pathlib.Path(sys.argv[1])
signal.signal(signal.SIGTERM, lambda *a: (folder.joinpath("child.sigterm").write_text("saved"), sys.exit(143)))
folder.joinpath("child.pid").write_text(str(os.getpid()))
time.sleep(60)
"""

BENCH_PROCESS = """
import sys
sys.path.insert(0, sys.argv[1])
import common
from pathlib import Path
folder = Path(sys.argv[2])
common.train_point(folder / "run", [sys.executable, "-c", sys.argv[3], str(folder)], "data")
"""


def _ended(pid: int) -> bool:
    """Whether the process has exited: gone, or a zombie its new parent has not reaped yet."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's prctl")
def test_a_killed_bench_stops_its_training_child_with_sigterm(tmp_path):
    """SIGKILL reaches only the bench; its `cifarlab train` child gets SIGTERM (save last.pt, stop) instead of
    training on alone beside the next bench."""
    import signal
    import time

    bench = subprocess.Popen([sys.executable, "-c", BENCH_PROCESS, str(BENCH), str(tmp_path), CHILD])
    pid_file = tmp_path / "child.pid"
    deadline = time.monotonic() + 30
    while not pid_file.is_file() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pid_file.is_file(), "the child never started"
    child = int(pid_file.read_text())
    bench.kill()
    bench.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if _ended(child):
            break
        time.sleep(0.05)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("the child went on after its bench was killed")
    assert (tmp_path / "child.sigterm").read_text() == "saved"  # its handler ran: a SIGTERM, not a kill
