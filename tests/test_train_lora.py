"""LoRA through peft on the tiny model, merged export that reloads via AutoModel, and gradient accumulation."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_train_config

import medrg
from medrg.training.train import train


def run_config(output_dir, **sections) -> dict:
    sections["training"] = {"learning_rate": 1e-2, "logging_steps": 1, **sections.get("training", {})}
    return tiny_train_config(output_dir, **sections)


def test_lora_trains_adapters_merges_and_reloads(tmp_path):
    from transformers import AutoModel

    base, processor = medrg.build_tiny_medrg(seed=0)
    lora = {
        "enabled": True,
        "r": 4,
        "lora_alpha": 8,
        "modules_to_save": ["multi_modal_projector", "box_decoder", "vision_tower"],
    }
    summary = train(run_config(tmp_path, lora=lora))
    merged = AutoModel.from_pretrained(summary["export_dir"])
    assert type(merged).__name__ == "MedRGForReportGrounding"
    assert not any("lora" in name for name, _ in merged.named_parameters())
    base_state, merged_state = base.state_dict(), merged.state_dict()

    def key(suffix: str) -> str:  # by suffix: the test does not pin the module nesting of the model class
        (name,) = [n for n in base_state if "language_model" in n and n.endswith(suffix)]
        return name

    q, k = key("layers.0.self_attn.q_proj.weight"), key("layers.0.self_attn.k_proj.weight")
    assert not torch.equal(base_state[q], merged_state[q])  # LoRA delta merged in
    assert torch.equal(base_state[k], merged_state[k])  # not a LoRA target: untouched
    embed = key("embed_tokens.weight")
    changed_rows = (base_state[embed] != merged_state[embed]).any(1).nonzero().flatten().tolist()
    assert changed_rows == [processor.box_token_id]  # only the <BOX> embedding row is trained
    head = key("lm_head.weight")
    assert (base_state[head] != merged_state[head]).any(1).nonzero().flatten().tolist() == [
        processor.box_token_id
    ]
    decoder = [n for n in base_state if "box_decoder." in n and n.endswith("weight")]
    assert decoder
    assert any(not torch.equal(base_state[n], merged_state[n]) for n in decoder)


@pytest.mark.parametrize("batch, accumulation", [(2, 2)])
def test_gradient_accumulation_matches_the_larger_batch_loss_scale(tmp_path, batch, accumulation):
    big = train(run_config(tmp_path / "big", training={"max_steps": 1, "per_device_train_batch_size": 4}))
    small = train(
        run_config(
            tmp_path / "acc",
            training={
                "max_steps": 1,
                "per_device_train_batch_size": batch,
                "gradient_accumulation_steps": accumulation,
            },
        )
    )
    big_loss = big["log_history"][0]["loss"]
    small_loss = small["log_history"][0]["loss"]
    # same 4 samples in one optimizer step; the micro-batch losses are averaged, not summed
    assert small_loss == pytest.approx(big_loss, rel=0.15)
    assert small["log_history"][0]["grad_norm"] == pytest.approx(big["log_history"][0]["grad_norm"], rel=0.25)


def test_exported_folder_runs_in_the_pipeline(tmp_path):
    import json

    import numpy as np

    summary = train(run_config(tmp_path, training={"max_steps": 1}))
    folder = summary["export_dir"]
    config = json.loads((tmp_path / "final" / "config.json").read_text())
    # the one hub-folder writer: auto_map + custom_pipelines, so the folder also works without medrg
    assert "AutoModel" in config["auto_map"] and "report-grounding" in config["custom_pipelines"]
    assert (tmp_path / "final" / "modeling_medrg.py").is_file() and (
        tmp_path / "final" / "README.md"
    ).is_file()
    import medrg

    pipe = medrg.load_pipeline(folder)  # with medrg installed: the installed code, not the folder's
    image = (np.random.RandomState(0).rand(80, 96) * 255).astype(np.uint8)
    records = pipe(image, report="Small nodule in the right upper zone.", max_new_tokens=8)
    assert isinstance(records, list)
