"""Converting original RoboPoint/LLaVA checkpoints into Hub-ready folders.

Two output formats, same weights:

* ``robopoint`` (``robopoint convert``) -- ``RoboPointForConditionalGeneration``: config recording the prompt
  template the checkpoint was trained with, the model/processor code with ``auto_map`` (``trust_remote_code``
  users need no package), tokenizer, processor config, greedy generation config and a model card.
* ``llava`` (``robopoint export``, i.e. ``robopoint convert --target llava``) -- a plain transformers LLaVA folder that
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

import contextlib
import json
import logging
import math
import os
import struct
from collections import deque
from collections.abc import Callable
from pathlib import Path

import torch

from robopoint_hf.dtypes import safetensors_dtype, torch_dtype
from robopoint_hf.model.templates import IMAGE_PLACEHOLDER, get_chat_template

from .checkpoint import (
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

# ---------------------------------------------------------------------------------------------------------------
# Streaming safetensors writer
# ---------------------------------------------------------------------------------------------------------------


def write_safetensors(
    plan: WeightPlan,
    folder: Path,
    dtype: torch.dtype | Callable[[str], torch.dtype],
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
) -> list[Path]:
    """Writes `plan` as safetensors shards (+ index when sharded) under checkpoint names.

    The shards are planned by `huggingface_hub.split_state_dict_into_shards_factory` from the planned shapes and
    dtypes alone (`max_shard_size` as the Hub spells it: an int of bytes, or `"5GB"`, `"500MB"`, ...). Every shard's
    header is then written up front and the tensors are made and appended to their shard one at a time, in plan
    order: no shard is ever held in memory. The file format is the documented safetensors layout (8-byte
    little-endian header length, JSON header with dtype/shape/offsets, raw little-endian data), read back by
    `safetensors`. `dtype` is one dtype or a function of the in-memory tensor name (see :func:`weight_dtypes`).
    """
    from huggingface_hub import constants, split_state_dict_into_shards_factory

    from robopoint_hf.model.modeling_robopoint import to_llava_hf_key

    dtype_of = dtype if callable(dtype) else (lambda name: dtype)
    layout = {to_llava_hf_key(planned.name): (planned.shape, dtype_of(planned.name)) for planned in plan.tensors}
    split = split_state_dict_into_shards_factory(
        layout,
        get_storage_size=lambda entry: math.prod(entry[0]) * entry[1].itemsize,
        filename_pattern=constants.SAFETENSORS_WEIGHTS_FILE_PATTERN,
        max_shard_size=max_shard_size,
    )
    pending: dict[str, deque[str]] = {}
    with contextlib.ExitStack() as files:
        handles = {}
        for file_name, keys in split.filename_to_tensors.items():
            header: dict[str, dict] = {"__metadata__": {"format": "pt"}}
            offset = 0
            for key in keys:
                shape, tensor_dtype = layout[key]
                size = math.prod(shape) * tensor_dtype.itemsize
                header[key] = {
                    "dtype": safetensors_dtype(tensor_dtype),
                    "shape": list(shape),
                    "data_offsets": [offset, offset + size],
                }
                offset += size
            encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
            encoded += b" " * (-len(encoded) % 8)  # data starts 8-byte aligned
            handles[file_name] = files.enter_context(open(folder / file_name, "wb"))
            handles[file_name].write(struct.pack("<Q", len(encoded)) + encoded)
            pending[file_name] = deque(keys)
        for name, tensor in plan.materialize(dtype_of):
            key = to_llava_hf_key(name)
            file_name = split.tensor_to_filename.get(key)
            expected = pending[file_name].popleft() if file_name is not None and pending[file_name] else None
            if expected != key or tensor.dtype != layout[key][1]:
                raise RuntimeError(f"plan order broken at {name} ({tensor.dtype}); expected {expected}.")
            # Raw bytes without a copy: a flat uint8 view of the contiguous tensor.
            handles[file_name].write(memoryview(tensor.contiguous().reshape(-1).view(torch.uint8).numpy()))
            del tensor
    if split.is_sharded:
        index = {"metadata": split.metadata, "weight_map": split.tensor_to_filename}
        (folder / constants.SAFETENSORS_INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    return [folder / name for name in split.filename_to_tensors]


def weight_dtypes(language_dtype: torch.dtype, forced: torch.dtype | None = None) -> Callable[[str], torch.dtype]:
    """Saved dtype per in-memory tensor name: `forced` for all, or the original's default inference dtypes --
    vision tower and projector in float32 (CLIP is published in float32 and the original never rounds it), the
    language model in `language_dtype` (its source dtype)."""
    from robopoint_hf.model.modeling_robopoint import VISION_MODULES

    if forced is not None:
        return lambda name: forced
    prefixes = tuple(f"{module}." for module in VISION_MODULES)
    return lambda name: torch.float32 if name.startswith(prefixes) else language_dtype


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
    """Config, processor (tokenizer, image processor, chat template), generation config; the code files and
    ``auto_map`` come from the one save path (`hub_checkpoint.write_remote_code`) when the folder is complete."""
    config.save_pretrained(out)
    processor_for_original(checkpoint, config).save_pretrained(out)
    _generation_config(config).save_pretrained(out)


def load_tokenizer(folder: str | os.PathLike, **kwargs):
    """The tokenizer of a checkpoint folder, read from its tokenizer files alone.

    ``AutoTokenizer`` otherwise also reads the folder's ``config.json``, which in an original checkpoint has the
    ``llava_llama`` model type that transformers does not know: it only warns ("a model of type `llava_llama` to
    instantiate a model of type ``", the `rope_scaling` deprecation) and learns nothing, since the tokenizer class
    is named in ``tokenizer_config.json``. An empty config skips that read.
    """
    from transformers import AutoTokenizer, PretrainedConfig

    return AutoTokenizer.from_pretrained(folder, config=PretrainedConfig(), **kwargs)


def processor_for_original(checkpoint: OriginalCheckpoint, config):
    """The `RoboPointProcessor` of an original checkpoint: its tokenizer, its CLIP preprocessing, its template."""
    from robopoint_hf.model.processing_robopoint import RoboPointProcessor

    tokenizer = load_tokenizer(tokenizer_folder(checkpoint))
    return RoboPointProcessor.from_model_config(tokenizer, config, **_image_processor_kwargs(checkpoint))


def load_original_processor(
    src: str | os.PathLike, model_base: str | os.PathLike | None = None, vision_tower: str | os.PathLike | None = None
):
    """`RoboPointProcessor` for an original-format folder or Hub id, built in memory (nothing written)."""
    checkpoint = open_original(src, model_base=model_base, vision_tower=vision_tower)
    config = build_config(checkpoint, "robopoint", default_prompt_template(src))
    return processor_for_original(checkpoint, config)


def _save_llava_files(
    config,
    out: Path,
    *,
    tokenizer_source: str | os.PathLike,
    image_kwargs: dict,
    do_pad: bool,
    chat_template: str,
) -> None:
    """Config, `LlavaProcessor` (tokenizer with `<image>` at the config's image token id, pad-to-square image
    processor, chat template), generation config suppressing the ids added for `<image>`."""
    config.save_pretrained(out)
    processor = llava_processor(tokenizer_source, config, chat_template, do_pad=do_pad, **image_kwargs)
    processor.save_pretrained(out)
    tokenizer_config_file = out / "tokenizer_config.json"
    tokenizer_config = json.loads(tokenizer_config_file.read_text())
    tokenizer_config["legacy"] = True
    tokenizer_config_file.write_text(json.dumps(tokenizer_config, indent=2, ensure_ascii=False) + "\n")
    extra_ids = list(range(config.image_token_id, config.text_config.vocab_size))
    _generation_config(config, suppress_tokens=extra_ids).save_pretrained(out)


def llava_processor(
    tokenizer_source: str | os.PathLike, config, chat_template: str, *, do_pad: bool = True, **image_kwargs
):
    """The `LlavaProcessor` that prepares exactly what `RoboPointProcessor` does, for plain LLaVA models.

    Args:
        tokenizer_source (`str` or `os.PathLike`): folder or Hub id of the Llama tokenizer (one token short of the
            config's vocabulary: `<image>` is added at the config's image token id).
        config: the model's config (`LlavaConfig` or `RoboPointConfig`): patch size, feature selection.
        chat_template (`str`): the Jinja chat template (see `robopoint_hf.model.templates.get_chat_template`).
        do_pad (`bool`, *optional*, defaults to `True`): pad to a square with the CLIP mean colour first.
        **image_kwargs: ``size`` (defaults to 336), ``image_mean``, ``image_std``.
    """
    from transformers import LlavaProcessor
    from transformers.models.llava import LlavaImageProcessorPil

    # legacy=True: whole-string tokenization then puts a "▁" after `<image>` exactly like the original's chunk-wise
    # tokenizer_image_token (transformers 5 rebuilds the pre-tokenizer from this flag and does not save it).
    tokenizer = load_tokenizer(tokenizer_source, legacy=True)
    tokenizer.add_tokens([IMAGE_PLACEHOLDER], special_tokens=True)
    if tokenizer.convert_tokens_to_ids(IMAGE_PLACEHOLDER) != config.image_token_id:
        raise OriginalCheckpointError(
            f"{IMAGE_PLACEHOLDER} got id {tokenizer.convert_tokens_to_ids(IMAGE_PLACEHOLDER)} in the tokenizer of "
            f"{tokenizer_source}, "
            f"expected the image token id {config.image_token_id} (the tokenizer must have exactly that many tokens)."
        )
    tokenizer.padding_side = "left"  # batched generation; plain transformers tokenizers pad on the right
    image_kwargs = dict(image_kwargs)
    size = image_kwargs.pop("size", 336)
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
        chat_template=_whole_string_template(tokenizer, chat_template, config.image_token_id),
    )


_IMAGE_PART = "{{ '<image>\\n' }}"
_PROBE = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Point to the mug, please."}]}]


def _whole_string_template(tokenizer, chat_template: str, image_token_id: int) -> str:
    """``chat_template``, or its variant that writes ``"<image> \\n"``, whichever makes whole-string tokenization
    (what `LlavaProcessor` and the serving engines do) give the ids of `RoboPointProcessor`'s chunk-wise one.

    The original tokenizes the text before and after ``<image>`` separately, so the text after it starts a new
    word: SentencePiece writes ``▁`` first. A legacy Llama tokenizer does the same after a special token inside
    one string; other tokenizers (the shipped model's BPE) need the space spelled out. Checked on a probe prompt;
    neither spelling matching is an error rather than an export that prompts the model differently.
    """
    from robopoint_hf.model.processing_robopoint import RoboPointProcessor

    def processor(template: str) -> RoboPointProcessor:
        return RoboPointProcessor(
            tokenizer=tokenizer, chat_template=template, image_token_id=image_token_id, image_seq_length=1
        )

    chunk_wise = processor(chat_template)
    expected = chunk_wise.tokenize_prompt(chunk_wise.apply_chat_template(_PROBE, add_generation_prompt=True))
    for candidate in (chat_template, chat_template.replace(_IMAGE_PART, "{{ '<image> \\n' }}")):
        whole = tokenizer(processor(candidate).apply_chat_template(_PROBE, add_generation_prompt=True)).input_ids
        if whole == expected:
            return candidate
    raise OriginalCheckpointError(
        f"no spelling of the image part of the chat template makes this tokenizer give the prompt ids the model was "
        f"trained with (whole string {whole} vs chunk-wise {expected}); plain-LLaVA serving would prompt it differently."
    )


def config_pads(checkpoint: OriginalCheckpoint) -> bool:
    """Whether images are padded to a square (`image_aspect_ratio="pad"`, every published checkpoint)."""
    return checkpoint.config.get("image_aspect_ratio", "square") == "pad"


# ---------------------------------------------------------------------------------------------------------------
# RoboPoint folders as a source (export to plain LLaVA)
# ---------------------------------------------------------------------------------------------------------------


def _robopoint_folder_plan(folder: Path, config) -> tuple[WeightPlan, torch.dtype]:
    """The plain-LLaVA weight plan of a RoboPoint folder (converted, merged, trained): its tensors already have the
    llava-hf names, so the plan reads them as they are, then adds what plain LLaVA needs (`adapt_to_llava`).
    Returns the plan and the language model's stored dtype."""
    from robopoint_hf.model.modeling_robopoint import from_llava_hf_key

    from .checkpoint import PlannedTensor, TensorFile, adapt_to_llava, check_against_model, weight_files

    tensors: dict[str, PlannedTensor] = {}
    language_dtype = None
    for path in weight_files(folder):
        stored = TensorFile(path)
        for key in stored.keys():
            name = from_llava_hf_key(key)
            shape, dtype = stored.meta(key)
            if name.startswith("model.language_model."):
                language_dtype = language_dtype or dtype
            tensors[name] = PlannedTensor(
                name, shape, (stored,), lambda wanted, stored=stored, key=key: stored.get(key).to(wanted)
            )
    adapt_to_llava(tensors, config)
    check_against_model(tensors, config, "llava")
    return WeightPlan(list(tensors.values())), language_dtype or torch.float32


def _export_robopoint_folder(
    folder: Path, out: Path, dtype: torch.dtype | None, max_shard_size: int | str, verify: bool
) -> None:
    """Writes the plain-LLaVA export of a RoboPoint folder into `out` (an empty staged folder)."""
    from robopoint_hf.model.configuration_robopoint import RoboPointConfig
    from robopoint_hf.model.processing_robopoint import RoboPointProcessor

    from .checkpoint import llava_config

    source = RoboPointConfig.from_pretrained(folder)
    config = llava_config(
        source.vision_config,
        source.text_config,
        source.projector_type,
        vision_feature_layer=source.vision_feature_layer,
        vision_feature_select_strategy=source.vision_feature_select_strategy,
        image_seq_length=source.image_seq_length,
        image_token_id=source.image_token_id,
        tie_word_embeddings=source.tie_word_embeddings,
        multimodal_projector_bias=source.multimodal_projector_bias,
    )
    plan, language_dtype = _robopoint_folder_plan(folder, config)
    config.dtype = dtype or language_dtype
    write_safetensors(plan, out, weight_dtypes(language_dtype, dtype), max_shard_size)
    processor = RoboPointProcessor.from_pretrained(folder)
    image = processor.image_processor
    _save_llava_files(
        config,
        out,
        tokenizer_source=folder,
        image_kwargs={"size": image.size, "image_mean": image.image_mean, "image_std": image.image_std},
        do_pad=image.image_aspect_ratio == "pad",
        chat_template=processor.chat_template,
    )
    if verify:
        from transformers import LlavaForConditionalGeneration

        from robopoint_hf.model.modeling_robopoint import RoboPointForConditionalGeneration

        inputs = probe_inputs(source)
        with torch.no_grad():
            expected = RoboPointForConditionalGeneration.from_pretrained(folder, dtype=torch.float32)(**inputs).logits
            actual = LlavaForConditionalGeneration.from_pretrained(out, dtype=torch.float32)(**inputs).logits
        _check_difference(out, actual[..., : expected.shape[-1]], expected)


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
    overwrite: bool = False,
) -> Path:
    """Converts a checkpoint into a complete, Hub-native folder, written atomically.

    Sources: an original RoboPoint/LLaVA checkpoint (both targets), or, for `target="llava"`, any RoboPoint folder
    (converted, merged, trained). The folder is built beside `out` and renamed into place when complete
    (:func:`~robopoint_hf.hub_checkpoint.staged_folder`).

    Args:
        src (`str` or `os.PathLike`): original-format folder or Hub id (full, LoRA or projector-only), or a RoboPoint
            folder (export only).
        out (`str` or `os.PathLike`): output folder; must not exist or be empty, unless `overwrite`.
        model_base (`str`, *optional*): base language model of LoRA / projector-only sources.
        vision_tower (`str`, *optional*): CLIP folder or Hub id; defaults to the source's `mm_vision_tower`.
        dtype (`torch.dtype` or `str`, *optional*): one dtype for every saved weight. Default: the original's
            default inference dtypes -- vision tower and projector in float32, the language model in its source dtype
            (recorded as `vision_dtype` in the config, which `from_pretrained(dtype="auto")` honours).
        target (`str`, *optional*, defaults to `"robopoint"`): `"robopoint"` or `"llava"` (plain LLaVA export).
        prompt_template (`str`, *optional*): template to record; defaults to the registry's (`vicuna_v1`).
        max_shard_size (`int` or `str`, *optional*, defaults to `"5GB"`): largest output shard.
        verify (`bool`, *optional*, defaults to `False`): reload the output and compare its logits on a probe
            input with the source's.
        overwrite (`bool`, *optional*, defaults to `False`): replace a non-empty `out`.

    Returns:
        `Path`: the output folder.

    Example:

    ```python
    >>> from robopoint_hf.original.convert import convert_checkpoint
    >>> convert_checkpoint("wentao-yuan/robopoint-v1-vicuna-v1.5-13b", "robopoint-13b")
    ```
    """
    from robopoint_hf.hub_checkpoint import refuse_existing, staged_folder, write_remote_code

    from .checkpoint import is_original_checkpoint
    from .model_card import render_model_card

    refuse_existing(out, overwrite)  # before any reading: a wrong OUT fails at once
    forced = torch_dtype(dtype) if dtype is not None else None
    source_folder = Path(src).expanduser()
    if not is_original_checkpoint(src) and (source_folder / "config.json").is_file():
        if target != "llava":
            raise OriginalCheckpointError(
                f"{src} is not an original RoboPoint/LLaVA config: `robopoint convert` reads original checkpoints; "
                "RoboPoint folders are exported with `robopoint export SRC --output-dir OUT`."
            )
        if json.loads((source_folder / "config.json").read_text()).get("model_type") != "robopoint":
            raise OriginalCheckpointError(
                f"{src} is neither an original RoboPoint/LLaVA checkpoint nor a RoboPoint folder "
                "(config.json model_type must be 'robopoint')."
            )
        with staged_folder(out, overwrite=overwrite) as staged:
            _export_robopoint_folder(source_folder, staged, forced, max_shard_size, verify)
            template = prompt_template or "vicuna_v1"
            (staged / "README.md").write_text(render_model_card(src, target=target, prompt_template=template))
            write_remote_code(staged)
        return Path(out)
    checkpoint = open_original(src, model_base=model_base, vision_tower=vision_tower)
    template = prompt_template or default_prompt_template(src)
    config = build_config(checkpoint, target, template)
    plan = plan_weights(checkpoint, target, config)
    dtypes = weight_dtypes(checkpoint.stored_dtype, forced)
    config.dtype = forced or checkpoint.stored_dtype
    if target == "robopoint" and forced is None and checkpoint.stored_dtype != torch.float32:
        config.vision_dtype = "float32"
    with staged_folder(out, overwrite=overwrite) as staged:
        files = write_safetensors(plan, staged, dtypes, max_shard_size)
        logger.info("Wrote %d weight shard(s) for %s.", len(files), out)
        if target == "llava":
            _save_llava_files(
                config,
                staged,
                tokenizer_source=tokenizer_folder(checkpoint),
                image_kwargs=_image_processor_kwargs(checkpoint),
                do_pad=config_pads(checkpoint),
                chat_template=get_chat_template(template),
            )
        else:
            _save_robopoint_files(checkpoint, config, staged)
        card = render_model_card(src, target=target, prompt_template=template, config=config)
        (staged / "README.md").write_text(card)
        write_remote_code(staged)
        if verify:
            difference = verify_conversion(checkpoint, staged, target, dtypes)
            logger.info("Verified %s: max |logit difference| on the probe input = %.3g.", out, difference)
    return Path(out)


def probe_inputs(config, seed: int = 0) -> dict[str, torch.Tensor]:
    """A deterministic image + prompt-shaped input for comparing two models: BOS, a few text ids, one image's
    placeholders, a few more text ids."""
    generator = torch.Generator().manual_seed(seed)
    vision = config.vision_config
    pixel_values = torch.randn(1, 3, vision.image_size, vision.image_size, generator=generator)
    vocab = min(config.text_config.vocab_size, config.image_token_id)
    text = torch.randint(3, vocab, (16,), generator=generator).tolist()
    ids = [1] + text[:8] + [config.image_token_id] * config.image_seq_length + text[8:]
    return {"input_ids": torch.tensor([ids]), "pixel_values": pixel_values}


@torch.no_grad()
def verify_conversion(
    checkpoint: OriginalCheckpoint,
    out: Path,
    target: TargetFormat,
    dtype: torch.dtype | Callable[[str], torch.dtype],
) -> float:
    """Reloads `out` and compares its float32 logits on :func:`probe_inputs` with the source's weights (made at
    the saved dtypes, then upcast, so only the conversion itself is tested).

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
    return _check_difference(out, converted(**inputs).logits, expected)


def _check_difference(out: Path, actual: torch.Tensor, expected: torch.Tensor) -> float:
    difference = (actual - expected).abs().max().item()
    if not difference <= VERIFY_TOLERANCE:
        raise OriginalCheckpointError(
            f"Verification failed for {out}: logits differ from the source by {difference:.3g} "
            f"(tolerance {VERIFY_TOLERANCE})."
        )
    return difference


__all__ = [
    "convert_checkpoint",
    "probe_inputs",
    "verify_conversion",
    "weight_dtypes",
    "write_safetensors",
]
