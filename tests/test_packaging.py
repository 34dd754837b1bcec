"""A regular `pip install .` gets every Python package: pyproject.toml lists them by hand (the
folders map onto rxkernel.* through package-dir), so a new subpackage must be listed too, or the
installed rxd cannot import it (an editable install would not notice)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_python_package_is_listed() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    package_dir: dict[str, str] = setuptools["package-dir"]
    on_disk = set()
    for top, folder in package_dir.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            on_disk.add(".".join([top, *relative.parts]))
    assert on_disk == set(setuptools["packages"])
