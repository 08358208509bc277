"""Steering a pretrained diffusion model without retraining it: ILVR, classifier guidance, CycleDiffusion, Asyrp.

Run `python app.py` (or `gradio app.py`). Environment variables are listed in README.md.
"""

from __future__ import annotations

import os

import gradio as gr

from ui import asyrp_tab, common, cycle_tab, guidance_tab, ilvr_tab  # first: ui.common imports spaces before torch
from pipelines import loading

TABS = [ilvr_tab, guidance_tab, cycle_tab, asyrp_tab]

INTRO = """
# Steering a pretrained diffusion model
Four ways to control what a pretrained, *unconditional* diffusion model draws, **without retraining it**.
Each tab is one paper; the explanation under its title gives the update rule it adds to the sampler.
All tabs share one copy of each model. The same seed and settings give the same image on the same device
(a GPU in fp16 and a CPU in fp32 differ slightly).
"""


def build_demo() -> gr.Blocks:
    with gr.Blocks(title="Steering diffusion models without retraining") as demo:
        gr.Markdown(INTRO)
        status = gr.Markdown("Checking the default model…")
        for tab in TABS:
            tab.build_tab()
        demo.load(common.status_markdown, outputs=status, api_visibility="private")
    return demo.queue(default_concurrency_limit=2, max_size=int(os.environ.get("STEER_QUEUE_SIZE", "32")))


if os.environ.get("SPACES_ZERO_GPU"):  # ZeroGPU runs each GPU function in a worker: load the models once, here
    loading.preload()
demo = build_demo()

if __name__ == "__main__":
    demo.launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"),
        max_file_size="20mb",
        theme=gr.themes.Soft(),
    )
