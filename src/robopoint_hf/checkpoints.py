"""Registry of the published RoboPoint checkpoints.

One table, read by the converter (which template and projector a repo was trained with, which base a LoRA repo
needs), by the model cards and by the CLI's help texts. Pure Python: no torch, no transformers.

All six checkpoints were trained with the ``vicuna_v1`` prompt template (``--version v1`` in every original
training script), whatever their language model; see ``templates.py`` for why we record that instead of the
evaluation or demo templates the original code drifted to.

Example:

```python
>>> from robopoint_hf.checkpoints import get_checkpoint
>>> info = get_checkpoint("wentao-yuan/robopoint-v1-vicuna-v1.5-7b-lora")
>>> info.kind, info.lora_base
('lora', 'lmsys/vicuna-7b-v1.5')
```
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

CLIP_VIT_L_336 = "openai/clip-vit-large-patch14-336"
ORIGINAL_REPOSITORY = "https://github.com/wentaoyuan/RoboPoint"
PAPER = "https://arxiv.org/abs/2406.10721"


@dataclass(frozen=True)
class CheckpointInfo:
    """One published RoboPoint checkpoint.

    Args:
        hub_id (`str`): Hugging Face Hub id of the original-format repository.
        kind (`str`): `"full"` (fine-tuned LLM + projector) or `"lora"` (PEFT adapter + `non_lora_trainables.bin`).
        language_model (`str`): Hub id of the language model the run started from.
        projector_type (`str`): `"mlp2x_gelu"` (Vicuna runs) or `"linear"` (Llama-2 runs).
        size (`str`): parameter count of the language model, `"13b"` or `"7b"`.
        prompt_template (`str`, *optional*, defaults to `"vicuna_v1"`): template the checkpoint was trained with.
        vision_tower (`str`, *optional*, defaults to `"openai/clip-vit-large-patch14-336"`): frozen CLIP tower.
    """

    hub_id: str
    kind: Literal["full", "lora"]
    language_model: str
    projector_type: str
    size: str
    prompt_template: str = "vicuna_v1"
    vision_tower: str = CLIP_VIT_L_336

    @property
    def name(self) -> str:
        """Repository name without the owner, e.g. `robopoint-v1-llama-2-13b`."""
        return self.hub_id.split("/", 1)[1]

    @property
    def lora_base(self) -> str | None:
        """The `--model-base` a LoRA checkpoint is merged into (`None` for full checkpoints)."""
        return self.language_model if self.kind == "lora" else None

    @property
    def license(self) -> str:
        """Hub license tag: Llama-2 derivatives inherit Meta's license, Vicuna v1.5 ones the Llama-2 license too."""
        return "llama2"


def _entry(llm_family: str, size: str, kind: Literal["full", "lora"]) -> CheckpointInfo:
    # Vicuna runs used the LLaVA-1.5 MLP projector, Llama-2-chat runs the linear one (original README, scripts).
    if llm_family == "vicuna":
        name, llm, projector = f"vicuna-v1.5-{size}", f"lmsys/vicuna-{size}-v1.5", "mlp2x_gelu"
    else:
        name, llm, projector = f"llama-2-{size}", f"meta-llama/Llama-2-{size}-chat-hf", "linear"
    suffix = "-lora" if kind == "lora" else ""
    return CheckpointInfo(
        hub_id=f"wentao-yuan/robopoint-v1-{name}{suffix}",
        kind=kind,
        language_model=llm,
        projector_type=projector,
        size=size,
    )


CHECKPOINTS: tuple[CheckpointInfo, ...] = (
    _entry("vicuna", "13b", "full"),
    _entry("llama", "13b", "full"),
    _entry("vicuna", "13b", "lora"),
    _entry("llama", "13b", "lora"),
    _entry("vicuna", "7b", "lora"),
    _entry("llama", "7b", "lora"),
)
"""The six published checkpoints, full ones first."""


def get_checkpoint(name_or_id: str) -> CheckpointInfo:
    """Looks a checkpoint up by Hub id (`wentao-yuan/robopoint-v1-llama-2-13b`) or bare name.

    Raises:
        `KeyError`: with the list of known names when `name_or_id` is not a published checkpoint.
    """
    for info in CHECKPOINTS:
        if name_or_id in (info.hub_id, info.name):
            return info
    known = ", ".join(info.name for info in CHECKPOINTS)
    raise KeyError(f"{name_or_id!r} is not a published RoboPoint checkpoint; known: {known}.")


def find_checkpoint(path_or_id: str) -> CheckpointInfo | None:
    """Returns the registry entry whose name is the last component of `path_or_id` (a Hub id or a local
    folder such as a Hub-cache snapshot or `./robopoint-v1-vicuna-v1.5-13b`), or `None` for unknown sources."""
    parts = [part for part in str(path_or_id).replace("\\", "/").split("/") if part]
    for part in reversed(parts):
        for info in CHECKPOINTS:
            # Hub cache folders look like `models--wentao-yuan--robopoint-v1-llama-2-13b`.
            if part == info.name or part.endswith(f"--{info.name}"):
                return info
    return None


DEFAULT_MODEL_DIR = Path(__file__).parent / "default_model"
"""The tiny demonstration RoboPoint shipped inside the package (trained on synthetic scenes by
``scripts/train_tiny_model.sh``): the offline default of ``robopoint predict``, ``pipeline("robopoint")``, the demo
and the evaluation runner. Not a real-world model."""


def default_model() -> str | None:
    """Path of the shipped default model, or None in a build without it."""
    return str(DEFAULT_MODEL_DIR) if (DEFAULT_MODEL_DIR / "config.json").is_file() else None


__all__ = [
    "DEFAULT_MODEL_DIR",
    "default_model",
    "CHECKPOINTS",
    "CLIP_VIT_L_336",
    "CheckpointInfo",
    "find_checkpoint",
    "get_checkpoint",
]
