"""Stage-2 starting point: a RoboPoint model assembled from a language model, a CLIP tower and a stage-1 projector.

RoboPoint's fine-tuning (like LLaVA-1.5's) does not start from a RoboPoint checkpoint but from three parts: a chat
LLM (``lmsys/vicuna-13b-v1.5`` or ``meta-llama/Llama-2-13b-chat-hf``), ``openai/clip-vit-large-patch14-336`` and the
projector of a LLaVA stage-1 run (``mm_projector.bin``, e.g. from ``liuhaotian/llava-v1.5-mlp2x-336px-pretrain-
vicuna-13b-v1.5``). :func:`from_components` puts them together as a :class:`RoboPointForConditionalGeneration` whose
weights ARE the parts' weights (no copy), so the result can be trained and saved like any RoboPoint checkpoint.
Without a projector file the projector keeps PyTorch's default ``nn.Linear`` initialisation, as in the original.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from transformers import CLIPVisionModel, LlamaForCausalLM, PreTrainedModel

    from robopoint_hf.model.modeling_robopoint import RoboPointForConditionalGeneration
    from robopoint_hf.model.processing_robopoint import RoboPointProcessor


def load_projector_state_dict(path: str | os.PathLike, projector_type: str) -> dict[str, torch.Tensor]:
    """Reads a LLaVA stage-1 ``mm_projector.bin`` as ``RoboPointProjector`` weights (``linear_1.weight``, ...).

    Keys containing ``mm_projector.`` are stripped up to it (``model.mm_projector.0.weight`` -> ``0.weight``) and
    mapped with the converter's rule (``Sequential`` index 2k -> ``linear_{k+1}``); other keys are an error.

    Args:
        path (`str` or `os.PathLike`): the ``mm_projector.bin`` file (a pickled state dict, read with
            ``weights_only=True``).
        projector_type (`str`): ``"linear"`` or ``"mlp{N}x_gelu"``, the type the file was trained with.

    Returns:
        `dict[str, torch.Tensor]`: weights keyed relative to the projector module.
    """
    from robopoint_hf.original.checkpoint import projector_target

    state = torch.load(path, map_location="cpu", weights_only=True)
    prefix = "model.multi_modal_projector."
    weights = {}
    for key, tensor in state.items():
        if "mm_projector." not in key:
            raise ValueError(f"{path}: unexpected key {key!r}; a projector file holds only '...mm_projector.*' keys.")
        target = projector_target(key.split("mm_projector.", 1)[1], projector_type, f"{path}:{key}")
        weights[target.removeprefix(prefix)] = tensor
    return weights


def _load(spec, loader, **kwargs):
    return loader.from_pretrained(spec, **kwargs) if isinstance(spec, (str, os.PathLike)) else spec


def from_components(
    language_model: str | os.PathLike | LlamaForCausalLM,
    vision_tower: str | os.PathLike | CLIPVisionModel | PreTrainedModel,
    projector: str | os.PathLike | None = None,
    projector_type: str = "mlp2x_gelu",
    *,
    prompt_template: str = "vicuna_v1",
    image_aspect_ratio: str = "pad",
    dtype: torch.dtype | None = None,
) -> RoboPointForConditionalGeneration:
    r"""Assembles a RoboPoint model for stage-2 training from its parts.

    Args:
        language_model (`str`, `os.PathLike` or [`~transformers.LlamaForCausalLM`]):
            The chat LLM: a folder or Hub id, or a loaded model.
        vision_tower (`str`, `os.PathLike` or [`~transformers.CLIPVisionModel`]):
            The CLIP tower: a CLIP (or CLIP-vision) folder or Hub id, or a loaded ``CLIPVisionModel``.
        projector (`str` or `os.PathLike`, *optional*):
            A stage-1 ``mm_projector.bin``; ``None`` keeps a freshly initialised projector.
        projector_type (`str`, *optional*, defaults to `"mlp2x_gelu"`):
            ``"linear"`` or ``"mlp{N}x_gelu"``; must match the projector file.
        prompt_template (`str`, *optional*, defaults to `"vicuna_v1"`):
            Template recorded in the config (RoboPoint trained every checkpoint with ``vicuna_v1``).
        image_aspect_ratio (`str`, *optional*, defaults to `"pad"`):
            ``"pad"`` (RoboPoint) or ``"square"``.
        dtype (`torch.dtype`, *optional*):
            Dtype for parts loaded from disk (their stored dtype when omitted).

    Returns:
        [`RoboPointForConditionalGeneration`]: the assembled model (the parts' modules are reused, not copied).

    Example:

    ```python
    >>> model = from_components(
    ...     "lmsys/vicuna-7b-v1.5", "openai/clip-vit-large-patch14-336",
    ...     projector="llava-v1.5-mlp2x-336px-pretrain-vicuna-7b-v1.5/mm_projector.bin",
    ... )  # doctest: +SKIP
    ```
    """
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM, CLIPVisionModel

    from robopoint_hf.model.configuration_robopoint import RoboPointConfig
    from robopoint_hf.model.modeling_robopoint import RoboPointForConditionalGeneration, RoboPointProjector

    kwargs = {} if dtype is None else {"dtype": dtype}
    llm = _load(language_model, AutoModelForCausalLM, **kwargs)
    clip = _load(vision_tower, CLIPVisionModel, **kwargs)
    if not isinstance(clip, CLIPVisionModel):
        raise TypeError(f"vision_tower must be a CLIPVisionModel (or its folder), got {type(clip).__name__}.")
    config = RoboPointConfig(
        vision_config=clip.config.to_dict(),
        text_config=llm.config.to_dict(),
        projector_type=projector_type,
        image_seq_length=(clip.config.image_size // clip.config.patch_size) ** 2,
        prompt_template=prompt_template,
        image_aspect_ratio=image_aspect_ratio,
    )
    with init_empty_weights():
        model = RoboPointForConditionalGeneration(config)
    model.model.vision_tower = clip
    model.model.language_model = llm.model
    model.lm_head = llm.lm_head
    reference = next(llm.parameters())
    model.model.multi_modal_projector = RoboPointProjector(config).to(reference.device, reference.dtype)
    if projector is not None:
        weights = load_projector_state_dict(projector, projector_type)
        result = model.model.multi_modal_projector.load_state_dict(weights, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise ValueError(
                f"{projector}: does not fit projector type {projector_type!r}: missing {result.missing_keys}, "
                f"unexpected {result.unexpected_keys}."
            )
    model.generation_config = llm.generation_config
    left_on_meta = [name for name, tensor in model.state_dict().items() if tensor.is_meta]
    if left_on_meta:
        raise RuntimeError(f"Parameters not provided by the components: {left_on_meta[:5]}")
    return model


def processor_from_components(language_model: str | os.PathLike, config) -> RoboPointProcessor:
    """The processor matching :func:`from_components`: the LLM's tokenizer + the model config's preprocessing.

    Args:
        language_model (`str` or `os.PathLike`): folder or Hub id holding the LLM's tokenizer.
        config ([`RoboPointConfig`]): the config of the model :func:`from_components` built.
    """
    from robopoint_hf.model.processing_robopoint import RoboPointProcessor
    from robopoint_hf.original.convert import load_tokenizer

    tokenizer = load_tokenizer(language_model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token  # the original's choice for Llama (pad = <unk> = 0)
    return RoboPointProcessor.from_model_config(tokenizer, config)


__all__ = ["from_components", "load_projector_state_dict", "processor_from_components"]
