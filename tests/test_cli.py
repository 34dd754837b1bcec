"""rxd's and rxctl's command lines: socket permissions, log formats, clean shutdown, rxctl output."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time

import pytest

from rxtest import QUICK_TIMEOUT, RawClient, Rxd


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_socket_is_private_and_json_logs_parse(sig: int) -> None:
    directory = tempfile.mkdtemp(prefix="rxcli-", dir="/tmp")
    sock = os.path.join(directory, "sub", "rxd.sock")
    proc = subprocess.Popen(
        [sys.executable, "-c", "from rxkernel.server import main; main()", "--socket", sock, "--memory", "64MiB",
         "--log-format", "json"], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not os.path.exists(sock):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.02)
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(os.path.dirname(sock)).st_mode) == 0o700
        c = RawClient(sock)
        assert c.info is not None and c.info["memory_bytes"] == 64 << 20
        c.close()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0
        events = [json.loads(line) for line in err.splitlines() if line.strip()]
        assert any(e["event"] == "rxd listening" for e in events)
        assert any(e["event"] == "shutting down" and e["signal"] == signal.Signals(sig).name for e in events)
        assert not os.path.exists(sock), "rxd removes its socket on a clean shutdown"
    finally:
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(directory, ignore_errors=True)


def test_bad_memory_size_is_a_usage_error() -> None:
    result = subprocess.run([sys.executable, "-c", "from rxkernel.server import main; main()", "--memory", "lots"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "not a size" in result.stderr


def test_rxctl(rxd: Rxd) -> None:
    vmo = rxd.call("rx_vmo_create", 1 << 20, 0)
    rxd.call("rx_vmo_write", vmo, 0, b"x" * 8192)
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", "from rxkernel.client._rxctl import entry; entry()", *args],
                              env=rxd.env, capture_output=True, text=True, timeout=60)

    stats = json.loads(run("stats", "--json").stdout)
    assert stats["committed_bytes"] == 8192 and stats["total_bytes"] == 1 << 30
    assert stats["free_bytes"] == (1 << 30) - 8192
    for key in ("wired_bytes", "active_bytes", "inactive_bytes", "compressed_bytes", "page_ins", "page_outs",
                "page_faults", "zero_page_faults"):
        assert key in stats
    assert stats["inactive_bytes"] == 8192, "committed but mapped nowhere"
    vmos = json.loads(run("vmos", "--json").stdout)
    assert any(v["committed_bytes"] == 8192 and v["size_bytes"] == 1 << 20 for v in vmos)
    ps = json.loads(run("ps", "--json").stdout)
    assert len(ps) == 1, ps  # the harness's own connection; rxctl leaves itself out
    human = run("stats")
    assert human.returncode == 0 and "committed_bytes" in human.stdout and "8.0 KiB" in human.stdout
    assert "SCALED" in run("vmos").stdout and "PID" in run("ps").stdout
    bad = subprocess.run([sys.executable, "-c", "from rxkernel.client._rxctl import entry; entry()", "stats",
                          "--socket", "/nonexistent/rx.sock"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "RX_ERR_UNAVAILABLE" in bad.stderr


def test_a_second_rxd_refuses_a_live_socket_and_replaces_a_stale_one(rxd: Rxd) -> None:
    second = subprocess.run([sys.executable, "-c", "from rxkernel.server import main; main()", "--socket", rxd.socket,
                             "--memory", "64MiB"], capture_output=True, text=True, timeout=60)
    assert second.returncode != 0
    assert second.stderr.strip().splitlines() == [f"rxd: another rxd is listening on {rxd.socket}; stop it first or use --socket"]
    c = RawClient(rxd.socket)  # the first rxd still owns its path
    assert c.call("rx_vmo_get_size", c.call("rx_vmo_create", 4096, 0)) == 4096
    c.close()

    # A socket nobody accepts on (an rxd that died) is stale: a new rxd takes its place.
    directory = tempfile.mkdtemp(prefix="rxcli-", dir="/tmp")
    try:
        path = os.path.join(directory, "rxd.sock")
        dead = socket.socket(socket.AF_UNIX)
        dead.bind(path)
        dead.close()
        proc = subprocess.Popen([sys.executable, "-c", "from rxkernel.server import main; main()", "--socket", path,
                                 "--memory", "64MiB"], stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    RawClient(path).close()
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        proc.kill()
                        _, err = proc.communicate(timeout=QUICK_TIMEOUT)
                        raise AssertionError(f"rxd did not take over the stale socket:\n{err}") from None
                    time.sleep(0.05)
        finally:
            proc.terminate()
            proc.wait(20)
        assert proc.returncode == 0
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_rxctl_into_a_closed_pipe_exits_quietly(rxd: Rxd) -> None:
    """`rxctl stats | head -1`: the reader goes away early; rxctl ends like a Unix tool, no traceback."""
    proc = subprocess.Popen([sys.executable, "-c", "from rxkernel.client._rxctl import entry; entry()", "stats"],
                            env=rxd.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.close()  # nobody reads: the first write breaks the pipe
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGPIPE
    assert err == b"", err


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", *args], capture_output=True, text=True, timeout=60)


def test_help_names_every_option_with_its_default_and_both_have_a_version() -> None:
    rxd_help = _cli("from rxkernel.server import main; main()", "--help")
    assert rxd_help.returncode == 0
    for option in ("--socket", "--memory", "--ack-deadline", "--clock", "--log-level", "--log-format"):
        assert option in rxd_help.stdout
    text = " ".join(rxd_help.stdout.split())  # argparse wraps lines
    for default in ("(default: $RX_SOCKET", "(default: 2GiB", "(default: 5.0)", "(default: auto", "(default: info)",
                    "(default: console)"):
        assert default in text, default
    rxctl_help = _cli("from rxkernel.client._rxctl import entry; entry()", "--help")
    assert rxctl_help.returncode == 0
    for command in ("stats", "ps", "vmos"):
        assert any(line.split()[:1] == [command] and len(line.split()) > 1 for line in rxctl_help.stdout.splitlines()), command
    import rxkernel.proto

    version = rxkernel.proto.package_version()
    for code, name in (("from rxkernel.server import main; main()", "rxd"), ("from rxkernel.client._rxctl import entry; entry()", "rxctl")):
        shown = _cli(code, "--version")
        assert shown.returncode == 0 and shown.stdout.strip() == f"{name} (rxkernel) {version}", shown
