"""Reading checkpoints in the ORIGINAL RoboPoint / LLaVA-1.5 format.

The original code (a fork of LLaVA v1.2.2) saves four kinds of folders, all with a ``config.json`` of
``model_type: "llava_llama"`` carrying ``mm_*`` keys:

* **full** -- fine-tuned language model + projector (+ an unused fp16 copy of CLIP) as sharded ``.bin`` pickles or
  safetensors, tokenizer files next to them;
* **lora** -- a PEFT adapter (``adapter_model.safetensors``) plus ``non_lora_trainables.bin`` (the projector); it is
  merged into a base language model (``--model-base``) as ``W + scaling * B @ A``, computed in float32, like the
  original builder (``robopoint/model/builder.py``) does through ``PeftModel.merge_and_unload``;
* **projector** -- ``mm_projector.bin`` only (LLaVA stage-1 output, and the LLaVA pretrained projectors RoboPoint
  training starts from); the language model also comes from ``--model-base``.

This module turns such a folder into a *weight plan*: the ordered list of target tensors of a transformers-native
LLaVA layout (``model.vision_tower.*``, ``model.multi_modal_projector.*``, ``model.language_model.*``,
``lm_head.weight``), each with a recipe that reads exactly the stored tensors it needs. Plans are executed one
source file at a time, so a 26 GB checkpoint converts with memory bounded by its largest shard. Every stored tensor
is either used or dropped for a stated, logged reason; anything else is an error listing the names.

The vision tower: the original loader ignores the CLIP copy inside full checkpoints and loads CLIP from
``mm_vision_tower`` in float32 (``clip_encoder.py``); LoRA checkpoints carry none. We do the same -- weights from
``vision_tower`` (default: the config's id, found in the local Hub cache or as a folder relative to the CWD or to
the checkpoint's parent folder) -- and log which folder was used.

Pickles are only ever read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from robopoint_hf.dtypes import dtype_from_safetensors, torch_dtype
from robopoint_hf.hub_checkpoint import HubModelUnavailableError, looks_like_hub_id, resolve_pretrained

logger = logging.getLogger(__name__)

TargetFormat = Literal["robopoint", "llava"]

ORIGINAL_MODEL_TYPES = ("llava_llama", "llava")
IMAGE_TOKEN_ID = 32000  # llava-hf convention; see `build_config`.
NUM_IMAGE_PATCH_TOKENS = 576  # CLIP ViT-L/14 at 336 px without CLS; recomputed from the vision config below.

_PROJECTOR_TYPE = re.compile(r"^(linear|mlp(\d+)x_gelu)$")
_CLIP_VISION_PARTS = ("embeddings.", "pre_layrnorm.", "encoder.", "post_layernorm.")
_CLIP_NON_VISION = ("text_model.", "text_projection.", "visual_projection.", "logit_scale")
_LLAMA_PARTS = ("model.embed_tokens.", "model.layers.", "model.norm.")
# Keys of the original config that describe LLaVA, not Llama; they must not reach the text config.
_LLAVA_CONFIG_KEYS = (
    "image_aspect_ratio",
    "tokenizer_padding_side",
    "tokenizer_model_max_length",
    "tune_mm_mlp_adapter",
    "freeze_mm_mlp_adapter",
    "use_mm_proj",
    "unfreeze_mm_vision_tower",
    "image_grid_pinpoints",
    "s2",
    "s2_scales",
)
_CONFIG_METADATA_KEYS = (
    "architectures",
    "_name_or_path",
    "model_type",
    "transformers_version",
    "torch_dtype",
    "dtype",
)
_WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")


class OriginalCheckpointError(ValueError):
    """A source folder is not a usable original RoboPoint/LLaVA checkpoint; the message names file and values."""


# ---------------------------------------------------------------------------------------------------------------
# Locating folders
# ---------------------------------------------------------------------------------------------------------------


def resolve_folder(
    spec: str | os.PathLike, *, search_dirs: tuple[Path, ...] = (), local_files_only: bool = False, what: str
) -> Path:
    """Finds the local folder meant by `spec`: an existing path, a path relative to one of `search_dirs`, or a
    Hub repository id (downloaded with `snapshot_download`, or only looked up in the local cache when
    `local_files_only`). `what` names the role in the error message (e.g. "vision tower")."""
    spec = str(spec)
    candidates = [Path(spec).expanduser()] + [directory / spec for directory in search_dirs]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    tried = ", ".join(str(candidate) for candidate in candidates)
    if not looks_like_hub_id(spec) or "/" not in spec:
        raise OriginalCheckpointError(f"{what} {spec!r} not found (tried {tried}).")
    from huggingface_hub import snapshot_download

    try:
        if not local_files_only:
            resolve_pretrained(spec, what=what)  # uncached and unreachable: one line, at once
        return Path(snapshot_download(spec, local_files_only=local_files_only))
    except HubModelUnavailableError as error:
        raise OriginalCheckpointError(f"{error} (also tried folders {tried})") from None
    except Exception as error:  # noqa: BLE001 -- hub errors come in many classes; the message is what matters
        where = "in the local Hugging Face cache" if local_files_only else "locally or on the Hub"
        raise OriginalCheckpointError(
            f"{what} {spec!r} not found {where} (also tried folders {tried}): {type(error).__name__}. "
            f"Download it first (`hf download {spec}`) or pass a local folder."
        ) from None


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise OriginalCheckpointError(f"{path} is not valid JSON: {error}") from error


def _is_original_config(config: dict) -> bool:
    # llava-hf / RoboPoint folders have a `vision_config`; the original format has `mm_*` keys on a Llama config.
    return "vision_config" not in config and ("mm_vision_tower" in config or "mm_projector_type" in config)


def is_original_checkpoint(path_or_id: str | os.PathLike) -> bool:
    """Whether `path_or_id` (a local folder or a Hub id) holds a checkpoint in the original RoboPoint/LLaVA
    format, i.e. its `config.json` is a Llama config with LLaVA's `mm_*` keys. Never raises: anything unreadable
    answers `False`, so `from_pretrained` overrides can call it first and fall through to the normal path."""
    folder = Path(path_or_id).expanduser()
    try:
        if folder.is_dir():
            config_file = folder / "config.json"
            if not config_file.is_file():
                return False
        elif looks_like_hub_id(str(path_or_id)) and "/" in str(path_or_id):
            from huggingface_hub import hf_hub_download

            config_file = Path(hf_hub_download(str(path_or_id), "config.json"))
        else:
            return False
        return _is_original_config(_read_json(config_file))
    except Exception:  # noqa: BLE001 -- documented: any failure means "not an original checkpoint"
        return False


# ---------------------------------------------------------------------------------------------------------------
# Stored tensors
# ---------------------------------------------------------------------------------------------------------------


class TensorFile:
    """One stored weights file (safetensors or a `torch.save` pickle), opened lazily and closable.

    Pickles are memory-mapped (`torch.load(mmap=True, weights_only=True)`) so that reading one tensor does not
    bring the whole shard into memory; pre-zip pickles fall back to a plain (still `weights_only`) load.
    """

    def __init__(self, path: Path):
        self.path = path
        self._handle = None

    def _open(self):
        if self._handle is None:
            if not self.path.is_file():
                raise OriginalCheckpointError(f"weights file {self.path} is missing.")
            if self.path.suffix == ".safetensors":
                from safetensors import safe_open

                self._handle = safe_open(str(self.path), framework="pt")
            else:
                try:
                    self._handle = torch.load(self.path, map_location="cpu", weights_only=True, mmap=True)
                except RuntimeError:  # legacy (non-zip) serialization cannot be memory-mapped
                    self._handle = torch.load(self.path, map_location="cpu", weights_only=True)
                if not isinstance(self._handle, dict):
                    raise OriginalCheckpointError(
                        f"{self.path} holds a {type(self._handle).__name__}, expected a dict of tensors."
                    )
        return self._handle

    def keys(self) -> list[str]:
        handle = self._open()
        return list(handle.keys())

    def meta(self, key: str) -> tuple[tuple[int, ...], torch.dtype]:
        """Shape and dtype of `key` without reading its data."""
        handle = self._open()
        if isinstance(handle, dict):
            tensor = handle[key]
            return tuple(tensor.shape), tensor.dtype
        view = handle.get_slice(key)
        return tuple(view.get_shape()), dtype_from_safetensors(view.get_dtype())

    def get(self, key: str) -> torch.Tensor:
        handle = self._open()
        return handle[key] if isinstance(handle, dict) else handle.get_tensor(key)

    def close(self) -> None:
        self._handle = None


def weight_files(folder: Path) -> list[Path]:
    """The weights files of a transformers-style folder, in shard order, checking that every shard named by the
    index exists."""
    for index_name in _WEIGHT_INDEXES:
        index_file = folder / index_name
        if index_file.is_file():
            weight_map = _read_json(index_file).get("weight_map")
            if not isinstance(weight_map, dict):
                raise OriginalCheckpointError(f"{index_file} has no 'weight_map'.")
            shards = sorted(set(weight_map.values()))
            missing = [shard for shard in shards if not (folder / shard).is_file()]
            if missing:
                raise OriginalCheckpointError(f"{index_file} names shards that are missing: {', '.join(missing)}.")
            return [folder / shard for shard in shards]
    for name in _WEIGHT_FILES:
        if (folder / name).is_file():
            return [folder / name]
    raise OriginalCheckpointError(
        f"no weights in {folder}: expected one of {', '.join(_WEIGHT_INDEXES + _WEIGHT_FILES)}."
    )


# ---------------------------------------------------------------------------------------------------------------
# The source checkpoint
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class OriginalCheckpoint:
    """A resolved original-format source: its folder, config, kind and the folders it depends on.

    Args:
        folder (`Path`): the checkpoint folder.
        config (`dict`): its `config.json`.
        kind (`str`): `"full"`, `"lora"` or `"projector"`.
        base_folder (`Path`, *optional*): the base language model of LoRA and projector checkpoints.
        vision_folder (`Path`): the CLIP checkpoint whose vision weights are used.
    """

    folder: Path
    config: dict
    kind: Literal["full", "lora", "projector"]
    vision_folder: Path
    base_folder: Path | None = None

    @property
    def projector_type(self) -> str:
        return self.config.get("mm_projector_type", "linear")  # LLaVA's default when the key is absent

    @property
    def llm_folder(self) -> Path:
        """Folder holding the language model weights and the tokenizer."""
        return self.base_folder if self.base_folder is not None else self.folder

    @property
    def stored_dtype(self) -> torch.dtype:
        name = self.config.get("torch_dtype") or self.config.get("dtype") or "float32"
        return torch_dtype(name)


def open_original(
    src: str | os.PathLike, model_base: str | os.PathLike | None = None, vision_tower: str | os.PathLike | None = None
) -> OriginalCheckpoint:
    """Resolves `src` (folder or Hub id) and the folders it depends on, and validates what can be validated
    without reading weights.

    Raises:
        `OriginalCheckpointError`: not an original checkpoint, LoRA/projector without `model_base`, base whose
            vocabulary or hidden size differs, unsupported LLaVA options, vision tower not found.
    """
    folder = resolve_folder(src, what="checkpoint")
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise OriginalCheckpointError(f"{folder} has no config.json: not a RoboPoint/LLaVA checkpoint.")
    config = _read_json(config_file)
    if not _is_original_config(config):
        raise OriginalCheckpointError(
            f"{config_file} is not an original RoboPoint/LLaVA config (model_type {config.get('model_type')!r}, "
            "no 'mm_vision_tower'/'mm_projector_type' keys). Already-converted folders load with from_pretrained."
        )
    _check_supported_options(config, config_file)
    if (folder / "adapter_config.json").is_file():
        kind = "lora"
    elif (folder / "mm_projector.bin").is_file() and not any((folder / name).is_file() for name in _WEIGHT_FILES):
        kind = "projector"
    else:
        kind = "full"
        weight_files(folder)  # fail early on a missing shard

    search_dirs = (folder.parent, folder)
    base_folder = None
    if kind != "full":
        if model_base is None:
            needed = "adapter_config.json" if kind == "lora" else "mm_projector.bin"
            raise OriginalCheckpointError(
                f"{folder} is a {kind} checkpoint ({needed}); pass the language model it was trained on with "
                "--model-base (Python: model_base=...), e.g. lmsys/vicuna-13b-v1.5."
            )
        base_folder = resolve_folder(model_base, search_dirs=search_dirs, what="model base")
        _check_base(config, config_file, base_folder)
    elif model_base is not None:
        logger.warning("Ignoring model_base=%s: %s is a full checkpoint.", model_base, folder)

    tower_spec = vision_tower if vision_tower is not None else config.get("mm_vision_tower")
    if not tower_spec:
        raise OriginalCheckpointError(f"{config_file} has no 'mm_vision_tower'; pass --vision-tower.")
    vision_folder = resolve_folder(
        tower_spec, search_dirs=search_dirs, local_files_only=vision_tower is None, what="vision tower"
    )
    return OriginalCheckpoint(folder, config, kind, vision_folder, base_folder)


def _check_supported_options(config: dict, config_file: Path) -> None:
    def unsupported(key: str, value, allowed: str) -> OriginalCheckpointError:
        return OriginalCheckpointError(
            f"{config_file}: {key}={value!r} is not supported (RoboPoint uses {allowed}); cannot convert."
        )

    projector = config.get("mm_projector_type", "linear")
    if not _PROJECTOR_TYPE.match(str(projector)):
        raise OriginalCheckpointError(
            f"{config_file}: unknown mm_projector_type {projector!r}; expected 'linear' or 'mlp<N>x_gelu'."
        )
    if config.get("mm_use_im_start_end"):
        raise unsupported("mm_use_im_start_end", True, "False")
    if config.get("mm_patch_merge_type", "flat") != "flat":
        raise unsupported("mm_patch_merge_type", config["mm_patch_merge_type"], "'flat'")
    if config.get("image_aspect_ratio", "square") not in ("pad", "square"):
        raise unsupported("image_aspect_ratio", config["image_aspect_ratio"], "'pad'")
    if config.get("mm_vision_select_feature", "patch") not in ("patch", "cls_patch"):
        raise unsupported("mm_vision_select_feature", config["mm_vision_select_feature"], "'patch'")
    if config.get("s2"):
        raise unsupported("s2", True, "no S2 multi-scale tower")
    if config.get("mm_use_im_patch_token", True):
        # The original adds an unused `<im_patch>` token (and an embedding row) when this is true or missing;
        # no prompt ever contains it, so dropping it changes no output.
        logger.info("%s: mm_use_im_patch_token is not False; the unused <im_patch> token is not added.", config_file)


def _check_base(config: dict, config_file: Path, base_folder: Path) -> None:
    base_config_file = base_folder / "config.json"
    if not base_config_file.is_file():
        raise OriginalCheckpointError(f"model base {base_folder} has no config.json.")
    base = _read_json(base_config_file)
    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "intermediate_size"):
        if key in config and key in base and config[key] != base[key]:
            raise OriginalCheckpointError(
                f"model base {base_folder} does not match {config_file}: {key} is {base[key]} in the base "
                f"but {config[key]} in the checkpoint."
            )


def tokenizer_folder(checkpoint: OriginalCheckpoint) -> Path:
    """Folder the tokenizer is loaded from: the checkpoint for full ones, the base otherwise (LoRA repos ship
    none, as in the original builder)."""
    folder = checkpoint.llm_folder
    if not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        raise OriginalCheckpointError(f"no tokenizer in {folder}: expected {' or '.join(_TOKENIZER_FILES)}.")
    return folder


# ---------------------------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------------------------


def text_config_dict(config: dict) -> dict:
    """The Llama part of an original config: every key except LLaVA's additions and file metadata."""
    text = {
        key: value
        for key, value in config.items()
        if not key.startswith("mm_") and key not in _LLAVA_CONFIG_KEYS and key not in _CONFIG_METADATA_KEYS
    }
    if text.get("rope_scaling", 0) is None:
        del text["rope_scaling"]  # transformers 5 reads `rope_theta` into `rope_parameters`; None adds nothing
    return text


def vision_config_dict(vision_folder: Path) -> dict:
    """The CLIP vision config of `vision_folder`, which may hold a vision-only or a full (text+vision) CLIP."""
    config = _read_json(vision_folder / "config.json")
    if config.get("model_type") == "clip":
        config = dict(config.get("vision_config") or {})
    elif config.get("model_type") != "clip_vision_model":
        raise OriginalCheckpointError(
            f"{vision_folder / 'config.json'} has model_type {config.get('model_type')!r}; expected a CLIP model."
        )
    return {key: value for key, value in config.items() if key not in _CONFIG_METADATA_KEYS}


def build_config(
    checkpoint: OriginalCheckpoint, target: TargetFormat = "robopoint", prompt_template: str | None = None
):
    """The transformers config of the converted model.

    `target="robopoint"` gives a `RoboPointConfig`; `target="llava"` a plain `LlavaConfig` for engines that only
    know LLaVA: its vocabulary grows by one row for the `<image>` token (id 32000 = the original vocabulary size,
    the llava-hf convention), because native LLaVA embeds image-token ids before overwriting them, and a
    `linear` projector is expressed as `projector_hidden_act="linear"` with an identity second layer.
    """
    from transformers import CLIPVisionConfig, LlamaConfig

    original = checkpoint.config
    text_config = LlamaConfig(**text_config_dict(original))
    vision_config = CLIPVisionConfig(**vision_config_dict(checkpoint.vision_folder))
    mm_hidden_size = original.get("mm_hidden_size")
    if mm_hidden_size is not None and mm_hidden_size != vision_config.hidden_size:
        raise OriginalCheckpointError(
            f"{checkpoint.folder / 'config.json'} says mm_hidden_size={mm_hidden_size} but the vision tower "
            f"{checkpoint.vision_folder} has hidden_size={vision_config.hidden_size}."
        )
    strategy = "full" if original.get("mm_vision_select_feature", "patch") == "cls_patch" else "default"
    image_seq_length = (vision_config.image_size // vision_config.patch_size) ** 2 + (strategy == "full")
    common = {
        "vision_feature_layer": original.get("mm_vision_select_layer", -2),
        "vision_feature_select_strategy": strategy,
        "image_seq_length": image_seq_length,
        "image_token_id": IMAGE_TOKEN_ID,
        "tie_word_embeddings": bool(original.get("tie_word_embeddings", False)),
    }
    projector_type = checkpoint.projector_type
    if target == "llava":
        return llava_config(vision_config, text_config, projector_type, multimodal_projector_bias=True, **common)
    from robopoint_hf.model.configuration_robopoint import RoboPointConfig

    return RoboPointConfig(
        vision_config=vision_config,
        text_config=text_config,
        projector_type=projector_type,
        image_aspect_ratio=original.get("image_aspect_ratio", "square"),
        prompt_template=prompt_template or "vicuna_v1",
        **common,
    )


def llava_config(vision_config, text_config, projector_type: str, **common):
    """The plain `LlavaConfig` of a RoboPoint model (see `build_config`): the vocabulary grows to hold the image
    token id, and a `linear` projector becomes `projector_hidden_act="linear"` (with an identity second layer)."""
    from transformers import LlavaConfig

    if projector_type not in ("linear", "mlp2x_gelu"):
        raise OriginalCheckpointError(
            f"projector {projector_type!r} has no plain-LLaVA equivalent (LLaVA has two projector layers)."
        )
    text_config = copy.deepcopy(text_config)
    text_config.vocab_size = max(text_config.vocab_size, common["image_token_id"] + 1)
    return LlavaConfig(
        vision_config=vision_config,
        text_config=text_config,
        projector_hidden_act="gelu" if projector_type == "mlp2x_gelu" else "linear",
        **common,
    )


# ---------------------------------------------------------------------------------------------------------------
# Weight plans
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class PlannedTensor:
    """One tensor of the converted model and how to make it.

    Args:
        name (`str`): in-memory parameter name (`model.language_model.layers.0.mlp.up_proj.weight`, ...).
        shape (`tuple[int, ...]`): its shape.
        files (`tuple[TensorFile, ...]`): the stored files `make` reads (for closing them after their last use).
        make (`Callable[[torch.dtype], torch.Tensor]`): builds the tensor in the requested floating dtype.
    """

    name: str
    shape: tuple[int, ...]
    files: tuple[TensorFile, ...]
    make: Callable[[torch.dtype], torch.Tensor]


@dataclass
class WeightPlan:
    """All tensors of a converted checkpoint, ordered so that each stored file is read in one stretch."""

    tensors: list[PlannedTensor] = field(default_factory=list)

    def names(self) -> list[str]:
        return [tensor.name for tensor in self.tensors]

    def materialize(self, dtype: torch.dtype | Callable[[str], torch.dtype]) -> Iterator[tuple[str, torch.Tensor]]:
        """Yields `(name, tensor)` in plan order, closing each stored file right after its last use. `dtype` is one
        dtype, or a function of the tensor's name (per-part dtypes, see `convert.weight_dtypes`)."""
        last_use: dict[int, int] = {}
        for position, tensor in enumerate(self.tensors):
            for stored in tensor.files:
                last_use[id(stored)] = position
        for position, planned in enumerate(self.tensors):
            tensor = planned.make(dtype(planned.name) if callable(dtype) else dtype)
            if tuple(tensor.shape) != planned.shape:
                raise OriginalCheckpointError(
                    f"{planned.name}: made a tensor of shape {tuple(tensor.shape)}, planned {planned.shape}."
                )
            yield planned.name, tensor
            for stored in planned.files:
                if last_use[id(stored)] == position:
                    stored.close()

    def state_dict(self, dtype: torch.dtype | Callable[[str], torch.dtype]) -> dict[str, torch.Tensor]:
        """The whole plan in memory (for direct loading of an original checkpoint)."""
        return {
            name: tensor.clone() if _is_view_of_file(tensor) else tensor for name, tensor in self.materialize(dtype)
        }


def _is_view_of_file(tensor: torch.Tensor) -> bool:
    # Tensors of a memory-mapped pickle keep the file mapped; a clone detaches them once the file is closed.
    return not tensor.untyped_storage().resizable()


def _cast(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return tensor.to(dtype) if tensor.is_floating_point() else tensor


def projector_target(suffix: str, projector_type: str, origin: str) -> str:
    """`0.weight` / `weight` (original projector keys after `mm_projector.`) -> `model.multi_modal_projector.*`."""
    parts = suffix.split(".")
    if projector_type == "linear" and len(parts) == 1:
        layer = 1
    elif projector_type != "linear" and len(parts) == 2 and parts[0].isdigit() and int(parts[0]) % 2 == 0:
        layer = int(parts[0]) // 2 + 1  # Sequential(Linear, GELU, Linear, ...): Linears at even indices
    else:
        raise OriginalCheckpointError(f"unexpected projector tensor {origin!r} for projector type {projector_type!r}.")
    return f"model.multi_modal_projector.linear_{layer}.{parts[-1]}"


def _language_target(key: str) -> str | None:
    if key == "lm_head.weight":
        return key
    if key.startswith(_LLAMA_PARTS):
        return "model.language_model." + key[len("model.") :]
    return None


def _vision_target(key: str) -> str | None:
    key = key.removeprefix("vision_model.")
    return "model.vision_tower." + key if key.startswith(_CLIP_VISION_PARTS) else None


class _Planner:
    """Collects planned tensors and accounts for every stored tensor it is shown."""

    def __init__(self, checkpoint: OriginalCheckpoint):
        self.checkpoint = checkpoint
        self.tensors: dict[str, PlannedTensor] = {}
        self.unused: list[str] = []
        self.dropped: dict[str, list[str]] = {}

    def drop(self, reason: str, origin: str) -> None:
        self.dropped.setdefault(reason, []).append(origin)

    def add(self, name: str, stored: TensorFile, key: str, origin: str, *, override: bool = False) -> None:
        if name in self.tensors and not override:
            raise OriginalCheckpointError(f"{name} is stored twice (second copy: {origin}).")
        shape, _ = stored.meta(key)
        self.tensors[name] = PlannedTensor(name, shape, (stored,), lambda dtype: _cast(stored.get(key), dtype))

    def add_original_file(self, stored: TensorFile) -> None:
        """A file of a full checkpoint, of a base language model, or `non_lora_trainables.bin`."""
        projector_type = self.checkpoint.projector_type
        for raw_key in stored.keys():
            origin = f"{stored.path.name}:{raw_key}"
            # PEFT prefixes (`base_model.model.`) as normalised by the original builder.
            key = raw_key.removeprefix("base_model.model.")
            if key.startswith("model.mm_projector."):
                name = projector_target(key[len("model.mm_projector.") :], projector_type, origin)
                self.add(name, stored, raw_key, origin, override=True)
            elif (name := _language_target(key)) is not None:
                self.add(name, stored, raw_key, origin, override=stored.path.name == "non_lora_trainables.bin")
            elif key.startswith("model.vision_tower."):
                self.drop("CLIP copy stored in the checkpoint (the original loader ignores it too)", origin)
            elif key.endswith("rotary_emb.inv_freq"):
                self.drop("rotary buffers (recomputed from the config)", origin)
            else:
                self.unused.append(origin)

    def add_projector_file(self, stored: TensorFile) -> None:
        """`mm_projector.bin` of stage-1 / LLaVA pretrained projectors: keys `...mm_projector.<suffix>`."""
        for key in stored.keys():
            origin = f"{stored.path.name}:{key}"
            if "mm_projector." not in key:
                self.unused.append(origin)
                continue
            suffix = key.split("mm_projector.", 1)[1]
            self.add(projector_target(suffix, self.checkpoint.projector_type, origin), stored, key, origin)

    def add_vision_file(self, stored: TensorFile) -> None:
        for key in stored.keys():
            origin = f"{stored.path.name}:{key}"
            if (name := _vision_target(key)) is not None:
                self.add(name, stored, key, origin)
            elif key.startswith(_CLIP_NON_VISION):
                self.drop("CLIP text tower and contrastive head (not part of LLaVA)", origin)
            elif key.endswith("position_ids"):
                self.drop("position-id buffers (recomputed)", origin)
            else:
                self.unused.append(origin)

    def add_lora(self, adapter_folder: Path) -> None:
        """Merges `adapter_model.safetensors` into the planned base weights: `W + scaling * B @ A` in float32."""
        adapter_config = _read_json(adapter_folder / "adapter_config.json")
        for key, unsupported in (("use_dora", True), ("fan_in_fan_out", True)):
            if adapter_config.get(key) is unsupported:
                raise OriginalCheckpointError(
                    f"{adapter_folder / 'adapter_config.json'}: {key}=true is not supported."
                )
        if adapter_config.get("rank_pattern") or adapter_config.get("alpha_pattern"):
            raise OriginalCheckpointError(
                f"{adapter_folder / 'adapter_config.json'}: per-module rank_pattern/alpha_pattern are not supported."
            )
        rank, alpha = adapter_config["r"], adapter_config["lora_alpha"]
        scaling = alpha / rank**0.5 if adapter_config.get("use_rslora") else alpha / rank
        adapter_file = adapter_folder / "adapter_model.safetensors"
        if not adapter_file.is_file():
            adapter_file = adapter_folder / "adapter_model.bin"  # older PEFT; TensorFile names it if missing
        adapter = TensorFile(adapter_file)
        pairs: dict[str, dict[str, str]] = {}
        for key in adapter.keys():
            match = re.match(r"^(.*)\.lora_([AB])(?:\.default)?\.weight$", key)
            if match is None:
                self.unused.append(f"{adapter_file.name}:{key}")
                continue
            pairs.setdefault(match.group(1), {})[match.group(2)] = key
        for module, pair in pairs.items():
            origin = f"{adapter_file.name}:{module}"
            if set(pair) != {"A", "B"}:
                raise OriginalCheckpointError(f"{origin} has lora_{''.join(pair)} but not both lora_A and lora_B.")
            name = _language_target(module.removeprefix("base_model.model.") + ".weight")
            if name is None or name not in self.tensors:
                raise OriginalCheckpointError(f"{origin} adapts a weight the base model does not have.")
            self.tensors[name] = _merged(self.tensors[name], adapter, pair["A"], pair["B"], scaling)
        logger.info("Merged %d LoRA pairs from %s (scaling %s).", len(pairs), adapter_file, scaling)


def _merged(base: PlannedTensor, adapter: TensorFile, key_a: str, key_b: str, scaling: float) -> PlannedTensor:
    def make(dtype: torch.dtype) -> torch.Tensor:
        # As PEFT's merge in the original builder (run in float32 by the references): W + scaling * (B @ A).
        weight = base.make(torch.float32)
        delta = adapter.get(key_b).float() @ adapter.get(key_a).float()
        return (weight + scaling * delta).to(dtype)

    return PlannedTensor(base.name, base.shape, base.files + (adapter,), make)


def plan_weights(checkpoint: OriginalCheckpoint, target: TargetFormat = "robopoint", config=None) -> WeightPlan:
    """Plans every tensor of the converted model from `checkpoint`.

    The plan is checked against the parameters of the target model class (built on the meta device from
    `config`): a missing, unexpected or wrongly shaped tensor, or a stored tensor nobody uses, is an error that
    lists the names.
    """
    config = config if config is not None else build_config(checkpoint, target)
    planner = _Planner(checkpoint)
    for path in weight_files(checkpoint.vision_folder):
        planner.add_vision_file(TensorFile(path))
    for path in weight_files(checkpoint.llm_folder):
        planner.add_original_file(TensorFile(path))
    if checkpoint.kind == "lora":
        non_lora = checkpoint.folder / "non_lora_trainables.bin"
        if not non_lora.is_file():
            raise OriginalCheckpointError(f"{non_lora} is missing: the LoRA checkpoint has no projector weights.")
        planner.add_original_file(TensorFile(non_lora))
        planner.add_lora(checkpoint.folder)
    elif checkpoint.kind == "projector":
        planner.add_projector_file(TensorFile(checkpoint.folder / "mm_projector.bin"))
    if planner.unused:
        raise OriginalCheckpointError(
            f"{len(planner.unused)} stored tensors have no place in the converted model: {', '.join(planner.unused)}."
        )
    for reason, origins in planner.dropped.items():
        logger.info("Not converted, %s: %d tensors (e.g. %s).", reason, len(origins), origins[0])
    if target == "llava":
        adapt_to_llava(planner.tensors, config)
    check_against_model(planner.tensors, config, target)
    logger.info("Vision tower weights: %s", checkpoint.vision_folder)
    return WeightPlan(list(planner.tensors.values()))


def adapt_to_llava(tensors: dict[str, PlannedTensor], config) -> None:
    """Plain-LLaVA layout: identity second projector layer for `linear`, and vocabulary rows for `<image>`."""
    if "model.multi_modal_projector.linear_2.weight" not in tensors:
        hidden = config.text_config.hidden_size
        tensors["model.multi_modal_projector.linear_2.weight"] = PlannedTensor(
            "model.multi_modal_projector.linear_2.weight",
            (hidden, hidden),
            (),
            lambda dtype: torch.eye(hidden, dtype=dtype),
        )
        tensors["model.multi_modal_projector.linear_2.bias"] = PlannedTensor(
            "model.multi_modal_projector.linear_2.bias", (hidden,), (), lambda dtype: torch.zeros(hidden, dtype=dtype)
        )
    vocab = config.text_config.vocab_size
    for name in ("model.language_model.embed_tokens.weight", "lm_head.weight"):
        planned = tensors.get(name)
        if planned is not None and planned.shape[0] < vocab:
            tensors[name] = _zero_padded(planned, vocab)


def _zero_padded(planned: PlannedTensor, rows: int) -> PlannedTensor:
    # Zero rows: the image token's embedding is always overwritten by image features, and a zero lm_head row
    # leaves the original vocabulary's logits untouched (the export's generation config suppresses the new id).
    def make(dtype: torch.dtype) -> torch.Tensor:
        tensor = planned.make(dtype)
        return torch.cat([tensor, tensor.new_zeros(rows - tensor.shape[0], *tensor.shape[1:])])

    return PlannedTensor(planned.name, (rows,) + planned.shape[1:], planned.files, make)


def model_class(target: TargetFormat):
    """The model class a converted checkpoint of `target` format loads into."""
    if target == "llava":
        from transformers import LlavaForConditionalGeneration

        return LlavaForConditionalGeneration
    from robopoint_hf.model.modeling_robopoint import RoboPointForConditionalGeneration

    return RoboPointForConditionalGeneration


def expected_tensors(config, target: TargetFormat) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the persistent tensors of the target model, from a meta-device instance."""
    with torch.device("meta"):
        model = model_class(target)(config)
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def check_against_model(tensors: dict[str, PlannedTensor], config, target: TargetFormat) -> None:
    expected = expected_tensors(config, target)
    if config.tie_word_embeddings:
        expected.pop("lm_head.weight", None)
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [
        f"{name} {tensors[name].shape} vs {expected[name]}"
        for name in tensors
        if name in expected and tensors[name].shape != expected[name]
    ]
    problems = []
    if missing:
        problems.append(f"not filled from the source: {', '.join(missing)}")
    if unexpected:
        problems.append(f"not in the {target} model: {', '.join(unexpected)}")
    if wrong:
        problems.append(f"shape mismatch (source vs model): {', '.join(wrong)}")
    if problems:
        raise OriginalCheckpointError("Converted weights do not fit the model; " + "; ".join(problems) + ".")


# ---------------------------------------------------------------------------------------------------------------
# Direct loading
# ---------------------------------------------------------------------------------------------------------------


def load_original(
    src: str | os.PathLike,
    model_base: str | os.PathLike | None = None,
    vision_tower: str | os.PathLike | None = None,
    dtype: torch.dtype = torch.float32,
    target: TargetFormat = "robopoint",
    prompt_template: str | None = None,
):
    """Loads an original-format checkpoint into memory, converted, without writing anything to disk.

    Args:
        src (`str` or `os.PathLike`): original-format folder or Hub id.
        model_base (`str`, *optional*): base language model of LoRA / projector-only checkpoints.
        vision_tower (`str`, *optional*): CLIP folder or Hub id; defaults to the config's `mm_vision_tower`,
            looked up in the local Hub cache and relative to the CWD and to `src`'s parent folder.
        dtype (`torch.dtype`, *optional*, defaults to `torch.float32`): dtype of every floating tensor.
        target (`str`, *optional*, defaults to `"robopoint"`): `"robopoint"` or `"llava"` layout and config.
        prompt_template (`str`, *optional*): template to record; defaults to the registry entry of `src` or
            `"vicuna_v1"` (the training template of every published checkpoint).

    Returns:
        `tuple`: `(config, state_dict, tokenizer_folder)` -- the config object, the tensors under the model's
        in-memory names, and the folder to load the tokenizer from.
    """
    checkpoint = open_original(src, model_base=model_base, vision_tower=vision_tower)
    config = build_config(checkpoint, target, prompt_template or default_prompt_template(src))
    plan = plan_weights(checkpoint, target, config)
    return config, plan.state_dict(dtype), tokenizer_folder(checkpoint)


def default_prompt_template(src: str | os.PathLike) -> str:
    """The template a source was trained with: from the registry when `src` is a published checkpoint, else the
    `vicuna_v1` template every RoboPoint training script used."""
    from robopoint_hf.checkpoints import find_checkpoint

    info = find_checkpoint(str(src))
    return info.prompt_template if info is not None else "vicuna_v1"


__all__ = [
    "OriginalCheckpoint",
    "OriginalCheckpointError",
    "PlannedTensor",
    "TensorFile",
    "WeightPlan",
    "adapt_to_llava",
    "build_config",
    "check_against_model",
    "expected_tensors",
    "llava_config",
    "is_original_checkpoint",
    "load_original",
    "open_original",
    "plan_weights",
    "tokenizer_folder",
]
