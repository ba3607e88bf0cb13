"""The tiny RoboPoint: a few-million-parameter model trained from scratch on synthetic scenes, shipped as the
offline default model (``src/robopoint_hf/default_model/``).

Nothing here is pretrained and nothing is downloaded: the tokenizer is trained on the synthetic questions and
answers, the CLIP-style vision tower, projector and Llama-style language model start from random weights and are
trained together (the published RoboPoint freezes a pretrained CLIP; a random one must learn). It is a
DEMONSTRATION model for the scenes of :mod:`robopoint_hf.synthetic.scenes`, not a model of the real world. The one reproduce
command is ``scripts/train_tiny_model.sh``; its steps are the sub-commands of this module::

    robopoint synth --n 40000 --out runs/tiny/data --seed 0 --split-eval 600
    robopoint synth --n 20000 --out runs/tiny/data_one --seed 1 --objects 1-1 \\
        --families object_attribute,object_highlight --answer centre
    robopoint synth --n 20000 --out runs/tiny/data_few --seed 2 --objects 2-3 \\
        --families object_attribute,object_highlight --answer centre
    robopoint synth --n 10000 --out runs/tiny/data_replay --seed 2 --objects 2-3 \\
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
        --eval-data runs/tiny/data/eval --out src/robopoint_hf/default_model

Design choices, each for a small model on a 2-core CPU:

* Tokenizer -- Llama-style BPE with byte fallback (``<unk>``/``<s>``/``</s>`` = 0/1/2, bytes ``<0x00>``-``<0xFF>``
  = 3-258, ``▁`` for spaces and a SentencePiece-like dummy prefix, so that the processor's piece-wise
  tokenization around ``<image>`` behaves as with Llama). As with Llama, every word is its own pre-token, so a
  colour or an object name is the same token in every question. (An earlier version let merges cross spaces to
  save tokens; its 1024 pieces fused whole questions such as "Locate several points on the yellow bottle" into
  one token, so a model could only learn which colour a question asks for separately for each of ~200 fused
  question tokens.) Two exceptions keep sequences short: the system prompt and RoboPoint's answer-format sentence,
  identical in every sample, are one pre-token each (a single token after training). Answers are cut into fixed
  pieces so that training and generation tokenize alike: ``"▁[("``, ``"), ("``, ``", "``, ``")]"`` and per
  coordinate ``"0.4"`` + ``"61"`` -- the first piece is a ten-way choice that already places the point to 10 %,
  the easier decision to learn than a hundred-way one.
* Images -- 112 px, patch 28 -> 16 image positions (a 4 x 4 grid; an object is 8-14 px): the fewer positions the
  language model must choose among, the sooner it learns to (``scripts/grounding_readout_toy.py``: 0.99 accuracy
  after 1,000 steps with 16 positions, 0.54 after 700 with 64). The real model agrees: stage 1 below with patch 14
  (64 positions) vs 28, 12 min each on one thread side by side, reached 1,486 vs 3,185 steps and loss 1.149 vs
  1.054 (the image had not started to matter at 1,486 steps; it had at 3,185). ``image_aspect_ratio="pad"`` like
  RoboPoint; the vision features are the LAST layer's (``vision_feature_layer=-1``: with 4 layers, RoboPoint's -2
  would waste one).
* Initialisation -- random, except two things that make the image tokens say WHERE they are from step 0: the
  position table is a 2-D sin-cos code (:func:`sincos_position_table`) and the projector's output starts at unit
  RMS (:func:`scale_projector_output`).
* Training -- the project's TRL path (:func:`~robopoint_hf.training.trainer.build_trainer`: the same trainer, collator and
  data preparation as ``robopoint train``) with ``freeze_vision_tower=False``, so every parameter is trainable,
  AdamW at 2e-4 (the 2e-3 of earlier versions was too high for the language model to learn to select image
  tokens: ``scripts/grounding_readout_toy.py``), warm-up and cosine decay over a wall-clock budget (see
  :func:`train`). Three stages (``scripts/train_tiny_model.sh``): scenes with ONE object answered with ONE point at
  its centre, the vision tower frozen (the model learns to read positions off the random tower's tokens), then
  2-3 objects named by colour and kind or by a red box, still one centre point (it learns which object the words
  mean), then the full mix with RoboPoint's 3-8-point answers, with the first half of stage 2's questions replayed
  (``tiny mix``: 40,000 + 10,000 records; see "Stage 3" below). Trained
  on the full mix from scratch, the model answered from the question alone. Without the replay, stage 3 unlearned
  part of stage 2: from the same stage 2 (25 min each, 2 threads), the highlighted-object family scored 0.141
  without and 0.274 with it, attribute 0.126 vs 0.200, overall 0.277 vs 0.280 (free space next to an object
  0.148 vs 0.112: the replay takes a third of the stage's samples).
  One centre point in stage 3 too would be cheaper (45 tokens per sample instead of 71: 1.66x the steps) but is
  not better: from the same stage 2, 12 min on one thread each, 0.255 vs 0.248 strict on the 600 held-out
  questions -- within noise, so the model keeps RoboPoint's several-point answers.
* Stage 1 keeps the random vision tower (``train --freeze-vision-tower``) -- the change that took the
  model from 0.282 to 0.483 overall (600 held-out questions; every family 3.4x-53.5x its best baseline). Trained
  on one-object scenes, the tower gave up the objects' colours for their positions (probe below) and read x
  slowly; kept at its initialisation (sin-cos positions, unit-RMS tokens) it leaves both to the projector and the
  language model. Same data, seeds and minutes (25 / 15 / 20, two threads), tower frozen vs trained in stage 1:
  one-object scenes 0.897 vs 0.673 inside the object (x off by a median 1.9 vs 5.2 px; 9,913 vs 9,187 steps);
  after stage 2, 2-3-object scenes 0.69 vs 0.27 (attribute 0.70 vs 0.25, highlight 0.68 vs 0.31); the final
  model 0.483 vs 0.282 (attribute 0.664 vs 0.187, highlight 0.597 vs 0.254, relation 0.357 vs 0.276, free space
  next to an object 0.269 vs 0.105). Stages 2 and 3 train the tower. The notes below were measured with the tower
  trained in stage 1 and explain why it had to change.
* Stage 3 -- every stage is short of steps, so its minutes and its replay were weighed (from the shipped run's
  stage 1 or 2, two threads, 600 held-out questions). With all of stage 2's questions replayed, 20 min of stage 3
  (4,495 steps) scored 0.483; the same on one thread beside another run (2,814 steps) 0.403. Stage 2 cut to 7 min
  for a 28-min stage 3: 0.447 (after that stage 2, the named object among 2-3 is found in 0.44 of the questions,
  vs 0.69 after 15 min). No replay: 0.487 (free space next to an object 0.331 vs 0.269, highlighted objects 0.468
  vs 0.597). The first half of stage 2 replayed (40,000 + 10,000 records): 0.492, and 0.492 again at a learning
  rate of 3e-4 -- the recipe. The tower stays trainable after stage 1 because training sharpens its colours: the
  MLP probe below names the object's colour from 0.895 of the tokens after stage 1, 0.985 after stage 2, 0.997
  after stage 3. A DataLoader worker building the batches beside two compute threads: 4.17 vs 4.10 steps/s.
* Batching -- where a step's time goes (cProfile, 300 stage-3 steps, two threads): backward 52 %, forward 31 %
  (language-model matmuls at about the machine's float32 rate), data 11 %. So the steps are bound by the language
  model's tokens, and a random batch of 16 rows of the stage-3 mix (40-92 tokens, answers of 1-8 points) adds 42 %
  padding to its tokens (padded / real 1.42; 1.10 for the one-point stages 1-2). Sorting 50 megabatches by length
  together (``length_group_size=50``, transformers' ``group_by_length`` idea; the megabatches are still shuffled)
  leaves 1.002: 5.26 vs 3.82 steps/s on stage 3 (300 steps). From the shipped run's stage 2, the 20-min stage 3
  then reached 5,862 steps instead of 4,842 and scored 0.522 instead of 0.492 (between 0.392 / 0.346, free space
  next to an object 0.370 / 0.337, surface 0.876 / 0.789, attribute 0.656 / 0.620, highlight 0.516 / 0.548,
  relation 0.348 / 0.360); on a second held-out split (600 questions, seed 100) 0.554 vs 0.529. The same stage 3
  with another batch order (seed 1, 5,942 steps): 0.547 (0.546 on the second split). A full run with grouping in
  every stage (10,984 / 6,215 / 5,919 steps) scored 0.482 (0.541 on the second split): stages 1-2 vary between runs
  by as much as the gain; the shipped model was chosen on the second split.
* What limits it -- reading x off the image. On 300 held-out ONE-object scenes (nothing to tell apart), the stage-1
  model of a rerun points inside the object 55 % of the time: its y is within 4 px in 95 % of the answers (median
  0.6 px), its x is off by a median 7 px (objects are ~17 px wide in the 160 x 120 scene). A ridge probe of the
  image tokens (2,500 scenes, 500 held out) finds x to 7.7 px and y to 2.9 px, and a 1-px shift of a pasted box
  changes them 2.6x more in y than in x (1.1x at initialisation): the tower learned y first. Why, measured with
  12-min stage-1 runs on one thread, side by side (~3,100 steps; control: x off by 39 px, y by 8): not the answer
  order (``[(y, x)]`` answers: the same loss per coordinate, first x digit 2.24 nats first or second), not the
  tables' wood grain (scenes without it: 38 / 6 px), but the layout: objects stand on a table band, so x spans
  2.3x the range of y (std 40 vs 17 px), and on transposed scenes the model learns the band's coordinate first
  (x' 13 px, y' 34 px); with half the scenes transposed it learned each layout's narrow coordinate and x on the
  normal half no sooner (39 px). The wide coordinate comes last and keeps improving with steps: x off by 39 / 7.4 /
  5.2 px after 3,135 / 7,731 / 9,187 stage-1 steps (0.55 -> 0.67 inside the object for the last two), hence the
  25 / 15 / 20 min; the overall score did not move (0.282, vs 0.280 with 20 / 15 / 25 and replay). Every family
  but "free space on a surface" needs that precision, the more so the more objects (0.37 -> 0.12 on the object
  families from 2 to 5 objects, previous shipped model). 64 patches (patch 14) would be finer but learn slower
  (above).
  Nor did the tower's capacity or step size, nor the batch (12-min stage-1 runs from the same initialisation, one
  thread, two side by side; control x off by 39 / 38 px, y by 8 / 6 px, 3,070-3,135 steps): a tower twice as wide
  (hidden 256; 2,436 steps) x 34 / y 7 px; the tower's learning rate 5x the language model's x 38 / y 10 px, 15x
  x 40 / y 15 px; batch 32 at 3e-4 (1,557 steps) x 35 / y 16 px -- all within the controls' spread on x, no better
  than 0.043 inside the object.
* Binding -- several questions about one image as one multi-turn conversation (up to three objects, one turn each, the
  LLaVA format the collator already masks per answer) did not teach which object the words mean faster: from the
  previous shipped stage 1, 12 min each side by side, 2-3-object attribute questions scored 0.189 vs 0.179 with one
  question per record (the same ~47,000 answers seen), highlighted objects 0.162 vs 0.293 (fewer of them seen). Most
  misses of the previous shipped model are ANOTHER object, not a near miss: on the object families and free space next
  to objects the median distance of its points from the region is 22-29 px (9.5 for object relations; objects are ~17
  px wide), and on the attribute questions whose colour no other object in the scene shares, its first point lands on
  the named object in 21 of 98 (on another object of another colour and kind in 51).
* What the image tokens hold -- a probe (an MLP with one hidden layer of 256, trained on the token of the object's own
  patch; 3,000 one-object attribute scenes, 20 % held out) names the object's colour (one of 8) for 0.94 of the
  held-out scenes from the raw pixels of that patch, 0.85 from the tokens of the random initialisation, 0.64 after the
  previous shipped stage 1, 0.75 after its stage 2 and 0.76 for that model; its kind (one of 5; commonest 0.21) for
  0.48 from pixels and 0.35-0.38 from any of the tokens. (A linear probe is no measure here: on raw pixels it gets
  0.56.) Stage 1 trades colour for position and the later stages do not win it back, while the language model alone
  binds words to clean colour tokens within ~1,000 steps (``scripts/grounding_readout_toy.py``): the tokens are a
  likely limit of binding. Half the stage-1 records from TWO-object scenes (``tiny mix`` of 20,000 + 20,000; 15 min on
  one thread side by side with the control, ~3,900 steps each) kept no more colour (0.70 vs 0.78) and slowed the
  reading of positions (y off by 10.5 vs 3.6 px on one-object scenes). The tower FROZEN at its random initialisation
  for stage 1 (``train --freeze-vision-tower``; the same 15 min, 3,891 vs 3,899 steps) kept the colour (0.83) and read
  x sooner (off by 21 vs 38 px; y 7.6 vs 3.6 px; 0.137 vs 0.090 inside the object).
* Data parallel on one CPU -- ``torchrun --standalone --nproc_per_node 2 scripts/tiny_model.py train ...`` runs
  one single-threaded process per core (gloo all-reduce), rank 0's clock driving every rank's time budget.
  Measured one after the other on an idle machine (200 steps each, 16 image positions): 106 samples/s with two
  processes x batch 16 vs 84 for one process with two threads and batch 16 (1.26x); with batch 8 per process
  (the same 16 per step) 5.6 vs 5.3 steps/s. The shipped model was trained single-process.
  ``torch.compile`` (the trainer's ``torch_compile=True``) does not pay here: after an 80-s compilation, 6.5 vs
  6.4 steps/s eager (stage 1, 400 steps, two threads). A profile of eager stage-1 steps: backward 46 %, forward
  28 %, building the batch (image decoding, tokenization) 18 %.
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

# Pre-token boundaries (applied after spaces became "▁"): see the module docstring. The two fixed sentences come
# first so that they win over the word rule; look-arounds restrict the point pieces to real answers.
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
    # TRL turns it on by default to save memory; a 3.7 M-parameter model needs none, and recomputing every layer's
    # forward in the backward pass made steps 1.33x slower (300 steps, 2 threads: 60 s vs 45 s, same losses); over
    # the three timed stages of scripts/train_tiny_model.sh, turning it off gave 1.18-1.24x the steps.
    "gradient_checkpointing": False,
    # Micro-batches of rows of similar length: RoboPoint's answers hold 1-8 points, so a random batch of stage 3's mix
    # adds 42 % padding to its tokens (padded / real 1.42; 1.002 grouped 50 megabatches at a time), and the steps are
    # bound by the language model's tokens (300 steps of stage 3, 2 threads: 5.26 vs 3.82 steps/s, 1.38x).
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
            away; see the module notes).
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
    }
    earlier = Path(init_dir) / "train_summary.json"
    if earlier.exists():  # a later stage of a curriculum: keep the record of the stages before it
        previous = json.loads(earlier.read_text())
        summary["earlier_stages"] = [*previous.pop("earlier_stages", []), previous]
    (output_dir / "train_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    logger.info("Trained %d steps in %.1f min.", summary["steps"], minutes)
    leave_process_group()
    return output_dir


# ---------------------------------------------------------------------------------------------------- evaluation
def predict(model, processor, images: Sequence[Any], texts: Sequence[str], *, batch_size: int = 32) -> list[str]:
    """Greedy answers (the model's generation config) for image/question pairs, in order."""
    import torch

    answers: list[str] = []
    for start in range(0, len(texts), batch_size):
        batch = processor(
            images=list(images[start : start + batch_size]),
            text=list(texts[start : start + batch_size]),
            return_tensors="pt",
        )
        with torch.inference_mode():
            output = model.generate(**batch, do_sample=False)
        new_tokens = output[:, batch["input_ids"].shape[1] :]
        answers.extend(text.strip() for text in processor.post_process_image_text_to_text(new_tokens))
    return answers


def baseline_answers(sizes: Sequence[tuple[int, int]], *, seed: int = 0, points: int = 5) -> dict[str, list[str]]:
    """The two trivial baselines: the image centre, and ``points`` uniform random points per question."""
    import numpy as np

    from robopoint_hf.model.points import format_points

    rng = np.random.default_rng(seed)
    return {
        "centre": [format_points([(0.5, 0.5)]) for _ in sizes],
        "uniform_random": [format_points(rng.uniform(0, 1, size=(points, 2)).tolist()) for _ in sizes],
    }


def evaluate(
    model_dir: str | os.PathLike,
    data_dir: str | os.PathLike,
    *,
    limit: int | None = None,
    batch_size: int = 32,
    answers_out: str | os.PathLike | None = None,
    shuffled_images: bool = True,
) -> dict[str, Any]:
    """Scores the model and the baselines on a Where2Place-layout folder (``strict`` protocol, real image sizes).

    With ``shuffled_images`` the model also answers every question about the NEXT question's image (a rotation by
    one): what it scores without seeing the scene the question is about. Template priors ("the left side of the
    table") score there too; the gap between the two rows is what the model gets from looking at the image.

    Returns:
        `dict`: per system (``model``, ``model_shuffled_images``, ``centre``, ``uniform_random``) the overall
        accuracy, the per-category accuracies and the parse counts; plus the number of questions and the category
        counts. ``answers_out`` gets one JSON line per question (``text``, and ``text_shuffled_images``).
    """
    from collections import Counter

    import torch
    from PIL import Image

    from robopoint_hf.evaluation.where2place import load_questions, score_where2place
    from robopoint_hf.model.modeling_robopoint import RoboPointForConditionalGeneration
    from robopoint_hf.model.processing_robopoint import RoboPointProcessor

    questions = load_questions(data_dir)[:limit]
    images = [Image.open(question.image).convert("RGB") for question in questions]
    sizes = [image.size for image in images]
    categories = [question.category or "all" for question in questions]
    model = RoboPointForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
    processor = RoboPointProcessor.from_pretrained(model_dir)
    start = time.monotonic()
    texts = [question.text for question in questions]
    answers = predict(model, processor, images, texts, batch_size=batch_size)
    seconds = time.monotonic() - start
    systems = {"model": answers}
    if shuffled_images:
        systems["model_shuffled_images"] = predict(
            model, processor, images[1:] + images[:1], texts, batch_size=batch_size
        )
    if answers_out is not None:
        with open(answers_out, "w", encoding="utf-8") as handle:
            for index, question in enumerate(questions):
                record = {"question_id": question.question_id, "text": answers[index], "category": question.category}
                if shuffled_images:
                    record["text_shuffled_images"] = systems["model_shuffled_images"][index]
                handle.write(json.dumps(record) + "\n")
    masks = [question.mask for question in questions]
    systems.update(baseline_answers(sizes))
    results: dict[str, Any] = {
        "data": str(data_dir),
        "num_questions": len(questions),
        "categories": dict(sorted(Counter(categories).items())),
        "seconds_per_question": round(seconds / max(1, len(questions)), 4),
    }
    for name, predictions in systems.items():
        scored = score_where2place(predictions, masks, protocol="strict", image_sizes=sizes, categories=categories)
        results[name] = {
            "accuracy": scored.accuracy,
            "per_category": dict(sorted(scored.per_category.items())),
            "num_parsed": scored.num_parsed,
            "num_failed": scored.num_failed,
            "num_empty": scored.num_empty,
        }
    return results


def results_table(results: dict[str, Any]) -> str:
    """A Markdown table: one row per category (and "all"); columns model, model with shuffled images (when
    evaluated), centre, random, and model / best of centre and random."""
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


# ---------------------------------------------------------------------------------------------------- shipping
EXAMPLES_FILE = "examples.json"


def pick_examples(eval_dir: str | os.PathLike, answers_file: str | os.PathLike, per_family: int = 1) -> list[dict]:
    """Evaluation questions the model answered fully inside the region, one per family, for the shipped examples."""
    from robopoint_hf.evaluation.where2place import load_questions, score_where2place

    questions = load_questions(eval_dir)
    answers = [json.loads(line)["text"] for line in Path(answers_file).read_text().splitlines() if line.strip()]
    scores = score_where2place(answers, [q.mask for q in questions[: len(answers)]], protocol="strict").per_question
    chosen: dict[str, list[dict]] = {}
    for question, answer, score in zip(questions, answers, scores, strict=False):
        family = question.category or "all"
        if score == 1.0 and len(chosen.setdefault(family, [])) < per_family:
            chosen[family].append({"question": question, "answer": answer})
    return [item for family in sorted(chosen) for item in chosen[family]]


def ship(
    model_dir: str | os.PathLike,
    results_file: str | os.PathLike,
    eval_dir: str | os.PathLike,
    answers_file: str | os.PathLike,
    out_dir: str | os.PathLike = DEFAULT_MODEL_DIR,
    *,
    real_results_file: str | os.PathLike | None = None,
) -> Path:
    """Writes the shipped folder: weights, processor, generation config, example scenes and the model card, through
    the package's one save path (atomic; code files, ``auto_map`` and ``custom_pipelines`` regenerated)."""
    from PIL import Image

    from robopoint_hf.hub_checkpoint import staged_folder, write_remote_code

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
        results = json.loads(Path(results_file).read_text())
        real = json.loads(Path(real_results_file).read_text()) if real_results_file else None
        summary = json.loads((Path(model_dir) / "train_summary.json").read_text())
        (staged / "README.md").write_text(model_card(results, summary, real, examples))
        write_remote_code(staged)
    return out


def _data_text(data_dir: Path) -> str:
    """What a training folder holds: from its ``synth_info.json`` (``robopoint synth``) or ``mix_info.json``
    (``tiny mix``) when it is still there, else its name."""
    info_file, mix_file = data_dir / "synth_info.json", data_dir / MIX_INFO_FILE
    if mix_file.exists():
        sources = json.loads(mix_file.read_text())["sources"]
        return "a mixture of " + " and ".join(_data_text(Path(source["data"])) for source in sources)
    if not info_file.exists():
        return f"`{data_dir.name}`"
    info = json.loads(info_file.read_text())
    config, families = info["config"], info["summary"]["families"]
    low, high = config["min_objects"], config["max_objects"]
    objects = "one object" if low == high == 1 else f"{low}-{high} objects"
    answers = (
        "one point at the region's centre"
        if config.get("answer") == "centre"
        else f"{config['min_points']}-{config['max_points']} points sampled in the region"
    )
    return (
        f"{info['summary']['scenes']:,} synthetic scenes (`robopoint synth`, seed {info['seed']}, {objects} "
        f"per scene; questions: {', '.join(f'{name} {count:,}' for name, count in families.items())}; "
        f"answers: {answers})"
    )


def _stages_text(summary: dict) -> str:
    """One bullet per training stage: its data (:func:`_data_text`) and what the stage did."""
    stages = [*summary.get("earlier_stages", []), summary]
    lines = []
    for number, stage in enumerate(stages, start=1):
        data = _data_text(Path(stage["data"])) if stage.get("data") else "the training data"
        epochs = stage["samples_seen"] / stage["rows"]
        # A run shorter than one logging interval has no logged loss.
        loss = "not logged" if stage["final_loss"] is None else f"{stage['final_loss']:.3f}"
        lines.append(
            f"* Stage {number} of {len(stages)}: {data}; {stage['steps']:,} steps ({stage['samples_seen']:,} samples, "
            f"{epochs:.2f} epochs) in **{stage['train_minutes']:.0f} minutes**, final training loss {loss}"
            + ("; vision tower frozen" if stage.get("vision_tower_frozen") else "")
            + _batching_text(stage.get("recipe", {}).get("length_group_size", 1))
            + "."
        )
    return "\n".join(lines)


def _batching_text(length_group_size: int) -> str:
    if length_group_size > 1:
        return f"; batches of rows of similar length (`length_group_size={length_group_size}`)"
    return "; batches of random lengths"


def image_ablation_text(results: dict) -> str:
    """The card's paragraph on what the image adds: accuracy with the right images minus with shuffled ones,
    overall and per family (a family counts as image-dependent from +0.02 on). Empty without an ablation row."""
    shuffled = results.get("model_shuffled_images")
    if shuffled is None:
        return ""
    gap = results["model"]["accuracy"] - shuffled["accuracy"]
    per_family = {
        name: results["model"]["per_category"][name] - shuffled["per_category"][name] for name in results["categories"]
    }
    looking = [f"{name} +{value:.3f}" for name, value in per_family.items() if value >= 0.02]
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


def model_card(results: dict, summary: dict, real: dict | None, examples: list[dict]) -> str:
    """The README.md of the shipped folder."""
    params = summary["parameters"]
    quality_note = ""
    if results["model"]["accuracy"] < 0.5:
        quality_note = (
            "**Below the project's quality target** (0.5 on the synthetic split); see the per-family rows above for "
            "what it has and has not learned. Treat it as a demonstration of the pipeline, not as evidence of what "
            "the architecture can learn.\n\n"
        )
    quality_note += image_ablation_text(results)
    overall = results["model"]["accuracy"]
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
    recipe = summary["recipe"]
    return f"""---
license: apache-2.0
library_name: transformers
pipeline_tag: image-text-to-text
tags:
- robopoint
- llava
- robotics
- affordance
- synthetic-data
- tiny
---

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
output = model.generate(**inputs)   # greedy, up to {MAX_NEW_TOKENS} new tokens (generation_config.json)
answer = processor.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
print(parse_points(answer).points)
```

`examples.json` lists the example scenes shipped in this folder (image, ground-truth mask, question, the answer
the model gave when it was shipped).

## Model

| part | configuration | parameters |
|---|---|---|
| vision tower | CLIP ViT, {IMAGE_SIZE} px, patch {PATCH_SIZE} ({IMAGE_SEQ_LENGTH} positions), width 128, 4 layers | {params["vision_tower"]:,} |
| projector | mlp2x_gelu, 128 -> 256 -> 256 | {params["multi_modal_projector"]:,} |
| language model | Llama, width 256, 4 layers, 8 heads (2 KV heads), MLP 448, context {MODEL_MAX_LENGTH} | {params["language_model"]:,} |

Images are padded to a square with the CLIP mean colour and resized (`image_aspect_ratio="pad"`, as RoboPoint);
the image features are the vision tower's last layer. Prompts use RoboPoint's `vicuna_v1` template.

**Tokenizer**: Llama-style BPE with byte fallback, at most {VOCAB_SIZE} tokens (`<unk>`=0, `<s>`=1, `</s>`=2, 256 byte
tokens), trained on the synthetic questions and answers. Every word is its own token(s), as with Llama; the fixed
system prompt and answer-format sentence are one token each; a point `(0.461, 0.527)` is six tokens (`0.4` `61`
`, ` `0.5` `27` `), (`), the first of each coordinate a ten-way choice. Words never seen in training fall back to
characters and bytes.

## Training

{_stages_text(summary)}
* Everything trained from random initialisation (vision tower included), with the project's TRL trainer
  (`RoboPointSFTTrainer` + `RoboPointDataCollator`: loss on the answer and its `</s>` only). Initialisation: the
  vision tower's position table is a 2-D sin-cos code and the projector's last layer is scaled so that image tokens
  start at unit RMS (`tiny.build`: at the default init the image tokens say too faintly where they are).
* Each stage: AdamW, peak learning rate {recipe["learning_rate"]}, weight decay {recipe["weight_decay"]}, batch
  {recipe["per_device_train_batch_size"]}, gradient clipping {recipe["max_grad_norm"]}; {recipe["warmup_steps"]:.0%} warm-up then
  cosine decay over a WALL-CLOCK budget (on a shared CPU a step's speed varies several-fold, so the schedule follows
  time, not steps), float32, 2 CPU threads, gradient checkpointing \
{"on (TRL's default)" if recipe.get("gradient_checkpointing", True) else "off"}.
* Reproduce: `bash scripts/train_tiny_model.sh` (data -> tokenizer -> training -> evaluation -> this folder).

## Evaluation

Where2Place metric (`robopoint_hf.evaluation.where2place`, `strict` protocol: normalized points scaled by the real image size,
a question's score is the fraction of its points inside the ground-truth mask, unparseable answers score 0), greedy
decoding, on {results["num_questions"]} held-out synthetic questions (`--split-eval`, scenes never seen in training).
Baselines: one point at the image centre; five uniform random points. "Images shuffled": the same model, each
question asked about the next question's image (what it scores without seeing the scene).

{results_table(results)}

Overall accuracy **{overall:.3f}**; {results["model"]["num_parsed"]} of {results["num_questions"]} answers parsed
as point lists ({results["model"]["num_failed"]} failures).

{real_line}

## Limitations

{quality_note}Synthetic scenes only; fixed vocabulary of objects, colours and phrasings (other wordings degrade quickly); no
occlusion, no 3D, no real textures. The answer always has 3-8 points because the training answers did.

## Citation

RoboPoint: Yuan et al., 2024, *RoboPoint: A Vision-Language Model for Spatial Affordance Prediction for Robotics*,
https://huggingface.co/papers/2406.10721.
"""


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
    eval_parser.add_argument("--answers", default=None, help="answer file (jsonl) to write")
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
        results = evaluate(
            args.model, args.data, limit=args.limit, batch_size=args.batch_size, answers_out=args.answers
        )
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
        print(results_table(results))
        print(f"parsed {results['model']['num_parsed']}/{results['num_questions']}")
    else:
        ship(args.model, args.results, args.eval_data, args.answers, args.out, real_results_file=args.real_results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
