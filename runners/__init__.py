"""Between the page and the pipelines: one module per method, free of Gradio.

Each has a `Settings` dataclass (every knob, with the names of its API endpoint's parameters), `cost(settings)`
from the pipeline's own step counts, and `run(settings, callback=..., stop=...) -> Result` with everything its tab
shows. The page, the API, a settings file and the command line (`python -m runners`) all go through them.
"""

from . import asyrp, cycle, cycle_text, guidance, ilvr
from .common import Stopped

METHODS = {runner.TAB: runner for runner in (ilvr, guidance, cycle, cycle_text, asyrp)}

__all__ = ["METHODS", "Stopped", "asyrp", "cycle", "cycle_text", "guidance", "ilvr"]
