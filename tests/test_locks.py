"""`*_locked` functions check that their lock is held (server/base/_locks.py), and cost nothing
when the check is off. conftest.py turns the check on for the suite (RXD_CHECK_LOCKS=1)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from rxkernel.server.base import CHECK_LOCKS
from rxkernel.server.base._locks import LockNotHeld
from rxkernel.server.vm import VmContext, new_root_vmo
from rxkernel.server.vm._collapse import collapse_locked

PAGE = 4096


def test_the_suite_runs_with_the_check_on() -> None:
    assert CHECK_LOCKS


async def test_locked_methods_refuse_to_run_without_the_tree_lock() -> None:
    vm = VmContext(16 * PAGE, ack_deadline=1.0)
    vmo = new_root_vmo(vm, 1, 4 * PAGE, 0, 4 * PAGE)
    vmo.add_ref()
    with pytest.raises(LockNotHeld, match="read_locked"):
        vmo.read_locked(0, 4)
    with pytest.raises(LockNotHeld, match="commit_locked"):
        await vmo.commit_locked(0, 1, vm.memory.root)
    with pytest.raises(LockNotHeld, match="collapse_locked"):
        await collapse_locked(vmo.node)
    assert vm.memory.committed_pages == 0  # refused before touching anything
    async with vmo.lock:
        assert await vmo.commit_locked(0, 2, vm.memory.root) == (2, 0)
        await vmo.write_locked(PAGE, b"hello", vm.memory.root)
        assert vmo.read_locked(PAGE, 5) == b"hello"
    assert vm.memory.committed_pages == 2
    vmo.drop_ref()  # the last reference: its pages are uncounted at once
    assert vm.memory.committed_pages == 0 and not vm.vmos


async def test_another_task_holding_the_lock_does_not_count() -> None:
    import trio

    vm = VmContext(16 * PAGE, ack_deadline=1.0)
    vmo = new_root_vmo(vm, 1, 4 * PAGE, 0, 4 * PAGE)
    vmo.add_ref()
    held, release = trio.Event(), trio.Event()

    async def holder() -> None:
        async with vmo.lock:
            held.set()
            await release.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(holder)
        await held.wait()
        with pytest.raises(LockNotHeld):
            vmo.read_locked(0, 4)
        release.set()
    vmo.drop_ref()


def test_without_the_flag_the_functions_are_not_wrapped() -> None:
    code = (
        "from rxkernel.server.vm._vmo import Vmo\n"
        "from rxkernel.server.object._futex import Futexes\n"
        "assert not hasattr(Vmo.commit_locked, '__wrapped__')\n"
        "assert not hasattr(Futexes.value_locked, '__wrapped__')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "RXD_CHECK_LOCKS"}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
