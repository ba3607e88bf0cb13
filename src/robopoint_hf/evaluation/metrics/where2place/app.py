"""Gradio Space for the Where2Place metric (evaluate's launch_gradio_widget targets Gradio 3 and breaks on 4+)."""

import json
from pathlib import Path

import evaluate
import gradio as gr
import numpy as np

metric = evaluate.load(str(Path(__file__).resolve().parent))


def score(answers: str, mask_files: list, protocol: str) -> str:
    """Score one answer per line against the uploaded masks (same order)."""
    from PIL import Image

    texts = [line for line in answers.splitlines() if line.strip()]
    masks = [np.asarray(Image.open(getattr(f, "name", f))) for f in mask_files or []]
    if len(texts) != len(masks):
        return f"Got {len(texts)} answers but {len(masks)} masks."
    return json.dumps(metric.compute(predictions=texts, references=masks, protocol=protocol), indent=2)


demo = gr.Interface(
    fn=score,
    inputs=[
        gr.Textbox(lines=6, label="Answers, one per line", value="[(0.461, 0.527), (0.498, 0.521)]"),
        gr.File(file_count="multiple", label="Masks (greyscale, same order)"),
        gr.Dropdown(["strict", "original", "micro", "roboafford", "category_mean"], value="strict", label="Protocol"),
    ],
    outputs=gr.Code(language="json", label="Result"),
    title="Where2Place",
    description=metric.info.description,
)

if __name__ == "__main__":
    demo.launch()
