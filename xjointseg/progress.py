"""One way to compute a delayed job with progress: on a distributed client (progress on its
dashboard), or locally with dask's progress bar on stderr."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["compute"]


def compute(job: Any, *, client: Any = None, progress: bool = False) -> Any:
    """Compute ``job`` (anything with ``.compute()``) and return its result."""
    if client is not None:
        return client.compute(job).result()
    if progress:
        from dask.diagnostics import ProgressBar

        with ProgressBar(out=sys.stderr):
            return job.compute()
    return job.compute()
