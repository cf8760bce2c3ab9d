"""Progress, one way for the whole library: a delayed job computed on a distributed client
(progress on its dashboard) or locally (dask's bar on stderr), and a bar over a loop this
process runs itself (blocks written to a COG, training steps)."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["bar", "compute"]


def compute(job: Any, *, client: Any = None, progress: bool = False) -> Any:
    """Compute ``job`` (anything with ``.compute()``) and return its result."""
    if client is not None:
        return client.compute(job).result()
    if progress:
        from dask.diagnostics import ProgressBar

        with ProgressBar(out=sys.stderr):
            return job.compute()
    return job.compute()


def bar(total: int, *, desc: str, unit: str = "it", initial: int = 0, enabled: bool = True):
    """A progress bar on stderr for a loop of ``total`` steps; call ``update(n)``, ``close()``.

    Plain text (not ``tqdm.auto``): it shows in terminals, logs and Jupyter alike, where the
    widget version needs ipywidgets.
    """
    from tqdm import tqdm

    return tqdm(
        total=total, initial=initial, desc=desc, unit=unit, disable=not enabled, file=sys.stderr
    )
