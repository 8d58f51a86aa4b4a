"""Wall time of the commands a new user types first: `cifarlab --help`, `cifarlab recipes`, `cifarlab config lr`,
`cifarlab models` (issue 17's targets: the first two well under 0.5 s, models under 2 s), and whether each imported
torch.

    python bench/cli_startup.py [--repeat 5]

Each command runs as a fresh process (`python -m cifarlab ...`), `--repeat` times; the median is reported.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402

COMMANDS = [["--help"], ["recipes"], ["config", "lr"], ["models"]]
PROBE = ("import sys, runpy\nsys.argv = ['cifarlab', *sys.argv[1:]]\ntry:\n"
         "    runpy.run_module('cifarlab', run_name='__main__')\nexcept SystemExit:\n    pass\n"
         "print('TORCH', 'torch' in sys.modules, file=sys.stderr)\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    print(machine())
    for cmd in COMMANDS:
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "cifarlab", *cmd], check=True, capture_output=True)
            times.append(time.perf_counter() - start)
        probe = subprocess.run([sys.executable, "-c", PROBE, *cmd], capture_output=True, text=True)
        torch_loaded = "TORCH True" in probe.stderr
        print(f"cifarlab {' '.join(cmd):<12} median {statistics.median(times):.3f} s  "
              f"(min {min(times):.3f}, max {max(times):.3f}; {args.repeat} runs)  torch imported: {torch_loaded}")


if __name__ == "__main__":
    main()
