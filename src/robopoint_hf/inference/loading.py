"""Loading a RoboPoint pipeline on a device: the one loader behind ``robopoint predict``, ``eval`` and the demo.

Any folder or Hub id the library reads works: a converted or trained RoboPoint folder (Auto classes, optionally
with a 4-/8-bit language model or spread over GPUs) or a checkpoint in the original LLaVA format (converted in
memory).
"""

from __future__ import annotations

from robopoint_hf.dtypes import DEFAULT_DTYPES, torch_dtype


def load_pipeline(model: str, device: str, dtype: str, bits: int | None = None):
    """Model + processor -> `RoboPointPipeline` on ``device``, optionally with a bitsandbytes-quantized LM.

    ``device="auto"`` spreads the model over every visible GPU (``device_map="auto"``), for a model too large for one.
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from robopoint_hf.hub_checkpoint import resolve_pretrained
    from robopoint_hf.model.modeling_robopoint import RoboPointForConditionalGeneration, quantization_config
    from robopoint_hf.model.pipeline_robopoint import RoboPointPipeline
    from robopoint_hf.model.processing_robopoint import RoboPointProcessor
    from robopoint_hf.original.checkpoint import is_original_checkpoint

    resolve_pretrained(model)  # a Hub id neither cached nor reachable: one line, at once
    dtype = torch_dtype(dtype)
    if is_original_checkpoint(model):  # a published checkpoint in the original LLaVA format: convert in memory
        if bits or device == "auto":
            how = f"in {bits} bits" if bits else "spread over GPUs (auto)"
            raise ValueError(f"convert {model} first (`robopoint convert`) to load it {how}")
        loaded = RoboPointForConditionalGeneration.from_pretrained(model, dtype=dtype).to(device).eval()
        return RoboPointPipeline(model=loaded, processor=RoboPointProcessor.from_pretrained(model), device=device)
    kwargs = {"dtype": dtype, "device_map": "auto" if device == "auto" else {"": device}}
    if bits:
        kwargs["quantization_config"] = quantization_config(bits, compute_dtype=dtype)
    loaded = AutoModelForImageTextToText.from_pretrained(model, **kwargs).eval()
    processor = AutoProcessor.from_pretrained(model)
    return RoboPointPipeline(model=loaded, processor=processor, device=loaded.device)


__all__ = ["DEFAULT_DTYPES", "load_pipeline"]
