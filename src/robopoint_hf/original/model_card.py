"""Model cards: converted RoboPoint checkpoints and models trained from scratch on synthetic scenes.

Converted checkpoints: the converter writes the card of its source into the output folder; ``python -m
robopoint_hf.original.model_card DIR`` (re)writes the six cards of the published checkpoints (``model_cards/`` in the
repository, checked by a test so that they never drift from the registry).

Models trained from scratch (the shipped default model, ``scripts/tiny_model.py ship``): the card is a function of
the files in the folder (``config.json``, ``generation_config.json``, ``train_summary.json``, ``eval_results.json``,
``examples.json``), so a test can check that a shipped card is what this module writes. Pure Python.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from robopoint_hf.checkpoints import CHECKPOINTS, ORIGINAL_REPOSITORY, PAPER, CheckpointInfo, find_checkpoint

CITATION = """@article{yuan2024robopoint,
  title={RoboPoint: A Vision-Language Model for Spatial Affordance Prediction for Robotics},
  author={Yuan, Wentao and Duan, Jiafei and Blukis, Valts and Pumacay, Wilbert and Krishna, Ranjay and
          Murali, Adithyavairavan and Mousavian, Arsalan and Fox, Dieter},
  journal={arXiv preprint arXiv:2406.10721},
  year={2024}
}"""

CITATION_SECTION = f"## Citation\n\n```bibtex\n{CITATION}\n```\n"

_QUESTION = (
    "Find a few spots within the vacant area on the rightmost white plate. Your answer should be formatted as a "
    "list of tuples, i.e. [(x1, y1), (x2, y2), ...], where each tuple contains the x and y coordinates of a point "
    "satisfying the conditions above. The coordinates should be between 0 and 1, indicating the normalized pixel "
    "locations of the points in the image."
)


def front_matter(
    *, license: str, tags: Sequence[str], base_model: str | None = None, datasets: Sequence[str] = ()
) -> str:
    """The Hub's YAML metadata block that opens every card this module writes."""
    lines = ["---", f"license: {license}"]
    if base_model:
        lines += ["base_model:", f"- {base_model}"]
    lines += ["pipeline_tag: image-text-to-text", "library_name: transformers", "tags:"]
    lines += [f"- {tag}" for tag in tags]
    if datasets:
        lines += ["datasets:", *(f"- {name}" for name in datasets)]
    return "\n".join([*lines, "---"]) + "\n"


def _converted_front_matter(info: CheckpointInfo | None, target: str) -> str:
    tags = ["robotics", "spatial-affordance", "pointing", "llava", "robopoint"]
    return front_matter(
        license=info.license if info is not None else "other",
        base_model=info.hub_id if info is not None else None,
        tags=[*tags, "custom_code"] if target == "robopoint" else tags,
        datasets=["wentao-yuan/robopoint-data"],
    )


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

A plain-LLaVA copy for engines without remote code: `robopoint export {repo_id} --output-dir OUT`."""
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
    return f"""{_converted_front_matter(info, target)}
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

{CITATION_SECTION}"""


# ------------------------------------------------------------------------------------ models trained from scratch
TRAIN_SUMMARY_FILE = "train_summary.json"
"""Written by the training recipe: parameters per part and, per stage, steps, minutes, loss, recipe and data."""
EVAL_RESULTS_FILE = "eval_results.json"
"""``{"synthetic": results, "where2place": results or null}``, each as :func:`results_table` reads it."""
EXAMPLES_FILE = "examples.json"
"""The example scenes shipped with the model: image, mask, category, question, the answer it gave."""
IMAGE_ABLATION_MARGIN = 0.02
"""A family counts as image-dependent when the right images beat shuffled ones by at least this much."""


def results_table(results: dict[str, Any]) -> str:
    """A Markdown table of an evaluation of a trained model: one row per category and one for all questions;
    columns model, the model with shuffled images (when evaluated), centre, uniform random, and model / best of the
    two baselines.

    Args:
        results (`dict`): ``num_questions``, ``categories`` (name -> count) and per system (``model``,
            ``model_shuffled_images``, ``centre``, ``uniform_random``) its ``accuracy`` and ``per_category``.
    """
    shuffled = "model_shuffled_images" in results
    systems = ("model", *(("model_shuffled_images",) if shuffled else ()), "centre", "uniform_random")
    header = ["category", "n", "tiny model", *(["same model, images shuffled"] if shuffled else [])]
    header += ["centre", "uniform random", "model / best baseline"]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def row(name: str, count: int, values: list[float]) -> str:
        best = max(values[-2:])
        ratio = f"{values[0] / best:.1f}x" if best > 0 else "inf"
        return f"| {name} | {count} | " + " | ".join(f"{value:.3f}" for value in values) + f" | {ratio} |"

    for category, count in results["categories"].items():
        rows.append(row(category, count, [results[s]["per_category"].get(category, math.nan) for s in systems]))
    rows.append(row("**all**", results["num_questions"], [results[s]["accuracy"] for s in systems]))
    return "\n".join(rows)


def image_ablation_text(results: dict[str, Any]) -> str:
    """The card's paragraph on what the image adds: accuracy with the right images minus with shuffled ones,
    overall and per family (image-dependent from `IMAGE_ABLATION_MARGIN` on). Empty without an ablation row."""
    shuffled = results.get("model_shuffled_images")
    if shuffled is None:
        return ""
    gap = results["model"]["accuracy"] - shuffled["accuracy"]
    per_family = {
        name: results["model"]["per_category"][name] - shuffled["per_category"][name] for name in results["categories"]
    }
    looking = [f"{name} +{value:.3f}" for name, value in per_family.items() if value >= IMAGE_ABLATION_MARGIN]
    if not looking:
        verdict = f"looking at the right image adds {gap:+.3f} overall: the answers come from the question alone"
    elif len(looking) == len(per_family):
        verdict = (
            f"looking at the right image adds {gap:+.3f} overall and matters in every family: {', '.join(looking)}"
        )
    else:
        verdict = (
            f"looking at the right image adds {gap:+.3f} overall; it matters in {', '.join(looking)}, and elsewhere "
            "the answers come from the question alone"
        )
    return (
        f"Image ablation: asked every question about ANOTHER scene's image it scores {shuffled['accuracy']:.3f} "
        f'against {results["model"]["accuracy"]:.3f} with the right one, so {verdict} (column "images '
        'shuffled" above).\n\n'
    )


def data_text(info: dict[str, Any]) -> str:
    """What a training stage's data held, from its ``data_info`` (see ``scripts/tiny_model.py``): a ``robopoint
    synth`` folder, a mixture of them, or only a folder name."""
    if "mixture" in info:
        return "a mixture of " + " and ".join(data_text(part) for part in info["mixture"])
    if "scenes" not in info:
        return f"`{info['name']}`"
    low, high = info["min_objects"], info["max_objects"]
    objects = "one object" if low == high == 1 else f"{low}-{high} objects"
    answers = (
        "one point at the region's centre"
        if info.get("answer") == "centre"
        else f"{info['min_points']}-{info['max_points']} points sampled in the region"
    )
    families = ", ".join(f"{name} {count:,}" for name, count in info["families"].items())
    return (
        f"{info['scenes']:,} synthetic scenes (`robopoint synth`, seed {info['seed']}, {objects} per scene; "
        f"questions: {families}; answers: {answers})"
    )


def stages_text(summary: dict[str, Any]) -> str:
    """One bullet per training stage of a ``train_summary.json``: its data and what the stage did."""
    stages = [*summary.get("earlier_stages", []), summary]
    lines = []
    for number, stage in enumerate(stages, start=1):
        data = data_text(stage["data_info"]) if stage.get("data_info") else "the training data"
        epochs = stage["samples_seen"] / stage["rows"]
        # A run shorter than one logging interval has no logged loss.
        loss = "not logged" if stage["final_loss"] is None else f"{stage['final_loss']:.3f}"
        grouping = stage.get("recipe", {}).get("length_group_size", 1)
        batching = (
            f"; batches of rows of similar length (`length_group_size={grouping}`)"
            if grouping > 1
            else "; batches of random lengths"
        )
        lines.append(
            f"* Stage {number} of {len(stages)}: {data}; {stage['steps']:,} steps ({stage['samples_seen']:,} samples, "
            f"{epochs:.2f} epochs) in **{stage['train_minutes']:.0f} minutes**, final training loss {loss}"
            + ("; vision tower frozen" if stage.get("vision_tower_frozen") else "")
            + batching
            + "."
        )
    return "\n".join(lines)


def render_trained_model_card(folder: str | os.PathLike) -> str:
    """The ``README.md`` of a model trained from scratch on ``robopoint synth`` scenes, from the folder's files.

    Args:
        folder (`str` or `os.PathLike`): a saved model with `TRAIN_SUMMARY_FILE`, `EVAL_RESULTS_FILE` and
            `EXAMPLES_FILE` beside ``config.json`` and ``generation_config.json``.
    """
    folder = Path(folder)

    def read(name: str) -> Any:
        return json.loads((folder / name).read_text())

    config, generation = read("config.json"), read("generation_config.json")
    summary, evaluation, examples = read(TRAIN_SUMMARY_FILE), read(EVAL_RESULTS_FILE), read(EXAMPLES_FILE)
    results, real = evaluation["synthetic"], evaluation.get("where2place")
    vision, text = config["vision_config"], config["text_config"]
    params, recipe = summary["parameters"], summary["recipe"]
    positions = (vision["image_size"] // vision["patch_size"]) ** 2
    quality_note = ""
    if results["model"]["accuracy"] < 0.5:
        quality_note = (
            "**Below the project's quality target** (0.5 on the synthetic split); see the per-family rows above for "
            "what it has and has not learned. Treat it as a demonstration of the pipeline, not as evidence of what "
            "the architecture can learn.\n\n"
        )
    quality_note += image_ablation_text(results)
    real_line = (
        f"On the real Where2Place benchmark (100 photos, 640x480) it scores **{real['model']['accuracy']:.3f}** "
        f"(centre baseline {real['centre']['accuracy']:.3f}, uniform random {real['uniform_random']['accuracy']:.3f}): "
        "it has never seen a photograph, and this number is reported only to make that plain."
        if real
        else "It was not evaluated on real images."
    )
    example = examples[0] if examples else None
    question = example["question"].split(". Your answer")[0] + "." if example else "Point to the red mug."
    image = example["image"] if example else "example.jpg"
    tags = ["robopoint", "llava", "robotics", "affordance", "synthetic-data", "tiny"]
    return f"""{front_matter(license="apache-2.0", tags=tags)}
# Tiny RoboPoint (synthetic tabletop demonstration model)

A **{sum(params.values()) / 1e6:.1f}-million-parameter** RoboPoint (LLaVA-1.5 architecture: CLIP-style ViT -> 2-layer MLP projector -> Llama)
trained **from scratch** on procedurally generated tabletop scenes (`robopoint synth`). It ships inside the
`robopoint_hf` package so that the pipeline, the CLI, the demo and the tests run offline, without downloading a
13-billion-parameter checkpoint.

**This is a demonstration model for synthetic scenes, NOT a real-world model.** It knows five object kinds in eight
flat colours on a plain table, drawn at 160x120 pixels. Do not use it to control a robot. For real images use the
published RoboPoint checkpoints (`wentao-yuan/robopoint-v1-vicuna-v1.5-13b`, converted with `robopoint convert`).

## Usage

```python
from PIL import Image
from robopoint_hf import RoboPointForConditionalGeneration, RoboPointProcessor
from robopoint_hf.model.points import add_answer_format, parse_points
from robopoint_hf.checkpoints import DEFAULT_MODEL_DIR

model = RoboPointForConditionalGeneration.from_pretrained(DEFAULT_MODEL_DIR).eval()
processor = RoboPointProcessor.from_pretrained(DEFAULT_MODEL_DIR)
image = Image.open(DEFAULT_MODEL_DIR / "{image}")
# Like RoboPoint, the model was trained with the answer-format sentence after every question.
inputs = processor(images=image, text=add_answer_format("{question}"), return_tensors="pt")
output = model.generate(**inputs)   # greedy, up to {generation["max_new_tokens"]} new tokens (generation_config.json)
answer = processor.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
print(parse_points(answer).points)
```

`{EXAMPLES_FILE}` lists the example scenes shipped in this folder (image, ground-truth mask, question, the answer
the model gave when it was shipped).

## Model

| part | configuration | parameters |
|---|---|---|
| vision tower | CLIP ViT, {vision["image_size"]} px, patch {vision["patch_size"]} ({positions} positions), width {vision["hidden_size"]}, {vision["num_hidden_layers"]} layers | {params["vision_tower"]:,} |
| projector | {config["projector_type"]}, {vision["hidden_size"]} -> {text["hidden_size"]} -> {text["hidden_size"]} | {params["multi_modal_projector"]:,} |
| language model | Llama, width {text["hidden_size"]}, {text["num_hidden_layers"]} layers, {text["num_attention_heads"]} heads ({text["num_key_value_heads"]} KV heads), MLP {text["intermediate_size"]}, context {text["max_position_embeddings"]} | {params["language_model"]:,} |

Images are padded to a square with the CLIP mean colour and resized (`image_aspect_ratio="{config["image_aspect_ratio"]}"`, as RoboPoint);
the image features are the vision tower's last layer. Prompts use RoboPoint's `{config["prompt_template"]}` template.

**Tokenizer**: Llama-style BPE with byte fallback, {text["vocab_size"]} tokens (`<unk>`=0, `<s>`=1, `</s>`=2, 256 byte
tokens), trained on the synthetic questions and answers. Every word is its own token(s), as with Llama; the fixed
system prompt and answer-format sentence are one token each; a point `(0.461, 0.527)` is six tokens (`0.4` `61`
`, ` `0.5` `27` `), (`), the first of each coordinate a ten-way choice. Words never seen in training fall back to
characters and bytes.

## Training

{stages_text(summary)}
* Everything trained from random initialisation (vision tower included), with the project's TRL trainer
  (`RoboPointSFTTrainer` + `RoboPointDataCollator`: loss on the answer and its `</s>` only). Initialisation: the
  vision tower's position table is a 2-D sin-cos code and the projector's last layer is scaled so that image tokens
  start at unit RMS (`scripts/tiny_model.py build`: at the default init the image tokens say too faintly where they
  are).
* Each stage: AdamW, peak learning rate {recipe["learning_rate"]}, weight decay {recipe["weight_decay"]}, batch
  {recipe["per_device_train_batch_size"]}, gradient clipping {recipe["max_grad_norm"]}; {recipe["warmup_steps"]:.0%} warm-up then
  cosine decay over a WALL-CLOCK budget (on a shared CPU a step's speed varies several-fold, so the schedule follows
  time, not steps), float32, 2 CPU threads, gradient checkpointing \
{"on (TRL's default)" if recipe.get("gradient_checkpointing", True) else "off"}.
* Reproduce: `bash scripts/train_tiny_model.sh` (data -> tokenizer -> training -> evaluation -> this folder). Each
  stage trains for a wall-clock budget, so a rerun reaches other step counts and another model: expect a spread of
  about ±0.03 in the overall score. Why the recipe is what it is, what was tried, and how this model compares with
  reruns: `docs/design/tiny_model.md` in the repository.

## Evaluation

Where2Place metric (`robopoint_hf.evaluation.where2place`, `strict` protocol: normalized points scaled by the real image size,
a question's score is the fraction of its points inside the ground-truth mask, unparseable answers score 0), greedy
decoding, on {results["num_questions"]} held-out synthetic questions (`--split-eval`, scenes never seen in training).
Baselines: one point at the image centre; five uniform random points. "Images shuffled": the same model, each
question asked about the next question's image (what it scores without seeing the scene).

{results_table(results)}

Overall accuracy **{results["model"]["accuracy"]:.3f}**; {results["model"]["num_parsed"]} of {results["num_questions"]} answers parsed
as point lists ({results["model"]["num_failed"]} failures).

{real_line}

## Limitations

{quality_note}Synthetic scenes only; fixed vocabulary of objects, colours and phrasings (other wordings degrade quickly); no
occlusion, no 3D, no real textures. The answer always has 3-8 points because the training answers did.

{CITATION_SECTION}"""


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


__all__ = [
    "CITATION",
    "EVAL_RESULTS_FILE",
    "EXAMPLES_FILE",
    "TRAIN_SUMMARY_FILE",
    "front_matter",
    "image_ablation_text",
    "render_model_card",
    "render_trained_model_card",
    "results_table",
    "stages_text",
    "write_model_cards",
]
