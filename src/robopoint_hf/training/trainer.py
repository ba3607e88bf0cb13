# /// script
# dependencies = ["robopoint_hf[train]"]
# ///
"""Fine-tune RoboPoint with TRL's `SFTTrainer`: full, LoRA or QLoRA, on RoboPoint-format data.

Requires the ``train`` extra (``pip install "robopoint_hf[train]"``). Recipes with the original hyper-parameters are
in ``examples/recipes/``; multi-GPU configs in ``examples/accelerate_configs/``.

```
# Stage 2 from parts (what RoboPoint did): Vicuna + CLIP + LLaVA stage-1 projector, LoRA, 8 GPUs with ZeRO-3
accelerate launch --config_file examples/accelerate_configs/deepspeed_zero3.yaml examples/sft_robopoint.py \
    --config examples/recipes/lora_vicuna_7b.yaml

# Full fine-tune of a RoboPoint checkpoint on your own data
robopoint train --data my_data.json --image-folder images --model wentao-yuan/robopoint-v1-vicuna-v1.5-13b-hf \
    --output-dir runs/full

# LoRA (r 128, alpha 256, projector trained at 2e-5)
robopoint train --data robopoint_1432k.json --image-folder images --model BASE_OR_ROBOPOINT --lora \
    --output-dir runs/lora

# QLoRA: 4-bit language model, LoRA on top
robopoint train --data my_data.json --image-folder images --model ROBOPOINT --lora --load-in-4bit --output-dir runs/qlora
```

What is trained, as in the original scripts: full fine-tuning trains the projector and the whole language model
(embeddings and LM head included) with the CLIP tower frozen; LoRA puts adapters on the q/k/v/o/gate/up/down
projections of the language model only and trains the projector fully (``modules_to_save``) at its own learning
rate. Labels cover every assistant answer and its ``</s>`` (see :mod:`robopoint_hf.training.collator`, which also documents
the multi-turn bug of the original that this fixes). Differences from the original trainer, on purpose: the loss
is averaged over all answer tokens of the accumulated batch (TRL/transformers' token-weighted loss) instead of a
mean of per-micro-batch means; rows longer than ``max_length`` are dropped with a count (or rejected) instead of
being cut.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from trl import SFTConfig, SFTTrainer, TrlParser

if TYPE_CHECKING:
    import datasets

from robopoint_hf.dtypes import torch_dtype

from .arguments import ModelArguments, ScriptArguments

logger = logging.getLogger(__name__)

PROJECTOR_MODULE = "multi_modal_projector"
VISION_TOWER_MODULE = "vision_tower"
COMPONENTS_FILE = "robopoint_components.json"


@dataclass
class RoboPointSFTConfig(SFTConfig):
    r"""[`~trl.SFTConfig`] with the original RoboPoint fine-tuning hyper-parameters as defaults.

    > Parameters that differ from [`~trl.SFTConfig`]

    Args:
        learning_rate (`float`, *optional*, defaults to `2e-5`): full fine-tuning LR (LoRA recipes use 2e-4).
        lr_scheduler_type (`str`, *optional*, defaults to `"cosine"`), warmup_steps (`float`, *optional*,
            defaults to `0.03`): cosine schedule with 3 % warm-up.
        weight_decay (`float`, *optional*, defaults to `0.0`), num_train_epochs (`float`, *optional*,
            defaults to `1`), max_length (`int`, *optional*, defaults to `2048`), logging_steps (`float`,
            *optional*, defaults to `1`), save_steps (`float`, *optional*, defaults to `500`), save_total_limit
            (`int`, *optional*, defaults to `1`): as in the original scripts.
        bf16 (`bool`, *optional*): defaults to `True` where bf16 is available (CUDA), `False` elsewhere.
        activation_checkpointing (`bool`, *optional*, defaults to `True`): TRL's default, under the name
            transformers 5 gives it (TRL's default sets the old name, on which transformers warns on every run);
            ``gradient_checkpointing`` is accepted as its alias.
        dataloader_pin_memory (`bool`, *optional*): `False` without CUDA (pinning only helps copies to a GPU).
        remove_unused_columns (`bool`, *optional*, defaults to `False`), dataset_kwargs (`dict`, *optional*,
            defaults to `{"skip_prepare_dataset": True}`): rows reach [`RoboPointDataCollator`] untouched.

    > Parameters specific to RoboPoint

    Args:
        projector_learning_rate (`float`, *optional*): learning rate of the projector (the original
            ``mm_projector_lr``); defaults to ``learning_rate`` for full fine-tuning and to `2e-5` with LoRA.
        vision_tower_learning_rate (`float`, *optional*): learning rate of the vision tower when it is trained
            (``freeze_vision_tower=False``; LLaVA-NeXT's ``mm_vision_tower_lr``); defaults to ``learning_rate``.
            A patch embedding has hundreds to thousands of inputs per unit, so a rate that suits the language
            model can scramble a tower trained from scratch.
        group_by_modality_length (`bool`, *optional*, defaults to `True`): single-modality, length-balanced
            micro-batches (see :class:`~robopoint_hf.training.collator.ModalityLengthGroupedSampler`).
        length_group_size (`int`, *optional*, defaults to `1`): with ``group_by_modality_length``, how many
            megabatches are sorted by length together, so that micro-batches hold rows of similar length and pad
            less (transformers' ``group_by_length`` idea; `1` is the original batching).
    """

    learning_rate: float = field(default=2e-5, metadata={"help": "Peak learning rate."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Learning-rate schedule."})
    warmup_steps: float = field(default=0.03, metadata={"help": "Warm-up steps, or a ratio of all steps if < 1."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs."})
    max_length: int | None = field(default=2048, metadata={"help": "Longest row, image positions included."})
    logging_steps: float = field(default=1, metadata={"help": "Log every N steps."})
    save_steps: float = field(default=500, metadata={"help": "Checkpoint every N steps."})
    save_total_limit: int | None = field(default=1, metadata={"help": "Checkpoints kept."})
    bf16: bool | None = field(default=None, metadata={"help": "bf16 mixed precision; default: where available."})
    activation_checkpointing: bool | None = field(
        default=None, metadata={"help": "Recompute activations to save memory (default: on, as TRL)."}
    )
    gradient_checkpointing: bool | None = field(
        default=None, metadata={"help": "Old name of activation_checkpointing (transformers 5 renamed it)."}
    )
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep the rows' columns for the collator."})
    dataset_kwargs: dict[str, Any] | None = field(
        default_factory=lambda: {"skip_prepare_dataset": True}, metadata={"help": "Dataset preparation options."}
    )
    projector_learning_rate: float | None = field(
        default=None, metadata={"help": "Projector LR (original mm_projector_lr); default: lr, or 2e-5 with LoRA."}
    )
    vision_tower_learning_rate: float | None = field(
        default=None, metadata={"help": "Vision-tower LR when it is trained (mm_vision_tower_lr); default: lr."}
    )
    group_by_modality_length: bool = field(
        default=True, metadata={"help": "Single-modality, length-balanced micro-batches."}
    )
    length_group_size: int = field(
        default=1, metadata={"help": "Megabatches sorted by length together (less padding); 1: original batching."}
    )

    def __post_init__(self):
        for flag, value in (
            ("--per-device-train-batch-size", self.per_device_train_batch_size),
            ("--gradient-accumulation-steps", self.gradient_accumulation_steps),
        ):
            if value < 1:
                raise ValueError(f"{flag} must be a positive integer, got {value}")
        if self.learning_rate < 0:
            raise ValueError(f"--learning-rate must be >= 0, got {self.learning_rate}")
        if self.bf16 is None and not self.fp16:
            self.bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        if not torch.cuda.is_available():  # pinned host memory only speeds copies to a GPU; torch warns without one
            self.dataloader_pin_memory = False
        if self.activation_checkpointing is None:  # the old name is an alias here, not a deprecation to warn about
            self.activation_checkpointing = (
                True if self.gradient_checkpointing is None else self.gradient_checkpointing
            )
            self.gradient_checkpointing = None
        super().__post_init__()


def _checkpoint_state_dict(folder: str | os.PathLike) -> dict[str, torch.Tensor] | None:
    """All tensors of a saved (possibly sharded) safetensors model folder, or ``None`` if it holds none."""
    from safetensors.torch import load_file

    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (folder / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        return None
    state: dict[str, torch.Tensor] = {}
    for name in files:
        state.update(load_file(folder / name))
    return state


def load_saved_weights(model: torch.nn.Module, folder: str | os.PathLike) -> bool:
    """Loads a RoboPoint checkpoint folder (llava-hf key layout, see ``save_pretrained``) into ``model``, strictly.

    Returns ``False`` when the folder holds no safetensors weights.
    """
    from robopoint_hf.model.modeling_robopoint import from_llava_hf_key

    state = _checkpoint_state_dict(folder)
    if state is None:
        return False
    renamed = {from_llava_hf_key(key, strict=False): tensor for key, tensor in state.items()}
    model.load_state_dict(renamed, strict=True)
    return True


class RoboPointSFTTrainer(SFTTrainer):
    r"""[`~trl.SFTTrainer`] with RoboPoint's batching, per-part learning rates and checkpoint layout.

    Overwritten -- ``_get_train_sampler`` (modality/length-grouped micro-batches), ``create_optimizer`` (separate
    projector and vision-tower learning rates: the original ``mm_projector_lr``, LLaVA-NeXT's ``mm_vision_tower_lr``)
    and ``_load_from_checkpoint`` (RoboPoint checkpoints are saved in the llava-hf key layout, which the stock resume
    path would silently fail to load).

    Args:
        modality_lengths (`list[int]`, *optional*): signed length per training row (positive = image row), from
            :func:`~robopoint_hf.training.collator.conversation_lengths`; needed when ``group_by_modality_length``.
        **kwargs: passed to [`~trl.SFTTrainer`].
    """

    def __init__(self, *args, modality_lengths: list[int] | None = None, **kwargs):
        self.modality_lengths = modality_lengths
        super().__init__(*args, **kwargs)

    def _get_train_sampler(self, train_dataset=None):
        if not getattr(self.args, "group_by_modality_length", False) or self.modality_lengths is None:
            return super()._get_train_sampler(train_dataset)
        from .collator import ModalityLengthGroupedSampler

        return ModalityLengthGroupedSampler(
            self.modality_lengths,
            micro_batch_size=self.args.per_device_train_batch_size,
            num_chunks=self.args.world_size * self.args.gradient_accumulation_steps,
            seed=self.args.seed,
            length_group_size=getattr(self.args, "length_group_size", 1),
        )

    def create_optimizer(self, model=None):
        rates = {
            PROJECTOR_MODULE: getattr(self.args, "projector_learning_rate", None),
            VISION_TOWER_MODULE: getattr(self.args, "vision_tower_learning_rate", None),
        }
        rates = {
            module: rate for module, rate in rates.items() if rate is not None and rate != self.args.learning_rate
        }
        if self.optimizer is not None or not rates:
            return super().create_optimizer(model)
        model = self.model if model is None else model
        decay = set(self.get_decay_parameter_names(model))
        groups: dict[tuple[str, bool], list[torch.nn.Parameter]] = {}
        for name, parameter in model.named_parameters():
            if parameter.requires_grad:
                module = next((module for module in rates if f"{module}." in name), "")
                groups.setdefault((module, name in decay), []).append(parameter)
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
        self.optimizer = optimizer_cls(
            [
                {
                    "params": params,
                    "weight_decay": self.args.weight_decay if is_decay else 0.0,
                    **({"lr": rates[module]} if module else {}),
                }
                for (module, is_decay), params in sorted(groups.items())
            ],
            **optimizer_kwargs,
        )
        return self.optimizer

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        model = self.model if model is None else model
        plain = not (self.is_deepspeed_enabled or self.is_fsdp_enabled or hasattr(model, "peft_config"))
        if plain and load_saved_weights(model, resume_from_checkpoint):
            logger.info("Loaded model weights from %s.", resume_from_checkpoint)
            return
        super()._load_from_checkpoint(resume_from_checkpoint, model)


def _resolve_dtype(model_args: ModelArguments, training_args: RoboPointSFTConfig) -> torch.dtype:
    if model_args.dtype != "auto":
        return torch_dtype(model_args.dtype)
    return torch.bfloat16 if training_args.bf16 else torch.float32


def load_model_and_processor(model_args: ModelArguments, training_args: RoboPointSFTConfig):
    """Builds the model to train and its processor from :class:`ModelArguments` (see its docstring)."""
    from robopoint_hf.model.modeling_robopoint import RoboPointForConditionalGeneration, quantization_config
    from robopoint_hf.model.processing_robopoint import RoboPointProcessor
    from robopoint_hf.model.templates import get_chat_template

    dtype = _resolve_dtype(model_args, training_args)
    if model_args.model is not None:
        kwargs: dict[str, Any] = {"dtype": dtype}
        if model_args.bits is not None:
            kwargs["quantization_config"] = quantization_config(model_args.bits, compute_dtype=dtype)
        model = RoboPointForConditionalGeneration.from_pretrained(model_args.model, **kwargs)
        processor = RoboPointProcessor.from_pretrained(model_args.model)
    else:
        from .components import from_components, processor_from_components

        template = model_args.prompt_template or "vicuna_v1"
        model = from_components(
            model_args.language_model,
            model_args.vision_tower,
            projector=model_args.projector,
            projector_type=model_args.projector_type,
            prompt_template=template,
            dtype=dtype,
        )
        processor = processor_from_components(model_args.language_model, model.config)
    if model_args.prompt_template is not None:
        processor.prompt_template = model_args.prompt_template
        processor.chat_template = get_chat_template(model_args.prompt_template)
        model.config.prompt_template = model_args.prompt_template
    if processor.tokenizer.pad_token is None:
        processor.tokenizer.pad_token = processor.tokenizer.unk_token
    processor.tokenizer.model_max_length = training_args.max_length or processor.tokenizer.model_max_length
    model.config.use_cache = False
    # The CLIP tower stays frozen in every RoboPoint recipe (full FT of the vision encoder destabilises LLaVA training);
    # only a randomly initialised tower (the shipped tiny model) has to learn.
    model.model.vision_tower.requires_grad_(not model_args.freeze_vision_tower)
    if model_args.bits is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=training_args.gradient_checkpointing,
            gradient_checkpointing_kwargs=training_args.gradient_checkpointing_kwargs,
        )
    return model, processor


def lora_config(model_args: ModelArguments):
    """PEFT config: adapters on the language model's projections only; the projector trained in full."""
    from peft import LoraConfig

    targets = "|".join(model_args.lora_target_modules)
    return LoraConfig(
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout,
        bias="none",
        task_type="CAUSAL_LM",
        # A regex is matched against the full module name: nothing under vision_tower or the projector can match.
        target_modules=rf".*language_model\.layers\.\d+\.(self_attn|mlp)\.({targets})",
        modules_to_save=[PROJECTOR_MODULE],
    )


def prepare_dataset(
    script_args: ScriptArguments, processor, max_length: int | None, num_proc: int | None = None
) -> tuple[datasets.Dataset, list[int], dict[str, int]]:
    """Loads and validates the data, measures every row and applies the ``on_too_long`` policy.

    Returns:
        `tuple`: the dataset, the signed lengths for the sampler, and the counts ``{"kept", "too_long"}``.
    """
    from functools import partial

    from .collator import conversation_lengths
    from .data import load_robopoint_dataset

    dataset = load_robopoint_dataset(
        script_args.data,
        script_args.image_folder,
        on_invalid=script_args.on_invalid,
        cache_dir=script_args.dataset_cache_dir,
    )
    # datasets would fingerprint the function by pickling the whole tokenizer (seconds); what decides the lengths is
    # the rows, the template and the tokenization settings.
    tokenizer = processor.tokenizer
    settings = [dataset._fingerprint, processor.chat_template, processor.image_seq_length, processor.image_token_id]
    settings += [type(tokenizer).__name__, tokenizer.name_or_path, len(tokenizer), getattr(tokenizer, "legacy", None)]
    fingerprint = hashlib.sha256(json.dumps(settings, default=str).encode()).hexdigest()[:16]
    lengths = dataset.map(
        partial(conversation_lengths, processor),
        new_fingerprint=f"robopoint-lengths-{fingerprint}",
        batched=True,
        input_columns=["messages"],
        remove_columns=dataset.column_names,
        num_proc=num_proc,
        desc="Measuring rows",
    )
    num_tokens = lengths["num_tokens"]
    modality = lengths["modality_length"]
    too_long = [index for index, length in enumerate(num_tokens) if max_length is not None and length > max_length]
    if too_long:
        examples = ", ".join(f"{dataset[i]['id']!r} ({num_tokens[i]} tokens)" for i in too_long[:5])
        if script_args.on_too_long == "error":
            raise ValueError(
                f"{len(too_long)} row(s) of {script_args.data} are longer than max_length={max_length} (image positions "
                f"included), e.g. {examples}. Rows are never cut; pass --on-too-long skip to drop them, or raise "
                "--max-length."
            )
        logger.warning("Dropping %d row(s) longer than max_length=%d, e.g. %s.", len(too_long), max_length, examples)
        keep = sorted(set(range(len(dataset))) - set(too_long))
        dataset = dataset.select(keep)
        modality = [modality[index] for index in keep]
    return dataset, modality, {"kept": len(dataset), "too_long": len(too_long)}


def build_trainer(
    script_args: ScriptArguments,
    training_args: RoboPointSFTConfig,
    model_args: ModelArguments,
    *,
    max_samples: int | None = None,
    callbacks: list | None = None,
) -> RoboPointSFTTrainer:
    """Model, processor, data and [`RoboPointSFTTrainer`] as configured, ready to ``train()``.

    ``max_samples`` keeps the first rows only (smoke runs); ``callbacks`` go to the trainer.
    """
    model, processor = load_model_and_processor(model_args, training_args)
    dataset, modality_lengths, counts = prepare_dataset(
        script_args, processor, training_args.max_length, training_args.dataset_num_proc
    )
    if max_samples is not None and max_samples < len(dataset):
        dataset, modality_lengths = dataset.select(range(max_samples)), modality_lengths[:max_samples]
    logger.info("Training on %d rows (%d dropped as too long).", len(dataset), counts["too_long"])
    return make_trainer(model, processor, dataset, modality_lengths, training_args, model_args, callbacks=callbacks)


def make_trainer(
    model,
    processor,
    dataset: datasets.Dataset,
    modality_lengths: list[int] | None,
    training_args: RoboPointSFTConfig,
    model_args: ModelArguments,
    *,
    callbacks: list | None = None,
) -> RoboPointSFTTrainer:
    """[`RoboPointSFTTrainer`] over a model and data already prepared (see :func:`build_trainer`): our collator,
    LoRA from ``model_args`` and the LoRA projector learning rate of the original scripts."""
    from .collator import RoboPointDataCollator

    if model_args.lora and training_args.projector_learning_rate is None:
        training_args.projector_learning_rate = 2e-5  # the original mm_projector_lr of the LoRA scripts
    trainer = RoboPointSFTTrainer(
        model=model,
        args=training_args,
        data_collator=RoboPointDataCollator(processor, max_length=training_args.max_length),
        train_dataset=dataset,
        processing_class=processor,
        peft_config=lora_config(model_args) if model_args.lora else None,
        modality_lengths=modality_lengths,
        callbacks=callbacks,
    )
    if model_args.bits is not None and not training_args.bf16:
        # TRL keeps QLoRA's trainable weights in bf16 for mixed-precision GPUs; without bf16 autocast they must match
        # the fp32 activations.
        for parameter in trainer.model.parameters():
            if parameter.requires_grad:
                parameter.data = parameter.data.float()
    return trainer


def leave_process_group() -> None:
    """Ends a ``torchrun`` run cleanly: waits for every rank, then destroys the process group.

    Why: the Trainer (through accelerate) creates the group and never destroys it; a rank that exits while the
    others still write files can be killed at interpreter shutdown by gloo's threads ("terminate called without an
    active exception", SIGABRT), which fails the whole run after training succeeded. A no-op without a group.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def save_final_model(trainer, output_dir: str | os.PathLike, generation_config=None) -> None:
    """Writes the trained model + processor into ``output_dir`` through the package's one save path: a Hub-native
    checkpoint that appears complete or not at all (`hub_checkpoint.staged_files`; the ``checkpoint-*`` folders
    stay). Called on every process: saving a sharded model is collective."""
    from robopoint_hf.hub_checkpoint import staged_files

    main_process = trainer.is_world_process_zero()
    with staged_files(output_dir, main_process=main_process) as staged:
        trainer.save_model(str(staged))  # writes on the main process only
        if main_process:
            trainer.processing_class.save_pretrained(staged)
            if generation_config is not None:
                generation_config.save_pretrained(staged)


def main(script_args: ScriptArguments, training_args: RoboPointSFTConfig, model_args: ModelArguments) -> Path:
    """Trains as configured and saves the result (full model, or LoRA adapter + projector) in ``output_dir``.

    A run whose ``output_dir`` already holds ``checkpoint-*`` folders resumes from the last one (as the original
    did) unless ``resume_from_checkpoint`` says otherwise.

    Returns:
        `Path`: the output folder.
    """
    from transformers.trainer_utils import get_last_checkpoint

    trainer = build_trainer(script_args, training_args, model_args)
    checkpoint = training_args.resume_from_checkpoint
    if checkpoint is None and os.path.isdir(training_args.output_dir):
        checkpoint = get_last_checkpoint(training_args.output_dir)
        if checkpoint is not None:
            logger.info("Resuming from %s (found in output_dir).", checkpoint)
    trainer.train(resume_from_checkpoint=checkpoint)
    output_dir = Path(training_args.output_dir)
    if model_args.lora:  # an adapter, not a checkpoint: `robopoint merge-lora` makes the checkpoint
        trainer.save_model(str(output_dir))
        trainer.processing_class.save_pretrained(output_dir)
    else:
        save_final_model(trainer, output_dir)
    if model_args.lora and model_args.model is None:
        # The adapter's base is an assembly of parts, not a folder: record the parts so merge-lora can rebuild it.
        parts = {
            key: getattr(model_args, key) for key in ("language_model", "vision_tower", "projector", "projector_type")
        }
        parts["prompt_template"] = trainer.processing_class.prompt_template
        (output_dir / COMPONENTS_FILE).write_text(json.dumps(parts, indent=1))
    leave_process_group()
    return output_dir


def make_parser(subparsers=None, prog: str | None = None) -> TrlParser:
    """Parser over (:class:`ScriptArguments`, :class:`RoboPointSFTConfig`, :class:`ModelArguments`); ``--config``
    reads a YAML recipe whose values the command line overrides."""
    dataclass_types = (ScriptArguments, RoboPointSFTConfig, ModelArguments)
    if subparsers is not None:
        return subparsers.add_parser("train", help="Fine-tune RoboPoint.", dataclass_types=dataclass_types)
    return TrlParser(dataclass_types, prog=prog)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main(*make_parser().parse_args_and_config())
