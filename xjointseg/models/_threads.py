"""One torch thread per tile on the CPU: the same bits whatever the scheduler, cores still busy.

torch splits a convolution's sums over its intra-op threads, so a tile's logits depend on
how many threads computed it (fp32: ~1e-6; bf16: ~1e-2, enough to move mask pixels). A
1-thread Dask worker and the 2-thread threaded scheduler would then map the same scene
differently. Here every tile runs alone on one torch thread, and the cores are kept busy by
running as many tiles at once as torch had threads: each tile's arithmetic is then fixed by
the tile alone. Running whole tiles side by side also wastes less than splitting each
convolution (`benchmarks/bench_segment.py`).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import torch

_pools: dict[tuple[int, int], ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def tile_pool() -> ThreadPoolExecutor:
    """The process's pool of one-thread tile runners, as many as the caller's torch threads.

    Shared by every model and every calling thread (e.g. each thread of Dask's threaded
    scheduler), so tiles never run on more threads than torch would use for one of them.
    """
    with _pools_lock:  # read inside: a pool being started changes torch's count for a moment
        workers = torch.get_num_threads()
        key = (os.getpid(), workers)  # a forked child inherits the dict, not the threads
        if key not in _pools:
            _pools[key] = _start_pool(workers)
        return _pools[key]


def _in_new_thread(job):
    """``job()`` run in a short-lived thread: torch's thread settings as a new thread sees them."""
    result = []
    thread = threading.Thread(target=lambda: result.append(job()))
    thread.start()
    thread.join()
    return result[0]


def _start_pool(workers: int) -> ThreadPoolExecutor:
    new_threads_get = _in_new_thread(torch.get_num_threads)
    pool = ThreadPoolExecutor(workers, thread_name_prefix="xjointseg-tile")
    started = threading.Barrier(workers)

    def one_torch_thread() -> None:
        torch.set_num_threads(1)  # this thread's OpenMP count: fixed for its life, once
        torch.get_num_threads()  # torch has used it (a thread's first use re-reads the count)
        started.wait()  # hold the thread until all are up, so each task gets its own

    for job in [pool.submit(one_torch_thread) for _ in range(workers)]:
        job.result()
    # torch.set_num_threads also sets the count that threads created later start from;
    # give that back from a short-lived thread, which leaves the pool's own count at 1.
    _in_new_thread(lambda: torch.set_num_threads(new_threads_get))
    return pool
