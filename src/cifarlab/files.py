"""Every file cifarlab writes goes through here, so that a full disk, a read-only folder or a kill never leaves a
half-written file and never costs one that was finished.

- Whole files (configs, summaries, checkpoints, plots, pages, CSVs, exports) are written to a temporary file in
  the same folder, flushed to disk, then renamed over the target: a reader sees the old file or the new one.
- Line logs (metrics.jsonl) are appended a batch of lines at a time and flushed to disk; a failed append is cut
  back to the last whole line. :func:`read_jsonl` drops a torn last line (a kill mid-write) with a warning.
- Any OSError (ENOSPC, EACCES, EISDIR, EROFS, ...) becomes one :class:`CifarlabError` naming the file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .errors import CifarlabError

log = logging.getLogger("cifarlab")


def write_error(path: str | Path, exc: OSError, what: str = "") -> CifarlabError:
    """The one line a failed write ends with."""
    return CifarlabError(f"could not write {what + ' ' if what else ''}{path}: {exc.strerror or exc}")


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", what: str = "", **open_kw: Any) -> Iterator[IO]:
    """``with atomic_write(path) as fh: ...`` writes `path` whole or not at all (the old file stays). `what`
    names the kind of file in the error (e.g. "checkpoint")."""
    path = Path(path)
    if path.is_dir():
        raise CifarlabError(f"could not write {what + ' ' if what else ''}{path}: it is a directory")
    if path.exists() and not path.is_file():  # the rename would put a file where a device or pipe was (/dev/null)
        raise CifarlabError(f"could not write {what + ' ' if what else ''}{path}: it is a device or pipe, not a "
                            "file; give a file's path")
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, mode, **open_kw) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise write_error(path, exc, what) from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> Path:
    with atomic_write(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    return Path(path)


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_write(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def append_lines(path: str | Path, lines: list[str]) -> None:
    """Append whole lines durably: on a failed write the file is cut back to where it was, so it never ends in
    half a line."""
    path = Path(path)
    text = "".join(line.rstrip("\n") + "\n" for line in lines).encode("utf-8")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        start = os.fstat(fd).st_size
        try:
            view = memoryview(text)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            raise write_error(path, exc) from None
    finally:
        os.close(fd)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The JSON objects of a line log. A torn last line (the writer was killed mid-line) is dropped with a
    warning; a malformed line anywhere else is a one-line error naming it."""
    path = Path(path)
    try:
        lines = path.read_bytes().decode("utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise CifarlabError(f"could not read {path}: {exc.strerror or exc}") from None
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("not an object")
        except ValueError:
            if i == len(lines) - 1:
                log.warning("%s: dropped a torn last line (a write was cut short)", path)
                break
            raise CifarlabError(f"{path} line {i + 1} is not a JSON object; the file is damaged") from None
        rows.append(row)
    return rows


def write_jsonl(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    """Replace a line log with `rows`, one JSON object a line, whole or not at all (read back by read_jsonl)."""
    return write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def make_dir(path: str | Path, what: str = "folder") -> Path:
    """Create a folder (and its parents) to write into; a file in the way or a refusal is one line naming it
    (``what`` says what the folder is for: "folder", "run directory", ...)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), path)
        named = "a file of that name" if blocker == path else f"the file {blocker}"
        raise CifarlabError(f"could not create {what} {path}: {named} is in the way") from None
    except OSError as exc:
        raise CifarlabError(f"could not create {what} {path}: {exc.strerror or exc}") from None
    return path


class RunLock:
    """One process owns a run directory: an exclusive lock on ``RUN/.lock``, which holds the owner's process id.
    The kernel drops the lock when its process dies, so a lock left by a killed run is simply taken over.
    (On systems without fcntl, i.e. Windows, runs are not locked.)"""

    def __init__(self, run_dir: Path, name: str = ".lock", holder: str = "a training run writing there"):
        self.path = Path(run_dir) / name
        self.holder = holder  # who holds such a lock, for the one line a second process gets
        self.fd: int | None = None

    def acquire(self) -> RunLock:
        try:
            import fcntl
        except ImportError:
            return self
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise CifarlabError(f"run directory {self.path.parent} is not writable: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "another process"
            os.close(fd)
            raise CifarlabError(f"run directory {self.path.parent} is in use by process {owner} ({self.holder}); "
                                "wait for it to end or give another --out") from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:
            os.close(fd)
            raise write_error(self.path, exc) from None
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the lock; the file stays (removing it would race)
            self.fd = None
