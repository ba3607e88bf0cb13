"""Model cards for converted RoboPoint checkpoints, generated from the registry in :mod:`.checkpoints`.

The converter writes the card of its source into the output folder; ``python -m robopoint_hf.original.model_card DIR``
(re)writes the six cards of the published checkpoints (``model_cards/`` in the repository, checked by a test so
that they never drift from the registry). Pure Python.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from robopoint_hf.checkpoints import CHECKPOINTS, ORIGINAL_REPOSITORY, PAPER, CheckpointInfo, find_checkpoint

CITATION = """@article{yuan2024robopoint,
  title={RoboPoint: A Vision-Language Model for Spatial Affordance Prediction for Robotics},
  author={Yuan, Wentao and Duan, Jiafei and Blukis, Valts and Pumacay, Wilbert and Krishna, Ranjay and
          Murali, Adithyavairavan and Mousavian, Arsalan and Fox, Dieter},
  journal={arXiv preprint arXiv:2406.10721},
  year={2024}
}"""

_QUESTION = (
    "Find a few spots within the vacant area on the rightmost white plate. Your answer should be formatted as a "
    "list of tuples, i.e. [(x1, y1), (x2, y2), ...], where each tuple contains the x and y coordinates of a point "
    "satisfying the conditions above. The coordinates should be between 0 and 1, indicating the normalized pixel "
    "locations of the points in the image."
)


def _front_matter(info: CheckpointInfo | None, target: str) -> str:
    base_model = info.hub_id if info is not None else None
    lines = ["---"]
    lines.append(f"license: {info.license if info is not None else 'other'}")
    if base_model:
        lines += ["base_model:", f"- {base_model}"]
    lines += [
        "pipeline_tag: image-text-to-text",
        "library_name: transformers",
        "tags:",
        "- robotics",
        "- spatial-affordance",
        "- pointing",
        "- llava",
        "- robopoint",
    ]
    if target == "robopoint":
        lines.append("- custom_code")
    lines += ["datasets:", "- wentao-yuan/robopoint-data", "---"]
    return "\n".join(lines) + "\n"


def render_model_card(
    source: str | os.PathLike | CheckpointInfo,
    *,
    target: str = "robopoint",
    prompt_template: str | None = None,
    config=None,
    repo_id: str = "<your-namespace>/<this-repo>",
) -> str:
    """Markdown model card (Hub front matter + usage + results + citation) for a converted checkpoint.

    Args:
        source (`str`, `os.PathLike` or `CheckpointInfo`): the original checkpoint (Hub id, folder or entry).
        target (`str`, *optional*, defaults to `"robopoint"`): `"robopoint"` or `"llava"` (plain LLaVA export).
        prompt_template (`str`, *optional*): template recorded in the config; defaults to the registry's.
        config (*optional*): the converted config, for the architecture line.
        repo_id (`str`, *optional*): where the folder will be uploaded, used in the code snippets.
    """
    info = source if isinstance(source, CheckpointInfo) else find_checkpoint(str(source))
    template = prompt_template or (info.prompt_template if info is not None else "vicuna_v1")
    name = info.name if info is not None else Path(str(source)).name
    projector = info.projector_type if info is not None else getattr(config, "projector_type", "see config.json")
    title = f"# {name} ({'transformers-native' if target == 'robopoint' else 'plain LLaVA export'})"
    origin = (
        f"Converted from [`{info.hub_id}`](https://huggingface.co/{info.hub_id}) "
        f"({'full fine-tune' if info.kind == 'full' else f'LoRA adapter merged into `{info.lora_base}`'}, "
        f"{info.size.upper()})"
        if info is not None
        else f"Converted from the original-format checkpoint `{source}`"
    )
    if target == "robopoint":
        usage = f"""```python
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor, pipeline

model = AutoModelForImageTextToText.from_pretrained("{repo_id}", trust_remote_code=True)
processor = AutoProcessor.from_pretrained("{repo_id}", trust_remote_code=True)
inputs = processor(images=Image.open("sink.jpg"), text="{_QUESTION[:70]}...", return_tensors="pt")
ids = model.generate(**inputs, max_new_tokens=128)
print(processor.batch_decode(ids[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0])
# e.g. "[(0.461, 0.527), (0.498, 0.521), ...]"  -- x, y normalized to the original image

# or, with the robopoint_hf package installed (no remote code needed):
# from robopoint_hf import RoboPointForConditionalGeneration, RoboPointProcessor
```

A plain-LLaVA copy for engines without remote code: `robopoint export {repo_id} OUT --format llava`."""
    else:
        usage = f"""```python
from PIL import Image
from transformers import pipeline

pipe = pipeline("image-text-to-text", model="{repo_id}")  # no trust_remote_code: plain LlavaForConditionalGeneration
messages = [{{"role": "user", "content": [{{"type": "image", "image": "sink.jpg"}},
                                          {{"type": "text", "text": "{_QUESTION[:60]}..."}}]}}]
print(pipe(text=messages, max_new_tokens=128, return_full_text=False)[0]["generated_text"])
```

The chat template renders the `{template}` prompt; the tokenizer has `<image>` as id 32000 (llava-hf
convention) and one extra, all-zero vocabulary row for it, suppressed by `generation_config.json`: logits over the
original 32000 tokens are identical to the original model's."""
        if projector == "linear":
            usage += (
                '\n\n**Serving engines:** the linear projector is expressed as `projector_hidden_act: "linear"` '
                "with an identity second layer; transformers runs it exactly, but vLLM has no `linear` activation "
                "and cannot load this variant."
            )
    return f"""{_front_matter(info, target)}
{title}

[RoboPoint]({PAPER}) (Yuan et al., 2024) is a LLaVA-1.5 vision-language model (CLIP ViT-L/14-336 -> projector ->
Llama) instruction-tuned on synthetic data to answer spatial-affordance questions with image points such as
`[(0.461, 0.527), (0.498, 0.521)]` (x, y in [0, 1] relative to the original image).

{origin} with `robopoint convert` (robopoint_hf). The conversion is exact: on the test fixtures
converted models reproduce the original code's float32 logits within 1e-4 and its greedy tokens exactly.

| | |
|---|---|
| projector | `{projector}` |
| vision tower | `openai/clip-vit-large-patch14-336`, hidden state -2, CLS dropped (576 image tokens) |
| image preprocessing | pad to square with (122, 116, 104), then CLIP resize/normalize |
| prompt template | `{template}` (the training template; the original evaluation used `llava_v1`) |
| original code | {ORIGINAL_REPOSITORY} |

## Usage

{usage}

## Results

| benchmark | RoboPoint (paper) | source |
|---|---|---|
| Where2Place (100 real images, free-space questions), accuracy % | 46.77 ± 0.45 | {PAPER}, results table |

The paper reports one RoboPoint model and does not say which of the six released variants produced the number; no
per-variant scores are published. It also reports that RoboPoint outperforms GPT-4o and the visual-prompting method
PIVOT by 21.8% in spatial-affordance prediction accuracy and by 30.5% in downstream task success rate (abstract).
The original numbers were produced with `llava_v1` prompts and temperature-0.2 sampling; this card's checkpoint
decodes greedily by default (`generation_config.json`). Re-evaluate with `robopoint eval where2place` (the metric's
`original` protocol reproduces the original scorer exactly).

## Citation

```bibtex
{CITATION}
```
"""


def write_model_cards(folder: str | os.PathLike) -> list[Path]:
    """Writes `<name>.md` for every published checkpoint into `folder` (the repository's `model_cards/`)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for info in CHECKPOINTS:
        path = folder / f"{info.name}.md"
        path.write_text(render_model_card(info, repo_id=f"robopoint-hf/{info.name}"))
        paths.append(path)
    return paths


if __name__ == "__main__":
    for written in write_model_cards(sys.argv[1] if len(sys.argv) > 1 else "model_cards"):
        print(written)


__all__ = ["CITATION", "render_model_card", "write_model_cards"]
