"""Where rxd listens by default; the stub library uses the same rule."""

from __future__ import annotations

import os


def default_socket_path() -> str:
    """$RX_SOCKET, else $XDG_RUNTIME_DIR/rxkernel/rxd.sock, else /tmp/rxkernel-$UID/rxd.sock."""
    if os.environ.get("RX_SOCKET"):
        return os.environ["RX_SOCKET"]
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "rxkernel", "rxd.sock")
    return f"/tmp/rxkernel-{os.getuid()}/rxd.sock"
