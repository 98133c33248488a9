"""MedRG: a multimodal causal LM that writes finding phrases with `<BOX>` tokens, and a box decoder that
turns the LM's hidden state at every `<BOX>` into K boxes with confidences."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint
from transformers import AutoModel, AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.utils import logging

from .configuration_medrg import MedRGConfig, feature_channels
from .medrg_box_decoder import MedRGBoxDecoder, box_references
from .medrg_generation import MedRGGenerateOutput, generated_box_mask, jump_forward_decoding
from .medrg_loss import box_losses, check_box_counts
from .medrg_outputs import (
    MedRGGroundingOutput,
    MedRGImageOutput,
    MedRGModelOutputWithPast,
    MedRGOutput,
    box_slots,
    no_boxes,
)

logger = logging.get_logger(__name__)


class MedRGProjector(nn.Module):
    """Two-layer MLP from vision features to the LM's embedding width (LLaVA-1.5 style)."""

    def __init__(self, vision_dim: int, text_dim: int, act: str):
        super().__init__()
        self.linear_1 = nn.Linear(vision_dim, text_dim)
        self.act = ACT2FN[act]
        self.linear_2 = nn.Linear(text_dim, text_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(features)))


class MedRGPreTrainedModel(PreTrainedModel):
    config_class = MedRGConfig
    base_model_prefix = "model"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True
    # Losses are normalised inside forward (per token / per box), so Trainer must not rescale by
    # num_items_in_batch; it averages micro-batches under gradient accumulation instead.
    accepts_loss_kwargs = False

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """[`PreTrainedModel.from_pretrained`], but a checkpoint whose MedRG weights are missing, unexpected or of
        another shape is an error (transformers would initialise them randomly and only log a table, which turns
        the boxes into garbage silently). Returns `(model, loading_info)` when `output_loading_info=True`."""
        wants_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(
            pretrained_model_name_or_path, *model_args, output_loading_info=True, **kwargs
        )
        problems = []
        for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
            keys = sorted(str(key if isinstance(key, str) else key[0]) for key in info.get(kind) or ())
            if keys:
                shown = ", ".join(keys[:5]) + (", ..." if len(keys) > 5 else "")
                problems.append(f"{len(keys)} {kind.replace('_', ' ')} ({shown})")
        if problems:
            raise ValueError(
                f"The checkpoint {str(pretrained_model_name_or_path)!r} does not match {cls.__name__}: "
                f"{'; '.join(problems)}. Loading it would leave these weights randomly initialised; use a "
                "complete checkpoint of the same configuration"
            )
        return (model, info) if wants_info else model


class MedRGModel(MedRGPreTrainedModel):
    """The multimodal base: vision tower (+ optional grounding encoder) -> projector -> `<image>` placeholders of a
    causal LM. Returns the LM's logits and hidden states; [`MedRGForReportGrounding`] adds the box decoder."""

    def __init__(self, config: MedRGConfig):
        super().__init__(config)
        self.vision_tower = AutoModel.from_config(config.vision_config)
        self.grounding_encoder = (
            AutoModel.from_config(config.grounding_vision_config)
            if config.box_feature_source == "grounding_encoder"
            else None
        )
        self.multi_modal_projector = MedRGProjector(
            config.vision_feature_channels or feature_channels(config.vision_config),
            config.text_config.hidden_size,
            config.projector_hidden_act,
        )
        self.language_model = AutoModelForCausalLM.from_config(config.text_config)
        # set by `activation_checkpointing_enable()` (with the LM's layers): a trained vision tower's activations are
        # recomputed in the backward pass instead of kept
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.language_model.set_input_embeddings(value)

    def _encode(
        self, encoder: nn.Module, pixel_values: torch.Tensor, levels: list[int] | None = None
    ) -> tuple[torch.Tensor, ...]:
        """Run a vision model; return the grid `(batch, height, width, channels)` of `vision_feature_layer`,
        followed by the grid of each of `levels` (indices into its hidden states)."""
        layer = self.config.vision_feature_layer
        hidden = layer != -1 or bool(levels)

        def run(pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
            outputs = encoder(pixel_values=pixels, output_hidden_states=hidden, return_dict=True)
            return (outputs.last_hidden_state, *(outputs.hidden_states or ()))

        trains = (
            self.training and torch.is_grad_enabled() and any(p.requires_grad for p in encoder.parameters())
        )
        if self.gradient_checkpointing and trains:
            # recomputed in backward (BatchNorm running statistics then see the batch twice)
            last, *hidden_states = checkpoint(run, pixel_values, use_reentrant=False)
        else:
            last, *hidden_states = run(pixel_values)
        features = last if layer == -1 else hidden_states[layer]
        grids = [self._as_grid(features)]
        for level in levels or ():
            if level >= len(hidden_states):
                raise ValueError(
                    f"MedRGConfig.box_feature_levels asks for hidden state {level}; the vision tower gives "
                    f"{len(hidden_states)}"
                )
            grids.append(self._as_grid(hidden_states[level]))
        return tuple(grids)

    def _as_grid(self, features: torch.Tensor) -> torch.Tensor:
        """Vision features (a CNN map or ViT tokens) as a grid `(batch, height, width, channels)`."""
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

    def encode_vision(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The vision tower's raw feature grids `(batch, height, width, channels)`: the grid of
        `vision_feature_layer`, then one per `box_feature_levels` entry. A frozen tower's `encode_vision` can be
        computed once per image and passed as `vision_maps` (training with cached features)."""
        return self._encode(
            self.vision_tower, pixel_values.to(self.vision_tower.dtype), self.config.box_feature_levels
        )

    def get_image_features(
        self,
        pixel_values: torch.Tensor | None = None,
        vision_maps: tuple[torch.Tensor, ...] | None = None,
        return_dict: bool = True,
    ) -> MedRGImageOutput | tuple:
        """`pixel_values` `(batch, channels, size, size)` (or their `encode_vision` maps) -> [`MedRGImageOutput`]:
        the projected LM tokens `(batch, num_image_tokens, hidden)` (`pooler_output`) and the box decoder's
        `feature_maps`: the vision grid `(batch, height, width, channels)` (full resolution), or a tuple of grids,
        finest first, with `box_feature_levels`. `return_dict=False`: the two as a tuple."""
        maps = vision_maps if vision_maps is not None else self.encode_vision(pixel_values)
        expected = 1 + len(self.config.box_feature_levels or ())
        if len(maps) != expected:
            raise ValueError(
                f"vision_maps must hold {expected} feature grids (encode_vision), got {len(maps)}"
            )
        grid = maps[0].to(self.multi_modal_projector.linear_1.weight.dtype)
        pooled = grid
        pool = self.config.image_token_pooling
        if pool > 1:
            pooled = F.avg_pool2d(grid.permute(0, 3, 1, 2), pool, ceil_mode=True).permute(0, 2, 3, 1)
        tokens = self.multi_modal_projector(pooled.flatten(1, 2))
        output = MedRGImageOutput(
            pooler_output=tokens, feature_maps=tuple(maps[1:]) if self.config.box_feature_levels else grid
        )
        return output if return_dict else output.to_tuple()

    def get_grounding_features(
        self, pixel_values: torch.Tensor, vision_grid: torch.Tensor | None, grounding_pixel_values=None
    ) -> torch.Tensor:
        """The feature grid `(batch, height, width, channels)` the box decoder reads: the separate grounding
        encoder's (on `grounding_pixel_values`, default `pixel_values`) or the vision tower's `vision_grid`."""
        if self.grounding_encoder is None:
            return vision_grid
        source = grounding_pixel_values if grounding_pixel_values is not None else pixel_values
        return self._encode(self.grounding_encoder, source.to(self.grounding_encoder.dtype))[0]

    def get_placeholder_mask(self, input_ids: torch.Tensor, image_features: torch.Tensor) -> torch.Tensor:
        """`(batch, sequence)` bool mask of the `<image>` placeholders; raises when a sample's count differs from
        the `(batch, num_image_tokens, hidden)` image features or the numbers of images and sequences differ."""
        placeholder = input_ids == self.config.image_token_id
        counts = placeholder.sum(dim=1)
        expected = image_features.shape[1]
        if bool((counts != expected).any()):
            sample = int((counts != expected).nonzero()[0, 0])
            raise ValueError(
                f"Sample {sample} holds {int(counts[sample])} <image> tokens but the vision tower gives {expected} "
                f"features per image (config.num_image_tokens={self.config.num_image_tokens}); build the inputs "
                "with the matching MedRGProcessor"
            )
        if image_features.shape[0] != input_ids.shape[0]:
            raise ValueError(
                f"Got {image_features.shape[0]} images for {input_ids.shape[0]} token sequences; MedRG takes one "
                "image per sequence"
            )
        return placeholder

    def merge_image_features(
        self, input_ids: torch.Tensor, inputs_embeds: torch.Tensor, image_features: torch.Tensor
    ) -> torch.Tensor:
        """Scatter `image_features` into the `<image>` placeholders of `inputs_embeds` `(batch, sequence, hidden)`."""
        mask = self.get_placeholder_mask(input_ids, image_features).unsqueeze(-1).expand_as(inputs_embeds)
        return inputs_embeds.masked_scatter(mask, image_features.to(inputs_embeds.dtype))

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        inputs_embeds: torch.FloatTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        output_hidden_states: bool = False,
        vision_maps: tuple[torch.Tensor, ...] | None = None,
        mm_encoder_outputs: dict | None = None,
        **kwargs,
    ) -> MedRGModelOutputWithPast:
        """Shapes as in [`MedRGForReportGrounding.forward`]; position ids default to the attention mask's cumsum,
        so left padding does not shift positions. `vision_maps`: `encode_vision(pixel_values)` computed before,
        instead of `pixel_values`; `mm_encoder_outputs`: `{"image": get_image_features(...)}` computed before
        (transformers' pre-encoded multimodal input: `generate` passes it to the prefill), instead of either."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        image = (mm_encoder_outputs or {}).get("image")
        if image is not None and (pixel_values is not None or vision_maps is not None):
            raise ValueError("Pass the images once: pixel_values, vision_maps or mm_encoder_outputs")
        if image is None and (pixel_values is not None or vision_maps is not None):
            image = self.get_image_features(pixel_values, vision_maps)
        if image is not None:
            if input_ids is None:
                raise ValueError("pixel_values need input_ids to find the <image> placeholders")
            inputs_embeds = self.merge_image_features(input_ids, inputs_embeds, image.pooler_output)
        if position_ids is None and attention_mask is not None:
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -inputs_embeds.shape[1] :]
        kwargs.pop("return_dict", None)
        outputs = self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            **kwargs,
        )
        return MedRGModelOutputWithPast(
            logits=outputs.logits,
            cache=getattr(outputs, "cache", None),
            hidden_states=outputs.hidden_states if output_hidden_states else None,
            inputs_embeds=inputs_embeds,
            image_outputs=image,
        )


class MedRGForReportGrounding(MedRGPreTrainedModel, GenerationMixin):
    """[`MedRGModel`] + a box decoder: the LM's last hidden state at every `<BOX>` token is decoded into K boxes +
    confidences by [`MedRGBoxDecoder`] over the grounding features; training adds the matched box losses."""

    def __init__(self, config: MedRGConfig):
        super().__init__(config)
        if config.image_token_id is None or config.box_token_id is None:
            raise ValueError(
                "MedRGConfig.image_token_id and box_token_id must be set (ids of <image> and <BOX> in the tokenizer)"
            )
        self.model = MedRGModel(config)
        grounding_config = (
            config.grounding_vision_config
            if config.box_feature_source == "grounding_encoder"
            else config.vision_config
        )
        memory_channels = (
            config.box_feature_channels if config.box_feature_levels else [feature_channels(grounding_config)]
        )
        self.box_decoder = MedRGBoxDecoder(config, config.text_config.hidden_size, memory_channels)
        # the LM loss is the causal LM's (the class name names no loss transformers knows)
        self.loss_type = "ForCausalLM"
        self.post_init()

    # ----- parts of the base model, under their usual names -----
    @property
    def vision_tower(self) -> nn.Module:
        return self.model.vision_tower

    @property
    def grounding_encoder(self) -> nn.Module | None:
        return self.model.grounding_encoder

    @property
    def multi_modal_projector(self) -> nn.Module:
        return self.model.multi_modal_projector

    @property
    def language_model(self) -> nn.Module:
        return self.model.language_model

    # ----- embeddings (delegated to the LM so resize_token_embeddings works) -----
    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self):
        return self.model.language_model.get_output_embeddings()

    def set_output_embeddings(self, value):
        self.model.language_model.set_output_embeddings(value)

    def get_image_features(
        self, pixel_values: torch.Tensor | None = None, vision_maps=None, return_dict=True
    ):
        """See [`MedRGModel.get_image_features`]."""
        return self.model.get_image_features(pixel_values, vision_maps, return_dict)

    def encode_vision(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """See [`MedRGModel.encode_vision`]."""
        return self.model.encode_vision(pixel_values)

    @torch.no_grad()
    def probe_num_image_tokens(self, image_size: int) -> int:
        """Number of `<image>` placeholders this model needs for a square `image_size` input."""
        channels = getattr(self.config.vision_config, "num_channels", 3)
        device = next(self.vision_tower.parameters()).device
        dtype = next(self.vision_tower.parameters()).dtype
        was_training = self.training
        self.eval()
        image = self.get_image_features(
            torch.zeros(1, channels, image_size, image_size, device=device, dtype=dtype)
        )
        self.train(was_training)
        return int(image.pooler_output.shape[1])

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
        vision_maps: tuple[torch.Tensor, ...] | None = None,
        mm_encoder_outputs: dict | None = None,
        reference_boxes: torch.FloatTensor | None = None,
        reference_boxes_mask: torch.BoolTensor | None = None,
        **kwargs,
    ) -> MedRGOutput:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch, sequence)`): prompt (+ answer when training) with
                `config.num_image_tokens` `<image>` placeholders per sample.
            pixel_values (`torch.FloatTensor` of shape `(batch, channels, size, size)`): letterboxed images
                (finite values; NaN/inf is an error).
            attention_mask (`torch.Tensor` of shape `(batch, sequence)`): 1 for real tokens, 0 for padding (left).
            position_ids: default: derived from `attention_mask`, so left padding does not shift positions.
            cache: the LM's key/value cache (generation).
            labels (`torch.LongTensor` of shape `(batch, sequence)`): answer token ids, -100 elsewhere.
            target_boxes (`torch.FloatTensor` of shape `(batch, findings, boxes, 4)`): ground-truth boxes of the
                i-th `<BOX>` of each sample, normalised cxcywh in the model frame.
            target_boxes_mask (`torch.BoolTensor` of shape `(batch, findings, boxes)`): which target boxes are real.
            grounding_pixel_values: input of the separate grounding encoder (default: `pixel_values`).
            image_sizes: original `(height, width)` per image from the processor; only post-processing uses it.
            vision_maps: optional `encode_vision(pixel_values)` of the images (the vision tower's raw feature
                grids), used instead of `pixel_values`: a frozen tower's features cached once per image and
                augmentation, while the projector, LM and box decoder train on them.
            mm_encoder_outputs: optional `{"image": get_image_features(pixel_values)}` ([`MedRGImageOutput`]),
                computed before and used instead of `pixel_values` (transformers' pre-encoded multimodal input:
                `generate` encodes each image once and passes it to the prefill).
            reference_boxes (`torch.FloatTensor` of shape `(batch, findings, [starts,] 4)`): optional first box of
                the i-th `<BOX>` of each sample (normalised cxcywh in the model frame; the processor's `box_prior`
                reads it off the phrase; two starts for a bilateral finding, one per side, the box queries taking
                them in turn): the box decoder refines it instead of its own first guess.
                `reference_boxes_mask` `(batch, findings)`: which of them are given.
        """
        self._check_inputs(input_ids, inputs_embeds, target_boxes, target_boxes_mask)
        self._check_finite_pixels(pixel_values=pixel_values, grounding_pixel_values=grounding_pixel_values)
        has_images = pixel_values is not None or vision_maps is not None or bool(mm_encoder_outputs)
        box_positions = self._find_box_tokens(input_ids, attention_mask, has_images, grounding_pixel_values)
        need_hidden = box_positions is not None and (box_positions.shape[0] > 0 or target_boxes is not None)
        # asked for by the decoding loop (`medrg_generation`: the states of the generated tokens it feeds)
        return_hidden = bool(kwargs.pop("output_hidden_states", False))
        outputs = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            output_hidden_states=need_hidden or return_hidden,
            vision_maps=vision_maps,
            mm_encoder_outputs=mm_encoder_outputs,
            **kwargs,
        )
        # images: the box slots, empty until the box decoder fills them
        empty = (
            no_boxes(len(input_ids), self.config.num_box_queries, input_ids.device)
            if box_positions is not None
            else {}
        )
        output = MedRGOutput(logits=outputs.logits, cache=outputs.cache, **empty)
        if return_hidden:
            # the positions of `logits` only: a generation step then keeps one state per layer, not the prompt's
            keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
            output.hidden_states = tuple(state[:, keep] for state in outputs.hidden_states)
        if need_hidden:
            grid = self.model.get_grounding_features(
                pixel_values, outputs.image_outputs.feature_maps, grounding_pixel_values
            )
            flat = self._decode_boxes(
                output, outputs, attention_mask, box_positions, grid, reference_boxes, reference_boxes_mask
            )
            if target_boxes is not None:
                self._add_box_losses(output, *flat, target_boxes, target_boxes_mask)
        if labels is not None:
            self._add_lm_loss(output, labels)
        return output

    @staticmethod
    def _check_finite_pixels(**images: torch.Tensor | None) -> None:
        """NaN/inf images would give NaN boxes that read like an answer: a clear error instead."""
        for name, pixels in images.items():
            if pixels is not None and not bool(torch.isfinite(pixels).all()):
                bad = (~torch.isfinite(pixels)).flatten(1).any(1).nonzero().flatten().tolist()
                raise ValueError(
                    f"{name} hold NaN or inf values (samples {bad}); the images could not be normalised "
                    "(e.g. overflow in windowing): fix the input images"
                )

    def _check_inputs(self, input_ids, inputs_embeds, target_boxes, target_boxes_mask) -> None:
        """Clear errors for inputs that would otherwise fail deep inside."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds")
        if target_boxes is None:
            return
        if target_boxes_mask is None:
            raise ValueError("target_boxes needs target_boxes_mask")
        batch = (input_ids if input_ids is not None else inputs_embeds).shape[0]
        if target_boxes.dim() != 4 or target_boxes.shape[-1] != 4 or target_boxes.shape[0] != batch:
            raise ValueError(
                f"target_boxes must have shape (batch={batch}, findings, boxes, 4), got {tuple(target_boxes.shape)}"
            )
        if tuple(target_boxes_mask.shape) != tuple(target_boxes.shape[:-1]):
            raise ValueError(
                f"target_boxes_mask must have shape {tuple(target_boxes.shape[:-1])} (target_boxes without the "
                f"last dim), got {tuple(target_boxes_mask.shape)}"
            )

    def _find_box_tokens(self, input_ids, attention_mask, has_images: bool, grounding_pixel_values):
        """`(M, 2)` (sample, position) of every attended `<BOX>`, or None when there is nothing to ground."""
        if input_ids is None or (not has_images and grounding_pixel_values is None):
            return None
        is_box = input_ids == self.config.box_token_id
        if attention_mask is not None:
            is_box = is_box & attention_mask.bool()
        return is_box.nonzero()

    def _decode_boxes(
        self,
        output: MedRGOutput,
        outputs,
        attention_mask,
        box_positions,
        grid,
        reference_boxes=None,
        reference_boxes_mask=None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Fill the box fields of `output` (slots per sample) from the LM's last hidden state at every `<BOX>`;
        returns them flat for the losses: every layer's boxes `(layers + 1, M, K, 4)`, the confidence logits
        `(M, K)` and the sample of each `<BOX>` `(M,)`."""
        last_hidden = outputs.hidden_states[-1]
        batch_index, positions = box_positions[:, 0], box_positions[:, 1]
        # run on every batch, also one without a <BOX> (empty predictions): a sharded decoder (FSDP) needs its
        # forward on every process
        references = box_references(batch_index, reference_boxes, reference_boxes_mask)
        all_boxes, score_logits = self.box_decoder(
            last_hidden, outputs.inputs_embeds, attention_mask, batch_index, positions, grid, *references
        )
        slots = box_slots(
            batch_index, last_hidden.shape[0], all_boxes[-1], score_logits.sigmoid(), positions, all_boxes
        )
        for name, value in slots.items():
            setattr(output, name, value)
        return all_boxes, score_logits, batch_index

    def _add_box_losses(
        self, output: MedRGOutput, all_boxes, score_logits, batch_index, target_boxes, target_boxes_mask
    ) -> None:
        """Matched box losses (see [`medrg_loss.box_losses`]) into `output`, from the flat `_decode_boxes`."""
        if all_boxes.shape[1] == 0:
            # findings without a <BOX> are still an error; otherwise a zero loss through the decoder's (empty)
            # forward, which keeps every decoder parameter in the graph (DDP needs a gradient for each)
            check_box_counts(batch_index, target_boxes_mask)
            zero = (all_boxes.sum() + score_logits.sum()) * 0.0
            output.box_l1_loss = output.box_giou_loss = output.box_confidence_loss = zero
            return
        output.box_l1_loss, output.box_giou_loss, output.box_confidence_loss = box_losses(
            all_boxes,
            score_logits,
            batch_index,
            target_boxes,
            target_boxes_mask,
            self.config.box_l1_loss_weight,
            self.config.box_giou_loss_weight,
        )

    def _add_lm_loss(self, output: MedRGOutput, labels: torch.Tensor) -> None:
        """Cross-entropy on the answer tokens (labels != -100; transformers' causal-LM loss, `self.loss_function`)
        and the weighted total `output.loss`."""
        output.lm_loss = self.loss_function(output.logits, labels, vocab_size=output.logits.shape[-1])
        loss = self.config.lm_loss_weight * output.lm_loss
        if output.box_l1_loss is not None:
            loss = (
                loss
                + self.config.box_l1_loss_weight * output.box_l1_loss
                + self.config.box_giou_loss_weight * output.box_giou_loss
                + self.config.box_confidence_loss_weight * output.box_confidence_loss
            )
        output.loss = loss

    # ----- generation -----
    @torch.no_grad()
    def generate_grounding(
        self,
        input_ids: torch.LongTensor,
        pixel_values: torch.FloatTensor,
        attention_mask: torch.Tensor | None = None,
        max_new_tokens: int = 64,
        grounding_pixel_values: torch.FloatTensor | None = None,
        reference_boxes: torch.FloatTensor | None = None,
        reference_boxes_mask: torch.BoolTensor | None = None,
        forced_tokens_fn=None,
        **generate_kwargs,
    ) -> MedRGGroundingOutput:
        """Generate the answer (phrases with `<BOX>`) with `generate`, then ground every generated `<BOX>`.

        `generate` runs [`medrg_generation.jump_forward_decoding`] (its `custom_generate` decoding loop; greedy
        unless `do_sample=True`) with the caller's `generate_kwargs` (`logits_processor=[guide]`, a
        `generation_config`, a `streamer`, ...; `synced_gpus` is refused). `forced_tokens_fn(sample, generated)`:
        optional, the tokens that must come next whatever the LM prefers (e.g. `ReportGuide.forced_tokens`, with the
        guide as logits processor), fed to the LM in one forward instead of one per token (jump-forward decoding),
        with the answers of token-by-token decoding; `processor(..., guided=True)` returns all of these. Each image
        is encoded once; the box decoder reads the LM's last-layer state at each generated `<BOX>` (from the
        decoding itself) with the input embeddings of prompt + answer, as a teacher-forced pass in training.
        `reference_boxes` `(B, N, [starts,] 4)` (and `reference_boxes_mask` `(B, N)`): optional first boxes of the
        n-th generated `<BOX>` of each sample (see `forward`). Returns [`MedRGGroundingOutput`] (`finished` False:
        cut off by `max_new_tokens`).
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        generate_kwargs.setdefault("do_sample", False)
        if generate_kwargs.pop("synced_gpus", None):
            raise ValueError("generate_grounding decodes on each process alone: synced_gpus is not supported")
        self._check_finite_pixels(pixel_values=pixel_values, grounding_pixel_values=grounding_pixel_values)
        # each image is encoded once: the generation's prefill and the grounding reuse these features
        image = self.get_image_features(pixel_values)
        generated = self.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=max_new_tokens,
            mm_encoder_outputs={"image": image},
            custom_generate=jump_forward_decoding,
            forced_tokens_fn=forced_tokens_fn,
            answer_streamer=generate_kwargs.pop("streamer", None),
            **generate_kwargs,
        )
        return self._ground_answer(
            generated,
            attention_mask,
            pixel_values,
            grounding_pixel_values,
            image,
            (reference_boxes, reference_boxes_mask),
        )

    def _ground_answer(
        self,
        generated: MedRGGenerateOutput,
        prompt_mask: torch.Tensor,
        pixel_values: torch.Tensor,
        grounding_pixel_values: torch.Tensor | None,
        image: MedRGImageOutput,
        references: tuple,
    ) -> MedRGGroundingOutput:
        """Boxes of every generated `<BOX>` from the decoding's `token_states`, in slots per sample."""
        sequences, states = generated.sequences, generated.token_states
        (batch, length), prompt_length = sequences.shape, prompt_mask.shape[1]
        attention_mask = torch.cat((prompt_mask.long(), generated.generated_mask), dim=1)
        is_box = generated_box_mask(
            sequences, prompt_length, generated.generated_mask, self.config.box_token_id
        )
        output = MedRGOutput(**no_boxes(batch, self.config.num_box_queries, sequences.device))
        if bool(is_box.any()):
            hidden = states.new_zeros(batch, length, states.shape[-1])
            hidden[:, prompt_length : prompt_length + states.shape[1]] = states
            # the box decoder's phrase read-out takes the input embeddings of prompt + answer, images merged in
            embeddings = self.get_input_embeddings()(sequences)
            embeddings = self.model.merge_image_features(sequences, embeddings, image.pooler_output)
            grid = self.model.get_grounding_features(pixel_values, image.feature_maps, grounding_pixel_values)
            self._decode_boxes(
                output,
                MedRGModelOutputWithPast(hidden_states=(hidden,), inputs_embeds=embeddings),
                attention_mask,
                is_box.nonzero(),
                grid,
                *references,
            )
        return MedRGGroundingOutput(
            sequences=sequences,
            prompt_length=prompt_length,
            generated_mask=generated.generated_mask,
            finished=generated.finished,
            **{
                name: output[name]
                for name in ("pred_boxes", "pred_scores", "box_mask", "box_token_positions")
            },
        )


__all__ = [
    "MedRGForReportGrounding",
    "MedRGGroundingOutput",
    "MedRGModel",
    "MedRGModelOutputWithPast",
    "MedRGOutput",
    "MedRGPreTrainedModel",
]
