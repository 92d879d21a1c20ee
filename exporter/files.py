"""Atomic file replacement, for the files the exporter writes: rotated refresh tokens and the state file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text`: temp file in the same directory, mode 0600, fsync, rename.

    A crash leaves the old file or the new one, never a torn one, and maybe a temp file for `remove_orphans`. The
    directory is not synced: a rename lost to a power cut leaves the previous file, which is as good. The state
    file is a cache, and Entra keeps a rotated refresh token's predecessor valid ("doesn't revoke old refresh
    tokens when used to fetch new access tokens", learn.microsoft.com/entra/identity-platform/refresh-tokens).
    That halves the fsyncs of a cold start, when every App+User tenant's token is rotated at once. A symbolic link
    is followed: the file it names is replaced, and the link stays.
    """
    path = written(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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


def written(path: Path) -> Path:
    """The file a write of `path` replaces: the one a symbolic link names (one lstat when it is none)."""
    return path.resolve() if path.is_symlink() else path


def remove_orphans(paths: Iterable[Path]) -> list[Path]:
    """Delete temp files a killed `write_atomically` of one of `paths` left behind (they may hold a valid token).

    Each directory is listed once: a thousand token files in one directory must not mean a million names read.
    """
    wanted: dict[Path, set[str]] = {}
    for path in map(written, paths):
        wanted.setdefault(path.parent, set()).add(path.name)
    removed = []
    for directory, names in wanted.items():
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            # ".{name}.{mkstemp's random part, no dots}.tmp"
            name = entry.name
            if name.startswith(".") and name.endswith(".tmp") and name[1:].rsplit(".", 2)[0] in names:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed
