"""The pytest plugin (rxkernel.client.pytest_plugin): real inner pytest sessions, each in a process
of its own (pytester.runpytest_subprocess), with real private rxds and real child processes."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

SESSION = '''
import os, subprocess, sys
import pytest
import rxkernel.client as rx
from rxkernel.client._process import PROCESS

def children():
    task = f"/proc/self/task/{os.getpid()}/children"
    return open(task).read().split()

def test_a_plain_test_starts_and_connects_nothing():
    assert PROCESS.connection is None and children() == [] and "RX_SOCKET" not in os.environ

def test_maps_and_writes_through_the_fixture(rx_client):
    assert os.environ["RX_SOCKET"] == rx_client.socket and PROCESS.connect().path == rx_client.socket
    with rx.Vmo(1 << 20) as vmo, vmo.map() as m:
        m.view[4096:4101] = b"hello"
        assert vmo.info()["committed_bytes"] == 4096
        assert rx_client.kmem()["committed_bytes"] == 4096
    assert rx.rx_system_get_physmem() == 128 << 20  # --rx-memory

def test_one_page(rx_client):  # README's example
    a = rx.ndarray(1 << 20, "u1"); a[:4096] = 1  # noqa: E702
    assert rx_client.kmem()["committed_bytes"] == 4096

def test_a_child_process_reaches_the_same_rxd(rx_client):
    with rx.Vmo(4096) as vmo:
        vmo.write(0, b"from the test")
        token = vmo.export()
        reader = "import sys, rxkernel.client as rx; print(rx.Vmo.import_token(sys.argv[1]).read(0, 13).decode())"
        out = subprocess.run([sys.executable, "-c", reader, token], capture_output=True, text=True, timeout=60)
        assert out.stdout.strip() == "from the test", out.stderr

@pytest.mark.rx_memory("64MiB")
def test_the_marker_gives_a_test_its_own_rxd(rx_client, rx_server):
    assert rx_client is not rx_server and rx_client.socket != rx_server.socket
    assert rx_client.kmem()["total_bytes"] == 64 << 20 and rx_server.kmem()["total_bytes"] == 128 << 20
    assert rx.rx_system_get_physmem() == 64 << 20
    child = "import rxkernel.client as rx; print(rx.rx_system_get_physmem())"
    assert subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=60).stdout.strip() == str(64 << 20)

def test_after_the_marker_the_session_rxd_again(rx_client):
    assert rx.rx_system_get_physmem() == 128 << 20 and PROCESS.connect().path == rx_client.socket
'''


def test_fixtures_markers_and_children(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RX_SOCKET", raising=False)  # the inner session's first test checks nothing set it
    pytester.makepyfile(test_session=SESSION)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--rx-memory", "128MiB", timeout=120)
    result.assert_outcomes(passed=6)


LEAKS = '''
import subprocess, sys
import pytest
import rxkernel.client as rx

KEPT = []

def leak():
    vmo = rx.Vmo(1 << 20)
    vmo.commit(0, 3 * 4096)
    KEPT.append(vmo)  # the handle outlives the test

@pytest.fixture
def scratch(rx_client):
    vmo = rx.Vmo(1 << 20)
    vmo.commit(0, 4096)
    yield vmo
    vmo.close()  # the fixture's teardown frees it: measured after this, it is no leak

def test_unmarked_leak(rx_client):
    leak()

@pytest.mark.rx_no_leaks
def test_marked_leak(rx_client):
    leak()

@pytest.mark.rx_no_leaks
def test_memory_freed_by_teardown_and_by_a_child_is_no_leak(scratch):
    child = "import rxkernel.client as rx; v = rx.Vmo(1 << 20); v.commit(0, 1 << 20)"
    subprocess.run([sys.executable, "-c", child], check=True, timeout=60)

@pytest.mark.rx_no_leaks
def test_a_marker_without_the_fixture():
    pass
'''


def test_the_leak_check_fails_a_leak_only_when_asked(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_leaks=LEAKS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA", timeout=120)
    # A leak is an error at the test's teardown (pytest reports the call itself as passed); a
    # marker without the fixture is an error at setup.
    result.assert_outcomes(passed=3, errors=2)
    result.stdout.fnmatch_lines([
        "*ERROR at teardown of test_marked_leak*",
        "*rx leak check: rxd's committed bytes grew by 12288 bytes (3 pages) during the test*",
        "*rxd log*",
    ])
    result.stdout.fnmatch_lines(["*ERROR at setup of test_a_marker_without_the_fixture*",
                                 "*rx_no_leaks works through the rx_client fixture*"])
    assert "test_unmarked_leak - " not in result.stdout.str()

    checked = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--rx-check-leaks", "-k", "not marker_without", timeout=120)
    checked.assert_outcomes(passed=3, errors=2)
    checked.stdout.fnmatch_lines(["*ERROR at teardown of test_unmarked_leak*", "*grew by 12288 bytes*"])


def test_a_bad_size_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="def test_x(rx_client): pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--rx-memory", "lots", timeout=120)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--rx-memory: not a memory size: 'lots'*"])
