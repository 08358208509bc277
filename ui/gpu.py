"""Where GPU work runs: inside `spaces.GPU` on Hugging Face ZeroGPU (imported before torch), as it is elsewhere.

On ZeroGPU each request asks for the duration its own estimate needs (the docs' dynamic duration: a shorter request
gets queue priority), and several requests may hold a GPU at once. Elsewhere the requests share one copy of each model
in threads of one process, each owning what it changes, so several may sample at once: on a 2-core CPU two at a time
serve a class best (benchmarks/bench_lecture.py: 24.6 requests a minute against 19.5 one at a time and 23.0 four at a
time, 30 students); a dedicated GPU runs one at a time until it is measured. STEER_GPU_CONCURRENCY overrides each.
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
CPU_CONCURRENCY = 2  # requests sampling at once on a CPU (measured on 2 cores, the Spaces' CPU basic)
DURATION_MARGIN = 1.5  # the estimate is measured on another request's batch; ask for a little more


def gpu(fn: Callable, duration: Callable[..., float]) -> Callable:
    """`fn` under spaces.GPU where `spaces` is installed, asking for `duration(*args, **kwargs)` seconds (called with
    fn's own arguments); else `fn` itself."""
    return fn if spaces is None else spaces.GPU(duration=duration)(fn)


def concurrency_limit() -> int:
    """How many requests sample at once: STEER_GPU_CONCURRENCY, else 4 on ZeroGPU, 2 on a CPU, 1 on a dedicated GPU."""
    from runners.budget import device_name

    if "STEER_GPU_CONCURRENCY" in os.environ:
        return max(1, int(os.environ["STEER_GPU_CONCURRENCY"]))
    if ZERO_GPU:
        return ZERO_GPU_CONCURRENCY
    return CPU_CONCURRENCY if device_name() == "CPU" else 1


def concurrency() -> dict:
    """The event arguments that make every GPU button share one limit."""
    return dict(concurrency_limit=concurrency_limit(), concurrency_id="gpu")
