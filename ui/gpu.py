"""Where GPU work runs: inside `spaces.GPU` on Hugging Face ZeroGPU (imported before torch), as it is elsewhere.

On ZeroGPU each request asks for the duration its own estimate needs (the docs' dynamic duration: a shorter request
gets queue priority), and several requests may hold a GPU at once; on a dedicated GPU or a CPU the work runs one
request at a time. STEER_GPU_CONCURRENCY overrides either.
"""

from __future__ import annotations

import os
from typing import Callable

try:
    import spaces
except ImportError:
    spaces = None

ZERO_GPU = bool(os.environ.get("SPACES_ZERO_GPU"))
ZERO_GPU_CONCURRENCY = 4  # ZeroGPU requests that may hold a GPU at once
DURATION_MARGIN = 1.5  # the estimate is measured on another request's batch; ask for a little more


def gpu(fn: Callable, duration: Callable[..., float]) -> Callable:
    """`fn` under spaces.GPU where `spaces` is installed, asking for `duration(*args, **kwargs)` seconds (called with
    fn's own arguments); else `fn` itself."""
    return fn if spaces is None else spaces.GPU(duration=duration)(fn)


def concurrency_limit() -> int:
    """How many requests run GPU work at once: STEER_GPU_CONCURRENCY, else several on ZeroGPU, else one."""
    if "STEER_GPU_CONCURRENCY" in os.environ:
        return max(1, int(os.environ["STEER_GPU_CONCURRENCY"]))
    return ZERO_GPU_CONCURRENCY if ZERO_GPU else 1


def concurrency() -> dict:
    """The event arguments that make every GPU button share one limit."""
    return dict(concurrency_limit=concurrency_limit(), concurrency_id="gpu")
