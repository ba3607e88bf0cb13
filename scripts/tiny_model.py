"""The tiny RoboPoint: a few-million-parameter model trained from scratch on synthetic scenes, shipped as the
offline default model (``src/robopoint_hf/default_model/``).

Nothing here is pretrained and nothing is downloaded: the tokenizer is trained on the synthetic questions and
answers, the CLIP-style vision tower, projector and Llama-style language model start from random weights and are
trained together (the published RoboPoint freezes a pretrained CLIP; a random one must learn). It is a
DEMONSTRATION model for the scenes of :mod:`robopoint_hf.synthetic.scenes`, not a model of the real world. The one
reproduce command is ``scripts/train_tiny_model.sh``; its steps are the sub-commands of this module::

    robopoint synth --n 40000 --output-dir runs/tiny/data --seed 0 --split-eval 600
    robopoint synth --n 20000 --output-dir runs/tiny/data_one --seed 1 --objects 1-1 \\
        --families object_attribute,object_highlight --answer centre
    robopoint synth --n 20000 --output-dir runs/tiny/data_few --seed 2 --objects 2-3 \\
        --families object_attribute,object_highlight --answer centre
    robopoint synth --n 10000 --output-dir runs/tiny/data_replay --seed 2 --objects 2-3 \\
        --families object_attribute,object_highlight --answer centre
    python scripts/tiny_model.py mix --data runs/tiny/data runs/tiny/data_replay --out runs/tiny/data_mix
    python scripts/tiny_model.py build --data runs/tiny/data --out runs/tiny/init
    python scripts/tiny_model.py train --data runs/tiny/data_one --init runs/tiny/init \\
        --output-dir runs/tiny/stage1 --threads 2 --max-minutes 25 --freeze-vision-tower
    python scripts/tiny_model.py train --data runs/tiny/data_few --init runs/tiny/stage1 \\
        --output-dir runs/tiny/stage2 --threads 2 --max-minutes 15
    python scripts/tiny_model.py train --data runs/tiny/data_mix --init runs/tiny/stage2 \\
        --output-dir runs/tiny/model --threads 2 --max-minutes 20
    python scripts/tiny_model.py evaluate --model runs/tiny/model --data runs/tiny/data/eval --out runs/tiny/eval.json
    python scripts/tiny_model.py ship --model runs/tiny/model --results runs/tiny/eval.json \\
        --answers runs/tiny/eval.answers.jsonl --eval-data runs/tiny/data/eval --out src/robopoint_hf/default_model

What each step does:

* ``build`` trains a Llama-style BPE tokenizer with byte fallback on the synthetic questions and answers (every word
  its own pre-token; the fixed system prompt and answer-format sentence one token each; answers cut into fixed
  pieces, ``"0.4"`` + ``"61"`` per coordinate) and saves a randomly initialised model: a 112-px CLIP-style tower
  with patch 28 (16 image positions), an ``mlp2x_gelu`` projector and a 4-layer Llama, with a 2-D sin-cos position
  table and the projector scaled so that image tokens start at unit RMS.
* ``mix`` writes one training list from several synth folders (stage 3 replays half of stage 2's questions).
* ``train`` runs the project's TRL trainer (:func:`~robopoint_hf.training.trainer.build_trainer`) with every
  parameter trainable unless ``--freeze-vision-tower``, warm-up and cosine decay over a wall-clock budget
  (``--max-minutes``), batches of rows of similar length; it records the stage in ``train_summary.json``.
  ``torchrun --standalone --nproc_per_node 2 scripts/tiny_model.py train ...`` runs it data-parallel on CPU cores.
* ``evaluate`` answers the held-out questions with the library's eval runner
  (:func:`~robopoint_hf.evaluation.runner.run_answers` over a ``RoboPointPipeline``), also with every question asked
  about the next question's image, and scores them and two baselines with the Where2Place ``strict`` protocol.
* ``ship`` writes the shipped folder (weights, example scenes, evaluation results) and its model card
  (:func:`robopoint_hf.original.model_card.render_trained_model_card`) through the package's save path.

Why the recipe is what it is (curriculum, frozen tower in stage 1, replay, image size, batching) and what was
measured on the way: ``docs/design/tiny_model.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from robopoint_hf.checkpoints import DEFAULT_MODEL_DIR
from robopoint_hf.model.points import ANSWER_FORMAT_SUFFIX
from robopoint_hf.model.templates import VICUNA_V1_SYSTEM
from robopoint_hf.original.model_card import TRAIN_SUMMARY_FILE
from robopoint_hf.training.data import mix_robopoint_data

logger = logging.getLogger(__name__)

IMAGE_SIZE = 112
PATCH_SIZE = 28
IMAGE_SEQ_LENGTH = (IMAGE_SIZE // PATCH_SIZE) ** 2
VOCAB_SIZE = 1024
MODEL_MAX_LENGTH = 512
PROMPT_TEMPLATE = "vicuna_v1"
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")
BYTE_TOKENS = tuple(f"<0x{value:02X}>" for value in range(256))

# Pre-token boundaries (applied after spaces became "▁"): every word is its own pre-token, so a colour or an object
# name is the same token in every question. The two fixed sentences come first so that they win over the word rule;
# look-arounds restrict the point pieces to real answers.
FIXED_SENTENCES = (VICUNA_V1_SYSTEM, ANSWER_FORMAT_SUFFIX)
PRETOKEN_PATTERN = (
    "|".join("▁?" + re.escape(sentence.replace(" ", "▁")) for sentence in FIXED_SENTENCES)
    + r"|▁?\[\((?=0\.)"  # start of an answer, with its leading space: "▁[(" before "0."
    r"|(?<=\d)\),▁\((?=0\.)"  # "), (" between two points
    r"|(?<=\d)\)\]"  # ")]" closing the list
    r"|(?<=\d),▁(?=0\.)"  # ", " between x and y
    r"|0\.\d"  # a coordinate's first decimal, "0.4"
    r"|(?<=0\.\d)\d\d?"  # ... and the rest, "61"
    r"|\."  # a full stop, alone: "▁Your▁answer..." is the same pre-token after any question
    r"|\n"
    r"|▁?[^▁\n.,;!?]+"  # any other word, with its leading space and without punctuation ("ASSISTANT:" stays one)
)

# The architecture. Sizes keep the float32 safetensors under the 15 MB budget of the shipped folder.
VISION_CONFIG = {
    "model_type": "clip_vision_model",
    "hidden_size": 128,
    "intermediate_size": 512,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "image_size": IMAGE_SIZE,
    "patch_size": PATCH_SIZE,
    "hidden_act": "quick_gelu",
}
TEXT_CONFIG = {
    "model_type": "llama",
    "hidden_size": 256,
    "intermediate_size": 448,
    "num_hidden_layers": 4,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "max_position_embeddings": MODEL_MAX_LENGTH,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
}

# Training recipe of the shipped model (the defaults of `train`).
RECIPE: dict[str, Any] = {
    "learning_rate": 2e-4,
    "num_train_epochs": 1.0,
    "per_device_train_batch_size": 16,
    "warmup_steps": 0.03,
    "weight_decay": 0.05,
    "max_grad_norm": 1.0,
    "lr_scheduler_type": "cosine",
    "seed": 0,
    # A 3.7 M-parameter model needs no activation memory saved; recomputing the forward only costs steps.
    "activation_checkpointing": False,
    # Micro-batches of rows of similar length: answers hold 1-8 points, and the steps are bound by the language
    # model's tokens, padding included.
    "length_group_size": 50,
}
MAX_NEW_TOKENS = 64
MIX_INFO_FILE = "mix_info.json"  # written by `mix` next to the mixed train.json: where its records came from


# ---------------------------------------------------------------------------------------------------- tokenizer
def training_texts(json_path: str | os.PathLike, system: str | None = None) -> Iterator[str]:
    """The strings the tokenizer is trained on: per record, the rendered prompt pieces and the answer.

    The pieces are cut where :class:`~robopoint_hf.RoboPointProcessor` cuts them (around ``<image>``), so that the
    merges learned are the merges used.
    """
    from robopoint_hf.model.templates import IMAGE_PLACEHOLDER, VICUNA_V1_SYSTEM
    from robopoint_hf.training.data import iter_json_array

    system = VICUNA_V1_SYSTEM if system is None else system
    for record in iter_json_array(json_path):
        turns = record["conversations"]
        yield f"{system} USER: "  # once per row, as often as the model sees it: it must merge like the rest
        for question, answer in zip(turns[::2], turns[1::2], strict=False):
            text = question["value"].replace(IMAGE_PLACEHOLDER, "").strip()
            yield f"\n{text} ASSISTANT:"
            yield f" {answer['value']}"


def train_tokenizer(texts: Iterable[str], vocab_size: int = VOCAB_SIZE, model_max_length: int = MODEL_MAX_LENGTH):
    """Trains the Llama-style BPE tokenizer (see the module docstring) and wraps it for transformers.

    Args:
        texts (`Iterable[str]`): training text, e.g. :func:`training_texts`.
        vocab_size (`int`, *optional*, defaults to `1024`): total vocabulary, special and byte tokens included.
        model_max_length (`int`, *optional*, defaults to `512`): longest sequence the model takes.

    Returns:
        [`~transformers.PreTrainedTokenizerFast`] adding BOS (not EOS) like Llama's, padding with ``<unk>`` (id 0,
        as Vicuna does).
    """
    from tokenizers import Regex, Tokenizer, decoders, models, processors, trainers
    from tokenizers import pre_tokenizers as pre
    from transformers import PreTrainedTokenizerFast

    reserved = len(SPECIAL_TOKENS) + len(BYTE_TOKENS)
    if vocab_size <= reserved + 64:
        raise ValueError(
            f"vocab_size must leave room for merges beyond the {reserved} reserved tokens, got {vocab_size}."
        )
    pre_tokenizer = pre.Sequence(
        [
            # split=False: spaces become "▁" but do not end a pre-token, so merges may span words.
            pre.Metaspace(replacement="▁", prepend_scheme="first", split=False),
            pre.Split(Regex(PRETOKEN_PATTERN), behavior="isolated"),
        ]
    )
    draft = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    draft.pre_tokenizer = pre_tokenizer
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(BYTE_TOKENS), special_tokens=list(SPECIAL_TOKENS), min_frequency=2
    )
    draft.train_from_iterator(texts, trainer)
    learned = json.loads(draft.to_str())["model"]
    # Llama's layout: specials, then the 256 byte-fallback tokens, then the learned pieces in merge order.
    ordered = [*SPECIAL_TOKENS, *BYTE_TOKENS]
    ordered += [
        token for token, _ in sorted(learned["vocab"].items(), key=lambda item: item[1]) if token not in ordered
    ]
    vocab = {token: index for index, token in enumerate(ordered)}
    merges = [tuple(merge) if isinstance(merge, list) else tuple(merge.split(" ")) for merge in learned["merges"]]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True))
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<unk>",
        model_max_length=model_max_length,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )


# ---------------------------------------------------------------------------------------------------- model
def tiny_config(vocab_size: int = VOCAB_SIZE, **overrides: Any):
    """The :class:`~robopoint_hf.RoboPointConfig` of the tiny model (a ~3.6M-parameter LLaVA).

    The image placeholder id is ``vocab_size``: outside the vocabulary, which the model allows (placeholders are
    never embedded) and which keeps the id from colliding with a learned piece.
    """
    from robopoint_hf.model.configuration_robopoint import RoboPointConfig

    kwargs: dict[str, Any] = {
        "vision_config": dict(VISION_CONFIG),
        "text_config": {**TEXT_CONFIG, "vocab_size": vocab_size},
        "projector_type": "mlp2x_gelu",
        "image_token_id": vocab_size,
        "image_seq_length": IMAGE_SEQ_LENGTH,
        "vision_feature_layer": -1,
        "image_aspect_ratio": "pad",
        "prompt_template": PROMPT_TEMPLATE,
    }
    kwargs.update(overrides)
    return RoboPointConfig(**kwargs)


def tiny_processor(tokenizer, config=None):
    """The processor of the tiny model: padded square images of the vision tower's size, the Vicuna-v1 template."""
    from robopoint_hf.model.processing_robopoint import RoboPointProcessor

    return RoboPointProcessor.from_model_config(tokenizer, config or tiny_config(len(tokenizer)))


def generation_config(tokenizer):
    """Greedy decoding, long enough for eight points (six tokens each)."""
    from transformers import GenerationConfig

    return GenerationConfig(
        do_sample=False,
        max_new_tokens=MAX_NEW_TOKENS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def build(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    vocab_size: int = VOCAB_SIZE,
    config_overrides: dict[str, Any] | None = None,
    image_token_rms: float | None = 1.0,
    sincos_positions: bool = True,
    overwrite: bool = False,
):
    """Trains the tokenizer on ``data_dir/train.json`` and saves a randomly initialised model + processor
    (atomically, through the package's one save path).

    Args:
        data_dir (`str`): output folder of ``robopoint synth``.
        out_dir (`str`): where the untrained model, tokenizer and processor go.
        seed (`int`, *optional*, defaults to `0`): seed of the weight initialisation.
        vocab_size (`int`, *optional*, defaults to `1024`): tokenizer size.
        config_overrides (`dict`, *optional*): arguments of :func:`tiny_config` to change (tests shrink the model).
        image_token_rms (`float`, *optional*, defaults to `1.0`): per-channel RMS that the projected image tokens
            start with, on the first training images (see :func:`scale_projector_output`); `None` keeps the
            default initialisation.
        sincos_positions (`bool`, *optional*, defaults to `True`): start the vision tower's position table as a
            2-D sin-cos code (see :func:`sincos_position_table`) instead of small random vectors.
        overwrite (`bool`, *optional*, defaults to `False`): replace a non-empty ``out_dir``.

    Returns:
        `tuple`: the model and the processor (also saved in ``out_dir``).
    """
    import torch

    from robopoint_hf.hub_checkpoint import refuse_existing, save_checkpoint
    from robopoint_hf.model.modeling_robopoint import RoboPointForConditionalGeneration

    refuse_existing(out_dir, overwrite)
    tokenizer = train_tokenizer(training_texts(Path(data_dir) / "train.json"), vocab_size=vocab_size)
    config = tiny_config(len(tokenizer), **(config_overrides or {}))
    processor = tiny_processor(tokenizer, config)
    torch.manual_seed(seed)
    model = RoboPointForConditionalGeneration(config)
    model.generation_config = generation_config(tokenizer)
    if sincos_positions:
        table = model.model.vision_tower.embeddings.position_embedding.weight
        with torch.no_grad():
            table[1:] = sincos_position_table(
                config.vision_config.image_size // config.vision_config.patch_size, table.shape[1]
            )
    if image_token_rms is not None:
        scale_projector_output(model, processor, data_dir, image_token_rms)
    save_checkpoint(out_dir, model, processor, overwrite=overwrite)
    logger.info("Saved an untrained tiny model (%s parameters) to %s.", f"{model.num_parameters():,}", out_dir)
    return model, processor


def sincos_position_table(grid: int, width: int):
    """MAE's 2-D sin-cos position code for a ``grid`` x ``grid`` patch grid: half the channels encode the column.

    Why: a random CLIP position table (std 0.02) is ~30x weaker than the patch embedding (RMS 0.02 vs 0.61 on the
    tiny model's training images), so at the start the image tokens hardly say WHERE they are, which is all the
    answer is about; with this code every token carries its column and row at full strength from step 0 (and the
    table stays trainable).
    """
    import torch

    if width % 4:
        raise ValueError(f"the vision width must be a multiple of 4 for a 2-D sin-cos code, got {width}")
    quarter = width // 4
    frequencies = 1.0 / (100.0 ** (torch.arange(quarter, dtype=torch.float64) / quarter))
    rows, columns = torch.meshgrid(
        torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64), indexing="ij"
    )
    parts = []
    for coordinate in (columns.flatten(), rows.flatten()):
        angles = coordinate[:, None] * frequencies[None]
        parts += [angles.sin(), angles.cos()]
    return torch.cat(parts, 1).float()


def scale_projector_output(model, processor, data_dir: str | os.PathLike, rms: float, images: int = 32) -> float:
    """Rescales the projector's last layer so that image tokens start with a per-channel RMS of ``rms``.

    Why: with the default initialisation (std 0.02) the projected image tokens are about as small as the word
    embeddings (RMS 0.05 vs 0.02, measured on the tiny model) and the first layers' attention outputs, which mix in
    the text tokens, drown what each image token says about its patch; the language model then takes thousands of
    steps to start reading the image. The scale is measured on the first ``images`` training images (the
    data-dependent init of LSUV, for one layer).

    Returns:
        `float`: the factor the layer was multiplied by.
    """
    import torch
    from PIL import Image

    from robopoint_hf.training.data import iter_json_array

    data_dir = Path(data_dir)
    paths: list[Path] = []
    for record in iter_json_array(data_dir / "train.json"):
        if record.get("image"):
            paths.append(data_dir / record["image"])
        if len(paths) == images:
            break
    if not paths:
        raise ValueError(f"{data_dir / 'train.json'} has no record with an image to measure the image tokens on")
    pixel_values = processor.image_processor([Image.open(path).convert("RGB") for path in paths], return_tensors="pt")
    factor = rms / model.encode_images(pixel_values["pixel_values"]).float().pow(2).mean().sqrt().item()
    with torch.no_grad():
        linears = [
            module for module in model.model.multi_modal_projector.modules() if isinstance(module, torch.nn.Linear)
        ]
        linears[-1].weight.mul_(factor)
        if linears[-1].bias is not None:
            linears[-1].bias.mul_(factor)
    return factor


# ---------------------------------------------------------------------------------------------------- training
def _elapsed_fraction(start: float, minutes: float) -> float:
    """Fraction of the budget spent, as rank 0 measures it: with several processes (``torchrun``), every rank must
    use the same learning rate and stop at the same step, or the replicas drift apart and the last all-reduce hangs."""
    import torch

    fraction = torch.tensor([(time.monotonic() - start) / (60 * minutes)], dtype=torch.float64)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.broadcast(fraction, src=0)
    return float(fraction.item())


def _time_budget_callback(minutes: float, warmup: float):
    """A callback that makes the run last ``minutes``: warm-up then cosine decay over wall-clock time, then stop.

    Why time and not steps: on a shared CPU the speed of a step varies several-fold with the other jobs, so a fixed
    number of steps either overruns the budget or is cut before its learning rate has decayed. The learning rate
    is set before every step from the elapsed fraction of the budget (the trainer's own scheduler is constant), so
    the schedule always completes; the step count reached is recorded in ``train_summary.json``.
    """
    from transformers import TrainerCallback

    class TimeBudget(TrainerCallback):
        def __init__(self):
            self.start: float | None = None
            self.fraction = 0.0

        def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
            self.start = self.start or time.monotonic()
            self.fraction = _elapsed_fraction(self.start, minutes)
            if self.fraction < warmup:
                factor = max(self.fraction, 0.1 * warmup) / warmup
            else:
                factor = 0.5 * (1 + math.cos(math.pi * min(1.0, (self.fraction - warmup) / (1 - warmup))))
            for group in optimizer.param_groups:
                group["lr"] = group.get("initial_lr", args.learning_rate) * factor
            return control

        def on_step_end(self, args, state, control, **kwargs):
            if self.fraction >= 1.0:
                logger.info("Time budget of %.0f min spent at step %d: stopping.", minutes, state.global_step)
                control.should_training_stop = True
            return control

    return TimeBudget()


def train(
    data_dir: str | os.PathLike,
    init_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    max_steps: int = -1,
    max_samples: int | None = None,
    num_threads: int | None = None,
    max_minutes: float | None = None,
    freeze_vision_tower: bool = False,
    **overrides: Any,
) -> Path:
    """Trains the model of ``init_dir`` on ``data_dir/train.json`` with the project's TRL trainer.

    Every parameter is trained, the vision tower included: unlike :func:`robopoint_hf.training.trainer.main`, which freezes
    the (pretrained) CLIP tower as RoboPoint did, this one starts from random weights.

    Args:
        data_dir (`str`): output folder of ``robopoint synth``.
        init_dir (`str`): output folder of :func:`build`.
        output_dir (`str`): where the trained model and processor go.
        max_steps (`int`, *optional*, defaults to `-1`): stop after this many optimiser steps (smoke tests); with
            ``max_minutes`` an upper bound only.
        max_samples (`int`, *optional*): train on the first ``max_samples`` rows only.
        num_threads (`int`, *optional*): torch CPU threads.
        max_minutes (`float`, *optional*): train for this wall-clock time, with warm-up and cosine decay over
            TIME instead of steps (see :func:`_time_budget_callback`); the shipped model's recipe.
        freeze_vision_tower (`bool`, *optional*, defaults to `False`): keep the tower at its ``init_dir`` weights
            (the random tower's tokens keep the objects' colours, which a first stage on one-object scenes trains
            away).
        **overrides: fields of :class:`~robopoint_hf.training.trainer.RoboPointSFTConfig` replacing :data:`RECIPE`.

    Returns:
        `Path`: ``output_dir``.
    """
    import torch

    from robopoint_hf.training.trainer import (
        ModelArguments,
        RoboPointSFTConfig,
        ScriptArguments,
        build_trainer,
        leave_process_group,
        save_final_model,
    )

    if num_threads:
        torch.set_num_threads(num_threads)
    settings = {**RECIPE, **overrides}
    callbacks = []
    if max_minutes:
        callbacks.append(_time_budget_callback(max_minutes, warmup=settings.pop("warmup_steps")))
        settings.update(lr_scheduler_type="constant", warmup_steps=0)
        max_steps = max_steps if max_steps > 0 else 10**7
    args = RoboPointSFTConfig(
        output_dir=str(output_dir),
        max_steps=max_steps,
        max_length=MODEL_MAX_LENGTH,
        logging_steps=settings.pop("logging_steps", 25),
        save_strategy=settings.pop("save_strategy", "no"),
        report_to="none",
        dataloader_num_workers=settings.pop("dataloader_num_workers", 0),
        bf16=False,
        use_cpu=not torch.cuda.is_available(),
        **settings,
    )
    data_dir = Path(data_dir)
    trainer = build_trainer(
        ScriptArguments(data=str(data_dir / "train.json"), image_folder=str(data_dir)),
        args,
        # Nothing here is pretrained, so the vision tower learns too (every real RoboPoint recipe freezes it).
        ModelArguments(model=str(init_dir), dtype="float32", freeze_vision_tower=freeze_vision_tower),
        max_samples=max_samples,
        callbacks=callbacks or None,
    )
    model, processor, dataset = trainer.model, trainer.processing_class, trainer.train_dataset
    start = time.monotonic()
    trainer.train()
    minutes = (time.monotonic() - start) / 60
    model.config.use_cache = True
    output_dir = Path(output_dir)
    save_final_model(trainer, output_dir, generation_config(processor.tokenizer))
    if not trainer.is_world_process_zero():
        leave_process_group()  # waits for rank 0's writes below
        return output_dir
    history = [entry for entry in trainer.state.log_history if "loss" in entry]
    parts = ("vision_tower", "multi_modal_projector", "language_model")
    counts = {part: sum(p.numel() for p in getattr(model.model, part).parameters()) for part in parts}
    counts["language_model"] += model.lm_head.weight.numel()  # the head sits on the outer model
    summary = {
        "parameters": counts,
        "processes": args.world_size,
        "samples_seen": trainer.state.global_step * args.per_device_train_batch_size * args.world_size,
        "train_minutes": round(minutes, 2),
        "steps": trainer.state.global_step,
        "rows": len(dataset),
        "final_loss": history[-1]["loss"] if history else None,
        "recipe": {**RECIPE, **overrides, "max_minutes": max_minutes},
        "vision_tower_frozen": freeze_vision_tower,
        "data": str(data_dir),
        "data_info": describe_data(data_dir),
    }
    earlier = Path(init_dir) / TRAIN_SUMMARY_FILE
    if earlier.exists():  # a later stage of a curriculum: keep the record of the stages before it
        previous = json.loads(earlier.read_text())
        summary["earlier_stages"] = [*previous.pop("earlier_stages", []), previous]
    (output_dir / TRAIN_SUMMARY_FILE).write_text(json.dumps(summary, indent=1) + "\n")
    logger.info("Trained %d steps in %.1f min.", summary["steps"], minutes)
    leave_process_group()
    return output_dir


# ---------------------------------------------------------------------------------------------------- evaluation
SYSTEMS = ("model", "model_shuffled_images", "centre", "uniform_random")
"""What :func:`evaluate` scores: the model, the model asked about the next question's image, two baselines."""


def baseline_answer_fns(*, seed: int = 0, points: int = 5) -> dict[str, Any]:
    """Answer functions of the two trivial baselines: the image centre, and ``points`` uniform random points per
    question (one random stream, drawn in question order)."""
    import numpy as np

    from robopoint_hf.model.points import format_points

    rng = np.random.default_rng(seed)
    return {
        "centre": lambda questions: [format_points([(0.5, 0.5)]) for _ in questions],
        "uniform_random": lambda questions: [
            format_points(rng.uniform(0, 1, size=(points, 2)).tolist()) for _ in questions
        ],
    }


def answer_files(answers_file: str | os.PathLike) -> dict[str, Path]:
    """Where :func:`evaluate` writes each system's answers: ``answers_file`` for the model, siblings for the rest."""
    answers_file = Path(answers_file)
    suffix = answers_file.suffix or ".jsonl"
    return {
        name: answers_file if name == "model" else answers_file.with_name(f"{answers_file.stem}.{name}{suffix}")
        for name in SYSTEMS
    }


def evaluate(
    model_dir: str | os.PathLike,
    data_dir: str | os.PathLike,
    answers_file: str | os.PathLike,
    *,
    limit: int | None = None,
    batch_size: int = 32,
    pipe: Any = None,
) -> dict[str, Any]:
    """Scores the model and the baselines on a Where2Place-layout folder (``strict`` protocol).

    Every system answers through the library's eval runner into an answer file in the original ``model_vqa.py``
    format (see :func:`answer_files`), and every file is scored by the library's Where2Place scorer. The model also
    answers every question about the NEXT question's image (a rotation by one): what it scores without seeing the
    scene the question is about. Template priors ("the left side of the table") score there too; the gap between the
    two rows is what the model gets from looking at the image.

    Args:
        model_dir (`str`): the trained model folder.
        data_dir (`str`): a Where2Place-layout folder (``robopoint synth --split-eval`` writes one under ``eval/``).
        answers_file (`str`): the model's answer file; the other systems' files are written next to it.
        limit (`int`, *optional*): the first ``limit`` questions only.
        batch_size (`int`, *optional*, defaults to `32`): rows per ``generate`` call.
        pipe (`RoboPointPipeline`, *optional*): the pipeline to answer with; loaded from ``model_dir`` on the CPU in
            float32 when not given.

    Returns:
        `dict`: per system of `SYSTEMS` the overall accuracy, the per-category accuracies and the parse counts; the
        number of questions, the category counts and the model's seconds per question (what
        :func:`robopoint_hf.original.model_card.results_table` reads).
    """
    from collections import Counter
    from dataclasses import replace

    from accelerate import PartialState

    from robopoint_hf.evaluation.runner import model_id_from_path, pipeline_answer_fn, run_answers
    from robopoint_hf.evaluation.where2place import load_questions, score_answer_files
    from robopoint_hf.inference.loading import load_pipeline

    questions = load_questions(data_dir)[:limit]
    if pipe is None:
        pipe = load_pipeline(str(model_dir), "cpu", "float32")
    shuffled = [
        replace(question, image=questions[(index + 1) % len(questions)].image)
        for index, question in enumerate(questions)
    ]
    model_answers = pipeline_answer_fn(pipe, batch_size=batch_size)  # greedy, the model's generation config
    answer_fns = {"model": model_answers, "model_shuffled_images": model_answers, **baseline_answer_fns()}
    files = answer_files(answers_file)
    state = PartialState(cpu=True)
    model_id = model_id_from_path(model_dir)
    seconds = 0.0
    for name in SYSTEMS:
        start = time.monotonic()
        run_answers(
            shuffled if name == "model_shuffled_images" else questions,
            answer_fns[name],
            files[name],
            model_id=model_id if name.startswith("model") else name,
            batch_size=batch_size,
            overwrite=True,
            state=state,
        )
        if name == "model":
            seconds = time.monotonic() - start
    scored = score_answer_files([files[name] for name in SYSTEMS], data_dir, protocols=["strict"], questions=questions)
    results: dict[str, Any] = {
        "data": str(data_dir),
        "num_questions": len(questions),
        "categories": dict(sorted(Counter(q.category for q in questions if q.category is not None).items())),
        "seconds_per_question": round(seconds / max(1, len(questions)), 4),
    }
    for name, by_protocol in zip(SYSTEMS, scored, strict=True):
        result = by_protocol["strict"]
        results[name] = {
            "accuracy": result.accuracy,
            "per_category": dict(sorted(result.per_category.items())),
            "num_parsed": result.num_parsed,
            "num_failed": result.num_failed,
            "num_empty": result.num_empty,
        }
    return results


# ---------------------------------------------------------------------------------------------------- shipping
def pick_examples(eval_dir: str | os.PathLike, answers_file: str | os.PathLike, per_family: int = 1) -> list[dict]:
    """Evaluation questions the model answered fully inside the region, one per family, for the shipped examples."""
    from robopoint_hf.evaluation.where2place import load_answers, load_questions, score_answer_files

    answers = load_answers(answers_file)
    questions = load_questions(eval_dir)[: len(answers)]
    (scored,) = score_answer_files([answers_file], eval_dir, protocols=["strict"], questions=questions)
    chosen: dict[str, list[dict]] = {}
    for question, answer, score in zip(questions, answers, scored["strict"].per_question, strict=True):
        family = question.category or "all"
        if score == 1.0 and len(chosen.setdefault(family, [])) < per_family:
            chosen[family].append({"question": question, "answer": answer["text"]})
    return [item for family in sorted(chosen) for item in chosen[family]]


def describe_data(data_dir: str | os.PathLike) -> dict[str, Any]:
    """What a training folder holds, for the card (:func:`robopoint_hf.original.model_card.data_text`): from its
    ``synth_info.json`` (``robopoint synth``) or ``mix_info.json`` (``mix``), else only its name."""
    data_dir = Path(data_dir)
    info_file, mix_file = data_dir / "synth_info.json", data_dir / MIX_INFO_FILE
    if mix_file.exists():
        sources = json.loads(mix_file.read_text())["sources"]
        return {"mixture": [describe_data(source["data"]) for source in sources]}
    if not info_file.exists():
        return {"name": data_dir.name}
    info = json.loads(info_file.read_text())
    config = info["config"]
    described = {
        "scenes": info["summary"]["scenes"],
        "seed": info["seed"],
        "min_objects": config["min_objects"],
        "max_objects": config["max_objects"],
        "families": info["summary"]["families"],
        "answer": config.get("answer"),
    }
    if config.get("answer") != "centre":
        described.update(min_points=config["min_points"], max_points=config["max_points"])
    return described


def ship(
    model_dir: str | os.PathLike,
    results_file: str | os.PathLike,
    eval_dir: str | os.PathLike,
    answers_file: str | os.PathLike,
    out_dir: str | os.PathLike = DEFAULT_MODEL_DIR,
    *,
    real_results_file: str | os.PathLike | None = None,
) -> Path:
    """Writes the shipped folder: weights, processor, generation config, example scenes, evaluation results and the
    model card, through the package's one save path (atomic; code files, ``auto_map`` and ``custom_pipelines``
    regenerated)."""
    from PIL import Image

    from robopoint_hf.hub_checkpoint import staged_folder, write_remote_code
    from robopoint_hf.original.model_card import EVAL_RESULTS_FILE, EXAMPLES_FILE, render_trained_model_card

    out = Path(out_dir)
    with staged_folder(out, overwrite=True) as staged:
        for name in sorted(os.listdir(model_dir)):
            source = Path(model_dir) / name
            # Code files are written from the package below, never copied from a training folder.
            if source.is_file() and name != "training_args.bin" and not name.endswith(".py"):
                shutil.copy2(source, staged / name)
        examples = []
        for index, item in enumerate(pick_examples(eval_dir, answers_file)):
            question = item["question"]
            stem = f"example_{index}_{question.category}"
            shutil.copy2(question.image, staged / f"{stem}.jpg")
            mask = Image.open(question.mask).convert("L").point(lambda value: 255 if value >= 128 else 0)
            mask.save(staged / f"{stem}_mask.png", optimize=True)
            examples.append(
                {
                    "image": f"{stem}.jpg",
                    "mask": f"{stem}_mask.png",
                    "category": question.category,
                    "question": question.text,
                    "answer": item["answer"],
                }
            )
        (staged / EXAMPLES_FILE).write_text(json.dumps(examples, indent=1) + "\n")
        evaluation = {
            "synthetic": json.loads(Path(results_file).read_text()),
            "where2place": json.loads(Path(real_results_file).read_text()) if real_results_file else None,
        }
        (staged / EVAL_RESULTS_FILE).write_text(json.dumps(evaluation, indent=1) + "\n")
        (staged / "README.md").write_text(render_trained_model_card(staged))
        write_remote_code(staged)
    return out


# ---------------------------------------------------------------------------------------------------- command line
def make_parser() -> argparse.ArgumentParser:
    """``python scripts/tiny_model.py build|mix|train|evaluate|ship``."""
    parser = argparse.ArgumentParser(prog="python scripts/tiny_model.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build_parser = commands.add_parser("build", help="Train the tokenizer and save an untrained model.")
    build_parser.add_argument("--data", required=True, help="robopoint synth output folder")
    build_parser.add_argument("--out", required=True)
    build_parser.add_argument("--seed", type=int, default=0)
    build_parser.add_argument("--vocab-size", type=int, default=VOCAB_SIZE)
    build_parser.add_argument("--overwrite", action="store_true", help="replace --out if it is not empty")

    mix_parser = commands.add_parser("mix", help="Write one training list from several synth folders (a mixture).")
    mix_parser.add_argument("--data", required=True, nargs="+", help="robopoint synth output folders")
    mix_parser.add_argument("--out", required=True, help="folder for the mixed train.json (no image is copied)")

    train_parser = commands.add_parser("train", help="Train the tiny model with the project's TRL trainer.")
    train_parser.add_argument("--data", required=True)
    train_parser.add_argument("--init", required=True, help="output of build")
    train_parser.add_argument("--output-dir", required=True)
    train_parser.add_argument("--max-steps", type=int, default=-1)
    train_parser.add_argument("--max-samples", type=int, default=None)
    train_parser.add_argument("--threads", type=int, default=None)
    train_parser.add_argument("--max-minutes", type=float, default=None, help="train for this long (time schedule)")
    train_parser.add_argument(
        "--freeze-vision-tower", action="store_true", help="keep the vision tower at its --init weights"
    )
    train_parser.add_argument("--epochs", type=float, default=RECIPE["num_train_epochs"])
    train_parser.add_argument("--learning-rate", type=float, default=RECIPE["learning_rate"])
    train_parser.add_argument("--batch-size", type=int, default=RECIPE["per_device_train_batch_size"])

    eval_parser = commands.add_parser("evaluate", help="Score the model and the baselines (strict protocol).")
    eval_parser.add_argument("--model", required=True)
    eval_parser.add_argument("--data", required=True, help="Where2Place-layout folder")
    eval_parser.add_argument("--out", required=True, help="results JSON")
    eval_parser.add_argument(
        "--answers", default=None, help="the model's answer file (jsonl; default: --out with .answers.jsonl)"
    )
    eval_parser.add_argument("--limit", type=int, default=None)
    eval_parser.add_argument("--batch-size", type=int, default=32)

    ship_parser = commands.add_parser("ship", help="Write the shipped model folder with examples and model card.")
    ship_parser.add_argument("--model", required=True)
    ship_parser.add_argument("--results", required=True)
    ship_parser.add_argument("--answers", required=True, help="the model's answers on --eval-data")
    ship_parser.add_argument("--eval-data", required=True)
    ship_parser.add_argument("--real-results", default=None)
    ship_parser.add_argument("--out", default=str(DEFAULT_MODEL_DIR))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = make_parser().parse_args(argv)
    if args.command == "build":
        build(args.data, args.out, seed=args.seed, vocab_size=args.vocab_size, overwrite=args.overwrite)
    elif args.command == "mix":
        counts = mix_robopoint_data(
            [(Path(folder) / "train.json", folder) for folder in args.data], Path(args.out) / "train.json"
        )
        sources = [
            {"data": str(Path(folder).resolve()), "records": n} for folder, n in zip(args.data, counts, strict=True)
        ]
        (Path(args.out) / MIX_INFO_FILE).write_text(json.dumps({"sources": sources}, indent=1) + "\n")
        logger.info("Mixed %s into %s.", ", ".join(f"{s['records']} from {s['data']}" for s in sources), args.out)
    elif args.command == "train":
        train(
            args.data,
            args.init,
            args.output_dir,
            max_steps=args.max_steps,
            max_samples=args.max_samples,
            num_threads=args.threads,
            max_minutes=args.max_minutes,
            freeze_vision_tower=args.freeze_vision_tower,
            num_train_epochs=args.epochs,
            learning_rate=args.learning_rate,
            per_device_train_batch_size=args.batch_size,
        )
    elif args.command == "evaluate":
        from robopoint_hf.original.model_card import results_table

        answers = args.answers or Path(args.out).with_suffix(".answers.jsonl")
        results = evaluate(args.model, args.data, answers, limit=args.limit, batch_size=args.batch_size)
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
        print(results_table(results))
        print(f"parsed {results['model']['num_parsed']}/{results['num_questions']}")
    else:
        ship(args.model, args.results, args.eval_data, args.answers, args.out, real_results_file=args.real_results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
