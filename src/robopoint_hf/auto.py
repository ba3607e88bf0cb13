"""Registration of the RoboPoint classes with transformers' Auto classes (idempotent).

Two audiences: users who ``pip install robopoint_hf`` get the package's classes through ``AutoConfig`` /
``AutoModel`` / ``AutoModelForImageTextToText`` / ``AutoProcessor`` (a locally registered class wins over Hub code);
users of a Hub folder without the package get the copies of the same modules that ``save_pretrained`` puts next to
the weights (``auto_map``, ``trust_remote_code=True``).
"""

from __future__ import annotations

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

    from .configuration_robopoint import RoboPointConfig
    from .image_processing_robopoint import RoboPointImageProcessor
    from .modeling_robopoint import RoboPointForConditionalGeneration
    from .pipeline_robopoint import register_pipeline
    from .processing_robopoint import RoboPointProcessor

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
    register_pipeline()  # pipeline("robopoint", model=...)
    _registered = True


__all__ = ["register_auto_classes"]
