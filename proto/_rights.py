"""Handle rights, after Zircon. Rights only ever shrink along a handle's path."""

from __future__ import annotations

RX_RIGHT_NONE = 0
RX_RIGHT_DUPLICATE = 1 << 0
RX_RIGHT_TRANSFER = 1 << 1
RX_RIGHT_READ = 1 << 2
RX_RIGHT_WRITE = 1 << 3
RX_RIGHT_EXECUTE = 1 << 4
RX_RIGHT_MAP = 1 << 5
RX_RIGHT_GET_PROPERTY = 1 << 6
RX_RIGHT_SET_PROPERTY = 1 << 7
RX_RIGHT_ENUMERATE = 1 << 8  # find the objects below this one (rx_object_get_child)
RX_RIGHT_INSPECT = 1 << 15
RX_RIGHT_RESIZE = 1 << 16
RX_RIGHT_SAME_RIGHTS = 1 << 31

RX_RIGHTS_ALL = (
    RX_RIGHT_DUPLICATE
    | RX_RIGHT_TRANSFER
    | RX_RIGHT_READ
    | RX_RIGHT_WRITE
    | RX_RIGHT_EXECUTE
    | RX_RIGHT_MAP
    | RX_RIGHT_GET_PROPERTY
    | RX_RIGHT_SET_PROPERTY
    | RX_RIGHT_ENUMERATE
    | RX_RIGHT_INSPECT
    | RX_RIGHT_RESIZE
)

# What a freshly created VMO handle carries (Zircon's ZX_DEFAULT_VMO_RIGHTS, plus RESIZE when
# the VMO was created resizable).
RX_DEFAULT_VMO_RIGHTS = (
    RX_RIGHT_DUPLICATE
    | RX_RIGHT_TRANSFER
    | RX_RIGHT_READ
    | RX_RIGHT_WRITE
    | RX_RIGHT_MAP
    | RX_RIGHT_GET_PROPERTY
    | RX_RIGHT_SET_PROPERTY
    | RX_RIGHT_INSPECT
)
RX_DEFAULT_PROCESS_RIGHTS = (
    RX_RIGHT_DUPLICATE | RX_RIGHT_TRANSFER | RX_RIGHT_READ | RX_RIGHT_INSPECT | RX_RIGHT_GET_PROPERTY | RX_RIGHT_SET_PROPERTY
)
# Zircon's ZX_DEFAULT_JOB_RIGHTS, less what rx has no use for (MANAGE_JOB: WRITE makes child jobs).
RX_DEFAULT_JOB_RIGHTS = (
    RX_RIGHT_DUPLICATE
    | RX_RIGHT_TRANSFER
    | RX_RIGHT_READ
    | RX_RIGHT_WRITE
    | RX_RIGHT_ENUMERATE
    | RX_RIGHT_GET_PROPERTY
    | RX_RIGHT_SET_PROPERTY
    | RX_RIGHT_INSPECT
)
RX_DEFAULT_SYSTEM_RIGHTS = RX_RIGHT_INSPECT | RX_RIGHT_READ | RX_RIGHT_ENUMERATE


def reduce_rights(current: int, requested: int) -> int | None:
    """Rights for a derived handle: `requested` if it is a subset of `current`, else None."""
    if requested == RX_RIGHT_SAME_RIGHTS:
        return current
    if requested & ~RX_RIGHTS_ALL or requested & ~current:
        return None
    return requested


_RIGHT_NAMES = {
    value: name for name, value in sorted(globals().items(), key=lambda kv: str(kv[1]))
    if name.startswith("RX_RIGHT_") and name not in ("RX_RIGHT_NONE", "RX_RIGHT_SAME_RIGHTS") and isinstance(value, int)
}


def rights_names(rights: int) -> str:
    """'RX_RIGHT_READ | RX_RIGHT_WRITE' for a set of rights (unknown bits in hex), for errors."""
    names = [name for value, name in sorted(_RIGHT_NAMES.items()) if rights & value]
    unknown = rights & ~RX_RIGHTS_ALL
    if unknown:
        names.append(f"{unknown:#x}")
    return " | ".join(names) or "RX_RIGHT_NONE"
