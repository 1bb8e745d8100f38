"""Output paths checked before long work starts, so that a run does not train or score for hours and then fail
to write its result."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["check_writable_dir", "check_writable_file"]


def check_writable_dir(folder: str | os.PathLike, flag: str) -> None:
    """Create ``folder`` if needed and write (then delete) a file in it; ``PermissionError`` naming ``flag`` if
    that fails. A real write, not ``os.access``: root passes ``os.access`` on read-only mounts too."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise PermissionError(f"{flag} {folder} cannot be written ({err.strerror or err}); choose another "
                              "folder") from None


def check_writable_file(path: str | os.PathLike | None, flag: str) -> None:
    """Check that ``path`` (if given) can be written: its folder exists and accepts a file, and an existing
    file is not read-only. Leaves the file system as it was."""
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{flag} {path} is a folder; give a file name")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{flag} {path}: the folder {path.parent} does not exist")
    existed = path.exists()
    try:
        with open(path, "a"):
            pass
    except OSError as err:
        raise PermissionError(f"{flag} {path} cannot be written ({err.strerror or err})") from None
    if not existed:
        path.unlink()
