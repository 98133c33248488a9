"""MedRG: a multimodal causal LM that writes finding phrases with `<BOX>` tokens, and a box decoder that
turns the LM's hidden state at every `<BOX>` into K boxes with confidences."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import AutoModel, AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.utils import ModelOutput, logging

from .configuration_medrg import MedRGConfig
from .medrg_box_decoder import MedRGBoxDecoder
from .medrg_box_ops import box_cxcywh_to_xyxy, linear_sum_assignment, pairwise_iou_giou

logger = logging.get_logger(__name__)


@dataclass
class MedRGOutput(ModelOutput):
    r"""
    Output of [`MedRGForReportGrounding.forward`].

    Args:
        loss (`torch.FloatTensor` of shape `()`): weighted sum of the parts below (when `labels` are given).
        lm_loss (`torch.FloatTensor` of shape `()`): cross-entropy on the answer tokens only.
        box_l1_loss (`torch.FloatTensor` of shape `()`): L1 of the matched boxes (cxcywh, summed over the 4
            coordinates, per ground-truth box, averaged over decoder layers).
        box_giou_loss (`torch.FloatTensor` of shape `()`): 1 - GIoU of the matched boxes, same normalisation.
        box_confidence_loss (`torch.FloatTensor` of shape `()`): BCE of each query's confidence against the IoU
            of its matched box (0 for unmatched queries).
        logits (`torch.FloatTensor` of shape `(batch, sequence, vocab)`): next-token scores of the LM.
        cache (`transformers.Cache`): the LM's key/value cache for generation.
        pred_boxes (`torch.FloatTensor` of shape `(num_box_tokens, K, 4)`): boxes of every `<BOX>` in the batch, in
            order (sample, position), as normalised `(cx, cy, w, h)` of the letterboxed model frame.
        pred_scores (`torch.FloatTensor` of shape `(num_box_tokens, K)`): confidence in [0, 1] of each box.
        box_batch_index (`torch.LongTensor` of shape `(num_box_tokens,)`): the sample of each `<BOX>`.
        box_token_positions (`torch.LongTensor` of shape `(num_box_tokens,)`): the sequence position of each `<BOX>`.
        intermediate_boxes (`torch.FloatTensor` of shape `(layers + 1, num_box_tokens, K, 4)`): the first,
            guess (one global look at the image) and every decoder layer's boxes.
    """

    loss: torch.FloatTensor | None = None
    lm_loss: torch.FloatTensor | None = None
    box_l1_loss: torch.FloatTensor | None = None
    box_giou_loss: torch.FloatTensor | None = None
    box_confidence_loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    cache: object | None = None
    pred_boxes: torch.FloatTensor | None = None
    pred_scores: torch.FloatTensor | None = None
    box_batch_index: torch.LongTensor | None = None
    box_token_positions: torch.LongTensor | None = None
    intermediate_boxes: torch.FloatTensor | None = None


@dataclass
class MedRGGroundingOutput(ModelOutput):
    r"""
    Output of [`MedRGForReportGrounding.generate_grounding`].

    Args:
        sequences (`torch.LongTensor` of shape `(batch, prompt + generated)`): prompt and generated ids.
        prompt_length (`int`): length of the (left-padded) prompt; generated ids start there.
        generated_mask (`torch.LongTensor` of shape `(batch, generated)`): 1 up to and including the first EOS.
        pred_boxes (`list[torch.FloatTensor]`): per sample, `(n_i, K, 4)` normalised cxcywh per generated `<BOX>`.
        pred_scores (`list[torch.FloatTensor]`): per sample, `(n_i, K)` confidences in [0, 1].
        box_token_positions (`list[torch.LongTensor]`): per sample, `(n_i,)` positions of the `<BOX>` tokens in
            `sequences`.
    """

    sequences: torch.LongTensor | None = None
    prompt_length: int | None = None
    generated_mask: torch.LongTensor | None = None
    pred_boxes: list | None = None
    pred_scores: list | None = None
    box_token_positions: list | None = None


class MedRGProjector(nn.Module):
    """Two-layer MLP from vision features to the LM's embedding width (LLaVA-1.5 style)."""

    def __init__(self, vision_dim: int, text_dim: int, act: str):
        super().__init__()
        self.linear_1 = nn.Linear(vision_dim, text_dim)
        self.act = ACT2FN[act]
        self.linear_2 = nn.Linear(text_dim, text_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(features)))


def _feature_channels(config) -> int:
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


class MedRGPreTrainedModel(PreTrainedModel):
    config_class = MedRGConfig
    base_model_prefix = ""
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True
    # Losses are normalised inside forward (per token / per box), so Trainer must not rescale by
    # num_items_in_batch; it averages micro-batches under gradient accumulation instead.
    accepts_loss_kwargs = False


class MedRGForReportGrounding(MedRGPreTrainedModel, GenerationMixin):
    """Vision tower -> projector -> `<image>` placeholders of a causal LM; the LM's last hidden state at every
    `<BOX>` token is decoded into K boxes + confidences by [`MedRGBoxDecoder`] over the grounding features."""

    def __init__(self, config: MedRGConfig):
        super().__init__(config)
        if config.image_token_id is None or config.box_token_id is None:
            raise ValueError(
                "MedRGConfig.image_token_id and box_token_id must be set (ids of <image> and <BOX> in the tokenizer)"
            )
        self.vision_tower = AutoModel.from_config(config.vision_config)
        self.grounding_encoder = (
            AutoModel.from_config(config.grounding_vision_config)
            if config.box_feature_source == "grounding_encoder"
            else None
        )
        text_dim = config.text_config.hidden_size
        self.multi_modal_projector = MedRGProjector(
            _feature_channels(config.vision_config), text_dim, config.projector_hidden_act
        )
        self.language_model = AutoModelForCausalLM.from_config(config.text_config)
        grounding_config = (
            config.grounding_vision_config if self.grounding_encoder is not None else config.vision_config
        )
        self.box_decoder = MedRGBoxDecoder(config, text_dim, _feature_channels(grounding_config))
        self.post_init()

    # ----- embeddings (delegated to the LM so resize_token_embeddings works) -----
    def get_input_embeddings(self):
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self):
        return self.language_model.get_output_embeddings()

    def set_output_embeddings(self, value):
        self.language_model.set_output_embeddings(value)

    # ----- images -----
    def _encode(self, encoder: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
        """Run a vision model; return its features as a grid `(batch, height, width, channels)`."""
        layer = self.config.vision_feature_layer
        outputs = encoder(pixel_values=pixel_values, output_hidden_states=layer != -1, return_dict=True)
        features = outputs.last_hidden_state if layer == -1 else outputs.hidden_states[layer]
        if features.dim() == 4:  # CNN map (batch, channels, height, width)
            return features.permute(0, 2, 3, 1)
        if features.dim() != 3:
            raise ValueError(
                f"Vision features must be 3-D tokens or a 4-D map, got shape {tuple(features.shape)}"
            )
        if self.config.vision_feature_select == "default":
            features = features[:, 1:]
        side = int(round(features.shape[1] ** 0.5))
        if side * side != features.shape[1]:
            raise ValueError(
                f"The vision tower gives {features.shape[1]} tokens after vision_feature_select="
                f"{self.config.vision_feature_select!r}, which is not a square grid; set vision_feature_select "
                '("default" drops a CLS token, "full" keeps all)'
            )
        return features.reshape(features.shape[0], side, side, features.shape[2])

    def image_features(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the projected LM tokens `(batch, num_image_tokens, hidden)` and the vision grid
        `(batch, height, width, channels)`."""
        grid = self._encode(self.vision_tower, pixel_values)
        pooled = grid
        pool = self.config.image_token_pooling
        if pool > 1:
            pooled = F.avg_pool2d(grid.permute(0, 3, 1, 2), pool, ceil_mode=True).permute(0, 2, 3, 1)
        tokens = self.multi_modal_projector(pooled.flatten(1, 2))
        return tokens, grid

    @torch.no_grad()
    def probe_num_image_tokens(self, image_size: int) -> int:
        """Number of `<image>` placeholders this model needs for a square `image_size` input."""
        channels = getattr(self.config.vision_config, "num_channels", 3)
        device = next(self.vision_tower.parameters()).device
        dtype = next(self.vision_tower.parameters()).dtype
        was_training = self.training
        self.eval()
        tokens, _ = self.image_features(
            torch.zeros(1, channels, image_size, image_size, device=device, dtype=dtype)
        )
        self.train(was_training)
        return int(tokens.shape[1])

    def _merge_image_tokens(
        self, input_ids: torch.Tensor, inputs_embeds: torch.Tensor, image_tokens: torch.Tensor
    ) -> torch.Tensor:
        placeholder = input_ids == self.config.image_token_id
        counts = placeholder.sum(dim=1)
        expected = image_tokens.shape[1]
        wrong = (counts != expected).nonzero().flatten().tolist()
        if wrong:
            sample = wrong[0]
            raise ValueError(
                f"Sample {sample} holds {int(counts[sample])} <image> tokens but the vision tower gives {expected} "
                f"features per image (config.num_image_tokens={self.config.num_image_tokens}); build the inputs "
                "with the matching MedRGProcessor"
            )
        if image_tokens.shape[0] != input_ids.shape[0]:
            raise ValueError(
                f"Got {image_tokens.shape[0]} images for {input_ids.shape[0]} token sequences; MedRG takes one "
                "image per sequence"
            )
        mask = placeholder.unsqueeze(-1).expand_as(inputs_embeds)
        return inputs_embeds.masked_scatter(mask, image_tokens.to(inputs_embeds.dtype))

    # ----- forward -----
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        target_boxes: torch.FloatTensor | None = None,
        target_boxes_mask: torch.BoolTensor | None = None,
        grounding_pixel_values: torch.FloatTensor | None = None,
        image_sizes: torch.LongTensor | None = None,
        **kwargs,
    ) -> MedRGOutput:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch, sequence)`): prompt (+ answer when training) with
                `config.num_image_tokens` `<image>` placeholders per sample.
            pixel_values (`torch.FloatTensor` of shape `(batch, channels, size, size)`): letterboxed images.
            attention_mask (`torch.Tensor` of shape `(batch, sequence)`): 1 for real tokens, 0 for padding (left).
            position_ids: default: derived from `attention_mask`, so left padding does not shift positions.
            cache: the LM's key/value cache (generation).
            labels (`torch.LongTensor` of shape `(batch, sequence)`): answer token ids, -100 elsewhere.
            target_boxes (`torch.FloatTensor` of shape `(batch, findings, boxes, 4)`): ground-truth boxes of the
                i-th `<BOX>` of each sample, normalised cxcywh in the model frame.
            target_boxes_mask (`torch.BoolTensor` of shape `(batch, findings, boxes)`): which target boxes are real.
            grounding_pixel_values: input of the separate grounding encoder (default: `pixel_values`).
            image_sizes: original `(height, width)` per image from the processor; only post-processing uses it.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        vision_grid = None
        if pixel_values is not None:
            if input_ids is None:
                raise ValueError("pixel_values need input_ids to find the <image> placeholders")
            image_tokens, vision_grid = self.image_features(pixel_values.to(self.vision_tower.dtype))
            inputs_embeds = self._merge_image_tokens(input_ids, inputs_embeds, image_tokens)
        if position_ids is None and attention_mask is not None:
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -inputs_embeds.shape[1] :]

        box_positions = None
        if input_ids is not None and (pixel_values is not None or grounding_pixel_values is not None):
            is_box = input_ids == self.config.box_token_id
            if attention_mask is not None:
                is_box = is_box & attention_mask.bool()
            box_positions = is_box.nonzero()  # (M, 2): sample, position
        need_hidden = box_positions is not None and (box_positions.shape[0] > 0 or target_boxes is not None)

        kwargs.pop("output_hidden_states", None)
        kwargs.pop("return_dict", None)
        lm_outputs = self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            output_hidden_states=need_hidden,
            return_dict=True,
            **kwargs,
        )
        logits = lm_outputs.logits

        output = MedRGOutput(logits=logits, cache=getattr(lm_outputs, "cache", None))
        if need_hidden:
            if target_boxes is not None and target_boxes_mask is None:
                raise ValueError("target_boxes needs target_boxes_mask")
            grid = vision_grid
            if self.grounding_encoder is not None:
                source = grounding_pixel_values if grounding_pixel_values is not None else pixel_values
                grid = self._encode(self.grounding_encoder, source.to(self.grounding_encoder.dtype))
            last_hidden = lm_outputs.hidden_states[-1]
            batch_index, positions = box_positions[:, 0], box_positions[:, 1]
            if box_positions.shape[0] > 0:
                all_boxes, score_logits = self.box_decoder(
                    last_hidden, inputs_embeds, attention_mask, batch_index, positions, grid
                )
            else:  # no <BOX> in the batch: empty predictions (the losses below are zero)
                k, layers = self.config.num_box_queries, self.config.box_decoder_layers + 1
                all_boxes = last_hidden.new_zeros(layers, 0, k, 4)
                score_logits = last_hidden.new_zeros(0, k)
            output.pred_boxes = all_boxes[-1]
            output.pred_scores = score_logits.sigmoid()
            output.box_batch_index = batch_index
            output.box_token_positions = positions
            output.intermediate_boxes = all_boxes
            if target_boxes is not None:
                l1, giou, conf = self._box_losses(
                    all_boxes, score_logits, batch_index, target_boxes, target_boxes_mask
                )
                output.box_l1_loss, output.box_giou_loss, output.box_confidence_loss = l1, giou, conf

        if labels is not None:
            shift_logits = logits[:, :-1].float()
            shift_labels = labels[:, 1:].to(shift_logits.device)
            lm_loss = F.cross_entropy(
                shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1), ignore_index=-100
            )
            output.lm_loss = lm_loss
            loss = self.config.lm_loss_weight * lm_loss
            if output.box_l1_loss is not None:
                loss = (
                    loss
                    + self.config.box_l1_loss_weight * output.box_l1_loss
                    + self.config.box_giou_loss_weight * output.box_giou_loss
                    + self.config.box_confidence_loss_weight * output.box_confidence_loss
                )
            output.loss = loss
        return output

    def _box_losses(
        self,
        all_boxes: torch.Tensor,
        score_logits: torch.Tensor,
        batch_index: torch.Tensor,
        target_boxes: torch.Tensor,
        target_boxes_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Hungarian-matched L1 + GIoU (every decoder layer) and the confidence loss, one `<BOX>` per finding."""
        target_mask = target_boxes_mask.bool()
        findings_per_sample = target_mask.any(-1).sum(-1)  # (batch,)
        boxes_per_sample = torch.bincount(batch_index, minlength=target_boxes.shape[0])
        mismatch = (findings_per_sample != boxes_per_sample).nonzero().flatten().tolist()
        if mismatch:
            sample = mismatch[0]
            raise ValueError(
                f"Sample {sample} has {int(boxes_per_sample[sample])} <BOX> tokens but {int(findings_per_sample[sample])} "
                "target findings; every finding needs exactly one <BOX> in the answer"
            )
        num_layers, num_box_tokens, num_queries, _ = all_boxes.shape
        all_boxes = all_boxes.float()
        # the i-th <BOX> of a sample belongs to that sample's i-th finding
        order = torch.zeros_like(batch_index)
        for sample in range(target_boxes.shape[0]):
            selected = batch_index == sample
            order[selected] = torch.arange(int(selected.sum()), device=order.device)
        if num_box_tokens == 0:
            # keep every decoder parameter in the graph (DDP needs a gradient for each) with a zero loss
            zero = sum(p.sum() for p in self.box_decoder.parameters()) * 0.0
            return zero, zero, zero

        l1_total = all_boxes.new_zeros(())
        giou_total = all_boxes.new_zeros(())
        score_targets = torch.zeros_like(score_logits, dtype=torch.float32)
        num_targets = 0
        final = all_boxes[-1]
        weight_l1, weight_giou = self.config.box_l1_loss_weight, self.config.box_giou_loss_weight
        for m in range(num_box_tokens):
            sample, finding = int(batch_index[m]), int(order[m])
            gt = target_boxes[sample, finding][target_mask[sample, finding]].float()
            if gt.shape[0] > num_queries:
                logger.warning_once(
                    f"A finding has {gt.shape[0]} boxes but the model predicts {num_queries} per <BOX> "
                    "(config.num_box_queries); the extra boxes are not supervised"
                )
            with torch.no_grad():
                # match on the cost summed over all layers: a query keeps its target from step to step instead of
                # flipping with the last layer's noise (Hungarian flips are what make DETR-style decoders slow)
                gt_xyxy = box_cxcywh_to_xyxy(gt)
                cost = gt.new_zeros(num_queries, gt.shape[0])
                for layer in range(num_layers):
                    _, giou = pairwise_iou_giou(box_cxcywh_to_xyxy(all_boxes[layer, m]), gt_xyxy)
                    cost += weight_l1 * torch.cdist(all_boxes[layer, m], gt, p=1) - weight_giou * giou
                pairs = linear_sum_assignment(cost.cpu().tolist())
            rows = torch.tensor([p[0] for p in pairs], device=gt.device)
            cols = torch.tensor([p[1] for p in pairs], device=gt.device)
            matched_gt = gt[cols]
            num_targets += len(pairs)
            for layer in range(num_layers):
                pred = all_boxes[layer, m, rows]
                l1_total = l1_total + (pred - matched_gt).abs().sum()
                _, layer_giou = pairwise_iou_giou(box_cxcywh_to_xyxy(pred), box_cxcywh_to_xyxy(matched_gt))
                giou_total = giou_total + (1 - layer_giou.diagonal()).sum()
            with torch.no_grad():
                iou, _ = pairwise_iou_giou(box_cxcywh_to_xyxy(final[m, rows]), box_cxcywh_to_xyxy(matched_gt))
                score_targets[m, rows] = iou.diagonal().clamp(0, 1)
        normaliser = max(num_targets, 1) * num_layers
        confidence = F.binary_cross_entropy_with_logits(score_logits.float(), score_targets)
        return l1_total / normaliser, giou_total / normaliser, confidence

    # ----- generation -----
    @torch.no_grad()
    def generate_grounding(
        self,
        input_ids: torch.LongTensor,
        pixel_values: torch.FloatTensor,
        attention_mask: torch.Tensor | None = None,
        max_new_tokens: int = 64,
        grounding_pixel_values: torch.FloatTensor | None = None,
        **generate_kwargs,
    ) -> MedRGGroundingOutput:
        """Greedy-generate the answer (phrases with `<BOX>`), then ground every generated `<BOX>`.

        The boxes come from one teacher-forced pass over prompt + answer, exactly as in training, so a `<BOX>`
        that is the last generated token is grounded too.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        generate_kwargs.setdefault("do_sample", False)
        sequences = self.generate(
            input_ids=input_ids,
            pixel_values=pixel_values,
            attention_mask=attention_mask,
            max_new_tokens=max_new_tokens,
            **generate_kwargs,
        )
        if not torch.is_tensor(sequences):
            sequences = sequences.sequences
        prompt_length = input_ids.shape[1]
        generated = sequences[:, prompt_length:]
        eos = self.generation_config.eos_token_id
        eos_ids = torch.tensor(
            [] if eos is None else ([eos] if isinstance(eos, int) else list(eos)), device=generated.device
        )
        is_eos = torch.isin(generated, eos_ids)
        # 1 up to and including the first EOS, 0 after it
        generated_mask = (torch.cumsum(is_eos.long(), dim=1) - is_eos.long() == 0).long()
        full_mask = torch.cat((attention_mask.long(), generated_mask), dim=1)
        outputs = self(
            input_ids=sequences,
            pixel_values=pixel_values,
            attention_mask=full_mask,
            grounding_pixel_values=grounding_pixel_values,
            use_cache=False,
            logits_to_keep=1,
        )
        boxes, scores, positions = [], [], []
        for sample in range(sequences.shape[0]):
            if outputs.pred_boxes is None:
                boxes.append(torch.zeros(0, self.config.num_box_queries, 4))
                scores.append(torch.zeros(0, self.config.num_box_queries))
                positions.append(torch.zeros(0, dtype=torch.long))
                continue
            keep = (outputs.box_batch_index == sample) & (outputs.box_token_positions >= prompt_length)
            boxes.append(outputs.pred_boxes[keep].float())
            scores.append(outputs.pred_scores[keep].float())
            positions.append(outputs.box_token_positions[keep])
        return MedRGGroundingOutput(
            sequences=sequences,
            prompt_length=prompt_length,
            generated_mask=generated_mask,
            pred_boxes=boxes,
            pred_scores=scores,
            box_token_positions=positions,
        )

    # ----- assembly from pretrained parts -----
    @classmethod
    def from_backbones(
        cls,
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
        """Assemble MedRG from a pretrained causal LM and a pretrained vision model (objects or local folders).

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
        model = cls(config)
        model.vision_tower = vision_model
        model.language_model = text_model
        model.config.vision_config = vision_model.config
        model.config.text_config = text_model.config
        model.resize_token_embeddings(vocab_size)
        model.config.num_image_tokens = model.probe_num_image_tokens(image_size)
        model.generation_config = text_model.generation_config
        return model


__all__ = ["MedRGForReportGrounding", "MedRGGroundingOutput", "MedRGOutput", "MedRGPreTrainedModel"]
