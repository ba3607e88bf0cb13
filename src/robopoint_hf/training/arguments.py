"""The training command's own arguments (data and model), as dataclasses without heavy imports.

They are parsed together with TRL's ``SFTConfig`` by `robopoint_hf.training.trainer.make_parser`; kept apart from the
trainer so that ``robopoint train --help`` can list them without importing torch, transformers or TRL.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from robopoint_hf.checkpoints import CLIP_VIT_L_336
from robopoint_hf.dtypes import DTYPE_CHOICES
from robopoint_hf.model.templates import TEMPLATE_NAMES

LORA_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class ScriptArguments:
    r"""Arguments for the training data.

    Args:
        data (`str`): RoboPoint-format JSON list (e.g. ``robopoint_1432k.json``).
        image_folder (`str`, *optional*): folder the records' ``image`` paths are relative to.
        on_invalid (`str`, *optional*, defaults to `"error"`): ``"error"`` stops at the first bad record,
            ``"skip"`` drops bad records and reports the counts (see :mod:`robopoint_hf.training.data`).
        on_too_long (`str`, *optional*, defaults to `"error"`): what to do with rows longer than ``max_length``
            (image positions included): ``"error"`` or ``"skip"`` (dropped and counted). Rows are never cut.
        dataset_cache_dir (`str`, *optional*): where the converted Arrow file goes.
    """

    data: str | None = field(default=None, metadata={"help": "RoboPoint-format JSON list."})
    image_folder: str | None = field(
        default=None,
        metadata={"help": "Folder the records' image paths are relative to."},
    )
    on_invalid: str = field(
        default="error",
        metadata={
            "help": "Bad records: stop or skip-and-count.",
            "choices": ["error", "skip"],
        },
    )
    on_too_long: str = field(
        default="error",
        metadata={
            "help": "Rows over max_length: stop or drop-and-count.",
            "choices": ["error", "skip"],
        },
    )
    dataset_cache_dir: str | None = field(default=None, metadata={"help": "Cache folder for the converted dataset."})

    def __post_init__(self):
        if self.data is None:
            raise ValueError("--data is required: the RoboPoint-format JSON list to train on.")


@dataclass
class ModelArguments:
    r"""Arguments for the model to train.

    > Starting point: either a RoboPoint checkpoint (``model``), or the parts of a stage-2 run (``language_model``,
    > ``vision_tower``, optional ``projector``).

    Args:
        model (`str`, *optional*): RoboPoint checkpoint folder or Hub id.
        language_model (`str`, *optional*): chat LLM folder or Hub id (e.g. ``lmsys/vicuna-7b-v1.5``).
        vision_tower (`str`, *optional*, defaults to `"openai/clip-vit-large-patch14-336"`): CLIP folder or Hub id.
        projector (`str`, *optional*): stage-1 ``mm_projector.bin``.
        projector_type (`str`, *optional*, defaults to `"mlp2x_gelu"`): ``linear`` or ``mlp{N}x_gelu``.
        prompt_template (`str`, *optional*): chat template to train with; defaults to the checkpoint's
            (``vicuna_v1`` for parts, the template RoboPoint trained every checkpoint with).
        dtype (`str`, *optional*, defaults to `"auto"`): weights dtype; ``auto`` = bfloat16 when training in bf16,
            else float32.

    > LoRA / QLoRA

    Args:
        lora (`bool`, *optional*, defaults to `False`): train LoRA adapters instead of the full language model.
        lora_r (`int`, *optional*, defaults to `128`), lora_alpha (`int`, *optional*, defaults to `256`),
        lora_dropout (`float`, *optional*, defaults to `0.05`): LoRA settings of the original scripts.
        lora_target_modules (`list[str]`, *optional*): projections of the LANGUAGE MODEL that get adapters
            (never the vision tower or the projector).
        load_in_4bit (`bool`, *optional*, defaults to `False`), load_in_8bit (`bool`, *optional*, defaults to
            `False`): load the language model quantized (QLoRA: NF4; or LLM.int8), TRL ``ModelConfig``'s names;
            requires ``lora``. After validation ``bits`` holds 4, 8 or `None` (``bits`` as an input is the previous
            release's spelling, deprecated).
    """

    model: str | None = field(
        default=None,
        metadata={"help": "RoboPoint checkpoint (folder or Hub id)."},
    )
    language_model: str | None = field(default=None, metadata={"help": "Stage-2 start: chat LLM."})
    vision_tower: str = field(
        default=CLIP_VIT_L_336,
        metadata={"help": "Stage-2 start: CLIP tower."},
    )
    projector: str | None = field(default=None, metadata={"help": "Stage-2 start: stage-1 mm_projector.bin."})
    projector_type: str = field(default="mlp2x_gelu", metadata={"help": "linear or mlp{N}x_gelu."})
    prompt_template: str | None = field(
        default=None,
        metadata={
            "help": "Chat template.",
            "choices": [*TEMPLATE_NAMES, None],
        },
    )
    dtype: str = field(default="auto", metadata={"help": "Weights dtype.", "choices": ["auto", *DTYPE_CHOICES]})
    lora: bool = field(default=False, metadata={"help": "Train LoRA adapters on the language model."})
    lora_r: int = field(default=128, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=256, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: list(LORA_TARGET_MODULES),
        metadata={"help": "Language-model projections that get adapters."},
    )
    load_in_4bit: bool = field(default=False, metadata={"help": "Load the language model in 4-bit NF4 (QLoRA)."})
    load_in_8bit: bool = field(default=False, metadata={"help": "Load the language model in 8-bit (LLM.int8)."})
    bits: int | None = field(
        default=None,
        metadata={"help": "Deprecated: use --load-in-4bit or --load-in-8bit.", "choices": [4, 8, None]},
    )
    freeze_vision_tower: bool = field(
        default=True,
        metadata={"help": "Keep CLIP frozen (every RoboPoint recipe); only a tower trained from scratch needs False."},
    )

    def __post_init__(self):
        if (self.model is None) == (self.language_model is None):
            raise ValueError(
                "Give exactly one starting point: --model (a RoboPoint checkpoint) or --language-model (+ "
                f"--vision-tower, --projector) for stage 2 from parts; got model={self.model!r}, "
                f"language_model={self.language_model!r}."
            )
        if self.bits is not None:
            warnings.warn(
                f"--bits {self.bits} is deprecated and will be removed in the next release; use --load-in-{self.bits}bit",
                FutureWarning,
                stacklevel=2,
            )
            self.load_in_4bit, self.load_in_8bit = (
                self.load_in_4bit or self.bits == 4,
                self.load_in_8bit or self.bits == 8,
            )
        if self.lora and (self.lora_r < 1 or self.lora_alpha <= 0 or not 0 <= self.lora_dropout < 1):
            raise ValueError(
                "LoRA needs --lora-r >= 1, --lora-alpha > 0 and 0 <= --lora-dropout < 1; got "
                f"{self.lora_r}, {self.lora_alpha} and {self.lora_dropout}."
            )
        if self.load_in_4bit and self.load_in_8bit:
            raise ValueError("--load-in-4bit and --load-in-8bit exclude each other; give one.")
        self.bits = 4 if self.load_in_4bit else 8 if self.load_in_8bit else None
        if self.bits is not None and not self.lora:
            raise ValueError(f"--load-in-{self.bits}bit trains adapters on a quantized model and needs --lora.")
        if self.bits is not None and self.model is None:
            raise NotImplementedError(
                "Quantized training from parts is not supported: assemble the model once with "
                "robopoint_hf.training.components.from_components(...).save_pretrained(folder), then pass --model folder."
            )


__all__ = ["LORA_TARGET_MODULES", "ModelArguments", "ScriptArguments"]
