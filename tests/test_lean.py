"""The command line keeps optional packages the exporter never uses out of the process."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest


@pytest.mark.parametrize(("package", "importer"), [("trio", "httpcore._synchronization"), ("click", "httpx")])
def test_unused_optional_packages_are_not_imported(package: str, importer: str) -> None:
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed here, so nothing would import it anyway")
    # A fresh interpreter: the test process itself may have imported either package already.
    code = (
        "import sys, importlib, exporter.cli\n"
        f"importlib.import_module({importer!r})\n"
        "import httpx\n"
        f"print(sys.modules.get({package!r}) is None, callable(httpx.main))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["True", "True"]
