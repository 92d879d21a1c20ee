"""Atomic file replacement, for the files the exporter writes: rotated refresh tokens and the state file."""

from __future__ import annotations

import glob
import os
import tempfile
from pathlib import Path


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text`: temp file in the same directory, mode 0600, fsync, rename, fsync the dir.

    A crash at any point leaves either the old file or the new one, never a torn or empty one; a crash between
    creating the temp file and renaming it leaves the temp file, which `remove_orphans` deletes at start-up.
    """
    directory = path.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def remove_orphans(path: Path) -> list[Path]:
    """Delete temp files a killed `write_atomically(path, ...)` left behind (they may hold a valid token)."""
    removed = []
    for orphan in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        try:
            orphan.unlink()
        except OSError:
            continue
        removed.append(orphan)
    return removed
