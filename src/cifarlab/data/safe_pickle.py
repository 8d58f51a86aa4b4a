"""A restricted unpickler for the pickle formats CIFAR uses.

`pickle.load` runs whatever callables a file names, so a CIFAR batch or a Kaggle file from a stranger could
execute code. This unpickler admits only the few globals those formats need to rebuild numpy arrays;
anything else is refused before it is called.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import numpy as np

from ..errors import CifarlabError

# (module, name) pairs the real files use: numpy's array reconstruction (old and new module paths) and
# the codecs helper Python 3 writes for bytes under protocol 2.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),  # protocol 5 pickles of arrays
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class RefusedGlobal(pickle.UnpicklingError):
    """The file names a callable outside the allow-list."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise RefusedGlobal(f"refused global {module}.{name}")


def safe_load(path_or_bytes: str | bytes, what: str = "file") -> Any:
    """Unpickle with the allow-list above; any failure becomes a one-line CifarlabError."""
    try:
        if isinstance(path_or_bytes, bytes):
            data = path_or_bytes
        else:
            with open(path_or_bytes, "rb") as fh:
                data = fh.read()
        obj = _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except RefusedGlobal as exc:
        raise CifarlabError(f"{what} is not a safe CIFAR pickle: {exc} (it was not run)") from None
    except RecursionError:
        raise CifarlabError(f"{what} nests too deeply to be a CIFAR pickle") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError,
            OverflowError, UnicodeError, LookupError, ImportError) as exc:  # LookupError: an unknown codec
        raise CifarlabError(f"{what} is not a readable pickle ({type(exc).__name__}: {exc})") from None
    try:
        _reject_object_arrays(obj, what)
    except RecursionError:
        raise CifarlabError(f"{what} nests too deeply to be a CIFAR pickle") from None
    return obj


def _reject_object_arrays(obj: Any, what: str) -> None:
    if isinstance(obj, np.ndarray) and obj.dtype == object:
        raise CifarlabError(f"{what} holds an object array, which CIFAR files never do")
    if isinstance(obj, dict):
        for v in obj.values():
            _reject_object_arrays(v, what)
    elif isinstance(obj, (list, tuple)):
        for v in obj[:16]:  # labels lists are long; their items are ints
            _reject_object_arrays(v, what)
