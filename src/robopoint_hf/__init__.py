"""RoboPoint on Hugging Face transformers: load the published checkpoints, predict points, fine-tune, evaluate.

Importing the package registers the RoboPoint classes with transformers' Auto classes. That needs the classes
themselves (transformers' registries take classes, not names), so ``import robopoint_hf`` imports torch and
transformers; training, evaluation and demo dependencies (trl, peft, datasets, evaluate, gradio) stay lazy.
"""

from __future__ import annotations

from .auto import register_auto_classes
from .configuration_robopoint import RoboPointConfig
from .image_processing_robopoint import RoboPointImageProcessor
from .modeling_robopoint import RoboPointForConditionalGeneration
from .pipeline_robopoint import RoboPointPipeline
from .processing_robopoint import RoboPointProcessor

__version__ = "0.1.0"

register_auto_classes()

__all__ = [
    "RoboPointConfig",
    "RoboPointForConditionalGeneration",
    "RoboPointImageProcessor",
    "RoboPointPipeline",
    "RoboPointProcessor",
    "register_auto_classes",
]
