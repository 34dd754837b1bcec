"""The installed rxkernel's version, for `rxd --version` and `rxctl --version` (not the wire
protocol's version: that is PROTOCOL_VERSION)."""

from __future__ import annotations

import importlib.metadata


def package_version() -> str:
    try:
        return importlib.metadata.version("rxkernel")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"
