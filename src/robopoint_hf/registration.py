"""Registration of the RoboPoint classes with transformers' Auto classes (idempotent).

Two audiences: users who ``pip install robopoint_hf`` get the package's classes through ``AutoConfig`` /
``AutoModel`` / ``AutoModelForImageTextToText`` / ``AutoProcessor`` (a locally registered class wins over Hub code);
users of a Hub folder without the package get the copies of the same modules that ``save_pretrained`` puts next to
the weights (``auto_map``, ``trust_remote_code=True``).

Registering needs the classes themselves (transformers' registries take classes, not names), and so torch. To keep
``import robopoint_hf`` light, :func:`register_when_transformers_loads` defers it: when transformers is already
imported it registers at once, otherwise a one-shot import hook registers right after ``import transformers``
completes (or, when transformers is first imported by one of the model modules, once that module is complete) --
before any ``AutoModel``/``pipeline`` call can look the classes up.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys

_registered = False


def register_auto_classes() -> None:
    """Registers config, model, image processor and processor under ``model_type="robopoint"``, and the
    ``"robopoint"`` pipeline task."""
    global _registered
    if _registered:
        return
    from transformers import (
        AutoConfig,
        AutoImageProcessor,
        AutoModel,
        AutoModelForImageTextToText,
        AutoProcessor,
    )

    from robopoint_hf import hub_checkpoint
    from robopoint_hf.checkpoints import default_model
    from robopoint_hf.model.configuration_robopoint import RoboPointConfig
    from robopoint_hf.model.image_processing_robopoint import RoboPointImageProcessor
    from robopoint_hf.model.modeling_robopoint import RoboPointForConditionalGeneration
    from robopoint_hf.model.package_services import SERVICES
    from robopoint_hf.model.pipeline_robopoint import register_pipeline
    from robopoint_hf.model.processing_robopoint import RoboPointProcessor
    from robopoint_hf.original import checkpoint as original_checkpoint
    from robopoint_hf.original.convert import load_original_processor

    AutoConfig.register("robopoint", RoboPointConfig, exist_ok=True)
    # Remote-code VLMs map AutoModel to the full generation model, and so do we (model cards call AutoModel).
    AutoModel.register(RoboPointConfig, RoboPointForConditionalGeneration, exist_ok=True)
    AutoModelForImageTextToText.register(RoboPointConfig, RoboPointForConditionalGeneration, exist_ok=True)
    AutoImageProcessor.register(RoboPointConfig, slow_image_processor_class=RoboPointImageProcessor, exist_ok=True)
    AutoProcessor.register(RoboPointConfig, RoboPointProcessor, exist_ok=True)

    # What save_pretrained writes into auto_map (and which module files it copies next to the weights).
    RoboPointConfig.register_for_auto_class("AutoConfig")
    RoboPointForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")
    RoboPointImageProcessor.register_for_auto_class("AutoImageProcessor")
    RoboPointProcessor.register_for_auto_class("AutoProcessor")
    register_pipeline(default_model())  # pipeline("robopoint", model=...), the shipped model without model=

    # What the model code does better with the package (see `robopoint_hf.model.package_services`).
    SERVICES.update(
        original_checkpoint=original_checkpoint,
        load_original_processor=load_original_processor,
        save_path=hub_checkpoint,
    )
    _registered = True


_REGISTERED_MODULES = (
    "robopoint_hf.model.configuration_robopoint",
    "robopoint_hf.model.image_processing_robopoint",
    "robopoint_hf.model.processing_robopoint",
    "robopoint_hf.model.modeling_robopoint",
    "robopoint_hf.model.pipeline_robopoint",
    "robopoint_hf.original.checkpoint",
    "robopoint_hf.original.convert",
    "robopoint_hf.hub_checkpoint",
)
"""The modules `register_auto_classes` imports: registering while one of them is half-imported would fail."""

_registering = False


def _try_register(finished: str | None = None) -> bool:
    """Registers unless one of `_REGISTERED_MODULES` (other than `finished`, whose code has just run) is still
    being imported; returns whether registration is done."""
    global _registering
    if _registered or _registering:
        return True
    for name in _REGISTERED_MODULES:
        module = sys.modules.get(name)
        if name != finished and module is not None and getattr(module.__spec__, "_initializing", False):
            return False
    _registering = True
    try:
        register_auto_classes()
    except ImportError:
        # Without torch transformers still works and RoboPoint models cannot (they say so when used): give up.
        # With torch, a module was half-imported in a way not foreseen above: try again at the next import.
        return importlib.util.find_spec("torch") is None
    finally:
        _registering = False
    return True


class _RegisterAfterImports(importlib.abc.MetaPathFinder):
    """Meta-path finder that finds nothing itself: it lets the normal finders load ``transformers`` and the modules
    of our classes, and registers right after the last of them has run. When transformers is first imported from
    inside one of those modules (``from robopoint_hf import RoboPointProcessor``), registering at that moment would
    meet a half-made module, so it happens when that module's own code has finished."""

    def find_spec(self, fullname, path, target=None):
        if _registering or (fullname != "transformers" and fullname not in _REGISTERED_MODULES):
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module

        def exec_module(module) -> None:
            execute(module)
            if "transformers" in sys.modules and _try_register(finished=fullname) and self in sys.meta_path:
                sys.meta_path.remove(self)

        spec.loader.exec_module = exec_module
        return spec


def register_when_transformers_loads() -> None:
    """Registers now if transformers is imported, else as soon as it is (see the module docstring)."""
    if _registered or ("transformers" in sys.modules and _try_register()):
        return
    if not any(isinstance(finder, _RegisterAfterImports) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterImports())


__all__ = ["register_auto_classes", "register_when_transformers_loads"]
