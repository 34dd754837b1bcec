"""rx.popen(): start a program as an rx process born in a given job.

The child must reach the same rxd and present a job token in its hello: popen exports a fresh
token of the job handle for each child (a token is spent by the one hello that presents it) and
passes it, with rxd's socket path, in the child's environment ($RX_JOB, $RX_SOCKET). The child's
stub library presents $RX_JOB when it connects and then removes it, so the child's own children
do not present a spent token.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

from rxkernel.proto import RX_RIGHT_SAME_RIGHTS

from ._process import PROCESS
from ._stubs import rx_handle_export


def popen(args: Any, job: int, **kwargs: Any) -> subprocess.Popen[Any]:
    """subprocess.Popen(args, **kwargs) whose process, once it connects to rxd, is born in the
    job `job` (a job handle; see rx_job_create). `env`, if given, is extended, not replaced.
    The token rides in the environment: a child that never connects leaves it unspent until
    this process exits (rxd then revokes it)."""
    token = rx_handle_export(job, RX_RIGHT_SAME_RIGHTS)
    env = dict(kwargs.pop("env", None) or os.environ)
    env["RX_JOB"] = token
    env["RX_SOCKET"] = PROCESS.connect().path
    return subprocess.Popen(args, env=env, **kwargs)
