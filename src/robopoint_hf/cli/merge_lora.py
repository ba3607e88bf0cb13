"""``robopoint merge-lora`` -- fold a LoRA adapter from ``robopoint train --lora`` into a full RoboPoint checkpoint.

The adapter folder holds the LoRA weights of the language model and the fully trained projector
(``modules_to_save``); merging gives a plain RoboPoint folder that ``AutoModel``/``from_pretrained``, the pipeline
and ``robopoint export`` read. Needs the ``train`` extra (peft). Examples::

    robopoint merge-lora runs/lora --output-dir robopoint-lora-merged --model-base wentao-yuan/robopoint-v1-vicuna-v1.5-13b-hf
    robopoint merge-lora runs/lora --output-dir merged          # base = the adapter's base_model_name_or_path
    robopoint merge-lora runs/stage2-lora --output-dir merged   # stage 2 from parts: base rebuilt from robopoint_components.json

(Adapters of the ORIGINAL RoboPoint code, e.g. ``robopoint-v1-vicuna-v1.5-7b-lora``, are converted with
``robopoint convert ... --model-base``.)
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from robopoint_hf.dtypes import DTYPE_CHOICES, torch_dtype

from .options import add_dataclass_arguments, add_output_dir_arguments, output_dir
from .quiet import silence_progress_bars


def merge_lora(
    adapter: str | os.PathLike,
    out: str | os.PathLike,
    model_base: str | None = None,
    dtype: str = "auto",
    overwrite: bool = False,
) -> Path:
    """Loads the base model, applies the adapter, merges it and saves model + processor to ``out`` (atomically,
    through the package's one save path: a Hub-native folder that ``robopoint export`` reads).

    Args:
        adapter (`str` or `os.PathLike`): PEFT adapter folder written by ``robopoint train --lora``.
        out (`str` or `os.PathLike`): output folder.
        model_base (`str`, *optional*): RoboPoint checkpoint the adapter was trained on; defaults to the adapter's
            ``base_model_name_or_path``, or to the parts recorded in ``robopoint_components.json``.
        dtype (`str`, *optional*, defaults to `"auto"`): dtype of the saved weights (``auto`` = the base's).
        overwrite (`bool`, *optional*, defaults to `False`): replace a non-empty ``out``.

    Returns:
        `Path`: the output folder.
    """
    from peft import PeftModel

    from robopoint_hf.hub_checkpoint import refuse_existing, save_checkpoint
    from robopoint_hf.model.modeling_robopoint import RoboPointForConditionalGeneration
    from robopoint_hf.model.processing_robopoint import RoboPointProcessor
    from robopoint_hf.training.trainer import COMPONENTS_FILE

    refuse_existing(out, overwrite)  # before the (long) merge
    adapter = Path(adapter)
    if not (adapter / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{adapter} holds no adapter_config.json; pass the output folder of a LoRA run.")
    weights_dtype = "auto" if dtype == "auto" else torch_dtype(dtype)
    components = adapter / COMPONENTS_FILE
    if model_base is None and components.is_file():
        from robopoint_hf.training.components import from_components

        parts = json.loads(components.read_text())
        base = from_components(
            parts["language_model"],
            parts["vision_tower"],
            projector=parts.get("projector"),
            projector_type=parts["projector_type"],
            prompt_template=parts.get("prompt_template", "vicuna_v1"),
            dtype=None if weights_dtype == "auto" else weights_dtype,
        )
    else:
        if model_base is None:
            model_base = json.loads((adapter / "adapter_config.json").read_text()).get("base_model_name_or_path")
        if not model_base:
            raise ValueError(f"{adapter}: the adapter does not name its base model; pass --model-base.")
        base = RoboPointForConditionalGeneration.from_pretrained(model_base, dtype=weights_dtype)
    merged = PeftModel.from_pretrained(base, adapter).merge_and_unload()
    processor_source = adapter if (adapter / "processor_config.json").is_file() else model_base
    processor = RoboPointProcessor.from_pretrained(processor_source)
    return save_checkpoint(out, merged, processor, overwrite=overwrite)


@dataclass
class MergeLoraArguments:
    """The options of ``merge-lora``; ADAPTER stays a positional argument."""

    model_base: str | None = field(
        default=None, metadata={"help": "RoboPoint checkpoint the adapter was trained on (default: recorded)."}
    )
    dtype: str = field(default="auto", metadata={"help": "Saved dtype.", "choices": ("auto", *DTYPE_CHOICES)})


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "merge-lora",
        help="merge a LoRA adapter from `robopoint train --lora` into a full RoboPoint checkpoint",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("adapter", help="Adapter folder (output of `robopoint train --lora`).")
    add_dataclass_arguments(parser, MergeLoraArguments)
    add_output_dir_arguments(parser, what="folder of the merged checkpoint")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    silence_progress_bars()
    out = merge_lora(
        args.adapter, output_dir(args), model_base=args.model_base, dtype=args.dtype, overwrite=args.overwrite
    )
    print(out)
    return 0
