"""Box conversions, IoU/GIoU and an exact linear assignment (Hungarian) in plain torch/Python.

Inside the model boxes are normalised `(cx, cy, w, h)` in [0, 1] of the letterboxed model frame.
"""

from __future__ import annotations

import torch


def box_cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """`(..., 4)` centre/size -> `(..., 4)` corners."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), dim=-1)


def box_xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    """`(..., 4)` corners -> `(..., 4)` centre/size."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack(((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0), dim=-1)


def box_area(boxes_xyxy: torch.Tensor) -> torch.Tensor:
    return (boxes_xyxy[..., 2] - boxes_xyxy[..., 0]).clamp(min=0) * (
        boxes_xyxy[..., 3] - boxes_xyxy[..., 1]
    ).clamp(min=0)


def pairwise_iou_giou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """IoU and generalised IoU of every pair: `(N, 4)` x `(M, 4)` xyxy -> two `(N, M)` tensors."""
    area1, area2 = box_area(boxes1), box_area(boxes2)
    top_left = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    bottom_right = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(-1)
    union = area1[:, None] + area2[None, :] - inter
    iou = inter / union.clamp(min=1e-7)
    hull_top_left = torch.min(boxes1[:, None, :2], boxes2[None, :, :2])
    hull_bottom_right = torch.max(boxes1[:, None, 2:], boxes2[None, :, 2:])
    hull = (hull_bottom_right - hull_top_left).clamp(min=0).prod(-1)
    giou = iou - (hull - union) / hull.clamp(min=1e-7)
    return iou, giou


def linear_sum_assignment(cost: list[list[float]]) -> list[tuple[int, int]]:
    """Exact minimum-cost one-to-one assignment of a rectangular cost matrix (rows x cols).

    Returns `min(rows, cols)` pairs `(row, col)` sorted by row. Hungarian algorithm with potentials, O(n^3);
    the matrices here are tiny (K box queries x a finding's boxes), so plain Python is fast and keeps the hub
    code free of scipy.
    """
    n_rows = len(cost)
    n_cols = len(cost[0]) if n_rows else 0
    if n_rows == 0 or n_cols == 0:
        return []
    transposed = n_rows > n_cols
    matrix = [list(col) for col in zip(*cost)] if transposed else [list(row) for row in cost]
    n, m = len(matrix), len(matrix[0])  # n <= m
    inf = float("inf")
    u = [0.0] * (n + 1)
    v = [0.0] * (m + 1)
    match_of_col = [0] * (m + 1)  # 1-based row matched to each column, 0 = free
    way = [0] * (m + 1)
    for row in range(1, n + 1):
        match_of_col[0] = row
        col0 = 0
        min_to = [inf] * (m + 1)
        used = [False] * (m + 1)
        while True:
            used[col0] = True
            row0 = match_of_col[col0]
            delta, col1 = inf, 0
            for col in range(1, m + 1):
                if not used[col]:
                    reduced = matrix[row0 - 1][col - 1] - u[row0] - v[col]
                    if reduced < min_to[col]:
                        min_to[col] = reduced
                        way[col] = col0
                    if min_to[col] < delta:
                        delta, col1 = min_to[col], col
            for col in range(m + 1):
                if used[col]:
                    u[match_of_col[col]] += delta
                    v[col] -= delta
                else:
                    min_to[col] -= delta
            col0 = col1
            if match_of_col[col0] == 0:
                break
        while col0:
            col1 = way[col0]
            match_of_col[col0] = match_of_col[col1]
            col0 = col1
    pairs = [(match_of_col[col] - 1, col - 1) for col in range(1, m + 1) if match_of_col[col]]
    if transposed:
        pairs = [(c, r) for r, c in pairs]
    return sorted(pairs)


__all__ = [
    "box_area",
    "box_cxcywh_to_xyxy",
    "box_xyxy_to_cxcywh",
    "linear_sum_assignment",
    "pairwise_iou_giou",
]
