"""The harness itself: a child that hangs fails its test within the timeout, saying why."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from rxtest import read_line


def _child(code: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", code], text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def test_read_line_gives_up_on_a_silent_child_within_its_timeout() -> None:
    # Half a line and then silence: a readline() would block here however long the child sleeps.
    proc = _child("import sys, time\nprint('stuck here', file=sys.stderr, flush=True)\nprint('up', flush=True)\n"
                  "sys.stdout.write('rea'); sys.stdout.flush()\ntime.sleep(20)")  # a regressed read_line fails, not hangs
    assert read_line(proc, expect="up") == "up"
    t0 = time.monotonic()
    with pytest.raises(AssertionError) as failure:
        read_line(proc, expect="ready", timeout=1)
    took = time.monotonic() - t0
    assert 1 <= took < 6, took
    assert proc.returncode == -signal.SIGKILL, "the hung child is killed, not left behind"
    message = str(failure.value)
    assert "did not print the line 'ready' within 1 s" in message and "stuck here" in message, message


def test_read_line_keeps_what_arrived_after_the_line_for_the_next() -> None:
    proc = _child("import sys\nsys.stdout.write('one\\ntwo\\n')")  # both lines in one write
    assert read_line(proc) == "one" and read_line(proc, expect="two") == "two"
    assert proc.communicate(timeout=30) == ("", "")
    with pytest.raises(AssertionError, match="closed its stdout before printing a line"):
        read_line(_child("pass"))
