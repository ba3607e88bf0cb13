"""RoboPoint model: transformers' LLaVA with the three things RoboPoint needs on top.

Paper: https://huggingface.co/papers/2406.10721 -- original code: https://github.com/wentaoyuan/RoboPoint (a fork of
LLaVA v1.2.2). The architecture is LLaVA-1.5 and the parameter names are exactly those of
:class:`~transformers.LlavaForConditionalGeneration`::

    pixel_values [B, 3, 336, 336]
        -> model.vision_tower (CLIP ViT-L/14-336)  hidden_states[-2], CLS dropped     [B, 576, 1024]
        -> model.multi_modal_projector (linear_1 [-> GELU -> linear_2 ...])          [B, 576, H]
        -> scattered into the placeholder positions of input_ids' embeddings
        -> model.language_model (Llama) -> lm_head                                   [B, T, vocab]

What differs from the stock LLaVA classes, and why:

1. The projector follows ``config.projector_type``: ``linear`` is ONE ``Linear`` (``linear_1`` only; the Llama-2
   checkpoints), ``mlp{N}x_gelu`` is ``linear_1 -> GELU -> linear_2 -> ... -> linear_N``. Exact, no identity layer.
2. The image placeholder id may lie outside the vocabulary (the original checkpoints have exactly 32000 tokens and
   we keep their logits bit-for-bit), so placeholder positions are never looked up in the embedding table.
3. Precomputed image features can be passed to ``forward``/``generate`` as ``image_features=`` (a robot asks several
   questions about one camera frame; the vision tower then runs once).
4. The language model's linear layers and the LM head become `FewRowLinear` at the first forward: on CPU they
   compute the few rows of a decoding step (1-8) as ``W @ X^T`` or, from 2048 input features, with oneDNN, both
   several times faster than CPU BLAS's ``X @ W^T``; same weights, same values up to float summation order, same
   state dict.
5. ``generate`` decodes on a `ChunkedDynamicCache` (appends in place) unless the call names a cache, and
   ``generate(share_prefix=True)`` decodes questions about one image on one copy of their common prefix
   (`shared_prefix_generate`).

Saving writes the canonical llava-hf key layout (``language_model.model.*``, ``language_model.lm_head.weight``,
``vision_tower.vision_model.*``, ``multi_modal_projector.*``), so that a RoboPoint checkpoint and a llava-hf
checkpoint differ only in config.json. Loading accepts that layout and the in-memory names.
"""

from __future__ import annotations

import contextvars
import os
import re
import weakref

import torch
from torch import nn
from transformers import GenerationMixin
from transformers.activations import ACT2FN
from transformers.conversion_mapping import register_checkpoint_conversion_mapping
from transformers.core_model_loading import WeightRenaming
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.auto import AutoModel
from transformers.models.llava.modeling_llava import (
    LlavaCausalLMOutputWithPast,
    LlavaForConditionalGeneration,
    LlavaModel,
    LlavaModelOutputWithPast,
    LlavaPreTrainedModel,
)

from .configuration_robopoint import RoboPointConfig, projector_depth
from .kv_cache import ChunkedDynamicCache
from .package_services import SERVICES
from .shared_prefix import (
    common_prefix_length,
    first_image_inputs,
    packing_obstacle,
    shared_prefix_generate,
    unpadded_rows,
)


class RoboPointProjector(nn.Module):
    """``linear`` or ``mlp{N}x_gelu`` projector, with LLaVA's attribute names ``linear_1`` ... ``linear_N``."""

    def __init__(self, config: RoboPointConfig):
        super().__init__()
        depth = projector_depth(config.projector_type)
        num_feature_layers = 1 if isinstance(config.vision_feature_layer, int) else len(config.vision_feature_layer)
        in_features = config.vision_config.hidden_size * num_feature_layers
        hidden = config.text_config.hidden_size
        bias = config.multimodal_projector_bias
        self.depth = depth
        self.linear_1 = nn.Linear(in_features, hidden, bias=bias)
        for index in range(2, depth + 1):
            setattr(self, f"linear_{index}", nn.Linear(hidden, hidden, bias=bias))
        # torch.nn.GELU() default = exact erf GELU, as in the original (transformers' "gelu" is the same function).
        self.act = ACT2FN["gelu"] if depth > 1 else nn.Identity()

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        hidden_states = self.linear_1(image_features)
        for index in range(2, self.depth + 1):
            hidden_states = getattr(self, f"linear_{index}")(self.act(hidden_states))
        return hidden_states


VISION_MODULES = ("model.vision_tower", "model.multi_modal_projector")
"""The parts kept in ``config.vision_dtype`` (see :class:`RoboPointConfig`)."""

# True while from_pretrained runs with an explicit dtype: then every part loads in it, vision_dtype is ignored.
_ONE_DTYPE = contextvars.ContextVar("robopoint_one_dtype", default=False)


class FewRowLinear(nn.Linear):
    """``nn.Linear`` whose CPU inference on a few rows streams the weight once.

    A decoding step multiplies every weight matrix by one row per sequence (a few more with jump-forward drafts, a
    small batch or questions packed on a shared prefix). CPU BLAS (MKL) runs ``rows @ weight.T`` on 1 row as a
    matrix-vector product that reads the weight at a fraction of the memory bandwidth, and on 2-8 rows through a
    general product that costs about one pass over the weight per row. Three kernels do better, each on its own
    range of input widths: from `onednn_min_in_features` (the 7B's and 13B's layers), oneDNN's inner product on the
    plain weight; from `packed_min_in_features` below that, oneDNN's inner product on a copy of the weight in its
    blocked layout (`pack_narrow_weights`), made at first use and again whenever the weight changes, because on the
    plain weight oneDNN's per-call cost outweighs such layers; below that (the shipped tiny model), and without
    oneDNN, MKL's ``weight @ rows.T`` (one row doubled). The copy doubles the memory of the packed layers only,
    which RoboPoint's published checkpoints do not have. Measurements: ``docs/design/decoding.md``.
    The result equals ``nn.Linear``'s up to float summation order; training (autograd), other devices and dtypes,
    biases and longer inputs use ``nn.Linear``. ``FewRowLinear.max_rows = 0`` turns it off.
    """

    max_rows = 8
    onednn_min_in_features = 2048
    packed_min_in_features = 512
    pack_narrow_weights = True

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        rows = inputs.numel() // inputs.shape[-1]
        if (
            rows > self.max_rows
            or rows == 0
            or inputs.device.type != "cpu"
            or inputs.dtype != torch.float32
            or self.weight.dtype != torch.float32
            or self.bias is not None
            or torch.is_grad_enabled()
        ):
            return super().forward(inputs)
        flat = inputs.reshape(rows, inputs.shape[-1])
        # torch.compile lowers oneDNN's op only for frozen (constant) weights; compiled, the product stays on MKL.
        onednn = _ONEDNN_LINEAR is not None and not torch.compiler.is_compiling()
        if onednn and self.in_features >= self.onednn_min_in_features:
            outputs = _ONEDNN_LINEAR(flat, self.weight, None, "none", [], "")
        elif (
            onednn
            and _ONEDNN_PACK is not None
            and self.pack_narrow_weights
            and self.in_features >= self.packed_min_in_features
        ):
            outputs = _ONEDNN_LINEAR(flat, self._packed_weight(), None, "none", [], "")
        else:
            columns = torch.cat([flat, flat]) if rows == 1 else flat
            outputs = torch.mm(self.weight, columns.t()).t()[:rows].contiguous()
        return outputs.reshape(*inputs.shape[:-1], self.out_features)

    def _packed_weight(self) -> torch.Tensor:
        """The weight in oneDNN's blocked layout, packed again whenever the weight changed (a new tensor, or an
        in-place write such as ``load_state_dict``, an optimizer step or a LoRA merge, which bump its version)."""
        key = (self.weight.data_ptr(), self.weight._version)
        cached = _PACKED_WEIGHTS.get(self)
        if cached is None or cached[0] != key:
            with torch.inference_mode(False):  # a plain tensor, usable outside inference mode too
                cached = (key, _ONEDNN_PACK(self.weight.detach()))
            _PACKED_WEIGHTS[self] = cached
        return cached[1]


def _onednn_op(name: str):
    """A oneDNN op of PyTorch's CPU compiler where this build has it, None elsewhere (`FewRowLinear` then uses
    MKL's product). ``_linear_pointwise``: the inner product, on a plain float weight or a packed one;
    ``_reorder_linear_weight``: the packing of a weight into oneDNN's blocked layout."""
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        return getattr(torch.ops.mkldnn, name).default
    except (AttributeError, RuntimeError):
        return None


_ONEDNN_LINEAR = _onednn_op("_linear_pointwise")
_ONEDNN_PACK = _onednn_op("_reorder_linear_weight")
_PACKED_WEIGHTS: weakref.WeakKeyDictionary[FewRowLinear, tuple[tuple[int, int], torch.Tensor]] = (
    weakref.WeakKeyDictionary()
)
"""Packed weights beside their modules rather than on them: oneDNN's opaque tensors cannot be deep-copied or
pickled, and ``copy.deepcopy(model)`` or ``torch.save(model)`` must keep working."""


def use_few_row_linears(module: nn.Module) -> None:
    """Makes every plain ``nn.Linear`` under ``module`` a `FewRowLinear` (the class only; parameters untouched).

    The model does it at its first forward rather than at construction: quantization (bitsandbytes) replaces the
    layers that are exactly ``nn.Linear`` after the model is built, and must still find them.
    """
    for child in module.modules():
        if type(child) is nn.Linear:
            child.__class__ = FewRowLinear


class RoboPointPreTrainedModel(LlavaPreTrainedModel):
    config: RoboPointConfig
    config_class = RoboPointConfig
    _no_split_modules = ["CLIPEncoderLayer", "LlamaDecoderLayer"]

    def _get_dtype_plan(self, dtype: torch.dtype) -> dict:
        """transformers' per-module dtype plan (its ``_keep_in_fp32_modules`` mechanism), plus the vision tower and
        projector in ``config.vision_dtype`` when the checkpoint records one and the caller asked for ``"auto"``."""
        plan = super()._get_dtype_plan(dtype)
        vision_dtype = getattr(self.config, "vision_dtype", None)
        if vision_dtype and not _ONE_DTYPE.get() and getattr(torch, vision_dtype) != dtype:
            plan.update(dict.fromkeys(VISION_MODULES, getattr(torch, vision_dtype)))
        return plan


class RoboPointModel(RoboPointPreTrainedModel, LlavaModel):
    """Vision tower + projector + language model, without the LM head."""

    def __init__(self, config: RoboPointConfig):
        RoboPointPreTrainedModel.__init__(self, config)
        self.vision_tower = AutoModel.from_config(config.vision_config)
        self.multi_modal_projector = RoboPointProjector(config)
        self.language_model = AutoModel.from_config(config.text_config)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        mm_encoder_outputs: dict[str, BaseModelOutputWithPooling] | None = None,
        **kwargs,
    ) -> LlavaModelOutputWithPast:
        # Per-call overrides of the vision settings are not supported: the config is the one source of truth.
        for name in ("vision_feature_layer", "vision_feature_select_strategy", "image_sizes"):
            if kwargs.pop(name, None) is not None:
                raise ValueError(f"{name} is fixed by the config of a RoboPoint model; do not pass it per call.")
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        if inputs_embeds is not None:
            # Placeholders are found in input_ids only; with embeddings the caller has already spliced the image.
            return super().forward(
                pixel_values=pixel_values,
                attention_mask=attention_mask,
                position_ids=position_ids,
                inputs_embeds=inputs_embeds,
                mm_encoder_outputs=mm_encoder_outputs,
                **kwargs,
            )
        image_mask = input_ids == self.config.image_token_id
        # The placeholder id may be >= vocab_size: embed a harmless id there, the image features overwrite it.
        inputs_embeds = self.get_input_embeddings()(input_ids.masked_fill(image_mask, 0))
        if pixel_values is not None or mm_encoder_outputs:
            if not image_mask.any():
                raise ValueError(
                    "Images were given but input_ids contain no image placeholder "
                    f"(id {self.config.image_token_id}); build inputs with RoboPointProcessor."
                )
            mm_encoder_outputs = dict(mm_encoder_outputs or {})
            if mm_encoder_outputs.get("image") is None:
                mm_encoder_outputs["image"] = self.get_image_features(pixel_values=pixel_values, return_dict=True)
            features = mm_encoder_outputs["image"].pooler_output
            features = torch.cat(list(features), dim=0).to(inputs_embeds.device, inputs_embeds.dtype)
            num_positions = int(image_mask.sum())
            if num_positions != features.shape[0]:
                raise ValueError(
                    f"The inputs have {num_positions} image positions but the images give {features.shape[0]} "
                    f"feature vectors ({features.shape[0] // max(self.config.image_seq_length, 1)} image(s) of "
                    f"{self.config.image_seq_length}); every <image> in the text needs exactly one image."
                )
            inputs_embeds = inputs_embeds.masked_scatter(image_mask.unsqueeze(-1).to(inputs_embeds.device), features)
        elif image_mask.any() and not _continues_a_sequence(kwargs):
            raise ValueError(
                f"input_ids hold {int(image_mask.sum())} image positions (id {self.config.image_token_id}) but no "
                "pixel_values or image_features were given; pass the processor's pixel_values with its input_ids."
            )
        elif self.training and _zero3_enabled():
            # Under DeepSpeed ZeRO-3 every rank must run the same modules (their weights are gathered collectively):
            # a text-only batch still runs the vision tower, on a blank image, and adds its features times zero.
            size = self.config.vision_config.image_size
            blank = inputs_embeds.new_zeros(1, 3, size, size)
            features = self.get_image_features(pixel_values=blank, return_dict=True).pooler_output[0]
            inputs_embeds = inputs_embeds + 0.0 * features.sum()
        outputs = self.language_model(
            attention_mask=attention_mask, position_ids=position_ids, inputs_embeds=inputs_embeds, **kwargs
        )
        image_outputs = mm_encoder_outputs.get("image") if mm_encoder_outputs else None
        return LlavaModelOutputWithPast(**outputs, image_outputs=image_outputs)


def _continues_a_sequence(kwargs: dict) -> bool:
    """Whether this forward extends a cache that already holds positions (a decoding step), where the image was
    given with the prompt and is not given again."""
    cache = kwargs.get("cache", kwargs.get("past_key_values"))
    return cache is not None and cache.get_seq_length() > 0


def _zero3_enabled() -> bool:
    try:
        from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled
    except ImportError:
        return False
    return is_deepspeed_zero3_enabled()


def _as_encoder_outputs(image_features) -> dict[str, BaseModelOutputWithPooling]:
    """Wraps user-given image features into what LLaVA's forward consumes."""
    if isinstance(image_features, BaseModelOutputWithPooling):
        return {"image": image_features}
    if isinstance(image_features, torch.Tensor):
        if image_features.dim() == 2:
            image_features = image_features.unsqueeze(0)
        if image_features.dim() != 3:
            raise ValueError(
                "image_features must be [num_images, image_seq_length, hidden] (or a list of [image_seq_length, "
                f"hidden]); got shape {tuple(image_features.shape)}."
            )
    return {"image": BaseModelOutputWithPooling(pooler_output=list(image_features))}


class RoboPointForConditionalGeneration(RoboPointPreTrainedModel, LlavaForConditionalGeneration, GenerationMixin):
    r"""RoboPoint: LLaVA-1.5 that answers spatial-affordance questions with normalized points.

    Example:

    ```python
    >>> from PIL import Image
    >>> from robopoint_hf import RoboPointForConditionalGeneration, RoboPointProcessor
    >>> model = RoboPointForConditionalGeneration.from_pretrained(folder)
    >>> processor = RoboPointProcessor.from_pretrained(folder)
    >>> inputs = processor(images=Image.open("sink.jpg"), text="Find a few spots ... plate.", return_tensors="pt")
    >>> ids = model.generate(**inputs, max_new_tokens=64, do_sample=False)
    >>> processor.batch_decode(ids[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    ```

    Several questions about one image: batch them with one copy of the image per row and pass
    ``share_prefix=True`` to ``generate``; the system prompt and the image are then encoded and prefilled once, and
    every question continues from that cache. Or compute ``features = model.encode_images(pixel_values)`` once and
    pass ``image_features=features`` to ``generate`` for each question.
    """

    def __init__(self, config: RoboPointConfig):
        RoboPointPreTrainedModel.__init__(self, config)
        self.model = RoboPointModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self._few_row_linears = False  # set at the first forward, after quantization replaced its layers
        self.post_init()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, model_base=None, vision_tower=None, **kwargs):
        """:meth:`~transformers.PreTrainedModel.from_pretrained`, also reading ORIGINAL RoboPoint/LLaVA checkpoints.

        An original-format folder or Hub id (``model_type: "llava_llama"``) is converted in memory, nothing written
        to disk. Args beyond the usual ones:

        model_base (`str`, *optional*): base language model of a LoRA or projector-only original checkpoint.
        vision_tower (`str`, *optional*): CLIP folder or Hub id, defaulting to the checkpoint's ``mm_vision_tower``.
        """
        loader = _original_checkpoint_module(pretrained_model_name_or_path)
        if loader is None:
            if model_base is not None or vision_tower is not None:
                raise ValueError(
                    f"model_base/vision_tower only apply to original-format checkpoints; "
                    f"{pretrained_model_name_or_path} is not one."
                )
            _keep_vision_unquantized(kwargs.get("quantization_config"))
            requested = kwargs.get("dtype", kwargs.get("torch_dtype"))
            token = _ONE_DTYPE.set(requested is not None and requested != "auto")
            try:
                return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
            finally:
                _ONE_DTYPE.reset(token)
        dtype = kwargs.pop("dtype", None) or kwargs.pop("torch_dtype", None) or torch.float32
        unsupported = sorted(key for key in ("device_map", "quantization_config") if kwargs.get(key) is not None)
        if unsupported or args:
            raise ValueError(
                f"{', '.join(unsupported) or 'positional arguments'} cannot be used while converting an original "
                f"checkpoint on the fly; run `robopoint convert {pretrained_model_name_or_path} OUT` and load OUT."
            )
        config, state_dict, _ = loader.load_original(
            pretrained_model_name_or_path, model_base=model_base, vision_tower=vision_tower, dtype=dtype
        )
        # transformers' own loader with an in-memory state dict: no random init, buffers built properly.
        return super().from_pretrained(None, config=config, state_dict=state_dict, dtype=dtype, **kwargs)

    @torch.no_grad()
    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Projected image features ``[num_images, image_seq_length, hidden]``, reusable via ``image_features=``."""
        pixel_values = pixel_values.to(self.model.vision_tower.dtype)
        outputs = self.get_image_features(pixel_values=pixel_values, return_dict=True)
        return torch.stack(list(outputs.pooler_output))

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        mm_encoder_outputs: dict[str, BaseModelOutputWithPooling] | None = None,
        image_features: torch.Tensor | list[torch.Tensor] | BaseModelOutputWithPooling | None = None,
        **kwargs,
    ) -> LlavaCausalLMOutputWithPast:
        r"""
        image_features (`torch.Tensor` of shape `(num_images, image_seq_length, hidden_size)`, *optional*):
            Precomputed projected image features (from :meth:`encode_images` or ``get_image_features``), used
            instead of ``pixel_values``.
        """
        if image_features is not None:
            if pixel_values is not None:
                raise ValueError("Pass either pixel_values or image_features, not both.")
            mm_encoder_outputs = _as_encoder_outputs(image_features)
        if not self._few_row_linears:
            use_few_row_linears(self)
            self._few_row_linears = True
        return super().forward(
            input_ids=input_ids,
            pixel_values=pixel_values,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            labels=labels,
            logits_to_keep=logits_to_keep,
            mm_encoder_outputs=mm_encoder_outputs,
            **kwargs,
        )

    def generate(self, *args, image_features=None, share_prefix: bool = False, **kwargs):
        """:meth:`~transformers.GenerationMixin.generate`, also accepting precomputed ``image_features``.

        share_prefix (`bool`, *optional*, defaults to `False`):
            All rows ask about the same image (equal ``pixel_values`` or ``image_features`` rows, compared by
            content): the tokens every row starts with (system prompt, image, ...) are prefilled once. Greedy and
            sampled decoding with sdpa or eager attention then decode all rows on one packed sequence that holds
            the prefix once (`shared_prefix_generate`; no cache returned); other modes give each row a copy of the
            prefix's cache. The answers are those of the unshared call; the returned ids keep the given
            ``input_ids`` layout. Rows whose images differ raise a ``ValueError``, as does a cache of the caller's.

        Without a ``cache`` or ``cache_implementation`` the call decodes on a `ChunkedDynamicCache` (appends in
        place instead of copying the cache every step).
        """
        if image_features is not None:
            if kwargs.get("pixel_values") is not None:
                raise ValueError("Pass either pixel_values or image_features, not both.")
            kwargs["mm_encoder_outputs"] = _as_encoder_outputs(image_features)
        if share_prefix and not args and kwargs.get("input_ids") is not None and kwargs["input_ids"].shape[0] > 1:
            images = kwargs.get("pixel_values")
            if images is None and image_features is not None:
                images = kwargs["mm_encoder_outputs"]["image"].pooler_output
            if images is None or not all(torch.equal(images[0], row) for row in images[1:]):
                raise ValueError(
                    "share_prefix=True needs the same image (equal pixel_values or image_features) in every row."
                )
            if not self._takes_default_cache(kwargs):
                raise ValueError(
                    "share_prefix=True builds its own cache; pass no cache, past_key_values or cache_implementation, "
                    "and leave use_cache on."
                )
            if self._packs_rows(kwargs):
                kwargs.update(first_image_inputs(kwargs))  # one image to encode for all rows
                return super().generate(**kwargs, custom_generate=shared_prefix_generate)
            return self._generate_with_copied_prefix(**kwargs)
        if self._takes_default_cache(kwargs):
            kwargs["cache"] = ChunkedDynamicCache()
        return super().generate(*args, **kwargs)

    def _setting(self, kwargs: dict, name: str):
        """A generation setting as this ``generate`` call will see it: the call's, else its generation config's."""
        config = kwargs.get("generation_config") or self.generation_config
        return kwargs.get(name, getattr(config, name, None))

    def _takes_default_cache(self, kwargs: dict) -> bool:
        return (
            kwargs.get("cache") is None
            and kwargs.get("past_key_values") is None  # transformers' deprecated name of `cache`
            and self._setting(kwargs, "cache_implementation") is None
            and self._setting(kwargs, "use_cache") is not False
        )

    def _packs_rows(self, kwargs: dict) -> bool:
        """Whether `shared_prefix_generate` can decode this call (else each row gets a copy of the prefix)."""
        obstacle = packing_obstacle(
            self.config.get_text_config()._attn_implementation,
            self._setting(kwargs, "num_beams"),
            self._setting(kwargs, "output_attentions"),
            self._setting(kwargs, "output_hidden_states"),
            kwargs.get("synced_gpus"),
        )
        return obstacle is None and all(
            kwargs.get(name) is None for name in ("assistant_model", "prompt_lookup_num_tokens", "custom_generate")
        )

    @torch.no_grad()
    def _generate_with_copied_prefix(self, input_ids, attention_mask=None, **kwargs):
        """``generate`` with the common prefix of all rows prefilled once and its cache copied to every row.

        Layout: each row is ``prefix | gap | own suffix`` -- the suffixes right-aligned (as left padding would put
        them) and the gap masked out. Position ids come from the attention mask's cumulative sum, so every suffix
        token keeps the position it has in the unshared call, and attention never sees the gap.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        rows = unpadded_rows(input_ids, attention_mask)
        length = common_prefix_length(rows, self.config.image_token_id)
        image_inputs = first_image_inputs(kwargs)
        kwargs.pop("pixel_values", None)
        kwargs.pop("mm_encoder_outputs", None)
        prefix = rows[0][:length].unsqueeze(0)
        cache = self(
            input_ids=prefix, use_cache=True, logits_to_keep=1, cache=ChunkedDynamicCache(), **image_inputs
        ).cache
        # generate expands each row into its beams / returned sequences next to each other; all share the prefix.
        expand = max(self._setting(kwargs, "num_beams") or 1, self._setting(kwargs, "num_return_sequences") or 1)
        cache.batch_repeat_interleave(len(rows) * expand)
        width = max(len(row) for row in rows) - length
        pad = self.generation_config.pad_token_id or 0
        shared_ids = input_ids.new_full((len(rows), length + width), pad)
        shared_mask = attention_mask.new_zeros((len(rows), length + width))
        shared_ids[:, :length], shared_mask[:, :length] = prefix, 1
        for index, row in enumerate(rows):
            suffix = row[length:]
            shared_ids[index, shared_ids.shape[1] - len(suffix) :] = suffix
            shared_mask[index, shared_mask.shape[1] - len(suffix) :] = 1
        outputs = super().generate(input_ids=shared_ids, attention_mask=shared_mask, cache=cache, **kwargs)
        sequences = outputs if isinstance(outputs, torch.Tensor) else outputs.sequences
        sequences = torch.cat([input_ids, sequences[:, shared_ids.shape[1] :]], dim=1)
        if isinstance(outputs, torch.Tensor):
            return sequences
        outputs.sequences = sequences
        return outputs

    def save_pretrained(self, save_directory: str | os.PathLike, *args, state_dict=None, **kwargs):
        """Saves in the canonical llava-hf key layout (see the module docstring), as a Hub-native folder.

        With the package installed the folder gets the package's one save path
        (:func:`robopoint_hf.hub_checkpoint.write_remote_code`: every code file, the complete ``auto_map``,
        ``custom_pipelines``); a new folder is built beside ``save_directory`` and renamed into place when complete.
        An existing folder is written into, as transformers does (a processor is often saved next to the model).
        """
        vision = self.model.vision_tower
        vision_dtype = next(vision.parameters()).dtype if any(True for _ in vision.parameters()) else None
        self.config.vision_dtype = (
            str(vision_dtype).removeprefix("torch.")
            if vision_dtype is not None and vision_dtype != self.model.language_model.dtype
            else None
        )
        save_original_format = kwargs.pop("save_original_format", True)
        peft_loaded = getattr(self, "_hf_peft_config_loaded", False)
        if save_original_format and not peft_loaded:
            state_dict = self.state_dict() if state_dict is None else state_dict
            state_dict = {to_llava_hf_key(name): tensor for name, tensor in state_dict.items()}
            save_original_format = False  # the names above are already the on-disk ones

        def save(folder) -> None:
            super(RoboPointForConditionalGeneration, self).save_pretrained(
                folder, *args, state_dict=state_dict, save_original_format=save_original_format, **kwargs
            )
            if hub is not None:
                hub.write_remote_code(folder)

        hub = SERVICES.get("save_path")  # None in a Hub copy: it saves as transformers does
        if hub is None or os.path.isdir(save_directory) or kwargs.get("push_to_hub"):
            return save(save_directory)
        with hub.staged_folder(save_directory, processor=False) as staged:
            save(staged)


UNQUANTIZED_MODULES = ["model.vision_tower", "model.multi_modal_projector", "lm_head"]


def _keep_vision_unquantized(config) -> None:
    """A bitsandbytes config without an explicit skip list quantizes the language model only (see below)."""
    if config is not None and hasattr(config, "llm_int8_skip_modules") and config.llm_int8_skip_modules is None:
        config.llm_int8_skip_modules = list(UNQUANTIZED_MODULES)


def quantization_config(bits: int, compute_dtype: torch.dtype | None = None):
    """bitsandbytes config for 4-bit (NF4, double quantization) or 8-bit loading of the language model.

    The vision tower and the projector stay unquantized (as the original loaded them in 16 bits); transformers 5
    matches skip patterns from the start of the module path, so the full prefixes are needed.
    """
    from transformers import BitsAndBytesConfig

    skip = list(UNQUANTIZED_MODULES)
    if bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    if bits == 4:
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype or torch.float32,
            llm_int8_skip_modules=skip,
        )
    raise ValueError(f"bits must be 4 or 8, got {bits}.")


def _original_checkpoint_module(path):
    """The package's reader of original-format checkpoints when `path` is one, else None.

    Hub copies of this file run without the package installed; they then load converted folders only (see
    `.package_services`). With the package, a Hub id that is neither cached nor reachable fails here at once, in one
    line (`hub_checkpoint.resolve_pretrained`).
    """
    reader, hub = SERVICES.get("original_checkpoint"), SERVICES.get("save_path")
    if reader is None or hub is None:
        return None
    if path is not None:
        hub.resolve_pretrained(path)
    return reader if reader.is_original_checkpoint(path) else None


LLAVA_HF_PREFIXES = (
    ("model.language_model.", "language_model.model."),
    ("lm_head.", "language_model.lm_head."),
    ("model.vision_tower.", "vision_tower.vision_model."),
    ("model.multi_modal_projector.", "multi_modal_projector."),
)
"""In-memory name prefix -> canonical llava-hf checkpoint prefix (what llava-hf repos, vLLM and SGLang read).

The one key table: saving (:func:`to_llava_hf_key`), reading back (:func:`from_llava_hf_key`) and the renames
``from_pretrained`` applies (:func:`_register_checkpoint_layout`) are all derived from it.
"""


def to_llava_hf_key(name: str) -> str:
    """Maps an in-memory parameter name to its canonical llava-hf checkpoint name."""
    for prefix, canonical in LLAVA_HF_PREFIXES:
        if name.startswith(prefix):
            return canonical + name[len(prefix) :]
    raise ValueError(f"Parameter {name!r} has no llava-hf checkpoint name.")


def from_llava_hf_key(key: str, strict: bool = True) -> str:
    """Maps a canonical llava-hf checkpoint name back to the in-memory parameter name.

    With ``strict=False`` a name outside the llava-hf layout (already an in-memory name) is returned unchanged.
    """
    for prefix, canonical in LLAVA_HF_PREFIXES:
        if key.startswith(canonical):
            return prefix + key[len(canonical) :]
    if not strict:
        return key
    raise ValueError(f"Checkpoint tensor {key!r} is not in the llava-hf layout.")


def _register_checkpoint_layout() -> None:
    """Lets ``from_pretrained`` read the llava-hf layout into our custom classes (idempotent).

    transformers applies its checkpoint renames only to its own classes; custom code must register them under its
    model type. The renames are :data:`LLAVA_HF_PREFIXES` read backwards, anchored at the start of the key.
    """
    renames = [
        WeightRenaming(source_patterns=f"^{re.escape(canonical)}", target_patterns=prefix)
        for prefix, canonical in LLAVA_HF_PREFIXES
    ]
    register_checkpoint_conversion_mapping("robopoint", renames, overwrite=True)


_register_checkpoint_layout()

__all__ = [
    "RoboPointForConditionalGeneration",
    "RoboPointModel",
    "RoboPointPreTrainedModel",
    "RoboPointProjector",
    "from_llava_hf_key",
    "quantization_config",
    "to_llava_hf_key",
]
