"""Target 1's yardstick: airbench94_muon ported to this machine the way a user would port it, then timed.

    python bench/airbench_port.py --source PATH/airbench94_muon.py [--device cpu|cuda] [--runs 1] [--data DATA]
                                  [--out /tmp/airbench-port] [--no-run]

`--source` is your own copy of `airbench94_muon.py` from KellerJordan/cifar10-airbench (the rules below were
written against its commit f1c599c). Nothing of airbench is in this project: this script holds only the edits a
port needs, each matched against the file (one line and exit 2 when the file differs), and writes the ported
script into `--out`, a scratch folder, beside its data.

The data are cifarlab's own split of `--data`, in airbench's format (`cifar10/train.pt` and `cifar10/test.pt`:
uint8 N x 32 x 32 x 3 images, int64 labels, class names), so the port validates on exactly the images every
cifarlab figure does (`val_split` 0.1, `split_seed` 0: the 5,000 val images of the 50,000) and trains on the other
45,000, their order shuffled once (airbench initializes its whitening from the first 5,000).

On the CPU (`--device cpu`) the port changes only what a CPU needs: bf16 autocast around the forward passes and
fp32 weights in place of `.half()`, no `torch.compile` (its start-up costs more than it saves here), wall-clock
timers in place of CUDA events, and `--runs` runs instead of a warm-up and 200. Batch 2000, 8 epochs, Muon, label
smoothing and flip + translate test-time augmentation stay as published. On a GPU (`--device cuda`) only the data
and the number of runs change.

It prints the port's own table, then its command wall time and peak memory (a child process, timed here).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, peak_rss_gib  # noqa: E402

from cifarlab.data import load_splits  # noqa: E402
from cifarlab.errors import CifarlabError  # noqa: E402
from cifarlab.files import atomic_write, make_dir, write_text  # noqa: E402

_TIMERS = re.compile(r"    starter = torch\.cuda\.Event\(enable_timing=True\)\n.*?starter\.elapsed_time\(ender\)\n",
                     re.DOTALL)
_PERF_TIMERS = '''    import time
    time_seconds = 0.0
    started = [0.0]
    def start_timer():
        started[0] = time.perf_counter()
    def stop_timer():
        nonlocal time_seconds
        time_seconds += time.perf_counter() - started[0]
'''
_BF16 = 'torch.autocast("cpu", dtype=torch.bfloat16)'

# (what the edit is for, the text in airbench94_muon.py, its replacement): each text must occur exactly once.
CPU_RULES: tuple[tuple[str, str | re.Pattern, str], ...] = (
    ("torchvision does not import beside torch's CPU wheel", "import torchvision\nimport torchvision.transforms as T\n",
     ""),
    ("the normalization torchvision gave", "self.normalize = T.Normalize(CIFAR_MEAN, CIFAR_STD)",
     "self.normalize = lambda x: (x - CIFAR_MEAN.view(1, -1, 1, 1).to(x)) / CIFAR_STD.view(1, -1, 1, 1).to(x)"),
    ("no compile of the Newton-Schulz iteration", "@torch.compile\ndef zeropower_via_newtonschulz5",
     "def zeropower_via_newtonschulz5"),
    ("data in CPU memory", 'map_location=torch.device("cuda")', 'map_location=torch.device("cpu")'),
    ("fp32 images (autocast casts them for the convolutions)", "(self.images.half() / 255)",
     "(self.images.float() / 255)"),
    ("fp32 weights (the GPU version keeps them in half precision)", "                mod.half()\n",
     "                mod.float()\n"),
    ("bf16 autocast for the training forward pass",
     "            outputs = model(inputs, whiten_bias_grad=(step < whiten_bias_train_steps))\n"
     "            F.cross_entropy(outputs, labels,",
     f"            with {_BF16}:\n"
     "                outputs = model(inputs, whiten_bias_grad=(step < whiten_bias_train_steps))\n"
     "            F.cross_entropy(outputs.float(), labels,"),
    ("bf16 autocast for evaluation", "    with torch.no_grad():\n        return torch.cat(",
     f"    with torch.no_grad(), {_BF16}:\n        return torch.cat("),
    ("wall-clock timers in place of CUDA events", _TIMERS, _PERF_TIMERS),
    ("the model on the CPU", "model = CifarNet().cuda().to(memory_format=torch.channels_last)",
     "model = CifarNet().to(memory_format=torch.channels_last)"),
    ("no compile of the model", '    model.compile(mode="max-autotune")\n', ""),
    ("no warm-up run (it warms the compiled model)", '    main("warmup", model)\n', ""),
)
RUNS_RULE = ("--runs runs instead of 200", "for run in range(200)]", "for run in range({runs})]")


def port(source: str, device: str, runs: int) -> str:
    """The ported script's text, or a CifarlabError naming the first edit whose text is not in the file once."""
    why, old, new = RUNS_RULE
    rules = (CPU_RULES if device == "cpu" else ()) + ((why, old, new.format(runs=runs)),)
    text = source
    for why, old, new in rules:
        found = len(old.findall(text)) if isinstance(old, re.Pattern) else text.count(old)
        if found != 1:
            shown = old.pattern if isinstance(old, re.Pattern) else old
            raise CifarlabError(f"airbench_port: the source has {found} of {shown.splitlines()[0].strip()!r} "
                                f"({why}) where one was expected; is it airbench94_muon.py of cifar10-airbench "
                                "f1c599c?")
        text = old.sub(lambda _, new=new: new, text) if isinstance(old, re.Pattern) else text.replace(old, new)
    return text


def write_data(data: str, folder: Path, seed: int = 0) -> tuple[int, int]:
    """cifarlab's split of `data` in airbench's format, under `folder`/cifar10; (train, val) image counts."""
    splits = load_splits(data, 0.1, 0)
    if splits.val is None:
        raise CifarlabError(f"airbench_port: {data} gives no validation split")
    order = torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(seed))
    make_dir(folder / "cifar10", "airbench data folder")
    for name, part, index in (("train.pt", splits.train, order), ("test.pt", splits.val, None)):
        images, labels = (part.images, part.labels) if index is None else (part.images[index], part.labels[index])
        record = {"images": images.permute(0, 2, 3, 1).contiguous(), "labels": labels.long(),
                  "classes": list(splits.classes)}
        with atomic_write(folder / "cifar10" / name, "wb", what="airbench data") as f:
            torch.save(record, f)
    return len(splits.train), len(splits.val)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", required=True, help="airbench94_muon.py from KellerJordan/cifar10-airbench")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--data", default="../shared/data/cifar10-train-jpg.tar.gz")
    p.add_argument("--out", default="/tmp/airbench-port")
    p.add_argument("--no-run", action="store_true", help="write the port and its data, do not run it")
    args = p.parse_args()
    try:
        if args.runs < 1:
            raise CifarlabError(f"airbench_port: --runs must be at least 1, not {args.runs}")
        try:
            source = Path(args.source).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CifarlabError(f"airbench_port: cannot read --source {args.source}: "
                                f"{getattr(exc, 'strerror', None) or exc}") from None
        text = port(source, args.device, args.runs)
        out = Path(args.out)
        make_dir(out, "airbench port folder")
        script = out / f"airbench94_{args.device}.py"
        write_text(script, text)
        train, val = write_data(args.data, out)
    except CifarlabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"machine: {machine()}\nport: {script} ({train:,} train / {val:,} val images in {out / 'cifar10'})",
          flush=True)
    if args.no_run:
        return 0
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, script.name], cwd=out)
    try:
        code = child.wait()
    except KeyboardInterrupt:  # Ctrl-C reached the port too (one process group): let it end, then say so
        child.wait()
        print(f"airbench_port: interrupted after {time.perf_counter() - start:,.1f} s", file=sys.stderr)
        return 130
    wall = time.perf_counter() - start
    print(f"airbench94_muon port ({args.device}, {args.runs} run{'s' * (args.runs > 1)}): command wall {wall:,.1f} s, "
          f"peak RSS {peak_rss_gib():.2f} GiB, exit {code}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
