"""The image stages give way on the CPU to the HTTP path: the proxy, the Ingress, refusals.

On a machine whose cores the stages keep busy, a request the Ingress refuses still has
to be read by Serve's proxy and answered; at the same scheduling weight as the stages
that took 1-3 s on 2 cores under a 10x burst (benchmarks.overload). A higher nice value
for the stages' processes lets the kernel run the HTTP path first whenever it has work,
which is little; the stages get every cycle it leaves.
"""

import os
from pathlib import Path

THREADS = Path("/proc/self/task")


def lower_priority(niceness: int) -> None:
    """Raises the nice value of every thread of this process to ``niceness`` (never lowers it).

    Linux keeps a nice value per thread, and a replica's threads (Ray's, Serve's pool
    that runs sync methods) exist before its constructor runs; threads made later
    inherit their creator's. Elsewhere the value is the process's.
    """
    threads = [int(tid) for tid in os.listdir(THREADS)] if THREADS.is_dir() else [0]
    for thread in threads:
        try:
            if os.getpriority(os.PRIO_PROCESS, thread) < niceness:
                os.setpriority(os.PRIO_PROCESS, thread, niceness)
        except (ProcessLookupError, PermissionError):
            pass  # a thread that ended meanwhile; a platform that refuses is left as it is
