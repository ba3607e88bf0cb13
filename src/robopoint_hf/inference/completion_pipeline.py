"""`RoboPointPipeline` whose results also say what an OpenAI chat completion reports: how the answer ended, how many
tokens it took, and each token's log-probability (see :func:`.completions.completion_pipeline`).

A subclass rather than new keys in the pipeline's documented output: those keys only matter to a server, and the
pipeline's module is copied next to the weights of every folder.
"""

from __future__ import annotations

from typing import Any

import torch

from robopoint_hf.model.pipeline_robopoint import RoboPointPipeline, token_char_ends
from robopoint_hf.model.points import DEFAULT_MAX_NEW_TOKENS

__all__ = ["CompletionPipeline"]


def _trimmed(pieces: list[str]) -> list[str]:
    """Token texts without the whitespace the answer text is stripped of, so that they concatenate to it."""
    pieces = list(pieces)
    for index in range(len(pieces)):
        pieces[index] = pieces[index].lstrip()
        if pieces[index]:
            break
    for index in reversed(range(len(pieces))):
        pieces[index] = pieces[index].rstrip()
        if pieces[index]:
            break
    return pieces


class CompletionPipeline(RoboPointPipeline):
    """The pipeline's results plus ``finish_reason``, ``prompt_tokens``, ``completion_tokens`` and
    ``token_logprobs`` (``[(token text, log-probability), ...]``)."""

    def _forward(self, model_inputs: dict[str, Any], generate_kwargs: dict | None = None, **kwargs) -> dict[str, Any]:
        outputs = super()._forward(model_inputs, generate_kwargs=generate_kwargs, **kwargs)
        mask = model_inputs["attention_mask"]
        limit = (
            (generate_kwargs or {}).get("max_new_tokens")
            or self.model.generation_config.max_new_tokens
            or DEFAULT_MAX_NEW_TOKENS
        )
        outputs["prompt_tokens"] = mask.sum(dim=1)
        outputs["max_new_tokens"] = torch.full((mask.shape[0],), int(limit))
        return outputs

    def postprocess(self, model_outputs: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        result = super().postprocess(model_outputs, **kwargs)
        tokenizer = self.processor.tokenizer
        special = set(tokenizer.all_special_ids)
        token_ids = model_outputs["tokens"][0].tolist()
        ended = any(token in special for token in token_ids)  # EOS, or the padding of a row that finished first
        while token_ids and token_ids[-1] in special:
            token_ids.pop()
        logprobs = model_outputs["token_logprobs"][0].tolist()[: len(token_ids)]
        text = tokenizer.decode(token_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        ends = token_char_ends(tokenizer, token_ids)
        pieces = _trimmed([text[start:end] for start, end in zip([0, *ends[:-1]], ends, strict=True)])
        limit = int(model_outputs["max_new_tokens"][0])
        result.update(
            finish_reason="length" if not ended and len(token_ids) >= limit else "stop",
            prompt_tokens=int(model_outputs["prompt_tokens"][0]),
            completion_tokens=len(token_ids),
            token_logprobs=list(zip(pieces, logprobs, strict=True)),
        )
        return result
