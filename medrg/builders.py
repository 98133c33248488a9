"""Build MedRG offline: a tiny random model for tests/experiments, or one assembled from pretrained local parts."""

from __future__ import annotations

import torch
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer, GenerationConfig, PreTrainedModel

from medrg.modeling_medrg.configuration_medrg import MedRGConfig
from medrg.modeling_medrg.modeling_medrg import MedRGForReportGrounding
from medrg.processing.image_processing_medrg import MedRGImageProcessor
from medrg.processing.processing_medrg import MedRGProcessor
from medrg.tokenizer import BOX_TOKEN, IMAGE_TOKEN, add_grounding_tokens, train_tiny_tokenizer


def tiny_config_dict(vocab_size: int, image_size: int = 64) -> dict:
    """The tiny configuration (hidden 64, 2 LM layers, a 2-stage ResNet) used by tests and CPU experiments."""
    return {
        "text_config": {
            "model_type": "llama",
            "vocab_size": vocab_size,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 1024,
            "tie_word_embeddings": False,
        },
        "vision_config": {
            "model_type": "resnet",
            "num_channels": 3,
            "embedding_size": 16,
            "hidden_sizes": [16, 32],
            "depths": [1, 1],
            "layer_type": "basic",
            "downsample_in_first_stage": False,
        },
        "box_decoder_dim": 32,
        "box_decoder_layers": 2,
        "box_decoder_heads": 4,
        "box_decoder_ffn_dim": 64,
        "num_box_queries": 3,
        "box_sampling_points": 3,
        "image_token_pooling": 1 if image_size <= 64 else 2,
    }


def build_tiny_medrg(
    seed: int = 0, image_size: int = 64, max_length: int = 384, **config_overrides
) -> tuple[MedRGForReportGrounding, MedRGProcessor]:
    """A tiny random MedRG and its processor, built fully offline (tokenizer trained with `tokenizers`).

    Deterministic for a given seed. `config_overrides` replace entries of the tiny config (e.g.
    `num_box_queries=4`).
    """
    tokenizer = train_tiny_tokenizer()
    config_dict = tiny_config_dict(len(tokenizer), image_size)
    config_dict.update(config_overrides)
    text = config_dict["text_config"]
    text.update(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = MedRGConfig(
        **config_dict,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        box_token_id=tokenizer.convert_tokens_to_ids(BOX_TOKEN),
    )
    torch.manual_seed(seed)
    model = MedRGForReportGrounding(config)
    model.config.num_image_tokens = model.probe_num_image_tokens(image_size)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
        max_new_tokens=64,
    )
    processor = MedRGProcessor(
        image_processor=MedRGImageProcessor(image_size=image_size),
        tokenizer=tokenizer,
        num_image_tokens=model.config.num_image_tokens,
        max_length=max_length,
    )
    return model, processor


def assemble_from_backbones(
    text_model: str | PreTrainedModel,
    vision_model: str | PreTrainedModel,
    *,
    image_token_id: int,
    box_token_id: int,
    vocab_size: int,
    image_size: int,
    text_model_kwargs: dict | None = None,
    vision_model_kwargs: dict | None = None,
    **grounding_options,
) -> MedRGForReportGrounding:
    """MedRG around a pretrained causal LM and a pretrained vision model (objects or local folders), the box decoder
    and projector new.

    `vocab_size` is the tokenizer's length after `<image>`/`<BOX>` were added (the LM embeddings are resized);
    `image_size` is the processor's square input size (used to count the image tokens); `grounding_options`
    are any other [`MedRGConfig`] fields (box decoder sizes, K, loss weights, ...).
    """
    if isinstance(text_model, str):
        text_model = AutoModelForCausalLM.from_pretrained(text_model, **(text_model_kwargs or {}))
    if isinstance(vision_model, str):
        vision_model = AutoModel.from_pretrained(vision_model, **(vision_model_kwargs or {}))
    config = MedRGConfig(
        text_config=text_model.config.to_dict(),
        vision_config=vision_model.config.to_dict(),
        image_token_id=image_token_id,
        box_token_id=box_token_id,
        **grounding_options,
    )
    model = MedRGForReportGrounding(config)
    model.model.vision_tower = vision_model
    model.model.language_model = text_model
    model.config.vision_config = vision_model.config
    model.config.text_config = text_model.config
    model.resize_token_embeddings(vocab_size)
    model.config.num_image_tokens = model.probe_num_image_tokens(image_size)
    model.generation_config = text_model.generation_config
    return model


def build_medrg_from_backbones(
    text_model_path: str,
    vision_model_path: str,
    *,
    image_size: int,
    gguf_file: str | None = None,
    image_mean: list[float] | None = None,
    image_std: list[float] | None = None,
    max_length: int = 512,
    dtype: torch.dtype | None = None,
    **grounding_options,
) -> tuple[MedRGForReportGrounding, MedRGProcessor]:
    """Assemble MedRG from a pretrained causal LM folder (optionally a GGUF file in it) and a pretrained vision
    model folder, both local. The LM's tokenizer gets `<image>` and `<BOX>`; `grounding_options` are
    [`MedRGConfig`] fields (box decoder sizes, K, loss weights, image_token_pooling, ...)."""
    text_kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    if dtype is not None:
        text_kwargs["dtype"] = dtype
    tokenizer = AutoTokenizer.from_pretrained(
        text_model_path, **({"gguf_file": gguf_file} if gguf_file else {})
    )
    add_grounding_tokens(tokenizer)
    model = assemble_from_backbones(
        text_model_path,
        vision_model_path,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        box_token_id=tokenizer.convert_tokens_to_ids(BOX_TOKEN),
        vocab_size=len(tokenizer),
        image_size=image_size,
        text_model_kwargs=text_kwargs,
        vision_model_kwargs={"dtype": dtype} if dtype is not None else None,
        **grounding_options,
    )
    generation = model.generation_config
    generation.eos_token_id = tokenizer.eos_token_id
    generation.pad_token_id = tokenizer.pad_token_id
    generation.do_sample = False
    processor = MedRGProcessor(
        image_processor=MedRGImageProcessor(
            image_size=image_size, image_mean=image_mean, image_std=image_std
        ),
        tokenizer=tokenizer,
        num_image_tokens=model.config.num_image_tokens,
        max_length=max_length,
    )
    return model, processor
