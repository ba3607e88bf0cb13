"""``pipeline("robopoint")``: image + instruction -> points in normalized and pixel coordinates, each with a score.

RoboPoint answers with text such as ``[(0.461, 0.527), (0.498, 0.521)]``. This pipeline does everything around the
model call that every user would otherwise rewrite: it renders the instruction with the checkpoint's own prompt
template (the processor does this for bare instructions) after appending the answer-format sentence RoboPoint was
trained with, generates (greedy unless told otherwise), parses the answer with the project's one grammar
(:mod:`.points`), and returns structured points relative to the ORIGINAL image.

Two things the paper lists as limitations are addressed here:

* **No confidence estimate** -> every point and box gets a ``score``: the geometric mean of the generation
  probabilities of the tokens that spell its tuple (see :func:`item_scores`).
* **No control over the number of points** -> ``max_points`` keeps the highest-scoring points.

Answers are decoded in RoboPoint's answer language by default (:mod:`.decoding`: a grammar mask that only lets
answers that parse through, and an end at the closing ``]``).

Several instructions about one image (the usual robot loop: one camera frame, many questions) run the vision tower
once per call: rows whose pixels equal an image already encoded in the same call reuse its projected features
(``model.encode_images`` + ``generate(image_features=...)``); ``pipe(image, [q1, ..., q5])`` decodes the questions
in one batch whose common prefix (system prompt and image) is prefilled once (``generate(share_prefix=True)``).

The plain LLaVA export of a RoboPoint folder (``robopoint export``: ``LlavaForConditionalGeneration`` with its
``LlavaProcessor``) runs through the same stages: its chat template renders the prompt RoboPoint's processor renders,
native ``generate`` takes the pixel values, and decoding, parsing and scores are the same (the export's extra
``<image>`` row of the logits is suppressed by its generation config and blocked by the grammar).

This module is copied next to the weights by ``RoboPointPipeline.save_pretrained`` (``custom_pipelines`` in
config.json), so it imports only torch, transformers and relative siblings that themselves import only
numpy/PIL/transformers (``.points``, ``.image_processing_robopoint``, ``.decoding``, which imports its optional
grammar compiler only when constraining) -- never ``robopoint_hf``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from transformers import AutoModelForImageTextToText, GenerationConfig, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from .decoding import AnswerLogitsProcessor, answer_decoding_kwargs
from .image_processing_robopoint import load_image
from .point_records import answer_records, drop_repeated_points, item_scores, keep_top_points
from .points import DEFAULT_MAX_NEW_TOKENS, add_answer_format, parse_points
from .templates import IMAGE_PLACEHOLDER

RECENT_IMAGES = 4
"""How many of a call's most recent distinct images keep their pixel values and features for reuse. Repeats come in
runs (one frame asked several questions, the eval runner's batches of one image's questions), and a call over a long
list of images must not hold every image's features until it returns."""

TASK = "robopoint"

# Every GenerationConfig attribute may be passed to the pipeline call directly (temperature=0.2, top_p=..., ...).
_GENERATION_KEYS = frozenset(key for key in vars(GenerationConfig()) if not key.startswith("_"))


# ---------------------------------------------------------------------------------------------------- scoring
def token_char_ends(tokenizer, token_ids: Sequence[int]) -> list[int]:
    """End offset of every token in ``tokenizer.decode(token_ids, skip_special_tokens=True)``.

    Found by incremental decoding (decode each prefix, one batched call), because SentencePiece tokens do not map to
    characters one to one (``▁`` becomes a space that is dropped at the start, digits and brackets merge into
    tokens such as ``▁[(`` or ``),``). Offsets are forced monotonic and capped at the full text's length, which
    keeps them valid when a prefix ends inside a multi-byte character (decoded as a replacement character).

    Args:
        tokenizer: the checkpoint's tokenizer.
        token_ids (`Sequence[int]`): generated ids, prompt excluded.

    Returns:
        `list[int]`: ``ends[t]``; token ``t`` covers characters ``[ends[t - 1], ends[t])``, token 0 from 0.
    """
    if not token_ids:
        return []
    prefixes = [list(token_ids[: index + 1]) for index in range(len(token_ids))]
    texts = tokenizer.batch_decode(prefixes, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    total = len(texts[-1])
    ends, running = [], 0
    for text in texts:
        running = min(max(running, len(text)), total)
        ends.append(running)
    return ends


def generated_token_logprobs(
    scores: Sequence[torch.Tensor], new_tokens: torch.Tensor, beam_indices: torch.Tensor | None = None
) -> torch.Tensor:
    """Log-probability of every generated token under its step's scores (``generate(output_scores=True)``).

    Like ``compute_transition_scores(..., normalize_logits=True)``, but each step is normalised on its own contiguous
    ``[rows, vocab]`` tensor: that method normalises all steps at once along a strided dimension, where float32
    summation over 32000 tokens drifts by ~1e-3 (0.7508 for a token of probability 0.75).

    Args:
        scores (`Sequence[torch.Tensor]`): one ``[rows, vocab]`` tensor per step (rows = batch x beams).
        new_tokens (`torch.Tensor` of shape `(batch, steps')`): generated ids, prompt excluded.
        beam_indices (`torch.Tensor` of shape `(batch, steps)`, *optional*): beam of each step (beam search only;
            -1 after a sequence ended).

    Returns:
        `torch.Tensor` of shape `(batch, min(steps, steps'))`, float32.
    """
    steps = min(len(scores), new_tokens.shape[1])
    columns = []
    for step in range(steps):
        rows = torch.arange(new_tokens.shape[0]) if beam_indices is None else beam_indices[:, step].clamp(min=0)
        step_logprobs = torch.log_softmax(scores[step].float(), dim=-1)[rows.to(scores[step].device)]
        columns.append(step_logprobs.gather(1, new_tokens[:, step : step + 1]).squeeze(1))
    return (
        torch.stack(columns, dim=1) if columns else new_tokens.new_zeros((new_tokens.shape[0], 0), dtype=torch.float)
    )


# ---------------------------------------------------------------------------------------------------- pipeline
class RoboPointPipeline(Pipeline):
    r"""Spatial-affordance pointing with a RoboPoint model: image + instruction -> scored points.

    Built on [`Pipeline`] rather than [`ImageTextToTextPipeline`]: that pipeline's input handling (chats), forward
    (one `generate` call on pixel values, ids only) and output (text) would all have to be overridden, so nothing of
    it would be reused.

    Load with ``pipeline("robopoint", model=folder)`` once ``robopoint_hf`` is imported, or
    ``pipeline(model=folder, trust_remote_code=True)`` without the package: every folder the package writes declares
    this pipeline in ``custom_pipelines`` (under its own task name, so that the package's ``"robopoint"`` task is
    not sent to the folder's code; see `robopoint_hf.hub_checkpoint`). The model is a RoboPoint model
    (``model_type="robopoint"``) or its plain LLaVA export (``model_type="llava"``, with the export's
    ``LlavaProcessor``), whose folders declare this pipeline too.

    Call arguments (at construction, as defaults, or per call):

        answer_format (`bool`, *optional*, defaults to `True`):
            Append RoboPoint's answer-format sentence (`~points.ANSWER_FORMAT_SUFFIX`) to the instruction, as in
            training. Text that already contains ``<image>`` is a complete prompt and is used verbatim.
        constrained (`bool`, *optional*, defaults to `True`):
            Decode in the answer language (:func:`~points.answer_regex`): every answer parses, coordinates are
            normalized with 3 decimals. Needs ``outlines-core`` (``pip install 'robopoint_hf[constrained]'``);
            ``constrained=False`` decodes free text.
        stop_at_answer_end (`bool`, *optional*, defaults to `True`):
            End each answer at the ``]`` that closes it, also when decoding free text.
        distinct_points (`bool`, *optional*, defaults to `False`):
            No point twice in an answer. Constrained: a token that would close a point equal to an earlier one is
            not allowed (the model writes its next choice). Free text: repeated points are dropped from ``points``.
        jump_forward (`bool`, *optional*, defaults to `True`):
            Constrained, greedy, one row per ``generate`` call: write the text the grammar forces (``.`` after
            ``0``, ``", "`` between values) in the forward of the token before it, checked against the model's own
            choice (`~decoding.jump_forward_generate`). Same tokens as without it, fewer forwards.
        max_points (`int`, *optional*):
            Constrained: the answer closes after ``max_points`` points. Free text: keep only the ``max_points``
            highest-scoring points (in the model's order). Boxes are not affected.
        max_new_tokens (`int`, *optional*), generate_kwargs (`dict`, *optional*), and any
            [`~transformers.GenerationConfig`] attribute (``do_sample``, ``temperature``, ``top_p``, ``num_beams``,
            ...): passed to ``generate``. Decoding is greedy unless the model's generation config or the call says
            otherwise; the original evaluation sampled with ``do_sample=True, temperature=0.2``. ``max_new_tokens``
            defaults to 256 when the generation config sets none.

    Returns, per input, a `dict`:

        - **points** (`list[dict]`) -- ``{"x", "y", "x_px", "y_px", "score"}``: ``x``/``y`` are fractions of the
          ORIGINAL image's width/height (RoboPoint's convention; not clamped), ``x_px``/``y_px`` the pixel of the
          original image that contains the point (floor). A tuple of integers in the answer is read as pixels.
        - **boxes** (`list[dict]`) -- ``{"x0", "y0", "x1", "y1", "x0_px", "y0_px", "x1_px", "y1_px", "score"}``
          for 4-tuples, read as corners.
        - **text** (`str`) -- the raw answer, stripped.
        - **parse_failed** (`bool`) -- nothing could be read from a non-empty answer; points and boxes are empty.

    Scores are the geometric mean of the token probabilities spelling each tuple (:func:`item_scores`) under the
    decoding distribution, which is the model's softmax under greedy decoding (after temperature/top-k/top-p when
    sampling). With the grammar mask, they are read before the mask (and before temperature/top-k/top-p), so a
    constrained answer that spells the same tokens as a free one gets the same scores. Generation keeps each step's scores (vocabulary x 4 bytes per token and row) until they are reduced
    to one log-probability per token.

    Example:

    ```python
    >>> import robopoint_hf  # registers the "robopoint" task
    >>> from transformers import pipeline
    >>> pipe = pipeline("robopoint", model="path/to/robopoint-folder")
    >>> out = pipe("sink.jpg", "Find a few spots within the vacant area on the rightmost white plate.")
    >>> out["points"][0]
    {'x': 0.461, 'y': 0.527, 'x_px': 295, 'y_px': 252, 'score': 0.93}
    >>> pipe(frame, ["Point to the mug.", "Point to free space left of the mug."], max_points=3)  # one vision pass
    ```
    """

    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False
    _pipeline_calls_generate = True
    _default_generation_config = GenerationConfig(max_new_tokens=DEFAULT_MAX_NEW_TOKENS)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        model_type = self.model.config.model_type
        if model_type not in ("robopoint", "llava"):
            raise ValueError(
                f"pipeline('robopoint') needs a RoboPoint model (model_type 'robopoint') or its plain LLaVA export "
                f"(model_type 'llava'), got {model_type!r}."
            )
        if self.processor is None:
            raise ValueError("pipeline('robopoint') needs the checkpoint's processor; pass processor=...")
        # A native LLaVA model takes pixel values in `generate` and a prompt rendered by its processor's chat template.
        self._native_llava = model_type == "llava"
        if self._native_llava and type(self.processor).__name__ == "RoboPointProcessor":
            raise ValueError(
                "A plain LLaVA model needs its own LlavaProcessor (the one its export folder holds), not a "
                "RoboPointProcessor, whose image tokens it does not expand."
            )
        # (pixel_values row, projected features) of the images encoded during the current call.
        self._encoded_images: list[tuple[torch.Tensor, torch.Tensor]] = []
        # (image input, loaded image, pixel values) of the images preprocessed during the current call.
        self._preprocessed_images: list[tuple[Any, Any, torch.Tensor]] = []

    # ------------------------------------------------------------------ parameters
    def _sanitize_parameters(
        self,
        answer_format: bool | None = None,
        max_points: int | None = None,
        constrained: bool | None = None,
        stop_at_answer_end: bool | None = None,
        distinct_points: bool | None = None,
        jump_forward: bool | None = None,
        max_new_tokens: int | None = None,
        generate_kwargs: dict | None = None,
        **kwargs,
    ):
        unknown = sorted(set(kwargs) - _GENERATION_KEYS)
        if unknown:
            raise TypeError(f"Unexpected arguments for RoboPointPipeline: {', '.join(unknown)}.")
        preprocess_params, forward_params, postprocess_params = {}, {}, {}
        if answer_format is not None:
            preprocess_params["answer_format"] = bool(answer_format)
        generate_kwargs = {**(generate_kwargs or {}), **kwargs}
        if max_new_tokens is not None:
            if "max_new_tokens" in generate_kwargs:
                raise ValueError("max_new_tokens is given twice: directly and in generate_kwargs; give it once.")
            generate_kwargs["max_new_tokens"] = max_new_tokens
        if generate_kwargs:
            forward_params["generate_kwargs"] = generate_kwargs
        if constrained is not None:
            forward_params["constrained"] = bool(constrained)
        if stop_at_answer_end is not None:
            forward_params["stop_at_answer_end"] = bool(stop_at_answer_end)
        if jump_forward is not None:
            forward_params["jump_forward"] = bool(jump_forward)
        if distinct_points is not None:
            forward_params["distinct_points"] = postprocess_params["distinct_points"] = bool(distinct_points)
        if max_points is not None:
            if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 1:
                raise ValueError(f"max_points must be a positive integer, got {max_points!r}.")
            postprocess_params["max_points"] = max_points
            forward_params["max_points"] = max_points
        return preprocess_params, forward_params, postprocess_params

    # ------------------------------------------------------------------ call
    def __call__(self, images, text: str | Sequence[str] | None = None, **kwargs):
        """Points for one image and instruction, or a list of results for lists of them.

        Args:
            images: a PIL image, numpy array (HWC or CHW), file path or http(s) URL; or a list of them; or a dict
                ``{"image": ..., "text": ...}`` / a list of such dicts.
            text (`str` or `list[str]`): the instruction(s). One image with several instructions (or several images
                with one instruction) is broadcast; two lists must have the same length.
            batch_size (`int`, *optional*): rows per ``generate`` call (left-padded). One image with a list of
                instructions defaults to one call for all of them, sharing the image's prefix.
            **kwargs: see the class docstring.

        Returns:
            `dict` for a single input, `list[dict]` for list inputs (empty for empty lists).
        """
        self._encoded_images = []  # features are reused within one call only, so weights cannot change under them
        self._preprocessed_images = []  # so are pixel values: an image object may be edited between calls
        one_image_many_questions = not isinstance(images, (list, tuple, dict)) and isinstance(text, (list, tuple))
        if one_image_many_questions and text and kwargs.get("batch_size") is None and self._batch_size is None:
            kwargs["batch_size"] = len(text)
        inputs = self._pair_inputs(images, text)
        if isinstance(inputs, list) and not inputs:
            return []  # no instruction, no result (transformers' pipeline would fail on the empty batch)
        return super().__call__(inputs, **kwargs)

    @staticmethod
    def _pair_inputs(images, text) -> dict | list[dict]:
        """``(images, text)`` in any accepted form -> ``{"image", "text"}`` dict(s)."""
        if isinstance(images, dict) or (
            isinstance(images, (list, tuple)) and images and all(isinstance(item, dict) for item in images)
        ):
            if text is not None:
                raise ValueError("Give the instruction inside the {'image', 'text'} dicts or as text=, not both.")
            return dict(images) if isinstance(images, dict) else [dict(item) for item in images]
        if text is None:
            raise ValueError("RoboPointPipeline needs an instruction: pipe(image, 'Point to the mug.').")
        if not isinstance(text, (str, list, tuple)):
            raise TypeError(f"text must be a string or a list of strings, got {type(text).__name__}.")
        image_list = isinstance(images, (list, tuple))
        text_list = not isinstance(text, str)
        if not image_list and not text_list:
            return {"image": images, "text": text}
        if image_list and text_list and len(images) != len(text):
            raise ValueError(
                f"Got {len(images)} images and {len(text)} instructions; give one of each per input, or a single "
                "image (or instruction) to pair with all of the other."
            )
        count = len(text) if text_list else len(images)
        return [
            {"image": images[index] if image_list else images, "text": text[index] if text_list else text}
            for index in range(count)
        ]

    # ------------------------------------------------------------------ stages
    def preprocess(self, inputs: dict, answer_format: bool = True) -> dict[str, Any]:
        missing = {"image", "text"} - set(inputs)
        if missing:
            raise ValueError(f"Each input needs 'image' and 'text'; missing {sorted(missing)} in {sorted(inputs)}.")
        instruction = inputs["text"]
        if not isinstance(instruction, str):
            raise TypeError(f"The instruction must be a string, got {type(instruction).__name__}.")
        if answer_format and IMAGE_PLACEHOLDER not in instruction:
            instruction = add_answer_format(instruction)
        # One image asked several questions in this call (the same object, or the same path or URL, in each input) is
        # read and preprocessed once; only the text is tokenized per question.
        source = inputs["image"]
        known = next(
            (
                entry
                for entry in self._preprocessed_images
                if entry[0] is source or (isinstance(source, str) and entry[0] == source)
            ),
            None,
        )
        if known is not None:
            _, image, pixel_values = known
            model_inputs = self.processor(text=instruction, image_count=1, return_tensors="pt")
        else:
            image = load_image(source)  # names the file or URL it cannot read
            if self._native_llava and IMAGE_PLACEHOLDER not in instruction:
                instruction = self.processor.apply_chat_template(
                    [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]}],
                    add_generation_prompt=True,
                )
            model_inputs = self.processor(images=image, text=instruction, return_tensors="pt")
            pixel_values = model_inputs["pixel_values"]
            if not self._native_llava:  # transformers' LlavaProcessor has no image_count
                self._preprocessed_images.append((source, image, pixel_values))
                del self._preprocessed_images[:-RECENT_IMAGES]
        return {
            "input_ids": model_inputs["input_ids"],
            "attention_mask": model_inputs["attention_mask"],
            "pixel_values": pixel_values,
            "image_size": image.size,
        }

    def _forward(
        self,
        model_inputs: dict[str, Any],
        generate_kwargs: dict | None = None,
        constrained: bool = True,
        stop_at_answer_end: bool = True,
        jump_forward: bool = True,
        distinct_points: bool = False,
        max_points: int | None = None,
    ) -> dict[str, Any]:
        input_ids, attention_mask = left_align(model_inputs["input_ids"], model_inputs["attention_mask"])
        generate_kwargs = self._prepare_generate_kwargs(
            dict(generate_kwargs or {}), return_dict_in_generate=True, output_scores=True
        )
        params = self._get_set_generation_params(generate_kwargs)
        if params.get("num_return_sequences", 1) != 1:
            raise ValueError("RoboPointPipeline returns one answer per input; num_return_sequences must be 1.")
        greedy = not params.get("do_sample", False) and params.get("num_beams", 1) == 1
        generate_kwargs = answer_decoding_kwargs(
            self.processor.tokenizer,
            input_ids.shape[1],
            constrained=constrained,
            stop_at_answer_end=stop_at_answer_end,
            max_points=max_points,
            distinct_points=distinct_points,
            vocab_size=self.model.config.get_text_config().vocab_size,
            keep_unmasked_scores=True,
            jump_forward=jump_forward and greedy and input_ids.shape[0] == 1,
            generate_kwargs=generate_kwargs,
        )
        if self._native_llava:
            image_kwargs = {"pixel_values": model_inputs["pixel_values"]}
        else:
            features = self._image_features(model_inputs["pixel_values"])
            share_prefix = len(features) > 1 and all(torch.equal(features[0], row) for row in features[1:])
            image_kwargs = {"image_features": features, "share_prefix": share_prefix}
        outputs = self.model.generate(
            input_ids=input_ids, attention_mask=attention_mask, **image_kwargs, **generate_kwargs
        )
        new_tokens = outputs.sequences[:, input_ids.shape[1] :]
        mask = [p for p in generate_kwargs.get("logits_processor") or [] if isinstance(p, AnswerLogitsProcessor)]
        scores = mask[-1].unmasked_scores if mask else outputs.scores
        logprobs = generated_token_logprobs(scores, new_tokens, outputs.get("beam_indices"))
        return {
            "tokens": new_tokens[:, : logprobs.shape[1]],
            "token_logprobs": logprobs,
            "image_size": model_inputs["image_size"],
        }

    def postprocess(
        self, model_outputs: dict[str, Any], max_points: int | None = None, distinct_points: bool = False
    ) -> dict[str, Any]:
        tokenizer = self.processor.tokenizer
        token_ids = model_outputs["tokens"][0].tolist()
        logprobs = model_outputs["token_logprobs"][0].tolist()
        special = set(tokenizer.all_special_ids)
        while token_ids and token_ids[-1] in special:  # EOS and the padding of finished rows: no characters
            token_ids.pop()
        logprobs = logprobs[: len(token_ids)]
        text = tokenizer.decode(token_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        parsed = parse_points(text)
        scores = item_scores(text, parsed, token_char_ends(tokenizer, token_ids), logprobs) if parsed.items else []
        points, boxes = answer_records(parsed, tuple(model_outputs["image_size"]), scores)
        if distinct_points:
            points = drop_repeated_points(points)
        return {
            "points": keep_top_points(points, max_points),
            "boxes": boxes,
            "text": text.strip(),
            "parse_failed": parsed.parse_failed,
        }

    # ------------------------------------------------------------------ helpers
    def _image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Projected features per row; an image already encoded in this call (one of the `RECENT_IMAGES`, or of this
        batch) is not encoded again."""
        encoded = self._encoded_images
        del encoded[:-RECENT_IMAGES]
        rows: list[int] = []
        pending: list[int] = []
        for pixels in pixel_values:
            index = next((i for i, (known, _) in enumerate(encoded) if torch.equal(known, pixels)), None)
            if index is None:
                encoded.append((pixels, None))
                index = len(encoded) - 1
                pending.append(index)
            rows.append(index)
        if pending:
            features = self.model.encode_images(torch.stack([encoded[index][0] for index in pending]))
            for index, row_features in zip(pending, features, strict=True):
                encoded[index] = (encoded[index][0], row_features)
        return torch.stack([encoded[index][1] for index in rows])

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> None:
        """Saves model and processor, whose ``save_pretrained`` write this pipeline's code and ``custom_pipelines``
        too (the package's one save path), for ``pipeline(model=folder, trust_remote_code=True)``.

        The base class would record the task under its registered name and default model (a path on this machine);
        the model's save records the folder's own task instead (see `robopoint_hf.hub_checkpoint`).
        """
        self.model.save_pretrained(save_directory, **kwargs)
        self.processor.save_pretrained(save_directory, **kwargs)


def left_align(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Moves padding to the left of every row (a no-op for left-padded rows).

    The pipeline's batch collation pads on the tokenizer's side, which is the right for Llama tokenizers, while
    batched generation needs left padding. A stable sort of each row by its mask puts pads first and keeps the
    tokens in order.
    """
    if bool(attention_mask[:, -1].all()):
        return input_ids, attention_mask
    order = torch.sort(attention_mask, dim=1, stable=True).indices
    return input_ids.gather(1, order), attention_mask.gather(1, order)


def register_pipeline(default: str | None = None) -> None:
    """Registers ``"robopoint"`` with :func:`transformers.pipeline` (idempotent), with `default` (a folder) as the
    model of ``pipeline("robopoint")`` without ``model=`` (the package passes its shipped tiny model).

    Registration also lets `RoboPointPipeline.save_pretrained` write ``custom_pipelines`` into config.json.
    """
    if PIPELINE_REGISTRY.supported_tasks.get(TASK, {}).get("impl") is RoboPointPipeline:
        return
    PIPELINE_REGISTRY.register_pipeline(
        TASK,
        pipeline_class=RoboPointPipeline,
        pt_model=AutoModelForImageTextToText,
        default={"model": (default, "main")} if default else None,
        type="multimodal",
    )


__all__ = [
    "RoboPointPipeline",
    "generated_token_logprobs",
    "left_align",
    "register_pipeline",
    "token_char_ends",
]
