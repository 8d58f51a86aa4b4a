"""Fetch the official CIFAR archives, check their published MD5, and extract them safely.

An archive already in the target directory is used as is (after the MD5 check), so a machine without
internet gets the dataset by copying the archive there; the offline error says exactly that.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tarfile
import tempfile
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..errors import CifarlabError
from ..files import make_dir

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


# A dataset given by name (--data cifar10) lives in $CIFARLAB_DATA, else here, in torchvision's layout
# (ROOT/cifar-10-batches-py, ROOT/cifar-100-python); $CIFARLAB_DATA_MIRROR replaces the authors' base URL.
OFFICIAL_BASE = "https://www.cs.toronto.edu/~kriz/"
CONNECT_TIMEOUT = 15.0  # seconds for the whole connection, name lookup included; one try


def data_root() -> Path:
    return Path(os.environ.get("CIFARLAB_DATA") or Path.home() / ".cache" / "cifarlab" / "data").expanduser()


def archive_url(arc: Archive) -> str:
    mirror = os.environ.get("CIFARLAB_DATA_MIRROR", "").strip()
    return (mirror.rstrip("/") + "/" + arc.filename) if mirror else arc.url


def resolve_data(spec: str | Path) -> str | Path:
    """A dataset name (cifar10, cifar100, cifar10-binary) becomes its folder under :func:`data_root`, downloaded
    and MD5-checked on first use; anything else (a path) is returned as given. A path that exists wins over a name."""
    name = str(spec)
    if name not in ARCHIVES or Path(name).exists():
        return spec
    arc = ARCHIVES[name]
    folder = data_root() / arc.folder
    if folder.is_dir() and any(folder.iterdir()):
        return folder
    return download(name, data_root(), timeout=CONNECT_TIMEOUT)


def data_reference(spec: str | Path) -> str:
    """How a run records its data: a dataset name as the name (resolved again wherever the run is read), a path as
    an absolute path (so the run resumes from any folder)."""
    name = str(spec)
    if name in ARCHIVES and not Path(name).exists():
        return name
    return str(Path(name).expanduser().resolve())


def _open_url(url: str, timeout: float):
    """urlopen with a hard limit on the connection, the name lookup included (socket timeouts do not cover it,
    and an offline resolver can take minutes to give up)."""
    box: dict = {}

    def connect() -> None:
        try:
            box["response"] = urllib.request.urlopen(url, timeout=timeout)
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    worker = threading.Thread(target=connect, daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise TimeoutError(f"no answer in {timeout:g} s")
    if "error" in box:
        raise box["error"]
    return box["response"]


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
    to = make_dir(Path(to).expanduser())
    folder = to / arc.folder
    archive = to / arc.filename
    if not archive.is_file():
        url = archive_url(arc)
        log.info("downloading %s to %s", url, to)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{arc.filename}.", suffix=".part", dir=to)
        tmp = Path(tmp_name)
        try:
            with _open_url(url, timeout) as resp, os.fdopen(fd, "wb") as fh:
                while chunk := resp.read(1 << 20):
                    fh.write(chunk)
        except (urllib.error.URLError, OSError, TimeoutError, ValueError) as exc:
            tmp.unlink(missing_ok=True)
            reason = getattr(exc, "reason", exc)
            raise CifarlabError(f"could not download {url} ({reason}); fetch it on a connected machine and "
                                f"put {arc.filename} in {to}, then run this command again") from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, archive)  # whole or not at all: a second process downloading at once replaces it whole
    digest = md5sum(archive)
    if digest != arc.md5:
        raise CifarlabError(f"{archive}: MD5 {digest} does not match the published {arc.md5}; "
                            "delete it and download again")
    safe_extract(archive, to)
    if not folder.is_dir():
        raise CifarlabError(f"{archive} did not contain {arc.folder}/")
    return folder
