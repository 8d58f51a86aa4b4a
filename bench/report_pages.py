"""Screenshots of the three report pages a person opens, rendered by headless Chromium, to look at.

    python bench/report_pages.py OUT_DIR [--chromium /usr/bin/chromium]

Trains on small generated CIFAR-10 data: a finished run, an interrupted run (stopped in its second epoch of 12),
and a second finished run with other settings; writes their pages and the comparison page, then one PNG of each
page (finished.png, interrupted.png, comparison.png) and the text Chromium rendered (*.txt).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import cifarlab  # noqa: E402
from cifarlab.training.callbacks import Callback  # noqa: E402
from datagen import make_cifar10_python  # noqa: E402

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]


class StopInSecondEpoch(Callback):
    def on_step_end(self, trainer, step_log):
        if step_log["epoch"] >= 1 and step_log["step"] % 10 == 5:  # a few steps into the second epoch
            raise KeyboardInterrupt


def render(chromium: str, page: Path, png: Path, height: int) -> str:
    """Screenshot `page` into `png`; return the text of the DOM Chromium built."""
    with tempfile.TemporaryDirectory() as profile:
        flags = [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
        subprocess.run([chromium, *flags, f"--screenshot={png}", f"--window-size=1250,{height}", page.as_uri()],
                       check=True, capture_output=True, timeout=120)
        dom = subprocess.run([chromium, *flags, "--dump-dom", page.as_uri()], check=True, capture_output=True,
                             text=True, timeout=120).stdout
    return dom


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = ap.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    data = out / "data"
    if not data.exists():
        make_cifar10_python(data, per_batch=200, test=50)
    common = {"data": str(data), "batch_size": 50, "progress": False}
    finished = cifarlab.train("seed001_small", epochs=4, cyclic_step_size=20, out=str(out / "small-lr0.01"), **common)
    other = cifarlab.train("seed001_small", epochs=4, cyclic_step_size=20, lr=0.05, nesterov=False,
                           out=str(out / "small-lr0.05"), **common)
    try:
        cifarlab.train("seed001_small", epochs=12, out=str(out / "interrupted"), callbacks=[StopInSecondEpoch()],
                       **common)
    except KeyboardInterrupt:
        pass
    comparison = cifarlab.write_comparison([finished.run_dir, other.run_dir], out / "comparison")
    pages = {"finished": (finished.run_dir / "report.html", 2600), "interrupted": (out / "interrupted" / "report.html",
                                                                                  1600),
             "comparison": (comparison, 1700)}
    for name, (page, height) in pages.items():
        dom = render(args.chromium, page, out / f"{name}.png", height)
        (out / f"{name}.html.txt").write_text(dom)
        print(f"{name}: {out / f'{name}.png'} ({page})")


if __name__ == "__main__":
    main()
