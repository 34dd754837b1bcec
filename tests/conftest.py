from __future__ import annotations

from collections.abc import Iterator

import pytest

from rxtest import Rxd, running_rxd


@pytest.fixture
def rxd() -> Iterator[Rxd]:
    with running_rxd() as server:
        yield server
