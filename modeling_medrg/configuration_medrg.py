"""Configuration of MedRG: a causal LM, a vision tower and a box decoder that grounds every `<BOX>` token."""

from __future__ import annotations

from typing import Literal

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

_FEATURE_SELECTS = ("default", "full")
_BOX_FEATURE_SOURCES = ("vision_tower", "grounding_encoder")
_BOX_INITIAL_SOURCES = ("image", "text")
_MAX_LEVELS = 8
# Upper bounds of the MedRG head's sizes, far above any useful value: a config.json asking for more (a typo or a
# hostile file, e.g. num_box_queries 1e9) is refused before any weight is allocated.
_MAX_SIZES = {
    "box_decoder_dim": 16384,
    "box_decoder_layers": 64,
    "box_decoder_heads": 256,
    "box_decoder_ffn_dim": 65536,
    "num_box_queries": 1024,
    "box_sampling_points": 64,
    "image_token_pooling": 64,
    "phrase_max_distance": 65536,
    "num_image_tokens": 65536,
}


def _int_list(value, name: str, minimum: int) -> list[int]:
    if not isinstance(value, (list, tuple)) or not 1 <= len(value) <= _MAX_LEVELS:
        raise ValueError(f"MedRGConfig.{name} must be a list of 1 to {_MAX_LEVELS} integers, got {value!r}")
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int) or item < minimum:
            raise ValueError(f"MedRGConfig.{name} must hold integers >= {minimum}, got {value!r}")
    return list(value)


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
    image_token_id: int | None = None
    box_token_id: int | None = None
    num_image_tokens: int | None = None
    vision_feature_layer: int = -1
    vision_feature_select: Literal["default", "full"] = "default"
    image_token_pooling: int = 1
    projector_hidden_act: str = "gelu"
    box_decoder_dim: int = 256
    box_decoder_layers: int = 3
    box_decoder_heads: int = 8
    box_decoder_ffn_dim: int = 1024
    num_box_queries: int = 3
    box_sampling_points: int = 4
    box_feature_source: Literal["vision_tower", "grounding_encoder"] = "vision_tower"
    box_feature_levels: list[int] | None = None
    box_feature_channels: list[int] | None = None
    vision_feature_channels: int | None = None
    box_initial_source: Literal["image", "text"] = "image"
    box_sampling_window: float = 1.0
    phrase_max_distance: int = 32
    phrase_recency_slope: float = 0.25
    lm_loss_weight: float = 1.0
    box_l1_loss_weight: float = 5.0
    box_giou_loss_weight: float = 2.0
    box_confidence_loss_weight: float = 1.0
    initializer_range: float = 0.02
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self._check_values()

    def _check_values(self) -> None:
        def positive_int(name: str) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MedRGConfig.{name} must be a positive integer, got {value!r}")
            if value > _MAX_SIZES.get(name, value):
                raise ValueError(f"MedRGConfig.{name} must be at most {_MAX_SIZES[name]}, got {value!r}")

        for name in (
            "box_decoder_dim",
            "box_decoder_layers",
            "box_decoder_heads",
            "box_decoder_ffn_dim",
            "num_box_queries",
            "box_sampling_points",
            "image_token_pooling",
            "phrase_max_distance",
        ):
            positive_int(name)
        if self.box_decoder_dim % self.box_decoder_heads:
            raise ValueError(
                f"MedRGConfig.box_decoder_dim ({self.box_decoder_dim}) must be divisible by "
                f"box_decoder_heads ({self.box_decoder_heads})"
            )
        if self.box_decoder_dim % 8:
            raise ValueError(
                f"MedRGConfig.box_decoder_dim must be a multiple of 8 (2-D sine positions), got {self.box_decoder_dim}"
            )
        if self.num_image_tokens is not None:
            positive_int("num_image_tokens")
        ids = {"image_token_id": self.image_token_id, "box_token_id": self.box_token_id}
        for name, value in ids.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"MedRGConfig.{name} must be a non-negative integer or None, got {value!r}")
        if self.image_token_id is not None and self.image_token_id == self.box_token_id:
            raise ValueError(
                f"MedRGConfig.image_token_id and box_token_id must differ, both are {self.image_token_id}"
            )
        self._check_choices()
        self._check_levels()

    def _check_choices(self) -> None:
        if self.vision_feature_select not in _FEATURE_SELECTS:
            raise ValueError(
                f"MedRGConfig.vision_feature_select must be one of {_FEATURE_SELECTS}, got {self.vision_feature_select!r}"
            )
        if self.box_feature_source not in _BOX_FEATURE_SOURCES:
            raise ValueError(
                f"MedRGConfig.box_feature_source must be one of {_BOX_FEATURE_SOURCES}, got {self.box_feature_source!r}"
            )
        if self.box_feature_source == "grounding_encoder" and self.grounding_vision_config is None:
            raise ValueError(
                'MedRGConfig.box_feature_source="grounding_encoder" needs a grounding_vision_config'
            )
        for name in (
            "lm_loss_weight",
            "box_l1_loss_weight",
            "box_giou_loss_weight",
            "box_confidence_loss_weight",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"MedRGConfig.{name} must be a number >= 0, got {value!r}")
        slope = self.phrase_recency_slope
        if isinstance(slope, bool) or not isinstance(slope, (int, float)) or not 0 <= slope < float("inf"):
            raise ValueError(f"MedRGConfig.phrase_recency_slope must be a finite number >= 0, got {slope!r}")
        window = self.box_sampling_window
        if isinstance(window, bool) or not isinstance(window, (int, float)) or not 0 < window <= 8:
            raise ValueError(f"MedRGConfig.box_sampling_window must be a number in (0, 8], got {window!r}")
        if self.box_initial_source not in _BOX_INITIAL_SOURCES:
            raise ValueError(
                f"MedRGConfig.box_initial_source must be one of {_BOX_INITIAL_SOURCES}, got {self.box_initial_source!r}"
            )

    def _check_levels(self) -> None:
        if self.vision_feature_channels is not None:
            _int_list([self.vision_feature_channels], "vision_feature_channels", 1)
        if self.box_feature_levels is None:
            if self.box_feature_channels is not None:
                raise ValueError("MedRGConfig.box_feature_channels needs box_feature_levels")
            return
        if self.box_feature_source != "vision_tower":
            raise ValueError('MedRGConfig.box_feature_levels needs box_feature_source="vision_tower"')
        levels = _int_list(self.box_feature_levels, "box_feature_levels", 0)
        if self.box_feature_channels is None:
            raise ValueError(
                "MedRGConfig.box_feature_levels needs box_feature_channels (one width per level)"
            )
        channels = _int_list(self.box_feature_channels, "box_feature_channels", 1)
        if len(channels) != len(levels):
            raise ValueError(
                f"MedRGConfig.box_feature_channels ({channels}) must give one width per box_feature_levels entry "
                f"({levels})"
            )
        self.box_feature_levels, self.box_feature_channels = levels, channels


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
