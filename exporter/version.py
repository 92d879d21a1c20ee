"""What this build is: version, git revision when known, Python version (`--version`, build_info)."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from pathlib import Path

from exporter import __version__

# Set at image build time (Dockerfile ARG), where the source tree has no .git.
REVISION_ENV = "PARTNERCENTER_EXPORTER_REVISION"


@functools.cache
def revision() -> str:
    """The git commit this code was built from: $PARTNERCENTER_EXPORTER_REVISION, else git, else "unknown"."""
    if os.environ.get(REVISION_ENV):
        return os.environ[REVISION_ENV]
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],  # noqa: S607 - git from PATH, fixed arguments
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=2,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    text = done.stdout.strip()
    return text if done.returncode == 0 and text else "unknown"


def version_line(program: str) -> str:
    """`program 0.1.0 (revision abc123, Python 3.11.7)`."""
    return f"{program} {__version__} (revision {revision()}, Python {platform.python_version()})"
