"""Converting original RoboPoint/LLaVA checkpoints into Hub-ready folders.

Two output formats, same weights:

* ``robopoint`` (``robopoint convert``) -- ``RoboPointForConditionalGeneration``: config recording the prompt
  template the checkpoint was trained with, the model/processor code with ``auto_map`` (``trust_remote_code``
  users need no package), tokenizer, processor config, greedy generation config and a model card.
* ``llava`` (``robopoint export --format llava``) -- a plain transformers LLaVA folder that
  ``LlavaForConditionalGeneration`` / ``AutoModelForImageTextToText``, ``pipeline("image-text-to-text")``, vLLM,
  SGLang and TGI load without remote code. Two adaptations keep its logits over the original 32000 tokens
  identical: the ``<image>`` token is added as id 32000 (llava-hf convention; native LLaVA embeds every input id, so
  the vocabulary grows by one zero row that the generation config suppresses), and the ``linear`` projector of the
  Llama-2 checkpoints becomes ``projector_hidden_act="linear"`` with an identity second layer (exact, but vLLM has
  no "linear" activation, so vLLM cannot serve those exports).

Weights are streamed: every output shard is written tensor by tensor from the weight plan of
:mod:`.original_checkpoint`, which reads one source file at a time, so peak memory stays around the largest source
shard. Both formats store the canonical llava-hf key layout (``language_model.model.*``, ``vision_tower.
vision_model.*``, ...), so the two folders differ only in config, code and tokenizer files.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
from pathlib import Path

import torch

from .original_checkpoint import (
    IMAGE_TOKEN_ID,
    OriginalCheckpoint,
    OriginalCheckpointError,
    TargetFormat,
    WeightPlan,
    build_config,
    default_prompt_template,
    model_class,
    open_original,
    plan_weights,
    tokenizer_folder,
)

logger = logging.getLogger(__name__)

DEFAULT_MAX_SHARD_SIZE = "5GB"
DEFAULT_MAX_NEW_TOKENS = 1024  # what the original evaluation (model_vqa.py) generates at most
VERIFY_TOLERANCE = 1e-4

_SAFETENSORS_DTYPE_NAMES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
_SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(size: int | str) -> int:
    """`"5GB"` -> 5_000_000_000 (decimal units like transformers; `KiB`/`MiB`/`GiB` are binary)."""
    if isinstance(size, int):
        return size
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?B|B)?\s*", size, flags=re.IGNORECASE)
    if match is None:
        raise ValueError(f"Cannot read size {size!r}; expected e.g. 5GB, 500MB or a number of bytes.")
    return int(float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "").upper()])


# ---------------------------------------------------------------------------------------------------------------
# Streaming safetensors writer
# ---------------------------------------------------------------------------------------------------------------


def write_safetensors(
    plan: WeightPlan, folder: Path, dtype: torch.dtype, max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE
) -> list[Path]:
    """Writes `plan` as safetensors shards (+ index when sharded) under checkpoint names.

    Each shard's header is computed from the planned shapes, then tensors are made and written one at a time: no
    shard is ever held in memory. The file format is the documented safetensors layout (8-byte little-endian header
    length, JSON header with dtype/shape/offsets, raw little-endian data), read back by `safetensors`.
    """
    from .modeling_robopoint import to_llava_hf_key

    limit = parse_size(max_shard_size)
    itemsize = torch.empty((), dtype=dtype).element_size()
    shards: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    shard_bytes = 0
    for planned in plan.tensors:
        size = itemsize * _numel(planned.shape)
        if shards[-1] and shard_bytes + size > limit:
            shards.append([])
            shard_bytes = 0
        shards[-1].append((to_llava_hf_key(planned.name), planned.shape))
        shard_bytes += size
    names = (
        ["model.safetensors"]
        if len(shards) == 1
        else [f"model-{index:05d}-of-{len(shards):05d}.safetensors" for index in range(1, len(shards) + 1)]
    )
    tensors = plan.materialize(dtype)
    weight_map: dict[str, str] = {}
    total = 0
    for file_name, entries in zip(names, shards, strict=True):
        header: dict[str, dict] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for key, shape in entries:
            size = itemsize * _numel(shape)
            header[key] = {
                "dtype": _SAFETENSORS_DTYPE_NAMES[dtype],
                "shape": list(shape),
                "data_offsets": [offset, offset + size],
            }
            offset += size
            weight_map[key] = file_name
        total += offset
        encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
        encoded += b" " * (-len(encoded) % 8)  # data starts 8-byte aligned
        with open(folder / file_name, "wb") as handle:
            handle.write(struct.pack("<Q", len(encoded)))
            handle.write(encoded)
            for key, _ in entries:
                name, tensor = next(tensors)
                if to_llava_hf_key(name) != key or tensor.dtype != dtype:
                    raise RuntimeError(f"plan order broken at {name} ({tensor.dtype}); expected {key} ({dtype}).")
                # Raw bytes without a copy: a flat uint8 view of the contiguous tensor.
                handle.write(memoryview(tensor.contiguous().reshape(-1).view(torch.uint8).numpy()))
                del tensor
    if len(names) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return [folder / name for name in names]


def _numel(shape: tuple[int, ...]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


# ---------------------------------------------------------------------------------------------------------------
# Non-weight files
# ---------------------------------------------------------------------------------------------------------------


def _image_processor_kwargs(checkpoint: OriginalCheckpoint) -> dict:
    """Resize size and normalisation of the CLIP tower the checkpoint was trained with."""
    path = checkpoint.vision_folder / "preprocessor_config.json"
    if not path.is_file():
        logger.warning("%s is missing; using CLIP's default preprocessing (336 px, CLIP mean/std).", path)
        return {}
    config = json.loads(path.read_text())
    size = config.get("size", 336)
    size = size.get("shortest_edge", size.get("height")) if isinstance(size, dict) else size
    return {"size": int(size), "image_mean": config["image_mean"], "image_std": config["image_std"]}


def _generation_config(config, suppress_tokens: list[int] | None = None):
    from transformers import GenerationConfig

    text = config.text_config
    return GenerationConfig(
        bos_token_id=text.bos_token_id,
        eos_token_id=text.eos_token_id,
        pad_token_id=text.pad_token_id,
        do_sample=False,  # greedy: the original's unseeded T=0.2 sampling made results irreproducible
        max_new_tokens=DEFAULT_MAX_NEW_TOKENS,
        suppress_tokens=suppress_tokens,
    )


def _save_robopoint_files(checkpoint: OriginalCheckpoint, config, out: Path) -> None:
    """Config + model code with auto_map, processor (tokenizer, image processor, chat template), generation config."""
    from transformers.dynamic_module_utils import custom_object_save

    from .auto import register_auto_classes
    from .modeling_robopoint import RoboPointForConditionalGeneration

    register_auto_classes()
    with torch.device("meta"):
        meta_model = RoboPointForConditionalGeneration(config)
    custom_object_save(meta_model, out, config=config)  # copies modeling code, adds the model's auto_map entry
    config.save_pretrained(out)
    processor_for_original(checkpoint, config).save_pretrained(out)
    _generation_config(config).save_pretrained(out)


def processor_for_original(checkpoint: OriginalCheckpoint, config):
    """The `RoboPointProcessor` of an original checkpoint: its tokenizer, its CLIP preprocessing, its template."""
    from transformers import AutoTokenizer

    from .image_processing_robopoint import RoboPointImageProcessor
    from .processing_robopoint import RoboPointProcessor

    return RoboPointProcessor(
        image_processor=RoboPointImageProcessor(
            image_aspect_ratio=config.image_aspect_ratio, **_image_processor_kwargs(checkpoint)
        ),
        tokenizer=AutoTokenizer.from_pretrained(tokenizer_folder(checkpoint)),
        prompt_template=config.prompt_template,
        image_token_id=config.image_token_id,
        image_seq_length=config.image_seq_length,
    )


def load_original_processor(
    src: str | os.PathLike, model_base: str | os.PathLike | None = None, vision_tower: str | os.PathLike | None = None
):
    """`RoboPointProcessor` for an original-format folder or Hub id, built in memory (nothing written)."""
    checkpoint = open_original(src, model_base=model_base, vision_tower=vision_tower)
    config = build_config(checkpoint, "robopoint", default_prompt_template(src))
    return processor_for_original(checkpoint, config)


def _save_llava_files(checkpoint: OriginalCheckpoint, config, out: Path, prompt_template: str) -> None:
    """Config, `LlavaProcessor` (tokenizer with `<image>` = 32000, pad-to-square image processor, chat template)."""
    config.save_pretrained(out)
    image_kwargs = _image_processor_kwargs(checkpoint)
    processor = llava_processor(
        tokenizer_folder(checkpoint),
        config,
        prompt_template,
        do_pad=config_pads(checkpoint),
        size=image_kwargs.pop("size", 336),
        **image_kwargs,
    )
    processor.save_pretrained(out)
    tokenizer_config_file = out / "tokenizer_config.json"
    tokenizer_config = json.loads(tokenizer_config_file.read_text())
    tokenizer_config["legacy"] = True
    tokenizer_config_file.write_text(json.dumps(tokenizer_config, indent=2, ensure_ascii=False) + "\n")
    extra_ids = list(range(IMAGE_TOKEN_ID, config.text_config.vocab_size))
    _generation_config(config, suppress_tokens=extra_ids).save_pretrained(out)


def llava_processor(
    tokenizer_source: str | os.PathLike,
    config,
    prompt_template: str,
    *,
    do_pad: bool = True,
    size: int = 336,
    **image_kwargs,
):
    """The `LlavaProcessor` that prepares exactly what `RoboPointProcessor` does, for plain LLaVA models.

    Args:
        tokenizer_source (`str` or `os.PathLike`): folder or Hub id of the 32000-token Llama tokenizer.
        config: the model's config (`LlavaConfig` or `RoboPointConfig`): patch size, feature selection.
        prompt_template (`str`): registry name of the chat template.
        do_pad (`bool`, *optional*, defaults to `True`): pad to a square with the CLIP mean colour first.
        size (`int`, *optional*, defaults to `336`): image side.
        **image_kwargs: ``image_mean`` / ``image_std``.
    """
    from transformers import AutoTokenizer, LlavaProcessor
    from transformers.models.llava import LlavaImageProcessorPil

    from .templates import get_chat_template

    # legacy=True: whole-string tokenization then puts a "▁" after `<image>` exactly like the original's chunk-wise
    # tokenizer_image_token (transformers 5 rebuilds the pre-tokenizer from this flag and does not save it).
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source, legacy=True)
    tokenizer.add_tokens(["<image>"], special_tokens=True)
    if tokenizer.convert_tokens_to_ids("<image>") != IMAGE_TOKEN_ID:
        raise OriginalCheckpointError(
            f"<image> got id {tokenizer.convert_tokens_to_ids('<image>')} in the tokenizer of {tokenizer_source}, "
            f"expected {IMAGE_TOKEN_ID} (a 32000-token Llama vocabulary)."
        )
    image_processor = LlavaImageProcessorPil(
        do_pad=do_pad,
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        resample=3,  # bicubic, as CLIPImageProcessor
        **image_kwargs,
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=config.vision_config.patch_size,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        num_additional_image_tokens=1,  # CLIP's CLS, removed again by the "default" strategy
        chat_template=get_chat_template(prompt_template),
    )


def config_pads(checkpoint: OriginalCheckpoint) -> bool:
    """Whether images are padded to a square (`image_aspect_ratio="pad"`, every published checkpoint)."""
    return checkpoint.config.get("image_aspect_ratio", "square") == "pad"


# ---------------------------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------------------------


def convert_checkpoint(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    model_base: str | os.PathLike | None = None,
    vision_tower: str | os.PathLike | None = None,
    dtype: torch.dtype | str | None = None,
    target: TargetFormat = "robopoint",
    prompt_template: str | None = None,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    verify: bool = False,
) -> Path:
    """Converts an original RoboPoint/LLaVA checkpoint into a complete Hub-ready folder.

    Args:
        src (`str` or `os.PathLike`): original-format folder or Hub id (full, LoRA or projector-only).
        out (`str` or `os.PathLike`): output folder; must not exist or be empty.
        model_base (`str`, *optional*): base language model of LoRA / projector-only sources.
        vision_tower (`str`, *optional*): CLIP folder or Hub id; defaults to the source's `mm_vision_tower`.
        dtype (`torch.dtype` or `str`, *optional*): dtype of the saved weights; defaults to the source's.
        target (`str`, *optional*, defaults to `"robopoint"`): `"robopoint"` or `"llava"` (plain LLaVA export).
        prompt_template (`str`, *optional*): template to record; defaults to the registry's (`vicuna_v1`).
        max_shard_size (`int` or `str`, *optional*, defaults to `"5GB"`): largest output shard.
        verify (`bool`, *optional*, defaults to `False`): reload the output and compare its logits on a probe
            input with the source's.

    Returns:
        `Path`: the output folder.

    Example:

    ```python
    >>> from robopoint_hf.convert import convert_checkpoint
    >>> convert_checkpoint("wentao-yuan/robopoint-v1-vicuna-v1.5-13b", "robopoint-13b", dtype="bfloat16")
    ```
    """
    checkpoint = open_original(src, model_base=model_base, vision_tower=vision_tower)
    template = prompt_template or default_prompt_template(src)
    config = build_config(checkpoint, target, template)
    plan = plan_weights(checkpoint, target, config)
    dtype = _as_dtype(dtype) if dtype is not None else checkpoint.stored_dtype
    config.dtype = dtype
    out = _empty_folder(out)
    files = write_safetensors(plan, out, dtype, max_shard_size)
    logger.info("Wrote %d weight shard(s) to %s in %s.", len(files), out, dtype)
    if target == "llava":
        _save_llava_files(checkpoint, config, out, template)
    else:
        _save_robopoint_files(checkpoint, config, out)
    from .model_card import render_model_card

    (out / "README.md").write_text(render_model_card(src, target=target, prompt_template=template, config=config))
    if verify:
        difference = verify_conversion(checkpoint, out, target, dtype)
        logger.info("Verified %s: max |logit difference| on the probe input = %.3g.", out, difference)
    return out


def _as_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    value = getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise ValueError(f"Unknown dtype {dtype!r}; expected float32, bfloat16 or float16.")
    return value


def _empty_folder(out: str | os.PathLike) -> Path:
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"Output folder {out} exists and is not empty; choose a new folder.")
    out.mkdir(parents=True, exist_ok=True)
    return out


def probe_inputs(config, seed: int = 0) -> dict[str, torch.Tensor]:
    """A deterministic image + prompt-shaped input for comparing two models: BOS, a few text ids, one image's
    placeholders, a few more text ids."""
    generator = torch.Generator().manual_seed(seed)
    vision = config.vision_config
    pixel_values = torch.randn(1, 3, vision.image_size, vision.image_size, generator=generator)
    text = torch.randint(3, 32000, (16,), generator=generator).tolist()
    ids = [1] + text[:8] + [config.image_token_id] * config.image_seq_length + text[8:]
    return {"input_ids": torch.tensor([ids]), "pixel_values": pixel_values}


@torch.no_grad()
def verify_conversion(checkpoint: OriginalCheckpoint, out: Path, target: TargetFormat, dtype: torch.dtype) -> float:
    """Reloads `out` and compares its float32 logits on :func:`probe_inputs` with the source's weights (made at
    the saved `dtype`, then upcast, so only the conversion itself is tested).

    Raises:
        `OriginalCheckpointError`: when the largest difference exceeds `VERIFY_TOLERANCE`.
    """
    cls = model_class(target)
    config = build_config(checkpoint, target)
    inputs = probe_inputs(config)
    source = cls(config).eval()
    state = {name: tensor.float() for name, tensor in plan_weights(checkpoint, target, config).materialize(dtype)}
    source.load_state_dict(state, strict=True)
    del state
    expected = source(**inputs).logits
    del source
    converted = cls.from_pretrained(out, dtype=torch.float32).eval()
    actual = converted(**inputs).logits
    difference = (actual - expected).abs().max().item()
    if not difference <= VERIFY_TOLERANCE:
        raise OriginalCheckpointError(
            f"Verification failed for {out}: logits differ from the source by {difference:.3g} "
            f"(tolerance {VERIFY_TOLERANCE})."
        )
    return difference


__all__ = [
    "convert_checkpoint",
    "llava_processor",
    "parse_size",
    "probe_inputs",
    "verify_conversion",
    "write_safetensors",
]
