"""Random-weight RoboPoint models in any shape, and native-LLaVA twins that share their weights.

Shared by the benchmarks and ``scripts/gpu_check.py``: timing ours against transformers'
``LlavaForConditionalGeneration`` is only fair when both run the same weights, and at real sizes (a 13B model is
26 GB in bf16) only one copy of them fits next to the other's KV cache.
"""

from __future__ import annotations

import torch
from transformers import LlavaConfig, LlavaForConditionalGeneration

from robopoint_hf import RoboPointConfig, RoboPointForConditionalGeneration

# Where2Place-like instructions (answer-format sentence not included).
QUESTIONS = [
    "Find a few spots within the vacant area on the rightmost white plate.",
    "Point to the free space left of the sink.",
    "Locate several points on the counter between the two cups.",
    "Identify spots in the unoccupied space on the stair in the middle.",
    "Point to the handle of the faucet.",
    "Find free space in front of the dish rack.",
    "Point to the sponge.",
    "Locate a few points on the empty shelf above the mug.",
]
IMAGE_TOKEN_ID = 32000


@torch.no_grad()
def decisive_init_(model: torch.nn.Module) -> torch.nn.Module:
    """Re-draws every matrix with unit-variance outputs: HF's 0.02-std init gives near-uniform logits, and a
    decisive model makes greedy decoding comparable between two implementations."""
    for name, parameter in model.named_parameters():
        if parameter.dim() == 2:
            parameter.normal_(0, 1.0 if "embed" in name else parameter.shape[1] ** -0.5)
    return model


def random_robopoint(
    vision_config: dict,
    text_config: dict,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    seed: int = 0,
    **config_kwargs,
) -> RoboPointForConditionalGeneration:
    """A RoboPoint model with decisive random weights, built directly on `device` in `dtype` (no float32 copy
    on the host, so a 13B shape needs its bf16 size once)."""
    config = RoboPointConfig(vision_config=vision_config, text_config=text_config, **config_kwargs)
    torch.manual_seed(seed)
    with torch.device(device):
        model = RoboPointForConditionalGeneration._from_config(config, dtype=dtype)
    return decisive_init_(model).eval()


def native_twin(model: RoboPointForConditionalGeneration) -> LlavaForConditionalGeneration:
    """``LlavaForConditionalGeneration`` running `model`'s weights (shared, not copied).

    Native LLaVA embeds the placeholder id, so its vocabulary gets one more row (zero in the embedding and the LM
    head): the only new tensors. Generate with ``suppress_tokens=[IMAGE_TOKEN_ID]`` so the extra logit is never
    picked; logits over the real vocabulary are unchanged.
    """
    config = model.config
    if config.projector_type != "mlp2x_gelu":
        raise ValueError(f"native LLaVA has an mlp2x_gelu projector; this model's is {config.projector_type!r}.")
    text = config.text_config.to_dict()
    text["vocab_size"] = max(text["vocab_size"], IMAGE_TOKEN_ID + 1)
    native_config = LlavaConfig(
        vision_config=config.vision_config.to_dict(),
        text_config=text,
        image_token_index=IMAGE_TOKEN_ID,
        vision_feature_layer=config.vision_feature_layer,
        image_seq_length=config.image_seq_length,
    )
    with torch.device("meta"):
        native = LlavaForConditionalGeneration(native_config)
    state = dict(model.state_dict())
    for name in ("model.language_model.embed_tokens.weight", "lm_head.weight"):
        rows = text["vocab_size"] - state[name].shape[0]
        state[name] = torch.cat([state[name], state[name].new_zeros(rows, state[name].shape[1])])
    native.load_state_dict(state, strict=True, assign=True)
    for name, buffer in model.named_buffers():  # non-persistent buffers (rotary frequencies) are not in the state
        module, _, leaf = name.rpartition(".")
        native.get_submodule(module)._buffers[leaf] = buffer
    meta = [name for name, tensor in [*native.named_parameters(), *native.named_buffers()] if tensor.is_meta]
    if meta:
        raise RuntimeError(f"native twin left tensors unset: {meta[:5]}")
    native.config.use_cache = True
    return native.eval()
