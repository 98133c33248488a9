"""Configuration of MedRG: a causal LM, a vision tower and a box decoder that grounds every `<BOX>` token."""

import math
from typing import Literal

from huggingface_hub.dataclasses import strict, validated_field
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

_MAX_LEVELS = 8


def _interval(low: float, high: float = math.inf, *, open_low: bool = False, open_high: bool = False):
    """A `@strict` field validator: the value (unless None) lies in the interval; NaN never does."""
    shown = f"{'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"

    def check(value) -> None:
        if value is None:
            return
        above = value > low if open_low else value >= low
        below = value < high if open_high else value <= high
        if not (above and below):
            raise ValueError(f"must be in {shown}, got {value!r}")

    return check


def _levels(minimum: int):
    """A `@strict` field validator: None or 1 to `_MAX_LEVELS` integers, each >= `minimum`."""

    def check(value) -> None:
        if value is not None and not (1 <= len(value) <= _MAX_LEVELS and min(value) >= minimum):
            raise ValueError(f"must hold 1 to {_MAX_LEVELS} integers >= {minimum}, got {value!r}")

    return check


def _size(default: int, high: int):
    """A positive size up to `high`, far above any useful value: a config.json asking for more (a typo or a
    hostile file, e.g. num_box_queries 1e9) is refused before any weight is allocated."""
    return validated_field(_interval(1, high), default=default)


def _weight(default: float):
    return validated_field(_interval(0), default=default)


@strict
class MedRGConfig(PreTrainedConfig):
    r"""
    Composite configuration of [`MedRGForReportGrounding`].

    Args:
        text_config (`dict`, `PreTrainedConfig` or `None`):
            Any Hugging Face causal-LM config (Llama, SmolLM2, Qwen2, ...). `None` gives a default Llama config.
        vision_config (`dict`, `PreTrainedConfig` or `None`):
            Any Hugging Face vision model config whose `AutoModel` returns `last_hidden_state`, either tokens
            `(batch, tokens, channels)` (ViT/CLIP/SigLIP) or a map `(batch, channels, height, width)` (CNNs).
        grounding_vision_config (`dict`, `PreTrainedConfig` or `None`):
            A separate (e.g. higher-resolution) grounding encoder for the box decoder. `None` reuses the vision
            tower's features (`box_feature_source="vision_tower"`).
        image_token_id (`int`): id of the `<image>` placeholder token in the tokenizer.
        box_token_id (`int`): id of the `<BOX>` token in the tokenizer.
        num_image_tokens (`int`): number of `<image>` placeholders per image = projected vision features after
            `image_token_pooling`; the model checks it against the vision tower at run time.
        vision_feature_layer (`int`): which hidden state of the vision tower feeds the projector and decoder.
        vision_feature_select (`str`): `"default"` drops the first (CLS) token of token-shaped features, `"full"`
            keeps all tokens. Ignored for map-shaped (CNN) features.
        image_token_pooling (`int`): average-pool the feature grid by this factor before it enters the LM
            (fewer LM tokens); the box decoder always sees the full-resolution grid.
        projector_hidden_act (`str`): activation of the two-layer vision-to-text projector.
        box_decoder_dim / box_decoder_layers / box_decoder_heads / box_decoder_ffn_dim (`int`):
            width, depth, attention heads and feed-forward width of the box decoder.
        num_box_queries (`int`): K, the number of box hypotheses (each with a confidence) per `<BOX>`.
        box_sampling_points (`int`): S; every decoder layer samples an S x S grid of features inside its current
            box (coarse-to-fine refinement around the box, as in Deformable-DETR style decoders).
        box_feature_source (`str`): `"vision_tower"` or `"grounding_encoder"` (needs `grounding_vision_config`).
        box_feature_levels (`list[int]` or `None`): indices into the vision tower's `hidden_states` that the box
            decoder reads as a feature pyramid (finest first, e.g. strides 8, 16 and 32 of a CNN); every layer
            samples each level around its current box and the coarsest level is the memory of the global
            cross-attention. `None`: the one feature grid of `vision_feature_layer`.
        box_feature_channels (`list[int]` or `None`): the channel width of each of `box_feature_levels` (required
            with them; the builders probe it).
        vision_feature_channels (`int` or `None`): the channel width of `vision_feature_layer` when it is not the
            last hidden state (`None`: read from the vision config).
        box_initial_source (`str`): where the first box of each query comes from. `"text"`: from the `<BOX>` state
            and its phrase alone (what the report says: finding, side, zone), so that the image only refines it
            and the decoder's floor is the text's box; `"image"`: from one global cross-attention to the image.
        box_sampling_window (`float`): each layer samples its S x S grid over this multiple of the current box
            (2.0 = a window twice the box, which sees the box's edges and surroundings).
        phrase_max_distance (`int`): the phrase read-out of each `<BOX>` learns one bias per token distance up to
            this many tokens before the `<BOX>` (farther tokens share the last bias); sets the size of the
            `box_decoder.phrase_attention.distance_bias` table (`phrase_max_distance + 1` rows). Default 32.
        phrase_recency_slope (`float`): fixed ALiBi-like penalty per token of distance (in logits, >= 0) of the
            phrase read-out, so the words right before a `<BOX>` dominate. Default 0.25.
        lm_loss_weight, box_l1_loss_weight, box_giou_loss_weight, box_confidence_loss_weight (`float`):
            weights of the loss parts; the box parts are averaged over decoder layers (deep supervision).
        initializer_range (`float`): std of the normal init of MedRG's own layers.

    Validation (`@strict`, as in transformers' own configs): each field's type and range is checked when it is set
    (a `float` field takes an `int` too), and the rules across fields (`validate_architecture`,
    `validate_token_ids`) when the config is built or saved. A bad value raises
    `huggingface_hub.errors.StrictDataclassFieldValidationError` ("Validation error for field 'num_box_queries'")
    or `StrictDataclassClassValidationError` (its message names the fields); both are `StrictDataclassError`s.
    Unknown keys (e.g. from a newer config.json) are kept as attributes, as transformers does.
    """

    model_type = "medrg"
    sub_configs_defaults = {
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama"),
        "vision_config": SubConfigSpec(config_class=AutoConfig, model_type="clip_vision_model"),
        "grounding_vision_config": SubConfigSpec(
            config_class=AutoConfig, model_type="clip_vision_model", optional=True
        ),
    }

    text_config: dict | PreTrainedConfig | None = None
    vision_config: dict | PreTrainedConfig | None = None
    grounding_vision_config: dict | PreTrainedConfig | None = None
    image_token_id: int | None = validated_field(_interval(0), default=None)
    box_token_id: int | None = validated_field(_interval(0), default=None)
    num_image_tokens: int | None = validated_field(_interval(1, 65536), default=None)
    vision_feature_layer: int = -1
    vision_feature_select: Literal["default", "full"] = "default"
    image_token_pooling: int = _size(1, 64)
    projector_hidden_act: str = "gelu"
    box_decoder_dim: int = _size(256, 16384)
    box_decoder_layers: int = _size(3, 64)
    box_decoder_heads: int = _size(8, 256)
    box_decoder_ffn_dim: int = _size(1024, 65536)
    num_box_queries: int = _size(3, 1024)
    box_sampling_points: int = _size(4, 64)
    box_feature_source: Literal["vision_tower", "grounding_encoder"] = "vision_tower"
    box_feature_levels: list[int] | None = validated_field(_levels(0), default=None)
    box_feature_channels: list[int] | None = validated_field(_levels(1), default=None)
    vision_feature_channels: int | None = validated_field(_interval(1), default=None)
    box_initial_source: Literal["image", "text"] = "image"
    box_sampling_window: int | float = validated_field(_interval(0, 8, open_low=True), default=1.0)
    phrase_max_distance: int = _size(32, 65536)
    phrase_recency_slope: int | float = validated_field(_interval(0, open_high=True), default=0.25)
    lm_loss_weight: int | float = _weight(1.0)
    box_l1_loss_weight: int | float = _weight(5.0)
    box_giou_loss_weight: int | float = _weight(2.0)
    box_confidence_loss_weight: int | float = _weight(1.0)
    initializer_range: int | float = 0.02
    tie_word_embeddings: bool = False

    def validate_architecture(self) -> None:
        """Part of `@strict`-powered validation: the box decoder's sizes and feature sources fit together."""
        super().validate_architecture()
        if self.box_decoder_dim % self.box_decoder_heads:
            raise ValueError(
                f"MedRGConfig.box_decoder_dim ({self.box_decoder_dim}) must be divisible by "
                f"box_decoder_heads ({self.box_decoder_heads})"
            )
        if self.box_decoder_dim % 8:
            raise ValueError(
                f"MedRGConfig.box_decoder_dim must be a multiple of 8 (2-D sine positions), got {self.box_decoder_dim}"
            )
        if self.box_feature_source == "grounding_encoder" and self.grounding_vision_config is None:
            raise ValueError(
                'MedRGConfig.box_feature_source="grounding_encoder" needs a grounding_vision_config'
            )
        levels, channels = self.box_feature_levels, self.box_feature_channels
        if levels is None:
            if channels is not None:
                raise ValueError("MedRGConfig.box_feature_channels needs box_feature_levels")
            return
        if self.box_feature_source != "vision_tower":
            raise ValueError('MedRGConfig.box_feature_levels needs box_feature_source="vision_tower"')
        if channels is None:
            raise ValueError(
                "MedRGConfig.box_feature_levels needs box_feature_channels (one width per level)"
            )
        if len(channels) != len(levels):
            raise ValueError(
                f"MedRGConfig.box_feature_channels ({channels}) must give one width per box_feature_levels entry "
                f"({levels})"
            )

    def validate_token_ids(self) -> None:
        """Part of `@strict`-powered validation: `<image>` and `<BOX>` are different tokens."""
        super().validate_token_ids()
        if self.image_token_id is not None and self.image_token_id == self.box_token_id:
            raise ValueError(
                f"MedRGConfig.image_token_id and box_token_id must differ, both are {self.image_token_id}"
            )


def feature_channels(config) -> int:
    """Channel width of the last hidden state of a vision config (ViT-like `hidden_size` or CNN `hidden_sizes`)."""
    hidden_sizes = getattr(config, "hidden_sizes", None)
    if hidden_sizes:
        return int(hidden_sizes[-1])
    for name in ("hidden_size", "hidden_dim", "embed_dim"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    raise ValueError(
        f"Cannot tell the feature width of vision config {type(config).__name__}: it has none of "
        "hidden_sizes, hidden_size, hidden_dim, embed_dim"
    )


__all__ = ["MedRGConfig", "feature_channels"]
