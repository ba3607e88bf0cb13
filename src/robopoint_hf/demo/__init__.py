"""The Gradio demo (``robopoint demo``); needs the ``demo`` extra."""
