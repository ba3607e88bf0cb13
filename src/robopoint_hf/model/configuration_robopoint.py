"""Configuration of RoboPoint, a LLaVA-1.5 model for language-conditioned spatial affordance points.

RoboPoint (Yuan et al., 2024, https://huggingface.co/papers/2406.10721) is architecturally LLaVA-1.5, so the config
is transformers' :class:`~transformers.LlavaConfig` plus the few fields the original checkpoints vary or that the
original code kept outside the model:

* ``projector_type`` -- ``mlp2x_gelu`` (Vicuna-v1.5 checkpoints) or ``linear`` (Llama-2 checkpoints); the original
  also accepts ``mlp{N}x_gelu``. ``projector_hidden_act`` is derived from it.
* ``image_aspect_ratio`` -- ``pad`` (every published checkpoint: pad to a square with the CLIP mean colour, then
  resize) or ``square`` (plain CLIP resize + centre crop).
* ``prompt_template`` -- the chat template the checkpoint was trained with (see :mod:`.templates`), stored so that
  training, evaluation and the demo can no longer drift apart as they did in the original code.

Defaults describe the published ``wentao-yuan/robopoint-v1-vicuna-v1.5-13b``.
"""

from __future__ import annotations

import re

from huggingface_hub.dataclasses import strict
from transformers import LlavaConfig
from transformers.configuration_utils import SubConfigSpec
from transformers.models.auto.configuration_auto import AutoConfig

from .templates import TEMPLATE_NAMES

_MLP_GELU = re.compile(r"^mlp(\d+)x_gelu$")
IMAGE_ASPECT_RATIOS = ("pad", "square")

# Vicuna-13B-v1.5 (lmsys/vicuna-13b-v1.5), the language model of the default checkpoint.
_VICUNA_13B = {
    "vocab_size": 32000,
    "hidden_size": 5120,
    "intermediate_size": 13824,
    "num_hidden_layers": 40,
    "num_attention_heads": 40,
    "num_key_value_heads": 40,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "tie_word_embeddings": False,
}


def projector_depth(projector_type: str) -> int:
    """Number of linear layers of a projector type: 1 for ``linear``, N for ``mlp{N}x_gelu``."""
    if projector_type == "linear":
        return 1
    match = _MLP_GELU.match(projector_type)
    if match is None or int(match.group(1)) < 1:
        raise ValueError(f"Unknown projector_type {projector_type!r}; expected 'linear' or 'mlp{{N}}x_gelu'.")
    return int(match.group(1))


@strict
class RoboPointConfig(LlavaConfig):
    r"""Configuration of :class:`RoboPointForConditionalGeneration`.

    Args:
        vision_config (`dict` or `PreTrainedConfig`, *optional*):
            The CLIP vision tower; defaults to CLIP ViT-L/14-336 (``openai/clip-vit-large-patch14-336``).
        text_config (`dict` or `PreTrainedConfig`, *optional*):
            The Llama language model; defaults to Vicuna-13B-v1.5.
        projector_type (`str`, *optional*, defaults to `"mlp2x_gelu"`):
            ``"linear"`` or ``"mlp{N}x_gelu"`` (N linear layers with exact-erf GELU between them).
        image_token_id (`int`, *optional*, defaults to 32000):
            Id of the image placeholder in ``input_ids``. It may lie outside the vocabulary (the original checkpoints
            have 32000 tokens): placeholder positions are never looked up in the embedding table.
        image_seq_length (`int`, *optional*, defaults to 576):
            Number of image positions per image, (336 / 14)^2 with the CLS token dropped.
        vision_feature_layer (`int`, *optional*, defaults to -2):
            CLIP hidden state used as image features (the output of the second-to-last layer, no post-LayerNorm).
        vision_feature_select_strategy (`str`, *optional*, defaults to `"default"`):
            ``"default"`` drops the CLS token, ``"full"`` keeps it.
        image_aspect_ratio (`str`, *optional*, defaults to `"pad"`):
            Image preprocessing the checkpoint was trained with: ``"pad"`` or ``"square"``.
        prompt_template (`str`, *optional*, defaults to `"vicuna_v1"`):
            Name of the prompt template the checkpoint was trained with; one of ``vicuna_v1``, ``llava_v1``,
            ``llava_llama_2``.
        vision_dtype (`str`, *optional*):
            Dtype of the vision tower and projector when it differs from the language model's (``"float32"`` for a
            converted checkpoint whose language model is 16-bit: the original's default inference kept CLIP in
            float32). ``from_pretrained(dtype="auto")`` loads those parts in it; an explicit ``dtype`` loads every
            part in that dtype. ``None``: one dtype for the whole model.

    Example:

    ```python
    >>> from robopoint_hf import RoboPointConfig
    >>> config = RoboPointConfig(projector_type="linear")
    >>> config.projector_hidden_act
    'linear'
    ```
    """

    model_type = "robopoint"
    sub_configs_defaults = {
        "vision_config": LlavaConfig.sub_configs_defaults["vision_config"],
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama", init_kwargs=_VICUNA_13B),
    }

    projector_type: str = "mlp2x_gelu"
    image_aspect_ratio: str = "pad"
    prompt_template: str = "vicuna_v1"
    vision_dtype: str | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        # Derived, never chosen independently: the projector type is the single source of truth.
        self.projector_hidden_act = "linear" if projector_depth(self.projector_type) == 1 else "gelu"
        if self.image_aspect_ratio not in IMAGE_ASPECT_RATIOS:
            raise ValueError(
                f"image_aspect_ratio must be one of {', '.join(IMAGE_ASPECT_RATIOS)}, got {self.image_aspect_ratio!r}."
            )
        if self.prompt_template not in TEMPLATE_NAMES:
            raise ValueError(
                f"prompt_template must be one of {', '.join(TEMPLATE_NAMES)}, got {self.prompt_template!r}."
            )
        if self.vision_dtype not in (None, "float32", "float16", "bfloat16"):
            raise ValueError(f"vision_dtype must be float32, float16, bfloat16 or None, got {self.vision_dtype!r}.")
        self.vision_feature_layer = self._negative_layer_indices(self.vision_feature_layer)
        if self.vision_feature_select_strategy not in ("default", "full"):
            raise ValueError(
                "vision_feature_select_strategy must be 'default' or 'full', "
                f"got {self.vision_feature_select_strategy!r}."
            )

    def _negative_layer_indices(self, layer: int | list[int]) -> int | list[int]:
        """The same hidden states counted from the end.

        transformers decides whether to record the tower's hidden states from the truth value of this index, so
        layer 0 (the embeddings, after CLIP's pre-LayerNorm) would come back as ``None``; counting from the end
        selects the same tensor and always records it.
        """
        count = self.vision_config.num_hidden_layers + 1  # the embeddings, then one state per layer
        indices = [layer] if isinstance(layer, int) else list(layer)
        for index in indices:
            if not -count <= index < count:
                raise ValueError(
                    f"vision_feature_layer {index} does not exist: the vision tower has {count} hidden states "
                    f"(indices {-count}..{count - 1})."
                )
        negative = [index - count if index >= 0 else index for index in indices]
        return negative[0] if isinstance(layer, int) else negative


__all__ = ["RoboPointConfig", "projector_depth"]
