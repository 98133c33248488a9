"""The box decoder: K box queries per `<BOX>` hidden state, refined coarse-to-fine over the image features.

Each `<BOX>` hidden state (plus a read-out of its phrase) is projected to K queries. A first box per query comes
either from the text alone (`box_initial_source="text"`: what the report says, finding, side and zone, so the
decoder starts from the text's box) or from the query after one global cross-attention to the image
(`"image"`). Every decoder layer then (1) lets the K queries of one `<BOX>` attend to each other, (2)
cross-attends to the coarsest feature map (with 2-D sine positions), (3) samples an S x S grid of features over a
window of `box_sampling_window` times its current box on every feature level (bilinear, like RoI-align over a
feature pyramid) and (4) predicts an offset of the box in logit space. Every layer's boxes are returned for deep
supervision; the last layer's queries also give one confidence logit each (trained to predict the box's IoU).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

_EPS = 1e-5


def inverse_sigmoid(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(_EPS, 1 - _EPS)
    return torch.log(x / (1 - x))


def sine_embedding(coords: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """Sine/cosine embedding of each coordinate in [0, 1]: `(..., C)` -> `(..., C * dim)`; `dim` must be even."""
    half = dim // 2
    freqs = temperature ** (torch.arange(half, device=coords.device, dtype=torch.float32) / half)
    angles = coords.float()[..., None] * (2 * math.pi) / freqs  # (..., C, half)
    emb = torch.cat((angles.sin(), angles.cos()), dim=-1)  # (..., C, dim)
    return emb.flatten(-2).to(coords.dtype)


def grid_positions(height: int, width: int, dim: int, device, dtype) -> torch.Tensor:
    """2-D sine positions of the cell centres of an `height x width` map: `(height * width, dim)`."""
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    coords = torch.stack((xx.flatten(), yy.flatten()), dim=-1)
    return sine_embedding(coords, dim // 2).to(dtype)


class MedRGMLP(nn.Module):
    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index < len(self.layers) - 1:
                x = F.gelu(x)
        return x


class MedRGBoxDecoderLayer(nn.Module):
    def __init__(
        self,
        dim: int,
        heads: int,
        ffn_dim: int,
        sampling_points: int,
        num_levels: int = 1,
        window: float = 1.0,
    ):
        super().__init__()
        self.sampling_points = sampling_points
        self.window = float(window)
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.local_proj = nn.Linear(num_levels * sampling_points * sampling_points * dim, dim)
        self.box_position = MedRGMLP(2 * dim, dim, dim, 2)
        self.norm_self = nn.LayerNorm(dim)
        self.norm_cross = nn.LayerNorm(dim)
        self.norm_local = nn.LayerNorm(dim)
        self.norm_ffn = nn.LayerNorm(dim)
        self.ffn = MedRGMLP(dim, ffn_dim, dim, 2)
        self.box_head = MedRGMLP(dim, dim, 4, 3)

    def sample_inside_boxes(self, feature_maps, boxes: torch.Tensor) -> torch.Tensor:
        """Bilinear samples on an S x S grid over `window` times each box, on every feature level.

        feature_maps: `(M, D, H, W)` or a list of them (levels); boxes: `(M, K, 4)` cxcywh in [0, 1]
        -> `(M, K, levels * S * S * D)`.
        """
        if torch.is_tensor(feature_maps):
            feature_maps = [feature_maps]
        num, k, _ = boxes.shape
        s = self.sampling_points
        steps = (
            torch.arange(s, device=boxes.device, dtype=boxes.dtype) + 0.5
        ) / s - 0.5  # cell centres in [-.5,.5]
        offset_y, offset_x = torch.meshgrid(steps, steps, indexing="ij")
        offsets = torch.stack((offset_x.flatten(), offset_y.flatten()), dim=-1)  # (S*S, 2)
        centres, sizes = boxes[..., :2], boxes[..., 2:] * self.window
        points = (
            centres[:, :, None, :] + offsets[None, None] * sizes[:, :, None, :]
        )  # (M, K, S*S, 2) in [0, 1]
        samples = []
        for feature_map in feature_maps:
            grid = (points * 2 - 1).to(feature_map.dtype)
            sampled = F.grid_sample(
                feature_map, grid, mode="bilinear", padding_mode="border", align_corners=False
            )
            samples.append(sampled.permute(0, 2, 3, 1).reshape(num, k, s * s * feature_map.shape[1]))
        return torch.cat(samples, dim=-1)

    def forward(
        self,
        queries: torch.Tensor,
        boxes: torch.Tensor,
        memory: torch.Tensor,
        memory_keys: torch.Tensor,
        feature_map,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """queries `(M, K, D)`, boxes `(M, K, 4)`, memory/memory_keys `(M, H*W, D)`, feature_map `(M, D, H, W)`
        or a list of them (one per level)."""
        position = self.box_position(sine_embedding(boxes, queries.shape[-1] // 2))  # (M, K, 4 * D / 2)
        x = self.norm_self(queries) + position
        queries = queries + self.self_attn(x, x, self.norm_self(queries), need_weights=False)[0]
        x = self.norm_cross(queries) + position
        queries = queries + self.cross_attn(x, memory_keys, memory, need_weights=False)[0]
        queries = queries + self.local_proj(self.sample_inside_boxes(feature_map, boxes.detach()))
        queries = self.norm_local(queries)
        queries = queries + self.ffn(self.norm_ffn(queries))
        new_boxes = torch.sigmoid(inverse_sigmoid(boxes.detach()) + self.box_head(queries))
        return queries, new_boxes


class MedRGPhraseAttention(nn.Module):
    """Reads the phrase of each `<BOX>`: its hidden state attends to the LM hidden states before it (the `<BOX>`
    itself excluded: its state is dominated by the separator that follows it, the same for many findings), with a
    recency bias per token distance (a fixed ALiBi-like slope plus a learned correction), so the query carries
    the phrase's words and not only the `<BOX>` state (a small LM's `<BOX>` state is mostly busy predicting the
    next separator). `max_distance` and `recency_slope` come from `MedRGConfig.phrase_max_distance` /
    `phrase_recency_slope`."""

    def __init__(self, hidden_dim: int, dim: int, max_distance: int, recency_slope: float):
        super().__init__()
        self.max_distance = max_distance
        self.recency_slope = float(recency_slope)
        self.query = nn.Linear(hidden_dim, dim)
        self.key = nn.Linear(hidden_dim, dim)
        self.value = nn.Linear(hidden_dim, dim)
        self.distance_bias = nn.Embedding(max_distance + 1, 1)

    def forward(
        self,
        box_states: torch.Tensor,
        token_embeddings: torch.Tensor,
        attention_mask: torch.Tensor | None,
        batch_index: torch.Tensor,
        positions: torch.Tensor,
    ) -> torch.Tensor:
        """box_states `(M, H)` (the LM's hidden state at each `<BOX>`), token_embeddings `(B, L, H)`,
        attention_mask `(B, L)`, batch_index/positions `(M,)` -> `(M, dim)`. The query is the `<BOX>` state; keys
        and values are the phrase's input token embeddings: a tiny LM's last-layer states at phrase ends collapse
        to "the next token is `<BOX>`", its embeddings keep the words."""
        length = token_embeddings.shape[1]
        # keys and values once per sample, then one row per <BOX> (not M copies of the whole sequence projected)
        embeddings = token_embeddings.to(box_states.dtype)
        keys, values = self.key(embeddings)[batch_index], self.value(embeddings)[batch_index]  # (M, L, dim)
        query = self.query(box_states)  # (M, dim)
        scores = torch.einsum("mld,md->ml", keys, query) / math.sqrt(query.shape[-1])
        distance = positions[:, None] - torch.arange(length, device=positions.device)[None]  # (M, L)
        valid = distance >= 1  # the phrase tokens before the <BOX>, not the <BOX> state itself
        if attention_mask is not None:
            valid = valid & attention_mask[batch_index].bool()
        clamped = distance.clamp(0, self.max_distance)
        bias = self.distance_bias(clamped).squeeze(-1) - self.recency_slope * clamped
        scores = scores + bias.to(scores.dtype)
        weights = torch.softmax(scores.float().masked_fill(~valid, float("-inf")), dim=-1).to(values.dtype)
        return torch.einsum("ml,mld->md", weights, values)


class MedRGBoxDecoder(nn.Module):
    """Maps `M` `<BOX>` hidden states plus their image's features to K boxes and K confidence logits each."""

    def __init__(self, config, query_input_dim: int, memory_channels):
        super().__init__()
        dim = config.box_decoder_dim
        self.num_queries = config.num_box_queries
        self.dim = dim
        if isinstance(memory_channels, int):
            memory_channels = [memory_channels]
        # one grid (the vision tower's) keeps the single projection; a feature pyramid gets one per level
        self.multi_level = bool(getattr(config, "box_feature_levels", None))
        self.initial_source = getattr(config, "box_initial_source", "image")
        self.phrase_attention = MedRGPhraseAttention(
            query_input_dim, dim, config.phrase_max_distance, config.phrase_recency_slope
        )
        # both parts of a query normalised: raw token embeddings are ~50x smaller than the LM's last states
        self.box_state_norm = nn.LayerNorm(query_input_dim)
        self.phrase_norm = nn.LayerNorm(dim)
        self.query_proj = MedRGMLP(query_input_dim + dim, dim, self.num_queries * dim, 2)
        self.query_embed = nn.Embedding(self.num_queries, dim)
        if self.multi_level:
            self.level_proj = nn.ModuleList(nn.Linear(channels, dim) for channels in memory_channels)
            self.level_norm = nn.ModuleList(nn.LayerNorm(dim) for _ in memory_channels)
            self.level_embed = nn.Embedding(len(memory_channels), dim)
        else:
            self.memory_proj = nn.Linear(memory_channels[0], dim)
            self.memory_norm = nn.LayerNorm(dim)
        self.initial_norm = nn.LayerNorm(dim)
        if self.initial_source == "image":
            self.initial_cross_attn = nn.MultiheadAttention(dim, config.box_decoder_heads, batch_first=True)
        self.initial_box_head = MedRGMLP(dim, dim, 4, 3)
        self.layers = nn.ModuleList(
            MedRGBoxDecoderLayer(
                dim,
                config.box_decoder_heads,
                config.box_decoder_ffn_dim,
                config.box_sampling_points,
                num_levels=len(memory_channels),
                window=getattr(config, "box_sampling_window", 1.0),
            )
            for _ in range(config.box_decoder_layers)
        )
        self.score_head = nn.Linear(dim, 1)

    def forward(
        self,
        hidden_states: torch.Tensor,
        token_embeddings: torch.Tensor,
        attention_mask: torch.Tensor | None,
        batch_index: torch.Tensor,
        positions: torch.Tensor,
        feature_grid: torch.Tensor,
        reference_boxes: torch.Tensor | None = None,
        reference_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            hidden_states: `(B, L, hidden)`, the LM's last hidden states; attention_mask `(B, L)`.
            token_embeddings: `(B, L, hidden)`, the LM's input embeddings (what the phrase attention reads).
            batch_index, positions: `(M,)`, sample and sequence position of each `<BOX>`.
            feature_grid: `(B, H, W, C)`, the grounding features of each image, or a tuple of such grids (one
                per feature level, finest first; the coarsest is the global cross-attention's memory).
            reference_boxes: optional `(M, 4)` or `(M, S, 4)` cxcywh in [0, 1], a first box per `<BOX>` (or S of
                them, query k taking the (k mod S)-th: one per side of a bilateral finding) known from outside the
                model (the processor's `box_prior`: the mean training box of the phrase's finding, side and
                zone); `reference_mask` `(M,)` says which rows have one. Where given, the layers refine it
                instead of the decoder's own first guess (which is still returned, and trained, as the first
                entry: it is the first box where no reference is given).

        Returns:
            boxes: `(L + 1, M, K, 4)` cxcywh in [0, 1] (the decoder's own first guess, then one per layer);
            score_logits: `(M, K)`.
        """
        num = batch_index.shape[0]
        box_states = hidden_states[batch_index, positions]
        phrase = self.phrase_attention(box_states, token_embeddings, attention_mask, batch_index, positions)
        box_hidden_states = torch.cat((self.box_state_norm(box_states), self.phrase_norm(phrase)), -1)
        memory, memory_keys, feature_map = self._image_memory(feature_grid, batch_index)
        queries = self.query_proj(box_hidden_states.to(memory.dtype)).reshape(num, self.num_queries, self.dim)
        queries = queries + self.query_embed.weight[None]
        x = self.initial_norm(queries)
        if self.initial_source == "image":
            # first guess from one global look at the image, then every layer refines around the current box
            queries = queries + self.initial_cross_attn(x, memory_keys, memory, need_weights=False)[0]
            x = queries
        # "text": the first guess is what the phrase says (finding, side, zone); the image only moves it
        boxes = torch.sigmoid(self.initial_box_head(x))
        all_boxes = [boxes]
        if reference_boxes is not None:
            use = torch.ones(num, dtype=torch.bool, device=boxes.device)
            if reference_mask is not None:
                use = reference_mask.to(boxes.device).bool()
            reference = reference_boxes.to(boxes.dtype).clamp(_EPS, 1 - _EPS)
            if reference.dim() == 2:
                reference = reference[:, None]
            # S starts per <BOX> (e.g. one per side of a bilateral finding): query k starts from start k mod S
            reference = reference[:, torch.arange(self.num_queries, device=boxes.device) % reference.shape[1]]
            boxes = torch.where(use[:, None, None], reference, boxes)
        for layer in self.layers:
            queries, boxes = layer(queries, boxes, memory, memory_keys, feature_map)
            all_boxes.append(boxes)
        return torch.stack(all_boxes), self.score_head(queries).squeeze(-1)

    def _image_memory(self, feature_grid, batch_index: torch.Tensor):
        """The projected image features once per image, then one row per `<BOX>`: the global cross-attention's
        memory and keys `(M, H*W, D)` (the coarsest level) and the map(s) `(M, D, H, W)` the layers sample."""
        grids = [feature_grid] if torch.is_tensor(feature_grid) else list(feature_grid)
        maps = []
        for index, grid in enumerate(grids):
            images, height, width, channels = grid.shape
            flat = grid.reshape(images, height * width, channels)
            if self.multi_level:
                dtype = self.level_proj[index].weight.dtype
                projected = self.level_norm[index](self.level_proj[index](flat.to(dtype)))
                projected = projected + self.level_embed.weight[index]
            else:
                projected = self.memory_norm(self.memory_proj(flat.to(self.memory_proj.weight.dtype)))
            maps.append((projected, height, width))
        memory, height, width = maps[-1]
        memory_keys = memory + grid_positions(height, width, self.dim, memory.device, memory.dtype)[None]
        feature_maps = [
            projected.transpose(1, 2).reshape(projected.shape[0], self.dim, h, w)[batch_index]
            for projected, h, w in maps
        ]
        return (
            memory[batch_index],
            memory_keys[batch_index],
            feature_maps if self.multi_level else feature_maps[0],
        )


def box_references(batch_index: torch.Tensor, reference_boxes, reference_boxes_mask) -> tuple:
    """`(M, [S,] 4)` reference box(es) and `(M,)` mask of each `<BOX>` (the i-th `<BOX>` of a sample takes
    `reference_boxes[sample, i]`; none past the given ones), or `(None, None)` without references."""
    if reference_boxes is None:
        return None, None
    if reference_boxes.dim() not in (3, 4) or reference_boxes.shape[-1] != 4:
        raise ValueError(
            "reference_boxes must be (batch, findings, 4) or (batch, findings, starts, 4) cxcywh, got "
            f"{tuple(reference_boxes.shape)}"
        )
    if not bool(torch.isfinite(reference_boxes).all()):
        raise ValueError("reference_boxes has a NaN or infinite coordinate")
    given = reference_boxes.shape[1]
    mask = (
        torch.ones(reference_boxes.shape[:2], dtype=torch.bool, device=reference_boxes.device)
        if reference_boxes_mask is None
        else reference_boxes_mask.bool()
    )
    batch_index = batch_index.to(reference_boxes.device)
    # rank of each <BOX> within its sample (box positions come sorted by sample, then position)
    first = torch.searchsorted(batch_index, batch_index, right=False)
    rank = torch.arange(batch_index.shape[0], device=batch_index.device) - first
    inside = rank < given
    rank = rank.clamp(max=max(given - 1, 0))
    if given == 0:
        return reference_boxes.new_zeros(batch_index.shape[0], *reference_boxes.shape[2:]), inside
    return reference_boxes[batch_index, rank], mask[batch_index, rank] & inside


__all__ = ["MedRGBoxDecoder", "box_references"]
