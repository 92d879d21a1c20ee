"""The command line keeps optional packages the exporter never uses out of the process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize(("package", "importer"), [("trio", "httpcore._synchronization"), ("click", "httpx")])
def test_unused_optional_packages_are_not_imported(tmp_path: Path, package: str, importer: str) -> None:
    # A stand-in for the package, importable whether or not the real one is installed here: importing it
    # leaves a mark, then fails as if it were missing (which httpcore and httpx both handle).
    marker = tmp_path / "imported"
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nraise ImportError('stand-in')\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}

    def run(prelude: str) -> None:
        code = (
            f"{prelude}\nimport importlib\nimportlib.import_module({importer!r})\nimport httpx\nhttpx.AsyncClient()\n"
        )
        subprocess.run([sys.executable, "-c", code], check=True, env=env)

    run("import exporter.cli")
    assert not marker.exists()
    run("")  # without the exporter's command line, the stand-in is imported
    assert marker.exists()
