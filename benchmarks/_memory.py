"""Peak resident memory of the running process, for the benchmarks' fresh-process runs."""

from __future__ import annotations

import resource
import sys
from pathlib import Path


def peak_rss_mb() -> float:
    """This process's peak resident set size, in MB.

    On Linux it is ``VmHWM`` from ``/proc/self/status``: the high-water mark of this process's
    own address space. ``getrusage``'s ``ru_maxrss`` is not: it survives ``exec``, so a child
    started by a parent holding 4 GB reports at least 4 GB whatever it uses itself.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024  # bytes there, kB here
