"""MedRGConfig: composite sub-configs from dict / config / None, validation, round trips."""

from __future__ import annotations

import pytest
from huggingface_hub.errors import StrictDataclassClassValidationError, StrictDataclassFieldValidationError
from transformers import AutoConfig, LlamaConfig, ResNetConfig

import medrg
from medrg import MedRGConfig

TEXT = {
    "model_type": "llama",
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "vocab_size": 100,
}
VISION = {"model_type": "resnet", "hidden_sizes": [8, 16], "depths": [1, 1], "embedding_size": 8}


@pytest.mark.parametrize(
    "text", [TEXT, LlamaConfig(**{k: v for k, v in TEXT.items() if k != "model_type"}), None]
)
@pytest.mark.parametrize(
    "vision", [VISION, ResNetConfig(**{k: v for k, v in VISION.items() if k != "model_type"}), None]
)
def test_sub_configs_accept_dict_config_or_none(text, vision):
    config = MedRGConfig(text_config=text, vision_config=vision, image_token_id=1, box_token_id=2)
    assert config.text_config.model_type == "llama"
    assert config.vision_config.model_type == ("clip_vision_model" if vision is None else "resnet")
    assert config.grounding_vision_config is None


def test_round_trip_through_dict_and_folder(tmp_path):
    config = MedRGConfig(
        text_config=TEXT,
        vision_config=VISION,
        image_token_id=5,
        box_token_id=6,
        num_box_queries=4,
        box_l1_loss_weight=3.0,
        num_image_tokens=16,
    )
    again = MedRGConfig(**config.to_dict())
    assert again.to_dict() == config.to_dict()
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)  # registered by `import medrg`
    assert type(loaded).__name__ == "MedRGConfig"
    assert (loaded.num_box_queries, loaded.box_token_id, loaded.text_config.hidden_size) == (4, 6, 32)
    assert loaded.vision_config.hidden_sizes == [8, 16]
    assert medrg.TASK == "report-grounding"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("num_box_queries", 0, r"ValueError: must be in \[1, 1024\], got 0"),
        ("num_box_queries", 10**9, r"ValueError: must be in \[1, 1024\], got 1000000000"),
        ("box_decoder_layers", -1, r"ValueError: must be in \[1, 64\], got -1"),
        ("image_token_pooling", 1.5, r"TypeError: Field 'image_token_pooling' expected int, got float"),
        ("box_decoder_heads", True, r"TypeError: Field 'box_decoder_heads' expected int, got bool"),
        ("vision_feature_select", "cls", r"TypeError: .* expected one of \('default', 'full'\), got cls"),
        ("box_initial_source", "report", r"TypeError: .* expected one of \('image', 'text'\), got report"),
        ("box_giou_loss_weight", -1.0, r"ValueError: must be in \[0, inf\], got -1\.0"),
        ("lm_loss_weight", float("nan"), r"ValueError: must be in \[0, inf\], got nan"),
        ("lm_loss_weight", "1.0", r"TypeError: .* doesn't match any type"),
        ("box_token_id", -3, r"ValueError: must be in \[0, inf\], got -3"),
        ("num_image_tokens", 0, r"ValueError: must be in \[1, 65536\], got 0"),
        ("vision_feature_channels", 0, r"ValueError: must be in \[1, inf\], got 0"),
        ("phrase_max_distance", 0, r"ValueError: must be in \[1, 65536\], got 0"),
        ("phrase_max_distance", 2.5, r"TypeError: Field 'phrase_max_distance' expected int, got float"),
        ("phrase_recency_slope", -0.1, r"ValueError: must be in \[0, inf\), got -0\.1"),
        ("phrase_recency_slope", float("inf"), r"ValueError: must be in \[0, inf\), got inf"),
        ("phrase_recency_slope", float("nan"), r"ValueError: must be in \[0, inf\), got nan"),
        ("phrase_recency_slope", True, r"TypeError: .* expected int, got bool"),
        ("box_sampling_window", 0, r"ValueError: must be in \(0, 8\], got 0"),
        ("box_feature_levels", [], r"ValueError: must hold 1 to 8 integers >= 0, got \[\]"),
        ("box_feature_levels", [1, -2], r"ValueError: must hold 1 to 8 integers >= 0, got \[1, -2\]"),
        ("box_feature_levels", (1, 2), r"TypeError: .* expected a list, got tuple"),
        ("box_feature_channels", [16, 0], r"ValueError: must hold 1 to 8 integers >= 1"),
        ("grounding_vision_config", "clip", r"TypeError: .* doesn't match any type"),
    ],
)
def test_bad_field_values_name_the_field(field, value, message):
    """`@strict` checks each field's type and range, as transformers' own configs do; the error names the field."""
    with pytest.raises(
        StrictDataclassFieldValidationError, match=rf"Validation error for field '{field}':\s+{message}"
    ):
        MedRGConfig(text_config=TEXT, vision_config=VISION, **{field: value})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"box_decoder_dim": 30, "box_decoder_heads": 6}, r"box_decoder_dim must be a multiple of 8"),
        (
            {"box_decoder_dim": 40, "box_decoder_heads": 16},
            r"\(40\) must be divisible by box_decoder_heads \(16\)",
        ),
        (
            {"box_feature_source": "grounding_encoder"},
            r"box_feature_source=\"grounding_encoder\" needs a grounding",
        ),
        ({"box_feature_levels": [1]}, r"box_feature_levels needs box_feature_channels"),
        (
            {"box_feature_levels": [1, 2], "box_feature_channels": [16]},
            r"one width per box_feature_levels entry",
        ),
        ({"box_feature_channels": [16]}, r"box_feature_channels needs box_feature_levels"),
    ],
)
def test_inconsistent_fields_fail_validate_architecture(fields, message):
    expected = rf"validator 'validate_architecture':\s+ValueError: MedRGConfig\..*{message}"
    with pytest.raises(StrictDataclassClassValidationError, match=expected):
        MedRGConfig(text_config=TEXT, vision_config=VISION, **fields)


def test_equal_token_ids_rejected():
    with pytest.raises(
        StrictDataclassClassValidationError,
        match=r"validate_token_ids':\s+ValueError: .*must differ, both are 7",
    ):
        MedRGConfig(image_token_id=7, box_token_id=7)


def test_assignment_is_checked_and_save_runs_the_cross_field_rules(tmp_path):
    config = MedRGConfig(text_config=TEXT, vision_config=VISION, image_token_id=1, box_token_id=2)
    with pytest.raises(StrictDataclassFieldValidationError, match="num_box_queries"):
        config.num_box_queries = 0
    config.box_decoder_heads = 3  # a legal value alone, but 256 is not divisible by 3
    with pytest.raises(StrictDataclassClassValidationError, match="divisible by box_decoder_heads"):
        config.save_pretrained(tmp_path)
    assert not (tmp_path / "config.json").exists()


def test_ints_for_float_fields_and_unknown_keys_are_accepted():
    """A YAML `lm_loss_weight: 1` is an int; a config.json from a newer version may carry keys this one lacks."""
    config = MedRGConfig(
        lm_loss_weight=1,
        box_sampling_window=2,
        phrase_recency_slope=0,
        initializer_range=0,
        box_l1_loss_weight=5,
        some_future_key={"a": 1},
    )
    assert (config.lm_loss_weight, config.box_sampling_window, config.some_future_key) == (1, 2, {"a": 1})
    assert MedRGConfig(**config.to_dict()).some_future_key == {"a": 1}


def test_the_default_model_folder_loads():
    config = MedRGConfig.from_pretrained(medrg.DEFAULT_MODEL_DIR)
    assert (config.box_feature_levels, config.box_feature_channels) == ([5, 11, 16], [40, 112, 320])
    config.validate()


def test_separate_grounding_encoder_config():
    config = MedRGConfig(
        text_config=TEXT,
        vision_config=VISION,
        grounding_vision_config=VISION,
        box_feature_source="grounding_encoder",
        image_token_id=1,
        box_token_id=2,
    )
    assert config.grounding_vision_config.model_type == "resnet"


def test_saved_config_without_phrase_fields_loads_with_the_former_constants(tmp_path):
    """A config.json saved before the phrase-attention fields existed gets 32 and 0.25, the constants the code had,
    so such a model's outputs do not change."""
    import json

    data = json.loads((medrg.DEFAULT_MODEL_DIR / "config.json").read_text())
    for key in ("phrase_max_distance", "phrase_recency_slope"):
        data.pop(key, None)
    (tmp_path / "config.json").write_text(json.dumps(data))
    loaded = MedRGConfig.from_pretrained(tmp_path)
    assert (loaded.phrase_max_distance, loaded.phrase_recency_slope) == (32, 0.25)


def test_phrase_attention_shape_and_slope_come_from_the_config(tmp_path):
    model, _ = medrg.build_tiny_medrg(seed=0, phrase_max_distance=8, phrase_recency_slope=0.5)
    attention = model.box_decoder.phrase_attention
    assert attention.distance_bias.weight.shape == (9, 1)
    assert (attention.max_distance, attention.recency_slope) == (8, 0.5)
    model.config.save_pretrained(tmp_path)
    again = AutoConfig.from_pretrained(tmp_path)
    assert (again.phrase_max_distance, again.phrase_recency_slope) == (8, 0.5)
