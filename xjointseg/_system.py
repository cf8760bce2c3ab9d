"""What this process may use: bf16 arithmetic on the CPU, memory, parallel task slots.

Read once where it cannot change (the CPU), on every call where it can (memory, the Dask
client), and never raising: an unknown answer falls back to the cautious one.
"""

from __future__ import annotations

import functools
from pathlib import Path

_UNLIMITED = 1 << 60  # cgroup v1 reports "no limit" as a number near 2**63


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX).

    Where it does not, bf16 autocast would convert back and forth and only slow inference
    down, so ``precision="auto"`` stays in fp32 there. Read once per process.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no cheap, reliable way to know, so assume no
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # cgroup v2 writes "max" for no limit


def _cgroup_available() -> int | None:
    """Bytes left under this container's cgroup memory limit, if it has one."""
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # cgroup v2
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",  # cgroup v1
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ):
        limit = _read_int(limit_file)
        if limit is not None and limit < _UNLIMITED:
            return max(limit - (_read_int(usage_file) or 0), 0)
    return None


def _system_available() -> int | None:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _rss() -> int:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        return 0


def _dask_worker_available() -> int | None:
    """Inside a Dask worker: its memory limit minus what the process already holds."""
    try:
        from distributed import get_worker

        limit = get_worker().memory_manager.memory_limit
    except (ImportError, ValueError, AttributeError):
        return None
    return max(int(limit) - _rss(), 0) if limit else None


def _dask_client_workers() -> list[dict]:
    try:
        from distributed import default_client

        client = default_client()
    except (ImportError, ValueError):
        return []
    try:
        try:
            info = client.scheduler_info(n_workers=-1)  # some versions default to 5 workers
        except TypeError:
            info = client.scheduler_info()
        return list(info["workers"].values())
    except Exception:  # a closed or unreachable client: plan as if there were none
        return []


def available_memory() -> tuple[int, str]:
    """Bytes one block task may count on, and where that figure comes from.

    The smallest of: the Dask worker's memory limit (inside a worker), the smallest worker
    limit of the active ``distributed`` client (its tasks run there, not here), the cgroup
    limit of this container, and the system's available memory (psutil). 4 GiB if none of
    them can be read.
    """
    found: list[tuple[int, str]] = []
    worker = _dask_worker_available()
    if worker is not None:
        found.append((worker, "dask worker memory limit"))
    limits = [int(w.get("memory_limit") or 0) for w in _dask_client_workers()]
    if limits and all(limits):
        found.append((min(limits), "dask worker memory limit"))
    cgroup = _cgroup_available()
    if cgroup is not None:
        found.append((cgroup, "cgroup memory limit"))
    system = _system_available()
    if system is not None:
        found.append((system, "available system memory"))
    if not found:
        return 4 << 30, "default (memory could not be read)"
    return min(found)


def dask_client_active() -> bool:
    """Whether a ``distributed`` client with workers is active (its workers run the tasks)."""
    return bool(_dask_client_workers())


def parallel_slots() -> int:
    """How many blocks run at once: the worker threads of the active ``distributed`` client,
    else 1 (the local schedulers share one model per process, whose tiles then run side by
    side on every core: :mod:`xjointseg.models._threads`)."""
    workers = _dask_client_workers()
    return max(sum(int(w.get("nthreads", 1)) for w in workers), 1) if workers else 1


__all__ = ["available_memory", "cpu_has_bf16", "dask_client_active", "parallel_slots"]
