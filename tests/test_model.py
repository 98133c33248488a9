"""MedRGModel + MedRGForReportGrounding: forward, losses, <BOX> wiring, padded generation output, batching,
checkpointing, dtypes, loading, errors."""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import ForceAnswers, bfloat16_attention_runs, forced_generation, xray_like
from huggingface_hub.errors import StrictDataclassError
from medrg.modeling_medrg.medrg_loss import box_losses, match_queries_to_targets
from medrg.modeling_medrg.modeling_medrg import MedRGModel
from transformers import AutoModel

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
    # slots per sample, as generation gives them: 1 + 2 + 0 findings
    assert out.pred_boxes.shape == (3, 2, k, 4) and out.pred_scores.shape == (3, 2, k)
    assert out.box_mask.tolist() == [[True, False], [True, True], [False, False]]
    assert (out.box_token_positions >= 0).equal(out.box_mask)
    for sample, slot in out.box_mask.nonzero().tolist():
        assert batch["input_ids"][sample, out.box_token_positions[sample, slot]] == processor.box_token_id
    assert ((out.pred_boxes >= 0) & (out.pred_boxes <= 1)).all()
    assert ((out.pred_scores >= 0) & (out.pred_scores <= 1)).all()
    assert (out.pred_boxes[~out.box_mask] == 0).all() and (out.pred_scores[~out.box_mask] == 0).all()
    assert out.intermediate_boxes.shape == (model.config.box_decoder_layers + 1, 3, 2, k, 4)
    assert torch.equal(out.intermediate_boxes[-1], out.pred_boxes)
    weighted = out.lm_loss + 5.0 * out.box_l1_loss + 2.0 * out.box_giou_loss + out.box_confidence_loss
    assert torch.allclose(out.loss, weighted)
    assert out.logits.shape[:2] == batch["input_ids"].shape
    # the LM loss: next-token cross-entropy on the answer tokens only (labels -100 elsewhere)
    logits, labels = out.logits[:, :-1].float(), batch["labels"][:, 1:]
    expected = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
    assert torch.allclose(out.lm_loss, expected, rtol=1e-6, atol=0)


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
            rows, own = together.box_mask[i], alone.box_mask[0]
            assert int(rows.sum()) == int(own.sum())
            if rows.any():
                assert torch.allclose(together.pred_boxes[i, rows], alone.pred_boxes[0, own], atol=1e-5)
                assert torch.allclose(together.pred_scores[i, rows], alone.pred_scores[0, own], atol=1e-5)


def test_box_as_last_generated_token_is_grounded(tiny):
    model, processor = tiny
    inputs = processor(images=[xray_like(), xray_like(seed=1)], text=REPORTS[:2])
    first = processor.tokenizer.encode("nodule", add_special_tokens=False)[0]
    # one word then <BOX>, cut off there by max_new_tokens=2: <BOX> is the LAST generated token
    answers = [[first, processor.box_token_id]] * 2
    force = ForceAnswers(answers, processor.tokenizer.eos_token_id, inputs["input_ids"].shape[1])
    out = forced_generation(model, inputs, force, max_new_tokens=2)
    k = model.config.num_box_queries
    assert out.sequences[:, -1].tolist() == [processor.box_token_id] * 2
    assert out.pred_boxes.shape == (2, 1, k, 4) and out.pred_scores.shape == (2, 1, k)
    assert out.box_mask.tolist() == [[True], [True]]
    assert out.box_token_positions.tolist() == [[out.sequences.shape[1] - 1]] * 2
    assert out.finished.tolist() == [False, False]  # no EOS within max_new_tokens: cut off
    records = processor.post_process_grounding(out, inputs["image_sizes"])
    assert records[0]["labels"][0] == processor.tokenizer.decode([first]).strip()
    for record in records:
        assert record["finished"] is False
        boxes = record["boxes"]
        assert ((0 <= boxes[:, 0]) & (boxes[:, 0] <= boxes[:, 2]) & (boxes[:, 2] <= 80)).all()
        assert ((0 <= boxes[:, 1]) & (boxes[:, 1] <= boxes[:, 3]) & (boxes[:, 3] <= 96)).all()
        assert ((0 <= record["scores"]) & (record["scores"] <= 1)).all()


def test_generate_grounding_returns_padded_boxes_with_mask_and_finished(tiny):
    """Contract A: (B, N, K, 4) boxes, i-th generated <BOX> of a sample in slot i, -1 / zeros / False where padded."""
    model, processor = tiny
    inputs = processor(images=[xray_like(), xray_like(seed=1), xray_like(seed=2)], text=REPORTS)
    word = processor.tokenizer.encode("nodule", add_special_tokens=False)[0]
    box, eos = processor.box_token_id, processor.tokenizer.eos_token_id
    answers = [[word, box, word, box, eos], [word, box, eos], [word, eos]]
    prompt = inputs["input_ids"].shape[1]
    out = forced_generation(model, inputs, ForceAnswers(answers, eos, prompt), max_new_tokens=8)
    k = model.config.num_box_queries
    assert out.pred_boxes.shape == (3, 2, k, 4) and out.pred_scores.shape == (3, 2, k)
    assert out.box_mask.tolist() == [[True, True], [True, False], [False, False]]
    assert out.box_token_positions.tolist() == [[prompt + 1, prompt + 3], [prompt + 1, -1], [-1, -1]]
    for sample, slot in out.box_mask.nonzero().tolist():
        assert out.sequences[sample, out.box_token_positions[sample, slot]] == box
    assert (out.pred_boxes[~out.box_mask] == 0).all() and (out.pred_scores[~out.box_mask] == 0).all()
    assert ((out.pred_boxes[out.box_mask] > 0) & (out.pred_boxes[out.box_mask] < 1)).all()
    assert out.finished.tolist() == [True, True, True]
    assert out.generated_mask.sum(1).tolist() == [5, 3, 2]
    # the padded slots hold exactly what the teacher-forced forward gives for each <BOX>
    forward = model(
        input_ids=out.sequences,
        pixel_values=inputs["pixel_values"],
        attention_mask=torch.cat((inputs["attention_mask"], out.generated_mask), 1),
    )
    assert torch.equal(forward.box_mask, out.box_mask)
    assert torch.equal(forward.box_token_positions, out.box_token_positions)
    assert torch.allclose(out.pred_boxes[out.box_mask], forward.pred_boxes[forward.box_mask], atol=1e-6)
    # one box layout: the processor post-processes the forward output (phrases read off its input_ids) as the
    # generation's
    sizes = inputs["image_sizes"]
    generated = processor.post_process_grounding(out, sizes, threshold=0.0)
    teacher = processor.post_process_grounding(forward, sizes, threshold=0.0, input_ids=out.sequences)
    assert [r["labels"] for r in teacher] == [r["labels"] for r in generated]
    assert teacher[0]["labels"] and teacher[1]["labels"] and teacher[2]["labels"] == []
    assert [r["finished"] for r in teacher] == [True, True, True]
    for a, b in zip(teacher, generated):
        assert torch.allclose(a["boxes"], b["boxes"], atol=1e-3) and torch.allclose(
            a["scores"], b["scores"], atol=1e-5
        )
    with pytest.raises(ValueError, match="pass input_ids="):
        processor.post_process_grounding(forward, sizes)


def test_generate_grounding_without_any_box_gives_empty_padded_tensors(tiny):
    model, processor = tiny
    inputs = processor(images=[xray_like(), xray_like(seed=1)], text=REPORTS[:2])
    eos = processor.tokenizer.eos_token_id
    word = processor.tokenizer.encode("normal", add_special_tokens=False)[0]
    force = ForceAnswers([[word, eos], [eos]], eos, inputs["input_ids"].shape[1])
    out = forced_generation(model, inputs, force)
    k = model.config.num_box_queries
    assert out.pred_boxes.shape == (2, 0, k, 4) and out.box_mask.shape == (2, 0)
    assert out.box_token_positions.shape == (2, 0) and out.finished.tolist() == [True, True]


def test_base_model_gives_image_features_and_merges_placeholders(tiny):
    model, processor = tiny
    batch = _batch(processor, findings=False)
    assert isinstance(model.model, MedRGModel) and model.vision_tower is model.model.vision_tower
    image = model.model.get_image_features(batch["pixel_values"])
    tokens, grid = image.pooler_output, image.feature_maps
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            model.model.get_image_features(batch["pixel_values"], return_dict=False), (tokens, grid)
        )
    )
    assert tokens.shape == (3, model.config.num_image_tokens, model.config.text_config.hidden_size)
    assert grid.dim() == 4 and grid.shape[0] == 3
    with torch.no_grad():
        base = model.model(
            input_ids=batch["input_ids"],
            pixel_values=batch["pixel_values"],
            attention_mask=batch["attention_mask"],
        )
        head = model(**batch)
    assert torch.equal(base.logits, head.logits)
    placeholder = batch["input_ids"] == processor.image_token_id
    assert torch.equal(base.inputs_embeds[placeholder].reshape(tokens.shape), tokens)
    with pytest.raises(ValueError, match="Got 2 images for 3 token sequences"):
        model.model.get_placeholder_mask(batch["input_ids"], tokens[:2])


def test_old_flat_checkpoint_names_still_load(tiny, tmp_path):
    """Folders saved before the MedRGModel split (no `model.` prefix) load into the same weights."""
    from safetensors.torch import load_file, save_file

    model, processor = tiny
    model.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    save_file(
        {k.removeprefix("model."): v for k, v in weights.items()},
        tmp_path / "model.safetensors",
        metadata={"format": "pt"},
    )
    loaded = medrg.MedRGForReportGrounding.from_pretrained(tmp_path).eval()
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_tied_and_lora_merged_models_save_and_reload_strictly(tiny, tmp_path):
    import peft

    model, processor = tiny
    config = model.config.to_dict()
    config["text_config"]["tie_word_embeddings"] = True
    tied = medrg.MedRGForReportGrounding(medrg.MedRGConfig(**config))
    tied.save_pretrained(tmp_path / "tied")
    again, info = medrg.MedRGForReportGrounding.from_pretrained(tmp_path / "tied", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    assert again.get_output_embeddings().weight is again.get_input_embeddings().weight

    fresh, _ = medrg.build_tiny_medrg(seed=0)
    with warnings.catch_warnings():  # peft itself still reads a deprecated transformers property
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        lora = peft.get_peft_model(
            fresh,
            peft.LoraConfig(
                r=2, target_modules=r".*language_model.*\.(q_proj|v_proj)", modules_to_save=["box_decoder"]
            ),
        )
        with torch.no_grad():
            for name, parameter in lora.named_parameters():
                if "lora_B" in name:
                    parameter.fill_(0.01)
        merged = lora.merge_and_unload()
    merged.save_pretrained(tmp_path / "merged")
    reloaded = medrg.MedRGForReportGrounding.from_pretrained(tmp_path / "merged")
    q = reloaded.language_model.model.layers[0].self_attn.q_proj.weight
    assert torch.equal(q, merged.language_model.model.layers[0].self_attn.q_proj.weight)
    assert not torch.equal(q, model.language_model.model.layers[0].self_attn.q_proj.weight)  # the delta is in


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


@pytest.mark.skipif(
    not bfloat16_attention_runs(),
    reason="torch's bfloat16 CPU attention fails under this ATEN_CPU_CAPABILITY",
)
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


def _random_problem(
    seed: int, batch: int = 4, findings: int = 3, boxes: int = 5, k: int = 3, layers: int = 3
):
    """Random predictions for every finding of every sample and targets with random padding (some findings with
    more boxes than queries)."""
    generator = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, findings + 1, (batch,), generator=generator)
    mask = torch.zeros(batch, findings, boxes, dtype=torch.bool)
    for sample in range(batch):
        for finding in range(int(counts[sample])):
            real = torch.randperm(boxes, generator=generator)[
                : int(torch.randint(1, boxes + 1, (1,), generator=generator))
            ]
            mask[sample, finding, real] = True
    centres = torch.rand(batch, findings, boxes, 2, generator=generator) * 0.6 + 0.2
    sizes = torch.rand(batch, findings, boxes, 2, generator=generator) * 0.3 + 0.05
    targets = torch.cat((centres, sizes), -1) * mask[..., None]
    batch_index = torch.repeat_interleave(torch.arange(batch), counts)
    num = int(counts.sum())
    predictions = torch.cat(
        (
            torch.rand(layers, num, k, 2, generator=generator),
            torch.rand(layers, num, k, 2, generator=generator) * 0.5,
        ),
        -1,
    ).clamp(0.01, 0.99)
    return predictions, torch.randn(num, k, generator=generator), batch_index, targets, mask


def _reference_box_losses(
    all_boxes, score_logits, batch_index, target_boxes, target_mask, w_l1=5.0, w_giou=2.0
):
    """Per-box loop with scipy's exact assignment and transformers' IoU helpers (what the model computed before)."""
    from scipy.optimize import linear_sum_assignment
    from transformers.image_transforms import center_to_corners_format as corners
    from transformers.loss.loss_for_object_detection import box_iou, generalized_box_iou

    layers = all_boxes.shape[0]
    l1, giou_loss, pairs = 0.0, 0.0, 0
    score_targets = torch.zeros_like(score_logits)
    order = {}
    for m, sample in enumerate(batch_index.tolist()):
        finding = order[sample] = order.get(sample, -1) + 1
        gt = target_boxes[sample, finding][target_mask[sample, finding]]
        cost = sum(
            w_l1 * torch.cdist(all_boxes[layer, m], gt, p=1)
            - w_giou * generalized_box_iou(corners(all_boxes[layer, m]), corners(gt))
            for layer in range(layers)
        )
        rows, cols = linear_sum_assignment(cost.numpy())
        rows, cols = torch.as_tensor(rows), torch.as_tensor(cols)
        pairs += len(rows)
        for layer in range(layers):
            pred = all_boxes[layer, m, rows]
            l1 += (pred - gt[cols]).abs().sum()
            giou_loss += (1 - generalized_box_iou(corners(pred), corners(gt[cols])).diagonal()).sum()
        score_targets[m, rows] = (
            box_iou(corners(all_boxes[-1, m, rows]), corners(gt[cols]))[0].diagonal().clamp(0, 1)
        )
    normaliser = max(pairs, 1) * layers
    confidence = torch.nn.functional.binary_cross_entropy_with_logits(score_logits, score_targets)
    return l1 / normaliser, giou_loss / normaliser, confidence


@pytest.mark.parametrize("seed", range(6))
def test_vectorised_box_losses_equal_the_per_box_reference(seed):
    problem = _random_problem(seed)
    got = box_losses(*problem, weight_l1=5.0, weight_giou=2.0)
    expected = _reference_box_losses(*problem)
    for name, a, b in zip(("l1", "giou", "confidence"), got, expected):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), (name, a, b)


@pytest.mark.parametrize(("k", "targets"), [(3, 3), (3, 2), (3, 5), (1, 4), (4, 4), (2, 1)])
def test_matcher_finds_the_minimum_cost_assignment_like_scipy(k, targets):
    from scipy.optimize import linear_sum_assignment

    generator = torch.Generator().manual_seed(k * 10 + targets)
    cost = torch.randn(200, k, targets, generator=generator)
    mask = torch.rand(200, targets, generator=generator) < 0.7
    mask[:, 0] = True  # every finding has at least one real box
    match = match_queries_to_targets(cost, mask)
    for m in range(cost.shape[0]):
        real = mask[m].nonzero().flatten()
        rows, cols = linear_sum_assignment(cost[m][:, real].numpy())
        best = cost[m][:, real][rows, cols].sum()
        queries = (match[m] >= 0).nonzero().flatten()
        chosen = match[m, queries]
        assert len(queries) == min(k, len(real))  # one-to-one, as many pairs as possible
        assert len(set(chosen.tolist())) == len(chosen) and mask[m, chosen].all()  # distinct real targets
        assert torch.isclose(cost[m, queries, chosen].sum(), best, atol=1e-5)


def _pyramid_model():
    return medrg.build_tiny_medrg(
        seed=0,
        box_feature_levels=[1, 2],
        box_feature_channels=[16, 32],
        box_initial_source="text",
        box_sampling_window=2.0,
    )


def test_feature_pyramid_decoder_trains_from_cached_vision_maps():
    """A text-first decoder over two feature levels: the loss from cached `encode_vision` maps equals the loss from
    the pixels, and the box losses reach every level's projection."""
    model, processor = _pyramid_model()
    model.eval()
    batch = _batch(processor)
    from_pixels = model(**batch)
    maps = model.encode_vision(batch["pixel_values"])
    assert len(maps) == 3 and [m.shape[-1] for m in maps[1:]] == [16, 32]
    cached = {k: v for k, v in batch.items() if k not in ("pixel_values", "image_sizes")}
    from_maps = model(**cached, vision_maps=maps)
    torch.testing.assert_close(from_maps.loss, from_pixels.loss)
    torch.testing.assert_close(from_maps.pred_boxes, from_pixels.pred_boxes)
    from_maps.loss.backward()
    for level in model.box_decoder.level_proj:
        assert level.weight.grad is not None and level.weight.grad.abs().sum() > 0
    assert not hasattr(model.box_decoder, "initial_cross_attn")


def test_text_first_box_does_not_depend_on_the_image():
    """With box_initial_source="text" the first box is what the phrase says: the image reaches it only through the
    LM's `<BOX>` state (two images: nearly the same first box); the refinement layers sample the image."""
    model, processor = _pyramid_model()
    model.eval()
    images = [xray_like(seed=1), xray_like(seed=2, boxes=[(5, 5, 60, 60)])]
    batch = processor(images=images, text=REPORTS[:1] * 2, findings=[FINDINGS[0]] * 2)
    with torch.no_grad():
        out = model(**batch)
    first, last = out.intermediate_boxes[0], out.intermediate_boxes[-1]
    first_gap, last_gap = (first[0] - first[1]).abs().max(), (last[0] - last[1]).abs().max()
    assert first_gap < 1e-3 and last_gap > 0


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"box_feature_levels": [1]}, "box_feature_channels"),
        ({"box_feature_levels": [1, 2], "box_feature_channels": [16]}, "one width per"),
        ({"box_feature_channels": [16]}, "needs box_feature_levels"),
        ({"box_initial_source": "report"}, "box_initial_source"),
        ({"box_sampling_window": 0}, "box_sampling_window"),
    ],
)
def test_feature_pyramid_settings_are_checked(overrides, message):
    with pytest.raises(StrictDataclassError, match=message):
        medrg.MedRGConfig(**overrides)


def test_activation_checkpointing_recomputes_the_vision_tower_with_the_same_gradients():
    """`activation_checkpointing_enable()` (the `training.activation_checkpointing` of a config) covers a trained vision tower too (its activations are recomputed in the
    backward pass): the same loss and the same gradients as without it."""
    results = []
    for enable in (False, True):
        model, processor = medrg.build_tiny_medrg(seed=0)
        model.train()
        if enable:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            assert model.model.gradient_checkpointing
        calls = []
        model.model.vision_tower.register_forward_pre_hook(lambda module, args, calls=calls: calls.append(1))
        out = model(**_batch(processor))
        out.loss.backward()
        assert len(calls) == (2 if enable else 1)  # recomputed in the backward pass
        tower = [p.grad.clone() for p in model.model.vision_tower.parameters() if p.grad is not None]
        results.append((out.loss.detach(), tower))
    (loss, grads), (loss_ckpt, grads_ckpt) = results
    torch.testing.assert_close(loss_ckpt, loss)
    assert len(grads) == len(grads_ckpt) > 0
    for plain, recomputed in zip(grads, grads_ckpt):
        torch.testing.assert_close(recomputed, plain, rtol=1e-4, atol=1e-6)


def test_images_encoded_once_reach_forward_and_generate_as_transformers_pre_encoded_input(tiny):
    """`get_image_features` gives a `MedRGImageOutput`; `forward(mm_encoder_outputs={"image": ...})` equals the
    forward on `pixel_values`; plain `generate` and `generate_grounding` run the vision tower once per call (generate
    pre-encodes the image and hands it to the prefill); both inputs at once are refused."""
    model, processor = tiny
    batch = _batch(processor)
    image = model.get_image_features(batch["pixel_values"])
    assert isinstance(image, medrg.modeling_medrg.medrg_outputs.MedRGImageOutput)
    assert image.pooler_output.shape[:2] == (3, model.config.num_image_tokens)
    inputs = {
        k: batch[k] for k in ("input_ids", "attention_mask", "labels", "target_boxes", "target_boxes_mask")
    }
    with torch.no_grad():
        from_pixels = model(**inputs, pixel_values=batch["pixel_values"])
        encoded = model(**inputs, mm_encoder_outputs={"image": image})
    torch.testing.assert_close(encoded.logits, from_pixels.logits)
    torch.testing.assert_close(encoded.pred_boxes, from_pixels.pred_boxes)
    assert torch.equal(encoded.box_mask, from_pixels.box_mask)
    with pytest.raises(ValueError, match="Pass the images once"):
        model(**inputs, pixel_values=batch["pixel_values"], mm_encoder_outputs={"image": image})
    calls = []
    hook = model.model.vision_tower.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        prompt = processor(images=[xray_like(seed=0)], text=REPORTS[:1])
        model.generate(
            **{k: prompt[k] for k in ("input_ids", "pixel_values", "attention_mask")}, max_new_tokens=3
        )
        assert len(calls) == 1
        model.generate_grounding(**processor(images=[xray_like(seed=0)], text=REPORTS[:1], guided=True))
        assert len(calls) == 2
    finally:
        hook.remove()
