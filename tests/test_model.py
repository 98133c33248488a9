"""MedRGForReportGrounding: forward, losses, <BOX> wiring, batching, checkpointing, dtypes, errors."""

from __future__ import annotations

import pytest
import torch
from conftest import xray_like
from transformers import AutoModel, LogitsProcessor, LogitsProcessorList

import medrg

FINDINGS = [
    [{"phrase": "nodule in the right upper lobe", "boxes": [[10, 12, 24, 26]]}],
    [
        {"phrase": "left pleural effusion", "boxes": [[50, 60, 78, 90]]},
        {"phrase": "bilateral effusions", "boxes": [[2, 75, 20, 94], [60, 75, 78, 94]]},
    ],
    [],
]
REPORTS = ["Nodule in the right upper lobe.", "Left pleural effusion. Bilateral effusions.", "Normal chest."]


def _batch(processor, findings=True):
    images = [xray_like(seed=i) for i in range(3)]
    return processor(images=images, text=REPORTS, findings=FINDINGS if findings else None)


def test_forward_returns_every_loss_part_and_box_per_finding(tiny):
    model, processor = tiny
    batch = _batch(processor)
    out = model(**batch)
    for name in ("loss", "lm_loss", "box_l1_loss", "box_giou_loss", "box_confidence_loss"):
        assert torch.isfinite(out[name]) and out[name].dim() == 0, name
    k = model.config.num_box_queries
    assert out.pred_boxes.shape == (3, k, 4) and out.pred_scores.shape == (3, k)  # 1 + 2 + 0 findings
    assert out.box_batch_index.tolist() == [0, 1, 1]
    assert ((out.pred_boxes >= 0) & (out.pred_boxes <= 1)).all()
    assert ((out.pred_scores >= 0) & (out.pred_scores <= 1)).all()
    assert out.intermediate_boxes.shape == (model.config.box_decoder_layers + 1, 3, k, 4)
    weighted = out.lm_loss + 5.0 * out.box_l1_loss + 2.0 * out.box_giou_loss + out.box_confidence_loss
    assert torch.allclose(out.loss, weighted)
    assert out.logits.shape[:2] == batch["input_ids"].shape


def test_box_loss_reaches_box_embedding_decoder_and_vision(tiny):
    model, processor = tiny
    model.zero_grad()
    out = model(**_batch(processor))
    (out.box_l1_loss + out.box_giou_loss + out.box_confidence_loss).backward()
    embedding_grad = model.get_input_embeddings().weight.grad
    assert embedding_grad[processor.box_token_id].abs().sum() > 0  # the <BOX> embedding learns from boxes
    assert all(p.grad is not None for p in model.box_decoder.parameters())
    assert model.vision_tower.embedder.embedder.convolution.weight.grad.abs().sum() > 0
    model.zero_grad()


def test_box_count_mismatch_is_a_clear_error(tiny):
    model, processor = tiny
    batch = _batch(processor)
    batch["target_boxes_mask"][0, 0, 0] = False  # sample 0 now has a <BOX> but no finding
    with pytest.raises(ValueError, match="Sample 0 has 1 <BOX> tokens but 0 target findings"):
        model(**batch)


def test_image_token_mismatch_is_a_clear_error(tiny):
    model, processor = tiny
    batch = _batch(processor, findings=False)
    ids = batch["input_ids"].clone()
    first = (ids[1] == processor.image_token_id).nonzero()[0, 0]
    ids[1, first] = processor.tokenizer.pad_token_id
    with pytest.raises(ValueError, match="Sample 1 holds 63 <image> tokens but the vision tower gives 64"):
        model(input_ids=ids, pixel_values=batch["pixel_values"], attention_mask=batch["attention_mask"])


def test_left_padded_batch_equals_single_samples(tiny):
    model, processor = tiny
    batch = _batch(processor)
    with torch.no_grad():
        together = model(**batch)
        for i in range(3):
            single = processor(images=xray_like(seed=i), text=REPORTS[i], findings=FINDINGS[i])
            alone = model(**single)
            length = single["input_ids"].shape[1]
            assert torch.allclose(together.logits[i, -length:], alone.logits[0], atol=1e-5)
            rows = together.box_batch_index == i
            if rows.any():
                assert torch.allclose(together.pred_boxes[rows], alone.pred_boxes, atol=1e-5)
                assert torch.allclose(together.pred_scores[rows], alone.pred_scores, atol=1e-5)


class ForceBoxLast(LogitsProcessor):
    """Forces one word token then <BOX>, so that <BOX> is the LAST generated token (max_new_tokens=2)."""

    def __init__(self, first, box, prompt_length):
        self.first, self.box, self.prompt_length = first, box, prompt_length

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1] - self.prompt_length
        forced = torch.full_like(scores, float("-inf"))
        forced[:, self.first if step == 0 else self.box] = 0
        return forced


def test_box_as_last_generated_token_is_grounded(tiny):
    model, processor = tiny
    inputs = processor(images=[xray_like(), xray_like(seed=1)], text=REPORTS[:2])
    first = processor.tokenizer.encode("nodule", add_special_tokens=False)[0]
    force = LogitsProcessorList([ForceBoxLast(first, processor.box_token_id, inputs["input_ids"].shape[1])])
    out = model.generate_grounding(
        inputs["input_ids"],
        inputs["pixel_values"],
        inputs["attention_mask"],
        max_new_tokens=2,
        logits_processor=force,
    )
    assert out.sequences[:, -1].tolist() == [processor.box_token_id] * 2
    assert [b.shape for b in out.pred_boxes] == [(1, model.config.num_box_queries, 4)] * 2
    records = processor.post_process_grounding(out, inputs["image_sizes"])
    assert records[0][0]["label"] == processor.tokenizer.decode([first]).strip()
    for record in records[0] + records[1]:
        box = record["box"]
        assert 0 <= box["xmin"] <= box["xmax"] <= 80 and 0 <= box["ymin"] <= box["ymax"] <= 96
        assert 0.0 <= record["score"] <= 1.0


def test_activation_checkpointing_gives_the_same_loss_and_gradients():
    model, processor = medrg.build_tiny_medrg(seed=1)
    batch = _batch(processor)
    model.train()
    torch.manual_seed(0)
    loss = model(**batch).loss
    loss.backward()
    reference = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.activation_checkpointing_enable()
    assert model.language_model.model.layers[0].gradient_checkpointing
    torch.manual_seed(0)
    loss2 = model(**batch).loss
    loss2.backward()
    assert torch.allclose(loss, loss2, atol=1e-6)
    for name, grad in reference.items():
        assert torch.allclose(grad, dict(model.named_parameters())[name].grad, atol=1e-5), name


def test_sdpa_and_eager_attention_agree(tiny, tmp_path):
    model, processor = tiny
    model.save_pretrained(tmp_path)
    batch = _batch(processor)
    outputs = {}
    for implementation in ("sdpa", "eager"):
        # per sub-model: the ResNet vision tower has no attention
        loaded = AutoModel.from_pretrained(
            tmp_path, attn_implementation={"text_config": implementation}
        ).eval()
        assert loaded.language_model.config._attn_implementation == implementation
        with torch.no_grad():
            outputs[implementation] = loaded(**batch)
    assert torch.allclose(outputs["sdpa"].loss, outputs["eager"].loss, atol=1e-4)
    assert torch.allclose(outputs["sdpa"].pred_boxes, outputs["eager"].pred_boxes, atol=1e-4)


def test_bfloat16_loading_runs(tiny, tmp_path):
    model, processor = tiny
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    assert loaded.dtype == torch.bfloat16
    assert loaded.box_decoder.score_head.weight.dtype == torch.bfloat16
    with torch.no_grad():
        out = loaded(**_batch(processor))
    assert torch.isfinite(out.loss)
    assert torch.allclose(out.pred_boxes.float(), model(**_batch(processor)).pred_boxes, atol=0.05)


def test_weights_are_saved_as_safetensors_only(tiny, tmp_path):
    model, _ = tiny
    model.save_pretrained(tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert "model.safetensors" in names
    assert not any(n.endswith((".bin", ".pt", ".pth", ".pkl")) for n in names)


def test_resize_keeps_box_token_and_config_in_sync(tiny):
    model, processor = tiny
    assert model.get_input_embeddings().weight.shape[0] == len(processor.tokenizer)
    assert model.config.text_config.vocab_size == len(processor.tokenizer)
    assert model.config.box_token_id == processor.box_token_id
    assert model.config.image_token_id == processor.image_token_id
