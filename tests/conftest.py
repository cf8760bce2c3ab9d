import os
import warnings
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st

settings.register_profile("default", max_examples=20, deadline=None)
settings.register_profile("ci", max_examples=30, deadline=None, derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")

warnings.filterwarnings("ignore", category=PendingDeprecationWarning)

SHARED_DATA = (
    Path(os.environ.get("XJOINTSEG_SHARED", Path(__file__).parents[2] / "shared")) / "data"
)


def shared_path(*parts: str) -> Path:
    """A file under ../shared/data, or skip the test (a user's clone has no ../shared)."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path} (the ../shared folder beside the repo)")
    return path


def partition(n: int, max_parts: int = 8):
    """Hypothesis strategy: a random chunking of an axis of length n (tiny and ragged ones)."""
    return st.lists(st.integers(1, n), min_size=1, max_size=max_parts).map(
        lambda parts: _fit(parts, n)
    )


def _fit(parts: list[int], n: int) -> tuple[int, ...]:
    out, total = [], 0
    for p in parts:
        p = min(p, n - total)
        if p <= 0:
            break
        out.append(p)
        total += p
    if total < n:
        out.append(n - total)
    return tuple(out)
