"""Steering a pretrained diffusion model without retraining it: ILVR, classifier guidance, CycleDiffusion, Asyrp.

Run `python app.py` (or `gradio app.py`). Environment variables are listed in README.md.
"""

from __future__ import annotations

import logging
import os

import gradio as gr

from ui import gpu  # first: it imports spaces (on ZeroGPU) before torch
from ui import asyrp_tab, compare_tab, cycle_tab, cycle_text, guidance_tab, ilvr_tab
from ui.handler import stop_flags
from runners import status

TABS = [ilvr_tab, guidance_tab, cycle_tab, cycle_text, asyrp_tab, compare_tab]

TITLE = "### Steering a pretrained diffusion model without retraining it"
INTRO = """
Four published ways to control what a pretrained diffusion model draws, **without retraining it**: ILVR, classifier
guidance, CycleDiffusion (on pixel models, and in a tab of its own its headline, the text edit on Stable Diffusion)
and Asyrp; under a tab's title, the update rule it adds to the sampler, and its longer story under *How it works*;
*Compare* sets them side by side on one face. All tabs share one copy of each model. The same seed and settings give
the same image on the same device (a GPU in fp16 and a CPU in fp32 differ slightly). Every result downloads as a PNG
and a settings file, and a link reopens it.
"""
SESSIONS = int(os.environ.get("STEER_SESSIONS", "100"))  # visitors' page states kept; Gradio's own default is 10,000
CACHE = (3600, 86400)  # every hour, the result files (and deep links) older than a day are deleted


def build_demo() -> gr.Blocks:
    with gr.Blocks(title="Steering diffusion models without retraining", delete_cache=CACHE) as demo:
        with gr.Row(equal_height=True):
            gr.Markdown(TITLE)
            status_line = gr.Markdown("Checking the default model…")
        for tab in TABS:
            tab.build_tab()
        with gr.Accordion("About this Space, and where each model stands", open=False):
            gr.Markdown(INTRO)
            models = gr.Markdown()
        demo.load(status.status_markdown, outputs=status_line, api_visibility="private")
        demo.load(status.models_markdown, outputs=models, api_visibility="private")
        demo.unload(stop_flags.drop)
    return demo.queue(default_concurrency_limit=2, max_size=int(os.environ.get("STEER_QUEUE_SIZE", "32")))


def launch_options() -> dict:
    """What `python app.py` launches with (and the tests and benchmarks that serve the page): uploads capped,
    Gradio's state of each visitor's page (about 0.5 MB, a copy of the page's configuration) kept for the SESSIONS
    most recent visitors, the older ones' dropped, so that memory stays flat however many visitors come; and an MCP
    server beside the page, whose tools are the method endpoints (gradio_api/mcp/)."""
    return dict(max_file_size="20mb", theme=gr.themes.Soft(), state_session_capacity=SESSIONS, mcp_server=True)


if gpu.ZERO_GPU:  # ZeroGPU runs each GPU function in a worker: load the models once, here
    status.preload()
demo = build_demo()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    demo.launch(server_name=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"), **launch_options())
