"""Loading a ``.pt2`` (``torch.export``) file without running anything it carries.

``torch.export.load`` unpickles parts of the archive: the sample inputs, pickled weights
and constants go through ``torch.load``, and when the safe ``weights_only=True`` load
fails it retries with ``weights_only=False``, which runs whatever a crafted pickle asks
for; "custom" and "opaque" constant objects are unpickled as Python objects; an AOT
Inductor package is a compiled shared library that is loaded and run. flopgap loads an
archive as follows and refuses it, with one line, at the first step that fails:

1. read the zip directory (no entry is read yet): not a zip, an entry whose name
   leaves the archive (absolute, ``..``, a drive or a backslash), an entry that holds
   native code (``data/aotinductor/``, ``data/executorch/``, ``data/mtia``, shared
   libraries) or a pickled Python object (``custom_obj_*``, ``opaque_obj_*``
   constants), or more uncompressed bytes than half the memory available now;
2. call ``torch.export.load`` with ``TORCH_FORCE_WEIGHTS_ONLY_LOAD=1`` set, so that
   every ``torch.load`` inside it, its fallback included, uses the ``weights_only``
   unpickler (tensors, containers and plain values only): a pickle that would call
   anything else fails to load instead of running;
3. torch's own logging and warnings are silenced for that call, so a damaged archive
   prints flopgap's one line and not torch's traceback.

The program itself is checked by torch's verifier on load (every graph node must call
an operator, not an arbitrary Python function).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import warnings
import zipfile
from pathlib import Path, PurePosixPath

from flopgap.errors import UsageError, one_line

__all__ = ["load_exported"]

_NATIVE_DIRS = ("data/aotinductor/", "data/executorch/", "data/mtia")
_NATIVE_SUFFIXES = (".so", ".dll", ".dylib", ".pyd", ".o", ".a", ".exe")
_OBJECT_PREFIXES = ("custom_obj_", "opaque_obj_")  # constants unpickled as Python objects
_MAX_MEMORY_SHARE = 0.5  # as for inputs: the archive's tensors must leave room for running the model


def _refuse(path: Path, why: str) -> UsageError:
    return UsageError(f"refusing model file {str(path)!r}: {why}")


def _check_entry(path: Path, name: str) -> None:
    if "\\" in name or "\x00" in name or name.startswith("/") or ":" in name.split("/", 1)[0]:
        raise _refuse(path, f"archive entry {name!r} is not a relative path inside the archive")
    parts = PurePosixPath(name).parts
    if ".." in parts:
        raise _refuse(path, f"archive entry {name!r} points outside the archive")
    inner = "/".join(parts[1:])  # below the archive's root folder
    if inner.startswith(_NATIVE_DIRS) or name.lower().endswith(_NATIVE_SUFFIXES):
        raise _refuse(path, f"archive entry {name!r} holds native code (an AOT-compiled package); "
                            "flopgap loads torch.export programs only")
    if inner.startswith("data/constants/") and PurePosixPath(inner).name.startswith(_OBJECT_PREFIXES):
        raise _refuse(path, f"archive entry {name!r} is a pickled Python object; flopgap loads tensors only")


def check_archive(path: Path, available: int | None = None) -> None:
    """Step 1 above: the zip directory, without reading any entry."""
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, NotImplementedError) as e:
        raise _refuse(path, f"not a torch.export archive (a zip file): {one_line(e)}") from None
    if not infos:
        raise _refuse(path, "an empty archive")
    for info in infos:
        _check_entry(path, info.filename)
    total = sum(max(info.file_size, 0) for info in infos)
    if available is not None and total > _MAX_MEMORY_SHARE * available:
        raise _refuse(path, f"it unpacks to {total / 1e9:.3g} GB, more than half of the {available / 1e9:.3g} GB "
                            "this machine has available")


@contextlib.contextmanager
def _weights_only_everywhere():
    """Every ``torch.load`` in the block uses the weights_only unpickler, whatever its caller
    asked for (torch reads these variables on each call); the environment is restored after."""
    saved = {k: os.environ.get(k) for k in ("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")}
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _silenced():
    """No log record and no warning reaches the terminal in the block (torch logs a
    traceback for an archive it cannot read, then raises; the raise is what we report)."""
    before = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(before)


def load_exported(path: Path, available: int | None = None):
    """The ``ExportedProgram`` in ``path``, loaded as the module docstring says, or a
    one-line :class:`~flopgap.errors.UsageError`."""
    import torch

    check_archive(path, available)
    with _weights_only_everywhere(), _silenced():
        try:
            return torch.export.load(str(path))
        except pickle.UnpicklingError:  # torch's own message would suggest weights_only=False
            raise _refuse(path, "it holds a pickle that is not plain tensors and values (flopgap reads every "
                                "part of a .pt2 with torch.load(weights_only=True) and never runs pickled code)"
                          ) from None
        except Exception as e:  # damaged or foreign archive
            why = one_line(e)
            if "check the warnings above" in why:  # torch's pointer to the log this call silenced
                why = "it is damaged, or not an archive torch.export.save wrote"
            raise UsageError(f"cannot load torch.export program {str(path)!r}: {why[:300]}") from None
