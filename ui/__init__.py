"""Gradio tabs, one per method; no sampling math here, only calls into `pipelines`."""
