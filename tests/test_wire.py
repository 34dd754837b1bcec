"""The C copy of the wire (native/include/rxwire.h) against its definition, proto/. No rxd needed.

Every constant of rxwire.h is checked here: by value against the proto name it is named after
(proto's name, RX_-prefixed where proto's lacks the prefix), or, for frame layouts proto has no
name for, against what proto's own encoder (proto/_connection.py) puts on the wire.
test_every_wire_constant_is_exposed_and_checked fails when the header gains a constant no test here looks at.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import msgpack
import pytest

import rxkernel.native
import rxkernel.proto as p
from rxkernel.native import lib
from rxkernel.proto import Connection, Role
from rxtest import CLIENT_TIMEOUT, QUICK_TIMEOUT

NATIVE = os.path.dirname(os.path.abspath(rxkernel.native.__file__))
WIRE_H = os.path.join(NATIVE, "include", "rxwire.h")
WIRE_MD = os.path.join(os.path.dirname(os.path.abspath(p.__file__)), "WIRE.md")

# Object-like macros only: RX_STATUS_LIST(X) is the X-macro, not a constant.
_DEFINE = re.compile(r"^#define\s+(RX_[A-Z0-9_]+)(?!\()\s", re.MULTILINE)


def _wire_names() -> list[str]:
    with open(WIRE_H, encoding="utf-8") as f:
        return _DEFINE.findall(f.read())


def _c_name(proto_name: str) -> str:
    """The naming rule of rxwire.h."""
    return proto_name if proto_name.startswith("RX_") else "RX_" + proto_name


# Constants proto has a name for, by proto name (statuses come from proto's STATUS_NAMES).
PROTO_NAMED = [
    "PROTOCOL_MAGIC", "PROTOCOL_VERSION",
    "CHANNEL_MAIN", "CHANNEL_FAULT", "CHANNEL_CONTROL", "CHANNEL_THREAD",
    "SESSION_TOKEN_BYTES", "PAGE_SIZE", "PAGE_SHIFT",
    "RX_VM_PERM_READ", "RX_VM_PERM_WRITE", "RX_VM_PERMS", "RX_VM_MAP_RANDOM",
    "FAULT_OP_ZERO", "FAULT_OP_STORE", "FAULT_MAX_OPS",
    "CONTROL_INVALIDATE", "CONTROL_PROTECT", "CONTROL_PING", "CONTROL_STORE", "CONTROL_FORGET",
    "RX_VMO_OP_CACHE_SYNC", "RX_VMO_OP_CACHE_INVALIDATE", "RX_VMO_OP_CACHE_CLEAN", "RX_VMO_OP_CACHE_CLEAN_INVALIDATE",
    "RX_FUTEX_OWNER_MASK", "RX_FUTEX_OWNER_DIED", "RX_FUTEX_WAITERS",
]
CONTROL_OPS = ["INVALIDATE", "PROTECT", "PING", "STORE", "FORGET"]
# Frame fields in proto's dataclass order, which is the order proto's encoder writes them in.
FAULT_OP_FIELDS = [f.name for f in dataclasses.fields(p.FaultOp)]
FAULT_REPLY_FIELDS = [f.name for f in dataclasses.fields(p.FaultReply) if f.name != "ops"]
CONTROL_REQUEST_FIELDS = [f.name for f in dataclasses.fields(p.ControlRequest) if f.name != "ranges"]
# Checked below against proto's encoder, CONTROL_RANGE_WIDTHS and WIRE.md.
LAYOUT = [
    "RX_HELLO_WORDS", "RX_HELLO_REPLY_HEAD", "RX_FAULT_REQUEST_WORDS", "RX_FAULT_FLAG_WRITE",
    "RX_FAULT_REPLY_HEAD", "RX_FAULT_OP_WORDS", "RX_CONTROL_REQUEST_HEAD", "RX_CONTROL_ACK_WORDS",
    "RX_CONTROL_MAX_FRAME_BYTES", "RX_CONTROL_MAX_RANGES",
    *(f"RX_FAULT_OP_FIELD_{name.upper()}" for name in FAULT_OP_FIELDS),
    *(f"RX_FAULT_REPLY_FIELD_{name.upper()}" for name in FAULT_REPLY_FIELDS),
    *(f"RX_CONTROL_REQUEST_FIELD_{name.upper()}" for name in CONTROL_REQUEST_FIELDS),
    *(f"RX_CONTROL_{op}_WIDTH" for op in CONTROL_OPS),
]


def test_every_wire_constant_is_exposed_and_checked() -> None:
    names = _wire_names()
    assert len(names) == len(set(names)), "a constant is defined twice"
    assert [n for n in names if not hasattr(lib, n)] == [], "not exposed by cffi (native/_build.py)"
    checked = {_c_name(n) for n in PROTO_NAMED} | set(p.STATUS_NAMES.values()) | set(LAYOUT)
    assert sorted(set(names) - checked) == [], "rxwire.h constants no test checks: add them here"
    assert sorted(checked - set(names)) == [], "checked here but not in rxwire.h"


@pytest.mark.parametrize("proto_name", PROTO_NAMED)
def test_constant_matches_proto(proto_name: str) -> None:
    assert getattr(lib, _c_name(proto_name)) == getattr(p, proto_name)


def test_statuses_both_ways() -> None:
    c_statuses = {n: getattr(lib, n) for n in _wire_names() if n == "RX_OK" or n.startswith("RX_ERR_")}
    assert c_statuses == {name: value for value, name in p.STATUS_NAMES.items()}


def test_control_ops_and_widths() -> None:
    ops = {getattr(lib, f"RX_CONTROL_{op}"): getattr(lib, f"RX_CONTROL_{op}_WIDTH") for op in CONTROL_OPS}
    assert ops == p.CONTROL_RANGE_WIDTHS  # every op proto knows, with its width, and no other


def test_page_and_perms_are_what_the_c_core_hands_to_mmap() -> None:
    import mmap

    assert lib.RX_PAGE_SIZE == 1 << lib.RX_PAGE_SHIFT
    # Fault and PROTECT ops' prot goes to mmap/mprotect as it is.
    assert (lib.RX_VM_PERM_READ, lib.RX_VM_PERM_WRITE) == (mmap.PROT_READ, mmap.PROT_WRITE)


def _unpack(data: bytes) -> list[Any]:
    frame = msgpack.unpackb(data)
    assert isinstance(frame, list)
    return frame


def _pair(kind: int) -> tuple[Connection, Connection, list[Any], list[Any]]:
    """Client and server connections of `kind` past their hello, and the two hello frames."""
    client, server = Connection(Role.CLIENT, kind=kind), Connection(Role.SERVER)
    hello = client.send(p.Hello(kind, bytes(range(p.SESSION_TOKEN_BYTES))))
    server.receive_data(hello)
    assert isinstance(server.next_event(), p.Hello)
    reply = server.send(p.HelloReply(p.RX_OK))
    client.receive_data(reply)
    assert isinstance(client.next_event(), p.HelloReply)
    return client, server, _unpack(hello), _unpack(reply)


def test_fault_channel_layout() -> None:
    client, server, hello, reply = _pair(p.CHANNEL_FAULT)
    # What the C core sends, and the reply it checks.
    assert hello == [lib.RX_PROTOCOL_MAGIC, lib.RX_PROTOCOL_VERSION, lib.RX_CHANNEL_FAULT, bytes(range(p.SESSION_TOKEN_BYTES))]
    assert len(hello) == lib.RX_HELLO_WORDS and len(hello[3]) == lib.RX_SESSION_TOKEN_BYTES
    assert reply == [lib.RX_PROTOCOL_MAGIC, lib.RX_PROTOCOL_VERSION, lib.RX_OK]
    assert len(reply) == lib.RX_HELLO_REPLY_HEAD
    request = _unpack(client.send(p.FaultRequest(5, 0x1000, True)))
    assert request == [5, 0x1000, lib.RX_FAULT_FLAG_WRITE] and len(request) == lib.RX_FAULT_REQUEST_WORDS
    assert _unpack(client.send(p.FaultRequest(6, 0x1000, False)))[2] == 0
    refused = p.FaultReply(seq=11, status=p.RX_ERR_NO_MEMORY, inval_seq=7)
    frame = _unpack(server.send(refused))
    assert len(frame) == lib.RX_FAULT_REPLY_HEAD == len(FAULT_REPLY_FIELDS)
    for name in FAULT_REPLY_FIELDS:
        assert frame[getattr(lib, f"RX_FAULT_REPLY_FIELD_{name.upper()}")] == getattr(refused, name), name
    op = p.FaultOp(addr=0x10000, length=0x2000, kind=p.FAULT_OP_STORE, prot=3, store_id=9, file_offset=0x5000)
    frame = _unpack(server.send(p.FaultReply(1, p.RX_OK, 7, (op, op))))
    assert len(frame) == lib.RX_FAULT_REPLY_HEAD + 2 * lib.RX_FAULT_OP_WORDS
    assert len(FAULT_OP_FIELDS) == lib.RX_FAULT_OP_WORDS
    for name in FAULT_OP_FIELDS:
        index = getattr(lib, f"RX_FAULT_OP_FIELD_{name.upper()}")
        for i in range(2):
            assert frame[lib.RX_FAULT_REPLY_HEAD + i * lib.RX_FAULT_OP_WORDS + index] == getattr(op, name), name


def test_control_channel_layout() -> None:
    client, server, hello, _ = _pair(p.CHANNEL_CONTROL)
    assert hello[2] == lib.RX_CHANNEL_CONTROL
    request = p.ControlRequest(seq=4, op=p.CONTROL_PING, inval_seq=8)
    ping = _unpack(server.send(request))
    assert len(ping) == lib.RX_CONTROL_REQUEST_HEAD == len(CONTROL_REQUEST_FIELDS)
    for name in CONTROL_REQUEST_FIELDS:
        assert ping[getattr(lib, f"RX_CONTROL_REQUEST_FIELD_{name.upper()}")] == getattr(request, name), name
    ack = _unpack(client.send(p.ControlAck(4, p.RX_OK)))
    assert ack == [4, p.RX_OK] and len(ack) == lib.RX_CONTROL_ACK_WORDS
    protect = _unpack(server.send(p.ControlRequest(5, p.CONTROL_PROTECT, 9, ((0x1000, 0x2000, 1),))))
    assert len(protect) == lib.RX_CONTROL_REQUEST_HEAD + lib.RX_CONTROL_PROTECT_WIDTH
    # The widest op sizes the C core's value buffer: no op may be wider.
    assert max(p.CONTROL_RANGE_WIDTHS.values()) == lib.RX_CONTROL_PROTECT_WIDTH


def test_limits_match_wire_md() -> None:
    with open(WIRE_MD, encoding="utf-8") as f:
        text = " ".join(f.read().split())
    assert f"At most {p.FAULT_MAX_OPS} ops per reply." in text
    found = re.search(r"Control frames are at most (\d+) KiB \((\d+) ranges\)", text)
    assert found is not None
    kib, ranges = found.groups()
    assert (int(kib) * 1024, int(ranges)) == (lib.RX_CONTROL_MAX_FRAME_BYTES, lib.RX_CONTROL_MAX_RANGES)
    assert f"the {lib.RX_SESSION_TOKEN_BYTES}-byte session token (msgpack bin)" in text


def test_diagnostics_name_every_status(tmp_path: Path) -> None:
    """The refused-fault diagnostics (native/client/diag.c) name every proto status and no other:
    RX_STATUS_LIST against STATUS_NAMES both ways, and diag.c's lookup against both."""
    src = tmp_path / "status_names.c"
    src.write_text(
        '#include <stdio.h>\n#include "internal.h"\n'
        '#define PRINT(name) printf("list %d %s %s\\n", (int)(name), #name, rx_status_name(name));\n'
        "int main(void) {\n"
        "    RX_STATUS_LIST(PRINT)\n"
        "    for (int s = -4096; s <= 4096; s++)\n"
        '        if (rx_status_name(s)) printf("named %d %s\\n", s, rx_status_name(s));\n'
        "    return 0;\n"
        "}\n"
    )
    exe = tmp_path / "status_names"
    subprocess.run(["gcc", "-std=gnu11", "-Wall", "-Wextra", "-Werror", f"-I{NATIVE}/include", f"-I{NATIVE}/client",
                    "-o", str(exe), str(src), os.path.join(NATIVE, "client", "diag.c")], check=True,
                   timeout=CLIENT_TIMEOUT)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True, timeout=QUICK_TIMEOUT).stdout
    listed: list[tuple[int, str, str]] = []  # (value, name in RX_STATUS_LIST, rx_status_name(value))
    named: dict[int, str] = {}  # every value rx_status_name knows
    for line in out.splitlines():
        kind, value, *names = line.split()
        if kind == "list":
            listed.append((int(value), names[0], names[1]))
        else:
            named[int(value)] = names[0]
    assert len({value for value, _, _ in listed}) == len(listed), "a status is listed twice"
    assert {value: name for value, name, _ in listed} == p.STATUS_NAMES
    assert all(name == looked_up for _, name, looked_up in listed)
    assert named == p.STATUS_NAMES


def test_vdso_headers_keep_the_same_values() -> None:
    """The vDSO's public headers stay self-contained (the image is libc-free and its headers are
    installed for C users), so they keep their own copies; they must agree with proto."""
    with open(os.path.join(rxkernel.native.VDSO_HEADER_DIR, "rxvdso.h"), encoding="utf-8") as f:
        errs = dict(re.findall(r"^#define RX_VDSO_ERR_(\w+) \((-\d+)\)", f.read(), re.MULTILINE))
    assert errs and all(getattr(p, f"RX_ERR_{name}") == int(value) for name, value in errs.items()), errs
    with open(os.path.join(rxkernel.native.VDSO_HEADER_DIR, "rxvvar.h"), encoding="utf-8") as f:
        bits = re.findall(r"^#define RX_CPU_(\w+) \(1ull << (\d+)\)", f.read(), re.MULTILINE)
    cpu = {f"RX_CPU_{name}": 1 << int(bit) for name, bit in bits}
    assert cpu == {n: getattr(p, n) for n in dir(p) if n.startswith("RX_CPU_")}


def test_no_private_copies_in_native() -> None:
    """No C file but rxwire.h defines a wire constant (vdso/ keeps its own, see above)."""
    names = set(_wire_names())
    offenders = []
    for path in glob.glob(os.path.join(NATIVE, "**", "*.[ch]"), recursive=True):
        if os.path.samefile(path, WIRE_H) or os.path.basename(os.path.dirname(path)) == "vdso":
            continue
        with open(path, encoding="utf-8") as f:
            for name in re.findall(r"^\s*#\s*define\s+(\w+)", f.read(), re.MULTILINE):
                if name in names or name.startswith(("RX_ERR_", "RX_CTL_", "RX_SYNC_", "RX_OP_")):
                    offenders.append(f"{os.path.relpath(path, NATIVE)}: {name}")
    assert offenders == []


def test_rxd_stays_within_the_client_limits() -> None:
    """What rxd sends fits what the C side reserves room for."""
    from rxkernel.server.vm._fault import MAX_OPS
    from rxkernel.server.vm._shootdown import MAX_RANGES_PER_REQUEST

    assert MAX_OPS <= lib.RX_FAULT_MAX_OPS
    assert MAX_RANGES_PER_REQUEST <= lib.RX_CONTROL_MAX_RANGES
