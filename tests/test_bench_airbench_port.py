"""bench/airbench_port.py: each edit of the port matched once, a file that differs refused in one line, the data
written in airbench's format holding exactly cifarlab's val split."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cifarlab.data import load_splits
from cifarlab.errors import CifarlabError
from datagen import load_bench, make_cifar10_python

BENCH = Path(__file__).parents[1] / "bench"


@pytest.fixture(scope="module")
def bench():
    return load_bench("airbench_port")


def _source(bench, leave_out: int | None = None) -> str:
    """A stand-in for airbench94_muon.py: every text the rules edit, once each, between lines of its own."""
    parts = ["# a line the port keeps\n"]
    for i, (_, old, _) in enumerate(bench.CPU_RULES + (bench.RUNS_RULE,)):
        if i == leave_out:
            continue
        parts.append(old if isinstance(old, str) else
                     "    starter = torch.cuda.Event(enable_timing=True)\n    ...\n"
                     "        time_seconds += 1e-3 * starter.elapsed_time(ender)\n")
        parts.append("\n# kept\n")
    return "".join(parts)


def test_the_cpu_port_makes_every_edit_and_keeps_the_rest(bench):
    text = bench.port(_source(bench), "cpu", runs=3)
    assert text.count("# kept") == len(bench.CPU_RULES) + 1 and text.startswith("# a line the port keeps")
    for gone in ("torchvision", ".cuda()", "torch.cuda", ".half()", "@torch.compile", 'main("warmup"', "range(200)"):
        assert gone not in text, gone
    assert text.count('torch.autocast("cpu", dtype=torch.bfloat16)') == 2 and "range(3)]" in text
    assert "time.perf_counter()" in text and 'map_location=torch.device("cpu")' in text


def test_the_gpu_port_changes_only_the_number_of_runs(bench):
    source = _source(bench)
    assert bench.port(source, "cuda", runs=5) == source.replace("range(200)]", "range(5)]")


@pytest.mark.parametrize("leave_out", [0, 6, 8])
def test_a_source_that_differs_is_refused_naming_the_edit(bench, leave_out):
    with pytest.raises(CifarlabError, match=r"the source has 0 of .* where one was expected"):
        bench.port(_source(bench, leave_out), "cpu", runs=1)
    twice = _source(bench) + bench.CPU_RULES[1][1]
    with pytest.raises(CifarlabError, match="has 2 of"):
        bench.port(twice, "cpu", runs=1)


def test_the_data_are_cifarlabs_split_in_airbenchs_format(bench, tmp_path):
    data = make_cifar10_python(tmp_path / "src", per_batch=20, test=10)
    train, val = bench.write_data(str(data.parent), tmp_path / "port")
    splits = load_splits(str(data.parent), 0.1, 0)
    assert (train, val) == (len(splits.train), len(splits.val)) == (90, 10)
    test = torch.load(tmp_path / "port" / "cifar10" / "test.pt")
    assert test["images"].dtype == torch.uint8 and test["images"].shape == (10, 32, 32, 3)
    assert torch.equal(test["images"], splits.val.images.permute(0, 2, 3, 1))
    assert torch.equal(test["labels"], splits.val.labels) and test["classes"] == splits.classes
    tr = torch.load(tmp_path / "port" / "cifar10" / "train.pt")
    assert tr["labels"].dtype == torch.int64 and sorted(tr["labels"].tolist()) == sorted(splits.train.labels.tolist())
    assert not torch.equal(tr["labels"], splits.train.labels)  # shuffled once: the whitening sees every class


def test_the_command_writes_the_port_or_ends_in_one_line(bench, tmp_path):
    data = make_cifar10_python(tmp_path / "src", per_batch=20, test=10)
    (tmp_path / "airbench94_muon.py").write_text(_source(bench))
    cmd = [sys.executable, str(BENCH / "airbench_port.py"), "--data", str(data.parent), "--out", str(tmp_path / "o"),
           "--no-run", "--source"]
    ok = subprocess.run(cmd + [str(tmp_path / "airbench94_muon.py")], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "o" / "airbench94_cpu.py").is_file() and (tmp_path / "o" / "cifar10" / "train.pt").is_file()
    (tmp_path / "bad.py").write_bytes(b"\xff\xfe not python")
    for source in (tmp_path / "missing.py", tmp_path / "bad.py"):
        bad = subprocess.run(cmd + [str(source)], capture_output=True, text=True)
        assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and bad.stderr.startswith("error: airbench_port")
    (tmp_path / "a-file").write_text("")
    bad = subprocess.run(cmd[:-4] + ["--out", str(tmp_path / "a-file"), "--no-run", "--source",
                                     str(tmp_path / "airbench94_muon.py")], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "could not create airbench port folder" in bad.stderr
    assert "a file of that name is in the way" in bad.stderr
