"""Model sources of the training config: local pretrained backbones, and continuing from a MedRG checkpoint."""

from __future__ import annotations

import torch

from medrg.training.train import train


def synth_data() -> dict:
    options = {"examples_per_split": {"train": 16, "validation": 4}, "image_size": 64, "progress": False}
    return {"sources": [{"name": "synthcxr", "options": options}]}


def training(output_dir, steps: int = 2) -> dict:
    return {"output_dir": str(output_dir), "max_steps": steps, "per_device_train_batch_size": 4,
            "learning_rate": 1e-3, "use_cpu": True, "torch_threads": 1, "logging_steps": 1}  # fmt: skip


def save_tiny_backbones(folder):
    """A tiny Llama (with a tokenizer) and a tiny ResNet saved as local 'pretrained' folders."""
    from transformers import LlamaConfig, LlamaForCausalLM, ResNetConfig, ResNetModel

    from medrg.tokenizer import train_tiny_tokenizer

    tokenizer = train_tiny_tokenizer()
    torch.manual_seed(0)
    text = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                        num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                        pad_token_id=tokenizer.pad_token_id))  # fmt: skip
    text.save_pretrained(folder / "lm")
    tokenizer.save_pretrained(folder / "lm")
    vision = ResNetModel(
        ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic")
    )
    vision.save_pretrained(folder / "vision")
    return folder / "lm", folder / "vision"


def test_backbones_then_continue_from_the_checkpoint(tmp_path):
    lm, vision = save_tiny_backbones(tmp_path)
    model = {"source": "backbones", "text_model": str(lm), "vision_model": str(vision), "image_size": 64,
             "overrides": {"box_decoder_dim": 32, "box_decoder_heads": 4, "box_decoder_ffn_dim": 64,
                           "box_decoder_layers": 1}}  # fmt: skip
    lora = {
        "enabled": True,
        "r": 2,
        "lora_alpha": 4,
        "modules_to_save": ["multi_modal_projector", "box_decoder"],
    }
    first = train({"model": model, "data": synth_data(), "lora": lora, "training": training(tmp_path / "a"),
                   "export": {"evaluate_splits": []}})  # fmt: skip
    second = train({"model": {"source": "checkpoint", "checkpoint": first["export_dir"]}, "data": synth_data(),
                    "training": training(tmp_path / "b"), "export": {"evaluate_splits": ["validation"]}})  # fmt: skip
    assert second["global_step"] == 2
    assert second["weights_sha256"] != first["weights_sha256"]
    assert second["metrics"]["validation"]["num_samples"] == 4
