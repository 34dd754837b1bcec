"""Cross-process demo: a ring buffer of messages in one VMO, N producer and M consumer processes.

The ring, its Mutex and its two Conditions (not_full, not_empty) all live in the VMO; each child
imports the VMO from an export token and maps it wherever it likes. Every message carries its
producer's index and a per-producer sequence number; consumers mark each one in a `seen` table in
the VMO, so the parent can check that every message was delivered exactly once, and each consumer
checks that it sees each producer's messages in order. Prints messages/s.

    python scripts/ring_buffer_demo.py [--producers 4] [--consumers 4] [--messages 20000]

`--impl mp` runs the same ring on multiprocessing.shared_memory + multiprocessing.Condition and
`--impl pipe` sends the same messages through one os.pipe: the baselines of scripts/bench.py
(`--json` prints one JSON line instead of prose).
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import time
from typing import Any

SLOTS = 64
SLOT = 64  # bytes per message: producer u32, sequence u32, 56 bytes of payload
HEADER = 4096  # +0 mutex, +8 not_full, +20 not_empty, +32 go event, +48 head u64, +56 tail u64, +64 taken u64
MSG = struct.Struct("<II56s")


def layout(producers: int, messages: int) -> tuple[int, int, int]:
    """(seen offset, ring offset, VMO size): a seen byte per message after the header, then the ring."""
    seen = HEADER
    ring = seen + (producers * messages + 4095) // 4096 * 4096
    return seen, ring, ring + SLOTS * SLOT


def payload(p: int, i: int) -> bytes:
    return (f"producer {p} message {i} ".encode() * 4)[:56]


# -- rx implementation ------------------------------------------------------------------------------


def rx_child(role: str, token: str, index: int, producers: int, messages: int) -> None:
    import rxkernel.client as rx

    m = rx.Vmo.import_token(token).map()
    lock = rx.Mutex(m, 0)
    not_full, not_empty = rx.Condition(m, 8, lock), rx.Condition(m, 20, lock)
    go = rx.Event(m, 32)
    counters = m.view[48:72].cast("Q")  # head, tail, taken
    seen_off, ring_off, _ = layout(producers, messages)
    view = m.view
    total = producers * messages
    go.wait()
    if role == "producer":
        for i in range(messages):
            msg = MSG.pack(index, i, payload(index, i))
            with lock:
                while counters[0] - counters[1] >= SLOTS:
                    not_full.wait()
                at = ring_off + counters[0] % SLOTS * SLOT
                view[at:at + SLOT] = msg
                counters[0] += 1
                not_empty.notify()
        return
    last = [-1] * producers
    while True:
        with lock:
            while counters[0] == counters[1] and counters[2] < total:
                not_empty.wait()
            if counters[2] >= total:
                not_empty.notify_all()  # the others are done too
                break
            at = ring_off + counters[1] % SLOTS * SLOT
            p, i, body = MSG.unpack(view[at:at + SLOT])
            counters[1] += 1
            counters[2] += 1
            view[seen_off + p * messages + i] += 1
            not_full.notify()
        assert i > last[p] and body == payload(p, i), (p, i, last[p])
        last[p] = i


def run_rx(producers: int, consumers: int, messages: int) -> dict[str, Any]:
    import rxkernel.client as rx

    seen_off, _, size = layout(producers, messages)
    with rx.Vmo(size) as vmo, vmo.map() as m:
        lock = rx.Mutex.create(m, 0)
        rx.Condition.create(m, 8, lock)
        rx.Condition.create(m, 20, lock)
        go = rx.Event.create(m, 32)
        args = [str(producers), str(messages)]
        procs = [subprocess.Popen([sys.executable, __file__, "--child", role, vmo.export(), str(i), *args])
                 for role, n in (("producer", producers), ("consumer", consumers)) for i in range(n)]
        time.sleep(0.5)  # let the children start and attach (they wait on `go`)
        t0 = time.monotonic()
        go.set()
        for p in procs:
            if p.wait() != 0:
                raise SystemExit(f"a child failed with {p.returncode}")
        elapsed = time.monotonic() - t0
        seen = bytes(m.view[seen_off:seen_off + producers * messages])
        assert seen == b"\x01" * len(seen), "some message was lost or delivered twice"
        syscalls = rx.rx_object_get_info(rx.rx_process_self(), rx.RX_INFO_TASK_STATS)["syscalls"]
    return {"impl": "rx", "elapsed_s": elapsed, "msgs_per_s": producers * messages / elapsed, "parent_syscalls": syscalls}


# -- multiprocessing.shared_memory + multiprocessing.Condition (baseline) ---------------------------


def mp_child(role: str, name: str, index: int, producers: int, messages: int, cond_full: Any, cond_empty: Any, go: Any) -> None:
    from multiprocessing import shared_memory

    shm = shared_memory.SharedMemory(name)
    view = shm.buf
    counters = view[48:72].cast("Q")
    seen_off, ring_off, _ = layout(producers, messages)
    total = producers * messages
    go.wait()
    # one lock under both conditions, as in the rx ring
    if role == "producer":
        for i in range(messages):
            msg = MSG.pack(index, i, payload(index, i))
            with cond_full:
                while counters[0] - counters[1] >= SLOTS:
                    cond_full.wait()
                at = ring_off + counters[0] % SLOTS * SLOT
                view[at:at + SLOT] = msg
                counters[0] += 1
                cond_empty.notify()
    else:
        while True:
            with cond_empty:
                while counters[0] == counters[1] and counters[2] < total:
                    cond_empty.wait()
                if counters[2] >= total:
                    cond_empty.notify_all()
                    break
                at = ring_off + counters[1] % SLOTS * SLOT
                p, i, _ = MSG.unpack(view[at:at + SLOT])
                counters[1] += 1
                counters[2] += 1
                view[seen_off + p * messages + i] += 1
                cond_full.notify()
    counters.release()
    view.release()
    shm.close()


def run_mp(producers: int, consumers: int, messages: int) -> dict[str, Any]:
    import multiprocessing as mp
    from multiprocessing import shared_memory

    ctx = mp.get_context("spawn")
    seen_off, _, size = layout(producers, messages)
    shm = shared_memory.SharedMemory(create=True, size=size)
    try:
        lock = ctx.Lock()
        cond_full, cond_empty, go = ctx.Condition(lock), ctx.Condition(lock), ctx.Event()
        procs = [ctx.Process(target=mp_child, args=(role, shm.name, i, producers, messages, cond_full, cond_empty, go))
                 for role, n in (("producer", producers), ("consumer", consumers)) for i in range(n)]
        for p in procs:
            p.start()
        time.sleep(0.5)
        t0 = time.monotonic()
        go.set()
        for p in procs:
            p.join()
            if p.exitcode != 0:
                raise SystemExit(f"a child failed with {p.exitcode}")
        elapsed = time.monotonic() - t0
        assert bytes(shm.buf[seen_off:seen_off + producers * messages]) == b"\x01" * (producers * messages)
    finally:
        shm.close()
        shm.unlink()
    return {"impl": "mp", "elapsed_s": elapsed, "msgs_per_s": producers * messages / elapsed}


# -- one os.pipe (baseline) -------------------------------------------------------------------------


def pipe_child(role: str, rfd: int, wfd: int, index: int, producers: int, messages: int, go: Any, out: Any) -> None:
    go.wait()
    if role == "producer":
        for i in range(messages):
            os.write(wfd, MSG.pack(index, i, payload(index, i)))  # <= PIPE_BUF: atomic
        return
    got = bytearray(producers * messages)
    while True:
        data = os.read(rfd, SLOT)
        assert len(data) == SLOT
        p, i, _ = MSG.unpack(data)
        if p == 0xFFFFFFFF:
            break
        got[p * messages + i] += 1
    out.put(bytes(got))


def run_pipe(producers: int, consumers: int, messages: int) -> dict[str, Any]:
    import multiprocessing as mp

    ctx = mp.get_context("fork")  # the children inherit the pipe
    rfd, wfd = os.pipe()
    go, out = ctx.Event(), ctx.SimpleQueue()
    procs = [ctx.Process(target=pipe_child, args=(role, rfd, wfd, i, producers, messages, go, out))
             for role, n in (("producer", producers), ("consumer", consumers)) for i in range(n)]
    for p in procs:
        p.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    go.set()
    for p in procs[:producers]:
        p.join()
    for _ in range(consumers):
        os.write(wfd, MSG.pack(0xFFFFFFFF, 0, b""))
    counts = [out.get() for _ in range(consumers)]
    for p in procs[producers:]:
        p.join()
    elapsed = time.monotonic() - t0
    os.close(rfd)
    os.close(wfd)
    total = [sum(c[k] for c in counts) for k in range(producers * messages)]
    assert total == [1] * (producers * messages)
    return {"impl": "pipe", "elapsed_s": elapsed, "msgs_per_s": producers * messages / elapsed}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        role, token, index, producers, messages = sys.argv[2:7]
        rx_child(role, token, int(index), int(producers), int(messages))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--producers", type=int, default=4)
    ap.add_argument("--consumers", type=int, default=4)
    ap.add_argument("--messages", type=int, default=20000, help="per producer")
    ap.add_argument("--impl", choices=("rx", "mp", "pipe"), default="rx")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    run = {"rx": run_rx, "mp": run_mp, "pipe": run_pipe}[a.impl]
    result = {**run(a.producers, a.consumers, a.messages), "producers": a.producers, "consumers": a.consumers, "messages": a.messages}
    if a.json:
        print(json.dumps(result))
        return
    total = a.producers * a.messages
    print(f"ring of {SLOTS} × {SLOT}-byte slots in one VMO; {a.producers} producers × {a.messages} messages, "
          f"{a.consumers} consumers ({a.impl})")
    print(f"every one of {total} messages delivered exactly once, in order per producer and consumer")
    print(f"{total} messages in {result['elapsed_s']:.2f} s: {result['msgs_per_s']:,.0f} messages/s")


if __name__ == "__main__":
    main()
