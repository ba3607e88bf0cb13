"""Training batches for RoboPoint: exact labels, padding, and single-modality length-grouped micro-batches.

Labels are found by STRUCTURE, not by counting tokens. A conversation is rendered with the checkpoint's chat template,
whose ``{% generation %}`` markers give the character span of every assistant answer (its leading space and its
closing ``</s>`` included); the rendered text is then tokenized exactly like
:meth:`RoboPointProcessor.tokenize_prompt` (pieces between ``<image>`` tokenized on their own, one BOS, each image
expanded to ``image_seq_length`` placeholders) with character offsets, and a token is supervised when it starts
inside an answer span. Everything else -- BOS, system prompt, ``USER: ...``, ``ASSISTANT:``, image positions,
padding -- is ``-100``.

For a single-turn sample this gives the original's labels token for token (answer tokens + ``</s>``; for
``llava_llama_2`` also the lone ``▁`` before ``</s>``). For multi-turn samples it FIXES AN ORIGINAL BUG: the
original's ``preprocess_v1`` masked by length arithmetic with a ``legacy``-tokenizer adjustment of the wrong sign,
so with the Vicuna tokenizer RoboPoint trained with, every multi-turn sample hit a "tokenization mismatch" and was
masked ENTIRELY (most of the LLaVA-instruct and academic-VQA part of the mix never reached the loss). Here every
answer of every turn is trained, whatever the tokenizer's ``legacy`` setting; for the tokenizer configurations where
the original happened to be right, the labels are identical to its labels.

Other differences from the original collator, on purpose:

* ``attention_mask`` marks real tokens, not ``input_ids != pad_token_id``: the original padded with ``<unk>`` and so
  also hid genuine ``<unk>`` tokens from attention.
* Sequences are never cut: the original truncated at ``model_max_length`` (an image sample could lose its answer).
  A row longer than ``max_length`` raises here; :func:`conversation_lengths` lets the training script drop such rows
  up front, with a count, before any step runs.
* Text-only rows in a batch with images simply contribute no image (the original fed a zero image through CLIP).

The sampler reproduces the original ``group_by_modality_length`` batching (``llava_trainer.py``) in a simpler form,
see :func:`modality_length_grouped_indices`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import Sampler

if TYPE_CHECKING:
    from robopoint_hf.model.processing_robopoint import RoboPointProcessor

IGNORE_INDEX = -100


def render_with_answer_spans(
    processor: RoboPointProcessor, messages: list[dict[str, Any]], chat_template: str | None = None
) -> tuple[str, list[tuple[int, int]]]:
    """Renders a conversation and returns the character spans of the assistant answers.

    Args:
        processor ([`RoboPointProcessor`]): gives the chat template (with ``{% generation %}`` markers).
        messages (`list[dict]`): the conversation in the transformers chat format.
        chat_template (`str`, *optional*): a template overriding the processor's.

    Returns:
        `tuple[str, list[tuple[int, int]]]`: the rendered text and one ``(start, end)`` span per assistant turn.
    """
    from transformers.utils.chat_template_utils import render_jinja_template

    template = chat_template or processor.chat_template
    rendered, spans = render_jinja_template([messages], chat_template=template, return_assistant_tokens_mask=True)
    return rendered[0], [tuple(span) for span in spans[0]]


def tokenize_conversation(
    processor: RoboPointProcessor, messages: list[dict[str, Any]], chat_template: str | None = None
) -> tuple[list[int], list[int]]:
    """Token ids and labels of one training conversation (see the module docstring).

    Args:
        processor ([`RoboPointProcessor`]): tokenizer, image placeholder settings and chat template.
        messages (`list[dict]`): the conversation (user/assistant turns; image parts as ``{"type": "image"}``).
        chat_template (`str`, *optional*): a template overriding the processor's.

    Returns:
        `tuple[list[int], list[int]]`: ``input_ids`` (each image = ``image_seq_length`` placeholder ids) and
        ``labels`` (``-100`` outside the assistant answers), of equal length.

    Raises:
        ValueError: if the conversation has no assistant answer, or an answer gets no token.
    """
    rendered, spans = render_with_answer_spans(processor, messages, chat_template)
    if not spans:
        raise ValueError(
            "The conversation has no assistant answer to train on (or the chat template has no {% generation %} "
            "markers)."
        )
    input_ids, offsets = processor.tokenize_prompt(rendered, return_offsets=True)
    supervised: list[bool] = []
    covered = [False] * len(spans)
    for start, end in offsets:
        # Zero-width tokens (BOS, image placeholders) carry no text, so they never belong to an answer.
        hit = next((k for k, (s, e) in enumerate(spans) if s <= start < e), None) if end > start else None
        supervised.append(hit is not None)
        if hit is not None:
            covered[hit] = True
    if not all(covered):
        missing = [k for k, flag in enumerate(covered) if not flag]
        raise ValueError(f"Assistant answer(s) {missing} produced no token; check the chat template.")
    labels = [token if flag else IGNORE_INDEX for token, flag in zip(input_ids, supervised, strict=True)]
    return input_ids, labels


def count_images(messages: list[dict[str, Any]]) -> int:
    """Number of image parts in a conversation (``data.py`` guarantees it equals the row's number of images)."""
    return sum(
        1
        for message in messages
        if not isinstance(message["content"], str)
        for part in message["content"]
        if part.get("type") == "image"
    )


def conversation_lengths(processor: RoboPointProcessor, conversations: list[list[dict]]) -> dict[str, list[int]]:
    """Batched ``datasets.map`` function over the ``messages`` column: exact length of each row.

    Use with ``input_columns=["messages"]`` so that images are not decoded. Returns
    ``{"num_tokens": [...], "modality_length": [...]}``: the length with image positions included, and the same
    length negated for text-only rows, which is what :class:`ModalityLengthGroupedSampler` consumes.
    """
    lengths, modality = [], []
    for messages in conversations:
        length = len(tokenize_conversation(processor, messages)[0])
        lengths.append(length)
        modality.append(length if count_images(messages) else -length)
    return {"num_tokens": lengths, "modality_length": modality}


@dataclass
class RoboPointDataCollator:
    r"""Turns dataset rows (``messages`` + ``images``, as made by :func:`robopoint_hf.training.data.load_robopoint_dataset`)
    into a right-padded training batch.

    Args:
        processor ([`RoboPointProcessor`]):
            Tokenizer, chat template and image processor of the model being trained.
        max_length (`int` or `None`, *optional*, defaults to `2048`):
            Longest allowed sequence, image positions included. Longer rows raise (they are never cut, so an image
            can never lose its placeholders); drop them before training with :func:`conversation_lengths`.
        pad_to_multiple_of (`int`, *optional*):
            Pad the sequence length up to a multiple of this value.

    Returns (from ``__call__``):
        `dict[str, torch.Tensor]`: ``input_ids`` and ``labels`` of shape `(batch, seq)`, ``attention_mask``
        `(batch, seq)` and, when a row has an image, ``pixel_values`` `(num_images, 3, size, size)` in row order.

    Example:

    ```python
    >>> collator = RoboPointDataCollator(processor)
    >>> batch = collator([dataset[0], dataset[1]])  # doctest: +SKIP
    >>> batch["labels"].shape == batch["input_ids"].shape  # doctest: +SKIP
    True
    ```
    """

    processor: RoboPointProcessor
    max_length: int | None = 2048
    pad_to_multiple_of: int | None = None

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        rows, images = [], []
        for example in examples:
            input_ids, labels = tokenize_conversation(self.processor, example["messages"])
            row_images = list(example.get("images") or [])
            if len(row_images) != count_images(example["messages"]):
                raise ValueError(
                    f"Row {example.get('id')!r}: {count_images(example['messages'])} image part(s) in 'messages' but "
                    f"{len(row_images)} image(s) in 'images'."
                )
            if self.max_length is not None and len(input_ids) > self.max_length:
                raise ValueError(
                    f"Row {example.get('id')!r} is {len(input_ids)} tokens long (image positions included), longer "
                    f"than max_length={self.max_length}. Rows are never cut (a cut could fall inside the image); "
                    "drop them before training (`on_too_long='skip'`) or raise max_length."
                )
            rows.append((input_ids, labels))
            images.extend(row_images)
        width = max(len(ids) for ids, _ in rows)
        if self.pad_to_multiple_of:
            width = math.ceil(width / self.pad_to_multiple_of) * self.pad_to_multiple_of
        tokenizer = self.processor.tokenizer
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.unk_token_id or 0
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for index, (ids, row_labels) in enumerate(rows):
            input_ids[index, : len(ids)] = torch.tensor(ids)
            labels[index, : len(ids)] = torch.tensor(row_labels)
            attention_mask[index, : len(ids)] = 1
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        if images:
            batch["pixel_values"] = torch.as_tensor(self.processor.image_processor(images)["pixel_values"])
        return batch


def _balanced_split(indices: list[int], lengths: Sequence[int], num_chunks: int) -> list[list[int]]:
    """Splits length-sorted ``indices`` into ``num_chunks`` micro-batches of equal size and similar total length.

    Each index goes to the chunk with the smallest running total that still has room (what the original does, so
    that data-parallel ranks and accumulation steps get similar amounts of work); uneven sizes fall back to
    round-robin.
    """
    if len(indices) % num_chunks:
        return [indices[k::num_chunks] for k in range(num_chunks)]
    size = len(indices) // num_chunks
    chunks: list[list[int]] = [[] for _ in range(num_chunks)]
    totals = [0] * num_chunks
    for index in indices:
        target = min((k for k in range(num_chunks) if len(chunks[k]) < size), key=totals.__getitem__)
        chunks[target].append(index)
        totals[target] += lengths[index]
    return chunks


def _megabatches(
    indices: list[int],
    lengths: Sequence[int],
    micro_batch_size: int,
    num_chunks: int,
    generator: torch.Generator,
    length_group_size: int = 1,
) -> list[list[int]]:
    """Shuffles one pool, cuts it into megabatches of ``micro_batch_size * num_chunks`` and orders each of them.

    With ``length_group_size`` > 1, that many megabatches are sorted together before they are cut, so that each
    holds rows of similar length (less padding, see :func:`modality_length_grouped_indices`).
    """
    order = [indices[k] for k in torch.randperm(len(indices), generator=generator).tolist()]
    size = micro_batch_size * num_chunks
    megabatches = []
    for group_start in range(0, len(order), size * length_group_size):
        group = sorted(
            order[group_start : group_start + size * length_group_size], key=lengths.__getitem__, reverse=True
        )
        for start in range(0, len(group), size):
            megabatch = group[start : start + size]
            megabatches.append([index for chunk in _balanced_split(megabatch, lengths, num_chunks) for index in chunk])
    return megabatches


def modality_length_grouped_indices(
    modality_lengths: Sequence[int],
    micro_batch_size: int,
    num_chunks: int,
    generator: torch.Generator,
    length_group_size: int = 1,
) -> list[int]:
    """Sample order in which every micro-batch holds one modality and similar lengths (original semantics).

    ``modality_lengths`` are positive for image rows and negative for text-only rows (zero is not allowed). Each
    modality pool is shuffled and cut into megabatches of ``micro_batch_size * num_chunks`` rows
    (``num_chunks`` = data-parallel world size x gradient-accumulation steps); each megabatch is sorted by length and
    dealt into ``num_chunks`` balanced micro-batches. The full megabatches of both pools are shuffled together; the
    two incomplete last megabatches go at the end (image then text), so at most one micro-batch of the epoch mixes
    modalities. Differences from the original: exact token lengths instead of word counts (+128 for an image), a
    dedicated seeded generator (reproducible across resumes), leftovers kept in sampler order instead of index
    order.

    ``length_group_size`` > 1 (not in the original) sorts that many megabatches of a pool together before cutting
    them, like transformers' ``group_by_length`` (``mega_batch_mult``): a micro-batch then holds rows of similar
    length, so it pads little -- on short rows of varied length (RoboPoint's answers hold 1-8 points) padding can be
    a third of the tokens. The megabatches are still shuffled, so lengths do not drift through the epoch.

    Args:
        modality_lengths (sequence of `int`): signed length per row.
        micro_batch_size (`int`): rows per device per forward pass.
        num_chunks (`int`): world size x gradient accumulation steps.
        generator (`torch.Generator`): the randomness.
        length_group_size (`int`, *optional*, defaults to `1`): megabatches sorted by length together.

    Returns:
        `list[int]`: a permutation of ``range(len(modality_lengths))``.
    """
    if any(length == 0 for length in modality_lengths):
        raise ValueError("Lengths must be non-zero: positive for image rows, negative for text-only rows.")
    if length_group_size < 1:
        raise ValueError(f"length_group_size must be >= 1, got {length_group_size}.")
    lengths = [abs(length) for length in modality_lengths]
    pools = [
        [index for index, length in enumerate(modality_lengths) if length > 0],
        [index for index, length in enumerate(modality_lengths) if length < 0],
    ]
    full, leftovers = [], []
    for pool in pools:
        if not pool:
            continue
        megabatches = _megabatches(pool, lengths, micro_batch_size, num_chunks, generator, length_group_size)
        if len(megabatches[-1]) < micro_batch_size * num_chunks:
            leftovers.append(megabatches.pop())
        full.extend(megabatches)
    order = torch.randperm(len(full), generator=generator).tolist()
    return [index for k in order for index in full[k]] + [index for megabatch in leftovers for index in megabatch]


class ModalityLengthGroupedSampler(Sampler[int]):
    r"""Sampler yielding :func:`modality_length_grouped_indices`, reshuffled per epoch from ``seed + epoch``.

    Args:
        modality_lengths (sequence of `int`): signed length per row (see :func:`conversation_lengths`).
        micro_batch_size (`int`): per-device batch size.
        num_chunks (`int`, *optional*, defaults to `1`): world size x gradient accumulation steps.
        seed (`int`, *optional*, defaults to `42`): base seed.
        length_group_size (`int`, *optional*, defaults to `1`): megabatches sorted by length together (`1`: the
            original batching).
    """

    def __init__(
        self,
        modality_lengths: Sequence[int],
        micro_batch_size: int,
        num_chunks: int = 1,
        seed: int = 42,
        length_group_size: int = 1,
    ):
        self.modality_lengths = list(modality_lengths)
        self.micro_batch_size = micro_batch_size
        self.num_chunks = num_chunks
        self.seed = seed
        self.length_group_size = length_group_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.modality_lengths)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        yield from modality_length_grouped_indices(
            self.modality_lengths, self.micro_batch_size, self.num_chunks, generator, self.length_group_size
        )


__all__ = [
    "IGNORE_INDEX",
    "ModalityLengthGroupedSampler",
    "RoboPointDataCollator",
    "conversation_lengths",
    "count_images",
    "modality_length_grouped_indices",
    "render_with_answer_spans",
    "tokenize_conversation",
]
