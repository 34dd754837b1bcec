"""Where the protocol is served: the listener and the hello, one task per channel, dispatch of
requests to the syscall layer, fault requests to the VM layer, and the control channel's
transport (ARCHITECTURE.md "Layers"). The top of rxd below the command line."""

from ._server import Server as Server
from ._server import prepare_socket_path as prepare_socket_path
