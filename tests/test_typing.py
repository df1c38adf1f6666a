"""The code stays mypy-clean (STYLE.md): a type error fails the suite like any other defect."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow   # mypy over the whole tree: more than ~3 s

ROOT = Path(__file__).resolve().parent.parent


def test_mypy_finds_no_errors() -> None:
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True,
                            text=True, timeout=170, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
