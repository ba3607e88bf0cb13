"""RoboPoint processor: prompt template + exact tokenization around the image + image preprocessing.

Tokenization reproduces the original ``tokenizer_image_token`` bit for bit: the prompt is split at every ``<image>``
and each piece is tokenized ON ITS OWN (so each gets SentencePiece's dummy-prefix ``▁``), one BOS is kept, and each
``<image>`` becomes ``image_seq_length`` placeholder ids. This is what gives the two lone ``▁`` tokens around the
image (``... ':' 29871 [IMG] 29871 13 ...``) that the checkpoints were trained with; tokenizing the whole string
with ``<image>`` as an added token does not (it loses the second ``▁`` with non-legacy tokenizers). Because every
piece starts fresh, the ids are the same for legacy and non-legacy Llama tokenizers.

Text that contains no ``<image>`` but comes with one image is treated as a bare instruction and rendered with the
checkpoint's prompt template (``"<image>\\n" + instruction`` as the user turn), like the original ``model_vqa.py``;
text that already contains ``<image>`` is used verbatim.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin

from .image_processing_robopoint import RoboPointImageProcessor
from .package_services import SERVICES
from .templates import IMAGE_PLACEHOLDER, get_chat_template, template_name_of


class RoboPointProcessor(ProcessorMixin):
    r"""Builds RoboPoint model inputs from images and text.

    Args:
        image_processor ([`RoboPointImageProcessor`]):
            Pads to square and applies CLIP preprocessing.
        tokenizer ([`PreTrainedTokenizerBase`]):
            The Llama tokenizer of the checkpoint.
        prompt_template (`str`, *optional*, defaults to `"vicuna_v1"`):
            Name of the prompt template (see :mod:`robopoint_hf.model.templates`); sets ``chat_template`` when that is not
            given.
        image_token_id (`int`, *optional*, defaults to 32000):
            Placeholder id, as in the model config.
        image_seq_length (`int`, *optional*, defaults to 576):
            Placeholders per image, as in the model config.
        chat_template (`str`, *optional*):
            A Jinja chat template overriding ``prompt_template``.
    """

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        prompt_template: str = "vicuna_v1",
        image_token_id: int = 32000,
        image_seq_length: int = 576,
        chat_template: str | None = None,
        **kwargs,
    ):
        if image_processor is None:
            image_processor = RoboPointImageProcessor()
        self.prompt_template = prompt_template
        self.image_token = IMAGE_PLACEHOLDER
        self.image_token_id = int(image_token_id)
        self.image_seq_length = int(image_seq_length)
        if chat_template is None:
            chat_template = get_chat_template(prompt_template)
        super().__init__(image_processor, tokenizer, chat_template=chat_template)

    @classmethod
    def from_model_config(cls, tokenizer, config, **image_processor_kwargs) -> RoboPointProcessor:
        """The processor matching a model config: the one way the library builds a processor from parts.

        Args:
            tokenizer ([`PreTrainedTokenizerBase`]): the language model's tokenizer.
            config ([`RoboPointConfig`]): gives the image size, aspect-ratio mode, prompt template, placeholder id and
                placeholders per image.
            **image_processor_kwargs: override the image processor's settings (e.g. the CLIP tower's ``size``,
                ``image_mean`` and ``image_std``).
        """
        image_kwargs = {"size": config.vision_config.image_size, "image_aspect_ratio": config.image_aspect_ratio}
        return cls(
            RoboPointImageProcessor(**{**image_kwargs, **image_processor_kwargs}),
            tokenizer,
            prompt_template=config.prompt_template,
            image_token_id=config.image_token_id,
            image_seq_length=config.image_seq_length,
        )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, model_base=None, vision_tower=None, **kwargs):
        """:meth:`~transformers.ProcessorMixin.from_pretrained`, also reading ORIGINAL RoboPoint checkpoints.

        For an original-format folder or Hub id the tokenizer comes from the checkpoint (LoRA: from ``model_base``)
        and the image preprocessing from its CLIP tower (``vision_tower``, default ``mm_vision_tower``).
        """
        reader, hub = SERVICES.get("original_checkpoint"), SERVICES.get("save_path")
        if reader is not None and hub is not None:  # empty in a Hub copy: converted folders only
            hub.resolve_pretrained(pretrained_model_name_or_path, what="processor")  # one line for an unreachable id
            if reader.is_original_checkpoint(pretrained_model_name_or_path):
                return SERVICES["load_original_processor"](pretrained_model_name_or_path, model_base, vision_tower)
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """:meth:`~transformers.ProcessorMixin.save_pretrained`; with the package installed, through its one save
        path (:func:`robopoint_hf.hub_checkpoint.write_remote_code`: code files, ``auto_map``)."""
        files = super().save_pretrained(save_directory, *args, **kwargs)
        if SERVICES.get("save_path") is not None:  # None in a Hub copy: it saves as transformers does
            SERVICES["save_path"].write_remote_code(save_directory)
        return files

    @property
    def uses_known_template(self) -> bool:
        return template_name_of(self.chat_template) is not None

    # ------------------------------------------------------------------ text
    def build_prompt(self, instruction: str, num_images: int = 1) -> str:
        """Renders a bare instruction (no ``<image>``) as a single user turn awaiting the answer."""
        content = [{"type": "image"}] * num_images + [{"type": "text", "text": instruction}]
        return self.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)

    def tokenize_prompt(
        self, prompt: str, add_special_tokens: bool = True, return_offsets: bool = False
    ) -> list[int] | tuple[list[int], list[tuple[int, int]]]:
        """Original ``tokenizer_image_token``: pieces between ``<image>`` tokenized separately, one BOS kept.

        With ``return_offsets=True`` also returns each token's ``(start, end)`` character span in ``prompt``;
        BOS and image placeholders are zero-width (the training collator uses this to find answer tokens).
        """
        bos = self.tokenizer.bos_token_id
        image_ids = [self.image_token_id] * self.image_seq_length
        ids: list[int] = []
        offsets: list[tuple[int, int]] = []
        keep_bos = None  # decided by the first piece: one BOS for the whole prompt, or none
        piece_start = 0
        for index, piece in enumerate(prompt.split(self.image_token)):
            if index:
                ids.extend(image_ids)
                offsets.extend(
                    [(piece_start - len(self.image_token), piece_start - len(self.image_token))] * len(image_ids)
                )
            encoding = self.tokenizer(piece, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
            piece_ids, piece_offsets = list(encoding["input_ids"]), list(encoding["offset_mapping"])
            if keep_bos is None:
                keep_bos = add_special_tokens and bos is not None and piece_ids[:1] == [bos]
            elif keep_bos and piece_ids[:1] == [bos]:
                piece_ids, piece_offsets = piece_ids[1:], piece_offsets[1:]
            ids.extend(piece_ids)
            offsets.extend(
                (piece_start + a, piece_start + b) if b > a else (piece_start + a,) * 2 for a, b in piece_offsets
            )
            piece_start += len(piece) + len(self.image_token)
        return (ids, offsets) if return_offsets else ids

    # ------------------------------------------------------------------ call
    def __call__(
        self,
        images=None,
        text: str | Sequence[str] | None = None,
        *,
        padding_side: str = "left",
        max_length: int | None = None,
        return_tensors: str | None = None,
        add_special_tokens: bool = True,
        image_count: int | None = None,
        **kwargs,
    ) -> BatchFeature:
        r"""Tokenizes ``text`` and preprocesses ``images``.

        Args:
            images: one image, a list (one per ``<image>``, in order), or a list of lists (one list per text).
            text: one prompt or instruction, or a batch of them.
            padding_side (`str`, defaults to `"left"`): side to pad a batch on; left is what batched generation
                needs (the training collator pads right).
            max_length (`int`, *optional*): longest allowed sequence, image positions included; defaults to the
                tokenizer's ``model_max_length``. Longer prompts raise instead of being cut (a cut inside the image
                positions would silently corrupt the input).
            return_tensors (`str`, *optional*): ``"pt"`` or ``"np"``.
            image_count (`int`, *optional*): instead of ``images``, how many images each text is for, when their
                pixel values are computed elsewhere (once for several questions about one frame): the texts are
                templated and checked as with that many images, and no ``pixel_values`` are returned.

        Returns:
            [`BatchFeature`] with ``input_ids``, ``attention_mask`` and, with images, ``pixel_values``.
        """
        for modality in ("videos", "audio"):
            if kwargs.pop(modality, None) is not None:
                raise ValueError(f"RoboPoint takes images and text only, not {modality}.")
        kwargs.pop("padding", None)  # we always pad a batch to its longest row
        kwargs.pop("images_kwargs", None)
        kwargs.pop("text_kwargs", None)
        if kwargs:
            raise TypeError(f"Unexpected arguments for RoboPointProcessor: {', '.join(sorted(kwargs))}.")
        if text is None:
            if images is None:
                raise ValueError("Pass text, images, or both.")
            return BatchFeature(dict(self.image_processor(self._flatten_images(images))), tensor_type=return_tensors)
        texts = [text] if isinstance(text, str) else list(text)
        image_list = self._flatten_images(images)
        if image_count is not None:
            if image_list:
                raise ValueError("Give images or image_count, not both.")
            if isinstance(image_count, bool) or not isinstance(image_count, int) or image_count < 0:
                raise ValueError(f"image_count must be a non-negative integer, got {image_count!r}.")
        prompts = self._prompts_with_placeholders(texts, image_list or [None] * (image_count or 0) * len(texts))
        ids = [self.tokenize_prompt(prompt, add_special_tokens=add_special_tokens) for prompt in prompts]
        limit = max_length or getattr(self.tokenizer, "model_max_length", None) or 0
        if 0 < limit < 10**9:
            for index, row in enumerate(ids):
                if len(row) > limit:
                    raise ValueError(
                        f"Prompt {index} is {len(row)} tokens long (image positions included), longer than the "
                        f"context of {limit}; shorten the text rather than cutting into the image."
                    )
        data = self._pad(ids, padding_side)
        if image_list:
            data["pixel_values"] = self.image_processor(image_list)["pixel_values"]
        return BatchFeature(data, tensor_type=return_tensors)

    @staticmethod
    def _flatten_images(images) -> list:
        if images is None:
            return []
        if not isinstance(images, (list, tuple)):
            return [images]
        flat = []
        for item in images:
            flat.extend(item if isinstance(item, (list, tuple)) else [item])
        return flat

    def _prompts_with_placeholders(self, texts: list[str], images: list) -> list[str]:
        """Templates bare instructions and checks that placeholders and images pair up one to one."""
        counts = [prompt.count(self.image_token) for prompt in texts]
        if sum(counts) == 0 and images:
            if len(images) % len(texts):
                raise ValueError(
                    f"Got {len(images)} images for {len(texts)} texts without <image> placeholders; give each text "
                    "the same number of images, or place <image> in the texts."
                )
            per_text = len(images) // len(texts)
            return [self.build_prompt(prompt, num_images=per_text) for prompt in texts]
        if sum(counts) != len(images):
            raise ValueError(
                f"The text has {sum(counts)} <image> placeholder(s) (per text: {counts}) but {len(images)} image(s) "
                "were given; they must match one to one."
            )
        return texts

    def _pad(self, rows: list[list[int]], padding_side: str) -> dict[str, np.ndarray]:
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}.")
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = self.tokenizer.unk_token_id if self.tokenizer.unk_token_id is not None else 0
        width = max(len(row) for row in rows)
        input_ids = np.full((len(rows), width), pad_id, dtype=np.int64)
        attention_mask = np.zeros((len(rows), width), dtype=np.int64)
        for index, row in enumerate(rows):
            span = slice(width - len(row), width) if padding_side == "left" else slice(0, len(row))
            input_ids[index, span] = row
            attention_mask[index, span] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    # ------------------------------------------------------------------ decode
    def post_process_image_text_to_text(self, generated_outputs, skip_special_tokens: bool = True, **kwargs):
        """Decodes generated ids (what transformers' image-text-to-text pipeline calls)."""
        return self.tokenizer.batch_decode(generated_outputs, skip_special_tokens=skip_special_tokens, **kwargs)

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values"]


__all__ = ["RoboPointProcessor"]
