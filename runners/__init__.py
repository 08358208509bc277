"""Between the page and the pipelines: one module per method, free of Gradio.

Each is a `runners.base.Runner`: a `Settings` dataclass (every knob, short ids and numbers, with the names of its API
endpoint's parameters), `cost(settings)` from the pipeline's own step counts, and `run(settings, callback=...,
stop=...) -> Result` with everything its tab shows, run by the one template `runners.base.run`. The page, the API, a
settings file and the command line (`python -m runners`) all go through them.
"""

from . import asyrp, compare, cycle, cycle_text, guidance, ilvr
from .base import Runner, Stopped

METHODS: dict[str, Runner] = {runner.TAB: runner for runner in (ilvr, guidance, cycle, cycle_text, asyrp, compare)}

__all__ = ["METHODS", "Runner", "Stopped", "asyrp", "compare", "cycle", "cycle_text", "guidance", "ilvr"]
