"""The one save path: every folder the library writes is a complete, atomic, Hub-native checkpoint.

Three rules, each implemented once here and called by every writer (``robopoint convert`` / ``export`` /
``merge-lora`` / ``train``, the tiny-model build, and the ``save_pretrained`` of the model, processor and pipeline):

* **Hub-native** (:func:`write_remote_code`): a RoboPoint folder carries the code of its classes (the modules below
  and the sibling modules they import relatively), an ``auto_map`` naming ``AutoConfig``, ``AutoModel``,
  ``AutoModelForImageTextToText``, ``AutoProcessor`` and ``AutoImageProcessor``, and a ``custom_pipelines`` entry
  (:data:`HUB_PIPELINE_TASK`), so that ``trust_remote_code=True`` users need no package and
  ``pipeline(model=folder, trust_remote_code=True)`` finds its task offline. A plain LLaVA export carries only the
  pipeline's code and ``custom_pipelines`` (no ``auto_map``: its model and processor stay the native LLaVA classes
  that serving engines load without remote code) and a tokenizer that pads on the left (batched generation needs
  it).
* **Atomic** (:func:`staged_folder`): a folder is built in a hidden sibling ``.OUT.partial-*`` and renamed to OUT
  only once :func:`check_complete` accepts it; killed at any moment, OUT is absent or complete. A non-empty OUT is
  refused unless ``overwrite``.
* **Offline-clear** (:func:`resolve_pretrained`): a Hub id that is neither cached nor reachable fails at once with
  one line naming it and saying to pass a local folder.

Why the Hub task is not called ``"robopoint"``: transformers sends a task named in a folder's ``custom_pipelines``
to the folder's code, and demands ``trust_remote_code=True`` for it, before it looks at its task registry. With the
entry named ``"robopoint"``, ``pipeline("robopoint", model=folder)`` would stop working where the package is
installed (and registers ``"robopoint"`` itself). A distinct name keeps both: the package's ``"robopoint"`` task,
and the folder's own task for ``pipeline(model=folder, trust_remote_code=True)`` without the package.

This module belongs to the package only: the Hub copies of the model, processor and pipeline modules import it
inside ``try`` blocks and fall back to transformers' own saving without it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HUB_PIPELINE_TASK = "robopoint-points"
"""Task name of the ``custom_pipelines`` entry every RoboPoint folder declares (see the module docstring)."""

CONFIG_FILE = "config.json"
PROCESSOR_FILE = "processor_config.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
_PARTIAL = ".partial-"
_REPLACED = ".replaced-"


class CheckpointIncompleteError(RuntimeError):
    """A staged folder misses a file every checkpoint needs; it is never renamed into place."""


class CorruptedWeightsError(OSError):
    """A weights file that cannot be read: truncated by an interrupted copy or download, or not safetensors."""


class HubModelUnavailableError(OSError):
    """A Hub id that is not in the local cache and cannot be downloaded (offline, or no network)."""


# ---------------------------------------------------------------------------------------------------- code files
def _remote_classes() -> dict[str, type]:
    from robopoint_hf.model.configuration_robopoint import RoboPointConfig
    from robopoint_hf.model.image_processing_robopoint import RoboPointImageProcessor
    from robopoint_hf.model.modeling_robopoint import RoboPointForConditionalGeneration
    from robopoint_hf.model.pipeline_robopoint import RoboPointPipeline
    from robopoint_hf.model.processing_robopoint import RoboPointProcessor

    return {
        "config": RoboPointConfig,
        "model": RoboPointForConditionalGeneration,
        "processor": RoboPointProcessor,
        "image_processor": RoboPointImageProcessor,
        "pipeline": RoboPointPipeline,
    }


def _reference(cls: type) -> str:
    """``module.Class`` as ``auto_map`` and ``custom_pipelines`` write it (modules are copied flat)."""
    return f"{cls.__module__.rsplit('.', 1)[-1]}.{cls.__name__}"


def remote_code_files(pipeline_only: bool = False) -> list[Path]:
    """The package modules a RoboPoint folder carries: those defining its classes and every module they import
    relatively (found by transformers' own reader of relative imports, the one remote-code loading uses).
    ``pipeline_only``: those of the pipeline alone, which a plain LLaVA export carries."""
    import inspect

    from transformers.dynamic_module_utils import get_relative_import_files

    classes = _remote_classes()
    files: set[Path] = set()
    for cls in [classes["pipeline"]] if pipeline_only else classes.values():
        module_file = Path(inspect.getfile(cls)).resolve()
        files.add(module_file)
        files.update(Path(path).resolve() for path in get_relative_import_files(str(module_file)))
    return sorted(files)


def model_auto_map() -> dict[str, str]:
    classes = _remote_classes()
    model = _reference(classes["model"])
    return {"AutoConfig": _reference(classes["config"]), "AutoModel": model, "AutoModelForImageTextToText": model}


def processor_auto_map() -> dict[str, str]:
    classes = _remote_classes()
    return {
        "AutoProcessor": _reference(classes["processor"]),
        "AutoImageProcessor": _reference(classes["image_processor"]),
    }


def hub_custom_pipelines() -> dict[str, dict]:
    """The ``custom_pipelines`` of a RoboPoint config: one task, so transformers infers it without a task argument."""
    return {
        HUB_PIPELINE_TASK: {
            "impl": _reference(_remote_classes()["pipeline"]),
            "pt": ["AutoModelForImageTextToText"],
            "tf": [],
            "type": "multimodal",
        }
    }


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def write_remote_code(folder: str | os.PathLike) -> list[Path]:
    """Makes ``folder`` Hub-native, whatever wrote its files (idempotent).

    RoboPoint folders (``model_type: "robopoint"`` and/or a ``RoboPointProcessor``): copies :func:`remote_code_files`
    and writes the complete ``auto_map`` (config, model, processor, image processor) and ``custom_pipelines``.
    Plain LLaVA folders: copies the pipeline's code files and writes ``custom_pipelines`` only (no ``auto_map``), and
    the tokenizer pads on the left. Returns the files written or changed.
    """
    folder = Path(folder)
    changed: list[Path] = []

    def update(path: Path, edit) -> None:
        if path.is_file():
            data = _read_json(path)
            before = json.dumps(data, sort_keys=True)
            edit(data)
            if json.dumps(data, sort_keys=True) != before:
                _write_json(path, data)
                changed.append(path)

    config_path = folder / CONFIG_FILE
    model_type = _read_json(config_path).get("model_type") if config_path.is_file() else None
    processor_path = folder / PROCESSOR_FILE
    processor_class = _read_json(processor_path).get("processor_class") if processor_path.is_file() else None
    robopoint = model_type == "robopoint" or processor_class == "RoboPointProcessor"
    llava = model_type == "llava" and not robopoint
    if robopoint or llava:
        for source in remote_code_files(pipeline_only=llava):
            target = folder / source.name
            if not target.is_file() or target.read_bytes() != source.read_bytes():
                shutil.copyfile(source, target)
                changed.append(target)

    def edit_config(data: dict) -> None:
        if not llava:
            data["auto_map"] = {**data.get("auto_map", {}), **model_auto_map()}
        data["custom_pipelines"] = hub_custom_pipelines()

    def edit_processor(data: dict) -> None:
        data["auto_map"] = {**data.get("auto_map", {}), **processor_auto_map()}
        if isinstance(data.get("image_processor"), dict):
            image = data["image_processor"]
            image["auto_map"] = {**image.get("auto_map", {}), **processor_auto_map()}

    def edit_tokenizer(data: dict) -> None:
        if robopoint:
            data["processor_class"] = _remote_classes()["processor"].__name__
            data["auto_map"] = {**data.get("auto_map", {}), "AutoProcessor": processor_auto_map()["AutoProcessor"]}
        else:  # generation pads on the left; a plain transformers tokenizer otherwise pads on the right
            data["padding_side"] = "left"

    if model_type in ("robopoint", "llava"):
        update(config_path, edit_config)
    if processor_class == "RoboPointProcessor":
        update(processor_path, edit_processor)
    if robopoint or model_type == "llava":
        update(folder / TOKENIZER_CONFIG_FILE, edit_tokenizer)
    return changed


def stale_remote_code(folder: str | os.PathLike) -> list[str]:
    """What :func:`write_remote_code` would change in ``folder`` (names of code files and configs), without writing."""
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / "copy"
        shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.jpg", "*.png"))
        return sorted(path.name for path in write_remote_code(copy))


# ---------------------------------------------------------------------------------------------------- atomic folders
def check_complete(folder: str | os.PathLike, processor: bool = True) -> None:
    """Raises :class:`CheckpointIncompleteError` unless ``folder`` holds a config, all weight shards, the code its
    ``auto_map`` and ``custom_pipelines`` name and, for RoboPoint and LLaVA folders (unless ``processor=False``), a processor with its
    tokenizer."""
    folder = Path(folder)
    missing: list[str] = []
    if not (folder / CONFIG_FILE).is_file():
        missing.append(CONFIG_FILE)
        config: dict = {}
    else:
        config = _read_json(folder / CONFIG_FILE)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        missing += sorted({name for name in _read_json(index)["weight_map"].values() if not (folder / name).is_file()})
    elif not (folder / "model.safetensors").is_file():
        missing.append("model.safetensors")
    if processor and config.get("model_type") in ("robopoint", "llava"):
        missing += [name for name in (PROCESSOR_FILE, TOKENIZER_CONFIG_FILE) if not (folder / name).is_file()]
        if not any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer.model")):
            missing.append("tokenizer.json")
    references = [*config.get("auto_map", {}).values()]
    references += [entry["impl"] for entry in config.get("custom_pipelines", {}).values() if "impl" in entry]
    for reference in references:
        module = reference.split(".", 1)[0] + ".py"
        if not (folder / module).is_file() and module not in missing:
            missing.append(module)
    if missing:
        raise CheckpointIncompleteError(f"{folder} is not a complete checkpoint; missing: {', '.join(missing)}.")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_dead_partials(out: Path) -> None:
    """Removes what writers killed earlier left beside ``out`` (their process is gone)."""
    for marker in (_PARTIAL, _REPLACED):
        for leftover in out.parent.glob(f".{out.name}{marker}*"):
            pid = leftover.name[len(f".{out.name}{marker}") :].split("-", 1)[0]
            if pid.isdigit() and not _pid_alive(int(pid)):
                shutil.rmtree(leftover, ignore_errors=True)


def refuse_existing(out: str | os.PathLike, overwrite: bool = False) -> Path:
    """``out`` as a Path; raises `FileExistsError` if it is a file, or a non-empty folder without ``overwrite``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"Output {out} exists and is not a folder.")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(
            f"Output folder {out} exists and is not empty; choose a new folder, or pass --overwrite "
            "(overwrite=True) to replace it."
        )
    return out


@contextmanager
def staged_folder(out: str | os.PathLike, *, overwrite: bool = False, processor: bool = True) -> Iterator[Path]:
    """Yields an empty hidden folder beside ``out``; when the block ends without error and the folder passes
    :func:`check_complete`, it is renamed to ``out`` (replacing an existing ``out`` only with ``overwrite``).

    On any error the staged folder is removed and ``out`` is untouched. A kill leaves ``.OUT.partial-PID-*`` beside
    ``out`` (never ``out`` itself); the next writer of ``out`` removes it. ``processor=False`` accepts a folder
    without processor files (``model.save_pretrained`` alone).

    Raises:
        `FileExistsError`: ``out`` is a file, or a non-empty folder and ``overwrite`` is false.
    """
    out = refuse_existing(out, overwrite).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_partials(out)
    staged = Path(tempfile.mkdtemp(prefix=f".{out.name}{_PARTIAL}{os.getpid()}-", dir=out.parent))
    try:
        yield staged
        check_complete(staged, processor=processor)
        umask = os.umask(0)
        os.umask(umask)
        staged.chmod(0o777 & ~umask)  # mkdtemp makes 0700; a checkpoint is as readable as any folder
        _rename_into_place(staged, out)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise


@contextmanager
def staged_files(out: str | os.PathLike, *, processor: bool = True, main_process: bool = True) -> Iterator[Path]:
    """Like :func:`staged_folder`, for a checkpoint that shares its folder with other files (a training
    ``output_dir`` keeps its ``checkpoint-*`` folders): the files are built in ``out/.checkpoint.partial`` (the same
    path on every process of a distributed run), then moved into ``out`` with ``config.json`` LAST, after the old
    ``config.json`` is removed. Killed at any moment, ``out`` has no ``config.json`` (no checkpoint) or a complete one.
    Processes other than the main one (``main_process=False``) get the path only: they take part in saving (a
    sharded model is gathered collectively) but write, check and move nothing.
    """
    out = Path(out)
    staged = out / ".checkpoint.partial"
    if not main_process:
        yield staged
        return
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(parents=True)
    try:
        yield staged
        check_complete(staged, processor=processor)
        (out / CONFIG_FILE).unlink(missing_ok=True)
        for path in sorted(staged.iterdir(), key=lambda path: path.name == CONFIG_FILE):
            os.replace(path, out / path.name)
        staged.rmdir()
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise


def _rename_into_place(staged: Path, out: Path) -> None:
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    if not out.exists():
        os.rename(staged, out)
        return
    # Replacing: move the old folder aside first (between the two renames `out` is absent, never partial).
    aside = out.parent / f".{out.name}{_REPLACED}{os.getpid()}-{staged.name.rsplit('-', 1)[-1]}"
    os.rename(out, aside)
    os.rename(staged, out)
    shutil.rmtree(aside, ignore_errors=True)


def save_checkpoint(
    out: str | os.PathLike,
    model,
    processor,
    *,
    generation_config=None,
    overwrite: bool = False,
    extra_files: dict[str, str] | None = None,
) -> Path:
    """Saves ``model`` + ``processor`` (+ ``generation_config``, + ``extra_files`` as ``{name: text}``) atomically into
    ``out`` as a Hub-native checkpoint. The writer behind ``merge-lora``, ``train`` and the tiny-model build."""
    out = Path(out)
    with staged_folder(out, overwrite=overwrite) as staged:
        model.save_pretrained(staged)
        processor.save_pretrained(staged)
        if generation_config is not None:
            generation_config.save_pretrained(staged)
        for name, text in (extra_files or {}).items():
            (staged / name).write_text(text, encoding="utf-8")
        write_remote_code(staged)
    return out


# ---------------------------------------------------------------------------------------------------- Hub ids
def looks_like_hub_id(spec: str) -> bool:
    """``name`` or ``owner/name`` that is not a path (absolute, ``./``, ``~``, deeper, or with backslashes)."""
    spec = str(spec)
    return bool(spec) and not spec.startswith(("/", ".", "~")) and spec.count("/") <= 1 and "\\" not in spec


def check_weight_files(folder: Path) -> None:
    """Reads the header of every ``*.safetensors`` file in ``folder`` (milliseconds, no tensor is read).

    A truncated or corrupted file then fails here naming the file; safetensors' own error, raised later from inside
    the loader, does not say which file it was reading.

    Raises:
        `CorruptedWeightsError`: naming the file and what is wrong with it.
    """
    from safetensors import SafetensorError, safe_open

    for path in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="numpy"):
                pass
        except (SafetensorError, OSError) as error:
            raise CorruptedWeightsError(
                f"cannot read weights file {path}: {error} (truncated or corrupted: copy or download it again)"
            ) from error


def resolve_pretrained(spec: str | os.PathLike, what: str = "model") -> str:
    """Checks that ``spec`` can be loaded before a loader tries: a local folder, or a Hub id that is cached or
    reachable. Returns ``spec`` unchanged (as a string).

    Raises:
        `FileNotFoundError`: ``spec`` is a path and no folder is there.
        `CorruptedWeightsError`: a ``*.safetensors`` file of the folder is truncated or corrupted (see
            `check_weight_files`).
        `HubModelUnavailableError`: a Hub id not in the local cache while ``HF_HUB_OFFLINE=1`` or without network;
            one line naming it and saying how to pass a local folder, instead of a retry loop and Hub advice.
    """
    spec = os.fspath(spec)
    if Path(spec).expanduser().is_dir():
        check_weight_files(Path(spec).expanduser())
        return spec
    if not looks_like_hub_id(spec):
        raise FileNotFoundError(f"{what} folder not found: {spec}")
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(spec, CONFIG_FILE), str):
        return spec
    advice = f"download it where there is network (`hf download {spec}`) or pass the path of a local folder instead"
    if constants.HF_HUB_OFFLINE:
        raise HubModelUnavailableError(
            f"{what} {spec!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1: {advice}."
        )
    from huggingface_hub import model_info
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        model_info(spec, timeout=10)
    except RepositoryNotFoundError:
        raise HubModelUnavailableError(
            f"{what} {spec!r} is neither a local folder nor a Hub repository you can access; pass the path of a "
            "local folder, or log in if the repository is private."
        ) from None
    except Exception as error:  # noqa: BLE001 -- connection errors come in many classes; the message is what matters
        raise HubModelUnavailableError(
            f"{what} {spec!r} is not in the local Hugging Face cache and the Hub cannot be reached "
            f"({type(error).__name__}): {advice}."
        ) from None
    return spec


__all__ = [
    "HUB_PIPELINE_TASK",
    "CheckpointIncompleteError",
    "CorruptedWeightsError",
    "HubModelUnavailableError",
    "check_complete",
    "check_weight_files",
    "hub_custom_pipelines",
    "looks_like_hub_id",
    "model_auto_map",
    "processor_auto_map",
    "refuse_existing",
    "remote_code_files",
    "resolve_pretrained",
    "save_checkpoint",
    "stale_remote_code",
    "staged_files",
    "staged_folder",
    "write_remote_code",
]
