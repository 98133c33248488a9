"""MedRGConfig: composite sub-configs from dict / config / None, validation, round trips."""

from __future__ import annotations

import pytest
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
        ("num_box_queries", 0, "num_box_queries must be a positive integer"),
        ("box_decoder_layers", -1, "box_decoder_layers must be a positive integer"),
        ("box_decoder_dim", 30, "divisible by box_decoder_heads"),
        ("image_token_pooling", 1.5, "image_token_pooling must be a positive integer"),
        ("vision_feature_select", "cls", "vision_feature_select must be one of"),
        ("box_feature_source", "grounding_encoder", "needs a grounding_vision_config"),
        ("box_giou_loss_weight", -1.0, "box_giou_loss_weight must be a number >= 0"),
        ("lm_loss_weight", float("nan"), "lm_loss_weight must be a number >= 0"),
        ("box_token_id", -3, "box_token_id must be a non-negative integer"),
        ("num_image_tokens", 0, "num_image_tokens must be a positive integer"),
        ("phrase_max_distance", 0, "phrase_max_distance must be a positive integer"),
        ("phrase_max_distance", 2.5, "phrase_max_distance must be a positive integer"),
        ("phrase_recency_slope", -0.1, "phrase_recency_slope must be a finite number >= 0"),
        ("phrase_recency_slope", float("inf"), "phrase_recency_slope must be a finite number >= 0"),
        ("phrase_recency_slope", float("nan"), "phrase_recency_slope must be a finite number >= 0"),
        ("phrase_recency_slope", True, "phrase_recency_slope must be a finite number >= 0"),
    ],
)
def test_bad_values_raise_value_error(field, value, message):
    with pytest.raises(ValueError, match=message):
        MedRGConfig(text_config=TEXT, vision_config=VISION, **{field: value})


def test_equal_token_ids_rejected():
    with pytest.raises(ValueError, match="must differ"):
        MedRGConfig(image_token_id=7, box_token_id=7)


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
