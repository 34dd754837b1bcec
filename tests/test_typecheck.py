"""The project stays mypy-clean (strict): the same check as scripts/typecheck."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_mypy_strict_is_clean() -> None:
    result = subprocess.run([os.path.join(ROOT, "scripts", "typecheck")], env={**os.environ, "PYTHON": sys.executable},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
