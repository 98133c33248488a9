"""Matching and box losses of MedRG, vectorised over every `<BOX>` token of a batch.

Each `<BOX>` predicts K boxes (queries) for one finding that has T' real target boxes. Queries and targets are
matched one-to-one at minimum total cost (an exact linear assignment): `min(K, T')` pairs per `<BOX>`. Because K
(`config.num_box_queries`) is small, the assignment is found by enumerating every injective map from queries to
targets-or-nothing once (a small table per `(K, T)`), gathering the cost of each map for all `<BOX>` at once and
taking the argmin: exact, with no Python loop per box, no host sync per box and nothing iterative that could fail
to terminate on NaN costs. Boxes are normalised `(cx, cy, w, h)` of the letterboxed model frame; IoUs use
transformers' public `center_to_corners_format` and `box_iou`.
"""

from __future__ import annotations

import itertools
import math
from functools import lru_cache

import torch
from torch.nn import functional as F
from transformers.image_transforms import center_to_corners_format
from transformers.loss.loss_for_object_detection import box_iou
from transformers.utils import logging

logger = logging.get_logger(__name__)

# the assignment table holds sum_j C(K, j) * T! / (T - j)! maps; refuse sizes that would not fit in memory
_MAX_ASSIGNMENTS = 1_000_000
# stands in for padded / unmatched targets so that no IoU divides 0 by 0 (its value never reaches a loss)
_UNIT_BOX = (0.5, 0.5, 1.0, 1.0)


def pairwise_box_iou_giou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """IoU and generalised IoU of every pair of two sets of corner boxes, batched over leading dims.

    Args:
        boxes1: `(..., N, 4)` and boxes2: `(..., M, 4)`, `(x0, y0, x1, y1)`; the leading dims broadcast.

    Returns:
        iou, giou: `(..., N, M)`.
    """
    batch_shape = torch.broadcast_shapes(boxes1.shape[:-2], boxes2.shape[:-2])
    flat1 = boxes1.expand(*batch_shape, *boxes1.shape[-2:]).reshape(-1, *boxes1.shape[-2:])
    flat2 = boxes2.expand(*batch_shape, *boxes2.shape[-2:]).reshape(-1, *boxes2.shape[-2:])
    iou, union = torch.vmap(box_iou)(flat1, flat2)
    # enclosing box term of transformers' `generalized_box_iou`, batched (that function is 2-D only)
    hull_top_left = torch.min(flat1[:, :, None, :2], flat2[:, None, :, :2])
    hull_bottom_right = torch.max(flat1[:, :, None, 2:], flat2[:, None, :, 2:])
    hull = (hull_bottom_right - hull_top_left).clamp(min=0).prod(-1)
    giou = iou - (hull - union) / hull.clamp(min=1e-7)
    shape = (*batch_shape, boxes1.shape[-2], boxes2.shape[-2])
    return iou.reshape(shape), giou.reshape(shape)


def paired_box_iou_giou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """IoU and GIoU of corresponding corner boxes: `(..., N, 4)` with `(..., N, 4)` -> two `(..., N)`."""
    iou, giou = pairwise_box_iou_giou(boxes1, boxes2)
    return iou.diagonal(dim1=-2, dim2=-1), giou.diagonal(dim1=-2, dim2=-1)


@lru_cache(maxsize=64)
def _injective_maps(num_queries: int, num_targets: int) -> torch.Tensor:
    """Every map from K queries to distinct targets or to nothing: `(A, K)` target index, -1 for nothing."""
    count = sum(
        math.comb(num_queries, j) * math.perm(num_targets, j)
        for j in range(min(num_queries, num_targets) + 1)
    )
    if count > _MAX_ASSIGNMENTS:
        raise ValueError(
            f"Matching {num_queries} box queries (config.num_box_queries) with up to {num_targets} boxes per "
            f"finding needs {count} candidate assignments (limit {_MAX_ASSIGNMENTS}); use fewer queries or "
            "fewer boxes per finding"
        )
    maps = []
    for size in range(min(num_queries, num_targets) + 1):
        for queries in itertools.combinations(range(num_queries), size):
            for targets in itertools.permutations(range(num_targets), size):
                row = [-1] * num_queries
                for query, target in zip(queries, targets):
                    row[query] = target
                maps.append(row)
    return torch.tensor(maps, dtype=torch.long)


def match_queries_to_targets(cost: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
    """Exact minimum-cost one-to-one matching of K queries with the real targets, for many problems at once.

    Args:
        cost: `(M, K, T)` cost of query k for target t (finite where `target_mask`).
        target_mask: `(M, T)` bool, which targets are real.

    Returns:
        `(M, K)` long: the target matched to each query, -1 when unmatched. Each problem gets `min(K, T')`
        pairs (T' its real targets) with the smallest total cost; with more targets than queries, the K
        cheapest-to-match targets are supervised.
    """
    num, num_queries, num_targets = cost.shape
    maps = _injective_maps(num_queries, num_targets).to(cost.device)  # (A, K)
    assigned = maps >= 0
    target_of = maps.clamp(min=0)
    picked = cost[:, torch.arange(num_queries, device=cost.device)[None, :], target_of]  # (M, A, K)
    total = torch.where(assigned, picked, torch.zeros_like(picked)).sum(-1)  # (M, A)
    real = target_mask[:, target_of]  # (M, A, K): the chosen target is real
    pairs_needed = target_mask.sum(-1).clamp(max=num_queries)  # (M,)
    allowed = (real | ~assigned).all(-1) & (assigned.sum(-1)[None, :] == pairs_needed[:, None])
    best = total.masked_fill(~allowed, float("inf")).argmin(-1)  # (M,)
    return maps[best]


def _check_finite(
    all_boxes: torch.Tensor,
    score_logits: torch.Tensor,
    cost: torch.Tensor,
    gt: torch.Tensor,
    gt_mask: torch.Tensor,
) -> None:
    """One host sync per batch; raises instead of matching on NaN/inf (the Hungarian matching would not end on them)."""
    real_gt = torch.where(gt_mask[..., None], gt, torch.zeros_like(gt))
    flags = torch.stack(
        (
            torch.isfinite(all_boxes).all(),
            torch.isfinite(score_logits).all(),
            torch.isfinite(real_gt).all(),
            torch.isfinite(cost).all(),
        )
    )
    if bool(flags.all()):
        return
    names = ("box predictions", "box confidence logits", "target boxes", "box matching costs")
    bad = [name for name, ok in zip(names, flags.tolist()) if not ok]
    bad = bad[:-1] if len(bad) > 1 and bad[-1] == names[-1] else bad  # the cost only follows from the others
    raise ValueError(
        f"MedRG box loss: the {', '.join(bad)} are not finite (NaN or inf), so the box loss is not finite and "
        "boxes cannot be matched; training has diverged (check learning_rate and max_grad_norm) or the inputs "
        "(pixel_values, target_boxes) hold NaN/inf"
    )


def check_box_counts(batch_index: torch.Tensor, target_boxes_mask: torch.Tensor) -> torch.Tensor:
    """Raises when a sample's number of `<BOX>` (`batch_index` `(M,)`) differs from its number of findings (a
    finding = a row of `target_boxes_mask` `(B, F, T)` with a real box); returns `<BOX>` per sample `(B,)`."""
    findings_per_sample = target_boxes_mask.bool().any(-1).sum(-1)  # (B,)
    boxes_per_sample = torch.bincount(batch_index, minlength=target_boxes_mask.shape[0])
    if bool((findings_per_sample != boxes_per_sample).any()):
        sample = int((findings_per_sample != boxes_per_sample).nonzero()[0, 0])
        raise ValueError(
            f"Sample {sample} has {int(boxes_per_sample[sample])} <BOX> tokens but "
            f"{int(findings_per_sample[sample])} target findings; every finding needs exactly one <BOX> in the answer"
        )
    return boxes_per_sample


def _targets_per_box(
    batch_index: torch.Tensor, target_boxes: torch.Tensor, target_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The i-th `<BOX>` of a sample belongs to its i-th finding: `(M, T, 4)` targets (padded slots hold a unit
    box) and `(M, T)` mask. Raises when a sample's number of `<BOX>` differs from its number of findings."""
    boxes_per_sample = check_box_counts(batch_index, target_mask)
    first_of_sample = torch.cumsum(boxes_per_sample, 0) - boxes_per_sample
    order = torch.arange(batch_index.shape[0], device=batch_index.device) - first_of_sample[batch_index]
    gt_mask = target_mask[batch_index, order]
    unit = torch.tensor(_UNIT_BOX, device=target_boxes.device, dtype=torch.float32)
    gt = torch.where(gt_mask[..., None], target_boxes[batch_index, order].float(), unit)
    return gt, gt_mask


def _matching_cost(
    all_boxes: torch.Tensor, gt: torch.Tensor, weight_l1: float, weight_giou: float
) -> torch.Tensor:
    """`(M, K, T)` cost summed over all decoder layers: a query keeps its target from step to step instead of
    flipping with the last layer's noise (matching flips are what make DETR-style decoders slow)."""
    l1 = (all_boxes[:, :, :, None, :] - gt[None, :, None, :, :]).abs().sum(-1)  # (L, M, K, T)
    _, giou = pairwise_box_iou_giou(center_to_corners_format(all_boxes), center_to_corners_format(gt)[None])
    return (weight_l1 * l1 - weight_giou * giou).sum(0)


def _warn_if_boxes_dropped(gt_mask: torch.Tensor, num_queries: int) -> None:
    if gt_mask.shape[-1] > num_queries and bool((gt_mask.sum(-1) > num_queries).any()):
        logger.warning_once(
            f"A finding has more than {num_queries} boxes but the model predicts {num_queries} per <BOX> "
            "(config.num_box_queries); the extra boxes are not supervised"
        )


def box_losses(
    all_boxes: torch.Tensor,
    score_logits: torch.Tensor,
    batch_index: torch.Tensor,
    target_boxes: torch.Tensor,
    target_boxes_mask: torch.Tensor,
    weight_l1: float,
    weight_giou: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Matched L1 + GIoU over every decoder layer (deep supervision) and the confidence loss.

    Args:
        all_boxes: `(L, M, K, 4)` cxcywh boxes of every layer for the M `<BOX>` tokens (M > 0).
        score_logits: `(M, K)` confidence logits of the last layer's boxes.
        batch_index: `(M,)` sample of each `<BOX>`, sorted (as `nonzero()` gives it).
        target_boxes: `(B, F, T, 4)` cxcywh targets of each sample's findings; target_boxes_mask `(B, F, T)`.
        weight_l1, weight_giou: weights of the two parts inside the matching cost.

    Returns:
        l1: L1 over the 4 coordinates per matched target, averaged over layers and matched targets;
        giou: `1 - GIoU`, same normalisation; confidence: BCE of each query's logit against the IoU of its matched
        final box (0 for unmatched queries), averaged over the M x K queries. All `()` float32.
    """
    num_layers, _, num_queries, _ = all_boxes.shape
    all_boxes = all_boxes.float()
    gt, gt_mask = _targets_per_box(batch_index, target_boxes, target_boxes_mask.bool())
    with torch.no_grad():
        cost = _matching_cost(all_boxes, gt, weight_l1, weight_giou)
        _check_finite(all_boxes, score_logits, cost, gt, gt_mask)
        _warn_if_boxes_dropped(gt_mask, num_queries)
        match = match_queries_to_targets(cost, gt_mask)  # (M, K)
    matched = match >= 0
    matched_gt = torch.where(
        matched[..., None],
        gt.gather(1, match.clamp(min=0)[..., None].expand(-1, -1, 4)),
        gt.new_tensor(_UNIT_BOX),
    )  # (M, K, 4)
    iou, giou = paired_box_iou_giou(
        center_to_corners_format(all_boxes), center_to_corners_format(matched_gt)[None]
    )
    zero = torch.zeros_like(giou)
    l1_total = torch.where(matched[None], (all_boxes - matched_gt[None]).abs().sum(-1), zero).sum()
    giou_total = torch.where(matched[None], 1 - giou, zero).sum()
    normaliser = matched.sum().clamp(min=1) * num_layers
    score_targets = torch.where(matched, iou[-1].detach().clamp(0, 1), zero[-1])
    confidence = F.binary_cross_entropy_with_logits(score_logits.float(), score_targets)
    return l1_total / normaliser, giou_total / normaliser, confidence


__all__ = [
    "box_losses",
    "check_box_counts",
    "match_queries_to_targets",
    "paired_box_iou_giou",
    "pairwise_box_iou_giou",
]
