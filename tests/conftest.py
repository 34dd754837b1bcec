from __future__ import annotations

import os
from collections.abc import Iterator

# Every rxd the tests start (and rxd code imported here) checks that `*_locked` functions run with
# their lock held (server/base/_locks.py): set before anything imports rxkernel.server.
os.environ["RXD_CHECK_LOCKS"] = "1"

import pytest

from rxtest import Rxd, running_rxd


@pytest.fixture
def rxd() -> Iterator[Rxd]:
    with running_rxd() as server:
        yield server
