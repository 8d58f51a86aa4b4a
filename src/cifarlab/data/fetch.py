"""Fetch the official CIFAR archives, check their published MD5, and extract them safely.

An archive already in the target directory is used as is (after the MD5 check), so a machine without
internet gets the dataset by copying the archive there; the offline error says exactly that.
"""

from __future__ import annotations

import hashlib
import logging
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..errors import CifarlabError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Archive:
    url: str
    filename: str
    md5: str  # as published by the dataset's authors
    folder: str  # directory the archive extracts to


ARCHIVES = {
    "cifar10": Archive("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "cifar-10-python.tar.gz",
                       "c58f30108f718f92721af3b95e74349a", "cifar-10-batches-py"),
    "cifar10-binary": Archive("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
                              "cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530", "cifar-10-batches-bin"),
    "cifar100": Archive("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "cifar-100-python.tar.gz",
                        "eb9058c3a382ffc7106e4002c42a8d85", "cifar-100-python"),
}


def md5sum(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def safe_extract(archive: Path, dest: Path) -> None:
    """Extract regular files and directories only, each inside `dest`; refuse links and escaping paths."""
    dest = dest.resolve()
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for m in members:
                target = (dest / m.name).resolve()
                if not (m.isfile() or m.isdir()):
                    raise CifarlabError(f"{archive}: refusing non-regular member {m.name!r} (link or device)")
                if target != dest and dest not in target.parents:
                    raise CifarlabError(f"{archive}: refusing member {m.name!r} that points outside {dest}")
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise CifarlabError(f"{archive}: extraction failed ({exc})") from None


def download(name: str, to: str | Path, timeout: float = 30.0) -> Path:
    """Make `to/<folder>` hold the named dataset; return that folder."""
    if name not in ARCHIVES:
        raise CifarlabError(f"unknown dataset '{name}'; choose from {', '.join(ARCHIVES)}")
    arc = ARCHIVES[name]
    to = Path(to).expanduser()
    to.mkdir(parents=True, exist_ok=True)
    folder = to / arc.folder
    archive = to / arc.filename
    if not archive.is_file():
        log.info("downloading %s", arc.url)
        tmp = archive.with_suffix(".part")
        try:
            with urllib.request.urlopen(arc.url, timeout=timeout) as resp, open(tmp, "wb") as fh:
                while chunk := resp.read(1 << 20):
                    fh.write(chunk)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            tmp.unlink(missing_ok=True)
            reason = getattr(exc, "reason", exc)
            raise CifarlabError(f"could not download {arc.url} ({reason}); fetch it on a connected machine and "
                                f"put {arc.filename} in {to}, then run this command again") from None
        tmp.rename(archive)
    digest = md5sum(archive)
    if digest != arc.md5:
        raise CifarlabError(f"{archive}: MD5 {digest} does not match the published {arc.md5}; "
                            "delete it and download again")
    safe_extract(archive, to)
    if not folder.is_dir():
        raise CifarlabError(f"{archive} did not contain {arc.folder}/")
    return folder
