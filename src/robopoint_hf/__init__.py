"""RoboPoint on Hugging Face transformers: load the published checkpoints, predict points, fine-tune, evaluate.

The package is lazy, like transformers itself: ``import robopoint_hf`` (or ``robopoint_hf.model.points``,
``robopoint_hf.inference.deproject``, the Where2Place scoring, ...) imports neither torch nor transformers. The
public classes below are imported on first use, and the RoboPoint classes are registered with transformers' Auto
classes and ``pipeline("robopoint")`` as soon as transformers is imported (see :mod:`robopoint_hf.registration`).

Layout (dependencies flow downward only; nothing imports ``cli`` or ``demo``):

* ``model/`` -- what a Hub folder carries: config, image processor, processor, model, pipeline, templates, the answer
  grammar (``points``). Siblings import each other relatively; the save path copies them next to the weights.
* ``original/`` -- the original LLaVA-format checkpoints: reading, streaming conversion, export to plain LLaVA.
* ``inference/`` -- serving helpers, 3D lifting, drawing.
* ``training/`` -- data, collator, the TRL trainer.
* ``evaluation/`` -- benchmark scoring, the answer runner, plots, the `evaluate` metric Space.
* ``synthetic/`` -- the synthetic tabletop-scene generator.
* ``cli/`` and ``demo/`` -- the ``robopoint`` command and the Gradio app.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .registration import register_when_transformers_loads

__version__ = "0.1.0"

_PUBLIC: dict[str, str] = {
    "RoboPointConfig": "model.configuration_robopoint",
    "RoboPointForConditionalGeneration": "model.modeling_robopoint",
    "RoboPointImageProcessor": "model.image_processing_robopoint",
    "RoboPointPipeline": "model.pipeline_robopoint",
    "RoboPointProcessor": "model.processing_robopoint",
    "register_auto_classes": "registration",
}

__all__ = [
    "RoboPointConfig",
    "RoboPointForConditionalGeneration",
    "RoboPointImageProcessor",
    "RoboPointPipeline",
    "RoboPointProcessor",
    "register_auto_classes",
]

if TYPE_CHECKING:
    from .model.configuration_robopoint import RoboPointConfig
    from .model.image_processing_robopoint import RoboPointImageProcessor
    from .model.modeling_robopoint import RoboPointForConditionalGeneration
    from .model.pipeline_robopoint import RoboPointPipeline
    from .model.processing_robopoint import RoboPointProcessor
    from .registration import register_auto_classes


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))


register_when_transformers_loads()
