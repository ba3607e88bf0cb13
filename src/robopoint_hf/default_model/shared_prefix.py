"""Several questions about one image, decoded on one copy of their common prefix.

A robot asks a handful of questions about one camera frame. Batched, each row carries its own copy of the system
prompt and the 576 image positions, and a decoding step reads every copy. Here the questions are packed into ONE
sequence instead::

    [ common prefix | question 1 | question 2 | ... ]   then, every step: [ next token of each unfinished row ]

and a 4D attention mask lets each token see the prefix and its own row only, with the position it has in its own
unshared prompt. A step then runs the linear layers on one row per question (as a batch would) but reads the
prefix's cache once. Each row attends to exactly the keys of its unshared call, so the tokens are those of
batched ``generate`` up to float summation order. What it costs and saves: ``docs/design/decoding.md``.
"""

from __future__ import annotations

import torch
from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList
from transformers.generation.utils import GenerateDecoderOnlyOutput
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .kv_cache import ChunkedDynamicCache

PACKED_ATTENTION = ("sdpa", "eager")
"""Attention implementations that take an arbitrary 4D mask (flash attention does not)."""


def packing_obstacle(
    attention: str | None,
    num_beams: int | None,
    output_attentions: bool | None,
    output_hidden_states: bool | None,
    synced_gpus: bool | None,
) -> str | None:
    """Why `shared_prefix_generate` cannot decode a call with these settings, or None when it can."""
    if attention not in PACKED_ATTENTION:
        return f"shared_prefix_generate needs one of {PACKED_ATTENTION} attention, not {attention}."
    if synced_gpus or (num_beams or 1) != 1:
        return "shared_prefix_generate decodes greedily or by sampling, one beam, without synced_gpus."
    if output_attentions or output_hidden_states:
        return "shared_prefix_generate returns no attentions or hidden states."
    return None


def unpadded_rows(input_ids: torch.LongTensor, attention_mask: torch.Tensor | None) -> list[torch.LongTensor]:
    """Each row's tokens without its padding."""
    if attention_mask is None:
        return list(input_ids)
    return [ids[mask.bool()] for ids, mask in zip(input_ids, attention_mask, strict=True)]


def common_prefix_length(rows: list[torch.LongTensor], image_token_id: int) -> int:
    """Length of the tokens every row starts with, leaving each row at least one token of its own (its logits start
    the answer). Raises ``ValueError`` when an image placeholder lies past it: the image must be shared."""
    shortest = min(len(row) for row in rows)
    heads = torch.stack([row[:shortest] for row in rows])
    differing = (heads != heads[:1]).any(dim=0).nonzero()
    length = min(shortest - 1, int(differing[0]) if len(differing) else shortest)
    if any(bool((row[length:] == image_token_id).any()) for row in rows):
        raise ValueError("share_prefix=True needs every row's image placeholders inside the common prefix.")
    return length


def first_image_inputs(model_kwargs: dict) -> dict:
    """The image inputs of ``generate``'s model kwargs cut to the first row (every row shows that image)."""
    if model_kwargs.get("pixel_values") is not None:
        return {"pixel_values": model_kwargs["pixel_values"][:1]}
    if (encoded := model_kwargs.get("mm_encoder_outputs")) is not None:
        return {
            "mm_encoder_outputs": {
                "image": BaseModelOutputWithPooling(pooler_output=encoded["image"].pooler_output[:1])
            }
        }
    return {}


class PackedRows:
    """Which row owns each position of the packed sequence (-1: the prefix, seen by all), and the masks and
    positions that follow from it."""

    def __init__(self, prefix_length: int, suffix_lengths: list[int], device: torch.device, dtype, boolean: bool):
        self.prefix_length, self.dtype, self.boolean = prefix_length, dtype, boolean
        self.owner = torch.cat(
            [torch.full((prefix_length,), -1, dtype=torch.long, device=device)]
            + [torch.full((n,), row, dtype=torch.long, device=device) for row, n in enumerate(suffix_lengths)]
        )
        self.next_position = torch.tensor(suffix_lengths, dtype=torch.long, device=device) + prefix_length

    def questions(self) -> tuple[torch.LongTensor, torch.Tensor]:
        """Positions and mask of the questions, fed after the prefix: each question at the positions it has in its
        own prompt, seeing the prefix and itself, causally."""
        ends = self.next_position.tolist()
        positions = torch.cat([torch.arange(self.prefix_length, end) for end in ends]).to(self.owner.device)
        queries = self.owner[self.prefix_length :, None]
        keys = self.owner[None, :]
        seen = torch.tril((keys == -1) | (keys == queries), diagonal=self.prefix_length)
        return positions[None], self._mask(seen)

    def step(self, rows: torch.LongTensor) -> tuple[torch.LongTensor, torch.Tensor]:
        """Positions and mask of one new token for each of ``rows`` (appended to the sequence): each sees the prefix,
        its own row's tokens and itself."""
        positions = self.next_position[rows]
        self.next_position[rows] += 1
        self.owner = torch.cat([self.owner, rows])
        keys = self.owner[None, :]
        return positions[None], self._mask((keys == -1) | (keys == rows[:, None]))

    def _mask(self, seen: torch.Tensor) -> torch.Tensor:
        """``seen`` as the 4D mask the attention implementation takes: boolean for sdpa, additive for eager."""
        if self.boolean:
            return seen[None, None]
        blocked = torch.full(seen.shape, torch.finfo(self.dtype).min, dtype=self.dtype, device=seen.device)
        return blocked.masked_fill(seen, 0.0)[None, None]


def shared_prefix_generate(
    model,
    input_ids: torch.LongTensor,
    logits_processor: LogitsProcessorList,
    stopping_criteria: StoppingCriteriaList,
    generation_config: GenerationConfig,
    synced_gpus: bool = False,
    streamer=None,
    **model_kwargs,
):
    r"""Greedy or sampled decoding of rows that share their image, on one packed sequence (see the module).

    A ``custom_generate`` loop for :meth:`~transformers.GenerationMixin.generate`, used by
    ``RoboPointForConditionalGeneration.generate(share_prefix=True)`` where it applies (sdpa or eager attention, no
    beams, no attention or hidden-state outputs). The returned ids keep the given ``input_ids`` layout, finished rows
    padded as ``generate`` pads them; scores and logits are per row as ``generate`` returns them. No cache is
    returned (its layout is the packed one).
    """
    implementation = model.config.get_text_config()._attn_implementation
    obstacle = packing_obstacle(
        implementation,
        generation_config.num_beams,
        generation_config.output_attentions,
        generation_config.output_hidden_states,
        synced_gpus,
    )
    if obstacle is not None:
        raise ValueError(obstacle)
    rows = unpadded_rows(input_ids, model_kwargs.get("attention_mask"))
    prefix_length = common_prefix_length(rows, model.config.image_token_id)
    suffixes = [row[prefix_length:] for row in rows]
    packed = PackedRows(
        prefix_length,
        [len(suffix) for suffix in suffixes],
        input_ids.device,
        model.get_input_embeddings().weight.dtype,  # the language model's (the vision tower may differ)
        implementation == "sdpa",
    )
    image_inputs = first_image_inputs(model_kwargs)

    keep = generation_config.return_dict_in_generate
    scores = () if keep and generation_config.output_scores else None
    raw_logits = () if keep and generation_config.output_logits else None
    pad = generation_config._pad_token_tensor
    pads_finished = any(hasattr(criteria, "eos_token_id") for criteria in stopping_criteria)
    batch = input_ids.shape[0]
    unfinished = torch.ones(batch, dtype=torch.long, device=input_ids.device)

    # The prompt: the prefix alone (causal, the attention's fast path), then the questions in one forward, keeping
    # the logits of each question's last token.
    cache = ChunkedDynamicCache()
    if prefix_length:
        model(input_ids=rows[0][None, :prefix_length], cache=cache, use_cache=True, logits_to_keep=1, **image_inputs)
        image_inputs = {}
    positions, mask = packed.questions()
    outputs = model(
        input_ids=torch.cat(suffixes)[None],
        attention_mask=mask,
        position_ids=positions,
        cache=cache,
        use_cache=True,
        logits_to_keep=torch.cumsum(packed.next_position - prefix_length, 0) - 1,
        return_dict=True,
        **image_inputs,
    )
    active = torch.arange(batch, device=input_ids.device)
    while True:
        step_logits = outputs.logits[0].to(dtype=torch.float32)
        if len(active) == batch:
            next_logits = step_logits
        else:
            next_logits = step_logits.new_zeros((batch, step_logits.shape[-1]))
            next_logits[active] = step_logits
        next_scores = logits_processor(input_ids, next_logits)
        if scores is not None:
            scores += (next_scores,)
        if raw_logits is not None:
            raw_logits += (next_logits,)
        if generation_config.do_sample:
            next_tokens = torch.multinomial(torch.softmax(next_scores, dim=-1), num_samples=1).squeeze(1)
        else:
            next_tokens = next_scores.argmax(dim=-1)
        if pads_finished:
            next_tokens = next_tokens * unfinished + pad * (1 - unfinished)
        input_ids = torch.cat([input_ids, next_tokens[:, None]], dim=-1)
        if streamer is not None:
            streamer.put(next_tokens.cpu())
        unfinished = unfinished & ~stopping_criteria(input_ids, scores)
        active = unfinished.nonzero().squeeze(1)
        if len(active) == 0:
            break
        positions, mask = packed.step(active)
        outputs = model(
            input_ids=next_tokens[active][None],
            attention_mask=mask,
            position_ids=positions,
            cache=cache,
            use_cache=True,
            return_dict=True,
        )
    if streamer is not None:
        streamer.end()
    if not keep:
        return input_ids
    return GenerateDecoderOnlyOutput(sequences=input_ids, scores=scores, logits=raw_logits)


__all__ = [
    "common_prefix_length",
    "first_image_inputs",
    "packing_obstacle",
    "shared_prefix_generate",
    "unpadded_rows",
]
