"""SynthCXR: a procedural chest-radiograph grounding benchmark in which the answer needs report AND image.

Each image is drawn from a randomly posed thorax (lung fields, ribs, heart and mediastinum, diaphragm,
abdomen), with exposure, contrast, gamma and noise variation. Lesions of 7 categories are drawn with an
appearance and location typical of each:

============== ============================================== =====================================
category       appearance                                     where
============== ============================================== =====================================
nodule         small sharp round opacity (7-10 % of side)     any zone
mass           large lobulated homogeneous opacity (14-21 %)  any zone
consolidation  fluffy mottled opacity with air bronchograms   any zone
atelectasis    thin tilted plate-like band                    middle / lower zone
effusion       dense basal opacity with a lateral meniscus    lower zone (base)
pneumothorax   dark apical crescent without markings, a       upper zone (apex)
               visible pleural line
cardiomegaly   enlarged heart shadow (cardiothoracic > 0.55)  centre
============== ============================================== =====================================

Ground truth rules (so that report + image determine every answer):

- 15 % of images are normal: NO lesion is drawn, and the report is normal.
- Other images have 1-3 *mentioned* findings with distinct (category, side) and 0-2 *distractor* lesions
  that the report does not mention. A distractor is either of a category that no mentioned finding has,
  or of a mentioned category on the opposite side; every mentioned phrase names its category (synonyms)
  and side (or a side-specific lobe such as "lingula"), so exactly one drawn lesion fits each phrase.
- A category present in the image (mentioned or distractor) is never negated in the report.
- Lesions do not overlap (intersection / smaller box <= 0.15; lung lesions never cover heart pixels, their
  boxes may overlap the enlarged heart's box). Boxes are the pixel extent of the drawn
  lesion mask (tight), ``[xmin, ymin, xmax, ymax]`` in the stored image.
- The finding phrase (<= 8 words) appears verbatim in the FINDINGS section.

Sides follow the radiological convention: the patient's right is on the image's left.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

CATEGORIES = ("nodule", "mass", "consolidation", "atelectasis", "effusion", "pneumothorax", "cardiomegaly")
CATEGORY_WEIGHTS = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.6])
ZONES_OF = {
    "nodule": ("upper", "middle", "lower"),
    "mass": ("upper", "middle", "lower"),
    "consolidation": ("upper", "middle", "lower"),
    "atelectasis": ("middle", "lower"),
    "effusion": ("lower",),
    "pneumothorax": ("upper",),
    "cardiomegaly": ("",),
}
SPLIT_CODES = {"train": 0, "validation": 1, "test": 2}
DEFAULT_EXAMPLES = {"train": 2000, "validation": 250, "test": 500}
NO_FINDING_FRACTION = 0.15
SOURCE = "synthcxr"

_NOUNS = {
    "nodule": ["nodule", "pulmonary nodule", "nodular opacity", "small nodule", "rounded nodule"],
    "mass": ["mass", "large mass", "rounded mass", "mass lesion", "lobulated mass"],
    "consolidation": ["consolidation", "airspace opacity", "airspace consolidation", "patchy consolidation"],
    "atelectasis": [
        "atelectasis",
        "plate-like atelectasis",
        "linear atelectasis",
        "subsegmental atelectasis",
    ],
}
_QUALIFIERS = {"small", "rounded", "large", "lobulated", "patchy", "linear", "subsegmental", "plate-like"}
_LOC_NOUN = {
    ("right", "upper"): ["right upper lobe", "right upper zone", "right upper lung"],
    ("right", "middle"): ["right middle lobe", "right mid zone", "right midlung"],
    ("right", "lower"): ["right lower lobe", "right lower zone", "right lung base"],
    ("left", "upper"): ["left upper lobe", "left upper zone", "left upper lung"],
    ("left", "middle"): ["lingula", "left mid zone", "left midlung"],
    ("left", "lower"): ["left lower lobe", "left lower zone", "left lung base"],
}
_LOC_ADJ = {
    ("right", "upper"): ["right upper lobe", "right upper zone", "right apical"],
    ("right", "middle"): ["right middle lobe", "right mid zone", "right midlung"],
    ("right", "lower"): ["right lower lobe", "right lower zone", "right basilar"],
    ("left", "upper"): ["left upper lobe", "left upper zone", "left apical"],
    ("left", "middle"): ["lingular", "left mid zone", "left midlung"],
    ("left", "lower"): ["left lower lobe", "left lower zone", "left basilar"],
}
_NEGATIONS = {
    "pneumothorax": ["No pneumothorax.", "There is no pneumothorax."],
    "effusion": ["No pleural effusion.", "No large pleural effusion."],
    "consolidation": ["No focal consolidation.", "No focal airspace consolidation."],
    "cardiomegaly": ["Heart size is normal.", "The cardiac silhouette is normal in size."],
    "mass": ["No suspicious pulmonary mass."],
    "nodule": ["No discrete pulmonary nodule."],
    "atelectasis": ["No atelectasis."],
}
_FINDING_SENTENCES = [
    "There is {p}.",
    "Again noted is {p}.",
    "The radiograph demonstrates {p}.",
    "Findings include {p}.",
    "There is evidence of {p}.",
    "New since the prior study is {p}.",
    "Redemonstrated is {p}.",
    "Of note, there is {p}.",
]


@dataclass
class Lesion:
    """One drawn lesion. ``phrase`` is None for an unmentioned distractor."""

    category: str
    side: str  # "right"/"left" (patient side) or "" for central
    zone: str  # "upper"/"middle"/"lower" or ""
    box: list[float]  # [xmin, ymin, xmax, ymax] pixels
    mentioned: bool
    phrase: str | None = None
    size: str = ""  # "small"/"moderate"/"large" for effusion and pneumothorax


@dataclass
class SynthCXRExample:
    """A schema row plus every drawn lesion (mentioned and distractor): the data image-only baselines need."""

    row: dict
    lesions: list[Lesion]


_GRIDS: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    if size not in _GRIDS:
        ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
        _GRIDS[size] = (xs, ys)
    return _GRIDS[size]


def _pow25(x: np.ndarray) -> np.ndarray:
    """x ** 2.5 for x >= 0 (several times faster than a float power)."""
    return x * x * np.sqrt(x)


def _box_of(mask: np.ndarray) -> list[float] | None:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return [float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)]


def _overlap(a: list[float], b: list[float]) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    area = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / area


class _Thorax:
    """Geometry of one randomly posed chest; lungs indexed by patient side."""

    def __init__(self, rng: np.random.Generator, size: int):
        s = float(size)
        self.size = size
        self.sc = rng.uniform(0.78, 1.0)
        self.cx = s * (0.5 + rng.uniform(-0.06, 0.06))
        self.top = s * rng.uniform(0.06, 0.17)
        self.h = s * self.sc * rng.uniform(0.56, 0.64)
        self.a = s * self.sc * rng.uniform(0.14, 0.16)
        off = s * self.sc * 0.19
        # patient right = image left
        self.lx = {"right": self.cx - off, "left": self.cx + off}
        self.b = self.h / 2.0
        self.cy = self.top + self.b
        self.p = 2.5
        self.dome = s * self.sc * rng.uniform(0.04, 0.07)
        self.bottom = self.top + self.h

    def lung_mask(self, side: str) -> np.ndarray:
        xs, ys = _grid(self.size)
        u = np.abs((xs - self.lx[side]) / self.a)
        v = np.abs((ys - self.cy) / self.b)
        inside = _pow25(u) + _pow25(v) < 1.0
        dome = self.bottom - self.dome * (1.0 - np.clip(u, 0, 1) ** 2)
        return inside & (ys < dome)

    def half_width_at(self, y: float) -> float:
        v = abs((y - self.cy) / self.b)
        if v >= 1:
            return 0.0
        return self.a * (1.0 - v**self.p) ** (1.0 / self.p)

    def zone_range(self, zone: str) -> tuple[float, float]:
        i = {"upper": 0, "middle": 1, "lower": 2}[zone]
        lo = self.top + self.h * (0.06 + 0.88 * i / 3.0)
        hi = self.top + self.h * (0.06 + 0.88 * (i + 1) / 3.0)
        return lo, hi


def _sample_center(rng, th: _Thorax, side: str, zone: str, radius: float) -> tuple[float, float] | None:
    lo, hi = th.zone_range(zone)
    for _ in range(20):
        y = rng.uniform(lo, hi)
        hw = th.half_width_at(y) - radius - 2.0
        hw2 = min(th.half_width_at(y - radius), th.half_width_at(y + radius)) - 0.6 * radius
        hw = min(hw, hw2)
        if hw <= 1.0:
            continue
        return th.lx[side] + rng.uniform(-hw, hw), y
    return None


def _heart_mask(rng: np.random.Generator, th: _Thorax, ctr: float) -> np.ndarray:
    xs, ys = _grid(th.size)
    thoracic = 2.0 * (0.19 * th.size * th.sc + th.a)
    hw = ctr * thoracic / 2.0
    hh = th.size * th.sc * 0.12 * (1.0 + 0.6 * (ctr - 0.42)) * rng.uniform(0.85, 1.15)
    hx = th.cx + 0.18 * hw + rng.uniform(-0.03, 0.03) * th.size
    hy = th.bottom - 0.7 * hh
    return ((xs - hx) / hw) ** 2 + ((ys - hy) / hh) ** 2 < 1.0


def _upsample_bilinear(coarse: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of a small square array to (size, size) with gathers only (no BLAS: a BLAS
    call from many worker processes on a loaded machine spins threads and costs more than it saves)."""
    n = coarse.shape[0]
    pos = np.linspace(0, n - 1, size, dtype=np.float32)
    lo = np.floor(pos).astype(np.intp).clip(0, n - 2)
    t = pos - lo
    rows = coarse[lo] * (1 - t)[:, None] + coarse[lo + 1] * t[:, None]
    return rows[:, lo] * (1 - t)[None, :] + rows[:, lo + 1] * t[None, :]


def _draw_focal(rng, th: _Thorax, category: str, cx: float, cy: float):
    """(alpha in [0,1], added density, (row, col) offset) of a nodule, mass, consolidation or atelectasis
    centred at (cx, cy), computed in a local window around the centre."""
    s = th.size
    half = int(0.14 * s) + 2
    r0, c0 = max(0, int(cy) - half), max(0, int(cx) - half)
    r1, c1 = min(s, int(cy) + half), min(s, int(cx) + half)
    xs, ys = _grid(s)
    dx, dy = xs[r0:r1, c0:c1] - cx, ys[r0:r1, c0:c1] - cy
    off = (r0, c0)
    if category == "nodule":
        r = rng.uniform(0.035, 0.05) * s
        d = np.sqrt(dx * dx + dy * dy)
        alpha = np.clip(r - d + 0.5, 0.0, 1.0)
        return alpha, 0.40 * alpha, off
    if category == "mass":
        r = rng.uniform(0.07, 0.105) * s
        theta = np.arctan2(dy, dx)
        rt = r * (
            1.0
            + 0.10 * np.sin(3 * theta + rng.uniform(0, 6.3))
            + 0.05 * np.sin(5 * theta + rng.uniform(0, 6.3))
        )
        d = np.sqrt(dx * dx + dy * dy)
        alpha = np.clip(rt - d + 0.5, 0.0, 1.0)
        return alpha, alpha * (0.30 + 0.06 * (1.0 - d / (rt + 1e-6)).clip(0, 1)), off
    if category == "consolidation":
        rx, ry = rng.uniform(0.065, 0.095) * s, rng.uniform(0.06, 0.09) * s
        field = 1.0 - (dx / rx) ** 2 - (dy / ry) ** 2
        for _ in range(3):
            k = 2 * np.pi / (rng.uniform(0.04, 0.08) * s)
            ang = rng.uniform(0, np.pi)
            field = field + 0.18 * np.sin(k * (dx * np.cos(ang) + dy * np.sin(ang)) + rng.uniform(0, 6.3))
        alpha = (field > 0).astype(np.float32)
        mottle = rng.uniform(0.45, 1.0, size=dx.shape).astype(np.float32)
        density = 0.28 * alpha * mottle
        # air bronchograms: two thin dark branches through the opacity
        for _ in range(2):
            ang = rng.uniform(0, np.pi)
            line = np.abs(-dx * np.sin(ang) + dy * np.cos(ang)) < max(1.0, 0.006 * s)
            density = density - 0.14 * (line & (field > 0.25))
        return alpha, density, off
    if category == "atelectasis":
        length = rng.uniform(0.15, 0.22) * s
        thick = rng.uniform(0.045, 0.06) * s
        ang = np.deg2rad(rng.uniform(8, 25) * rng.choice([-1, 1]))
        u = dx * np.cos(ang) + dy * np.sin(ang)
        v = -dx * np.sin(ang) + dy * np.cos(ang)
        alpha = ((u / (length / 2)) ** 2 + (v / (thick / 2)) ** 2 < 1.0).astype(np.float32)
        return alpha, 0.36 * alpha, off
    raise ValueError(category)


def _size_word(value: float, lo: float, hi: float) -> str:
    t = (value - lo) / (hi - lo)
    return "small" if t < 0.34 else ("moderate" if t < 0.67 else "large")


def _phrase(rng: np.random.Generator, lesion: Lesion) -> str:
    c, side, zone = lesion.category, lesion.side, lesion.zone
    pick = lambda xs: xs[int(rng.integers(len(xs)))]  # noqa: E731
    if c in _NOUNS:
        noun = pick(_NOUNS[c])
        if rng.random() < 0.5:
            first, _, rest = noun.partition(" ")
            if first in _QUALIFIERS and rest:  # "small right apical nodule", not "right apical small nodule"
                return f"{first} {pick(_LOC_ADJ[(side, zone)])} {rest}"
            return f"{pick(_LOC_ADJ[(side, zone)])} {noun}"
        loc = pick(_LOC_NOUN[(side, zone)])
        return f"{noun} in the {loc}"
    if c == "effusion":
        opts = [f"{side} pleural effusion", f"{lesion.size} {side} pleural effusion", f"{side} effusion"]
        opts.append(f"{lesion.size} {side} effusion")
        if lesion.size == "small":
            opts.append(f"blunting of the {side} costophrenic angle")
        return pick(opts)
    if c == "pneumothorax":
        return pick(
            [
                f"{side} pneumothorax",
                f"{side} apical pneumothorax",
                f"{lesion.size} {side} apical pneumothorax",
                f"{lesion.size} {side} pneumothorax",
            ]
        )
    if c == "cardiomegaly":
        return pick(
            ["cardiomegaly", "enlarged cardiac silhouette", "mild cardiomegaly", "cardiac enlargement"]
        )
    raise ValueError(c)


def _plan(rng: np.random.Generator) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Mentioned and distractor (category, side) pairs obeying the uniqueness rules."""
    if rng.random() < NO_FINDING_FRACTION:
        return [], []
    n_mentioned = int(rng.choice([1, 2, 3], p=[0.41, 0.35, 0.24]))
    n_distract = int(rng.choice([0, 1, 2], p=[0.12, 0.44, 0.44]))
    w = CATEGORY_WEIGHTS / CATEGORY_WEIGHTS.sum()
    mentioned: list[tuple[str, str]] = []
    while len(mentioned) < n_mentioned:
        c = str(rng.choice(CATEGORIES, p=w))
        s = "" if c == "cardiomegaly" else str(rng.choice(["right", "left"]))
        if (c, s) not in mentioned:
            mentioned.append((c, s))
    distract: list[tuple[str, str]] = []
    for _ in range(50):
        if len(distract) >= n_distract:
            break
        c = str(rng.choice(CATEGORIES, p=w))
        s = "" if c == "cardiomegaly" else str(rng.choice(["right", "left"]))
        taken_sides = {ms for mc, ms in mentioned + distract if mc == c}
        if c == "cardiomegaly" and taken_sides:
            continue
        if s in taken_sides:
            continue
        distract.append((c, s))
    return mentioned, distract


def _write_report(rng: np.random.Generator, phrases: list[str], present: set[str]) -> str:
    r = random.Random(int(rng.integers(2**62)))
    sentences = []
    view = r.choice(
        [
            "PA and lateral views of the chest.",
            "Single frontal view of the chest.",
            "Portable AP chest radiograph.",
            "",
        ]
    )
    if view:
        sentences.append(view)
    order = list(phrases)
    r.shuffle(order)
    if len(order) >= 2 and r.random() < 0.35:
        sentences.append(f"There is {order[0]} and {order[1]}.")
        order = order[2:]
    for p in order:
        sentences.append(r.choice(_FINDING_SENTENCES).format(p=p))
    negs = [r.choice(v) for k, v in _NEGATIONS.items() if k not in present]
    r.shuffle(negs)
    sentences.extend(negs[: r.randint(1 if not phrases else 0, min(3, len(negs)))])
    if not present:
        sentences.append(r.choice(["The lungs are clear.", "Lungs are well expanded and clear."]))
    if r.random() < 0.5:
        sentences.append(
            r.choice(["No acute osseous abnormality.", "The visualized osseous structures are intact."])
        )
    if phrases:
        caps = [p[0].upper() + p[1:] for p in phrases]
        impression = (
            " ".join(f"{i + 1}. {c}." for i, c in enumerate(caps)) if len(caps) > 1 else f"{caps[0]}."
        )
    else:
        impression = r.choice(
            [
                "No acute cardiopulmonary process.",
                "Normal chest radiograph.",
                "No acute cardiopulmonary abnormality.",
            ]
        )
    return "FINDINGS: " + " ".join(sentences) + "\n\nIMPRESSION: " + impression


def generate_example(
    index: int, split: str = "train", seed: int = 0, image_size: int = 256, encode: bool = True
) -> SynthCXRExample:
    """Draw example ``index`` of ``split`` (deterministic in (seed, split, index, image_size)).

    Returns the schema row (image as ``{"bytes": png}``; as ``{"array": uint8 HxW}`` when ``encode=False``)
    and every drawn lesion, mentioned or not.
    """
    if split not in SPLIT_CODES:
        raise ValueError(f"split must be one of {list(SPLIT_CODES)}, got {split!r}")
    if image_size < 64:
        raise ValueError(f"image_size must be >= 64, got {image_size}")
    for attempt in range(20):
        rng = np.random.default_rng([seed, SPLIT_CODES[split], index, image_size, attempt])
        example = _draw(rng, index, split, seed, image_size, encode)
        if example is not None:
            return example
    raise RuntimeError(f"could not place the lesions of example {index} ({split}) in 20 attempts")


def _draw(rng: np.random.Generator, index: int, split: str, seed: int, image_size: int, encode: bool):
    """One drawing attempt; None when a mentioned lesion could not be placed without overlap."""
    from scipy.ndimage import gaussian_filter

    from .common import anonymise_id
    from .images import to_png_bytes

    s = image_size
    xs, ys = _grid(s)
    th = _Thorax(rng, s)
    mentioned_plan, distract_plan = _plan(rng)
    has_cardio = any(c == "cardiomegaly" for c, _ in mentioned_plan + distract_plan)

    # --- anatomy (density: 0 = air, 1 = bone/metal) ---
    body = ((xs - th.cx) / (0.47 * s * th.sc)) ** 2 + ((ys - th.cy - 0.08 * s) / (0.62 * s)) ** 2 < 1.0
    img = np.where(body, 0.50, 0.06).astype(np.float32)
    lungs = {side: th.lung_mask(side) for side in ("right", "left")}
    lung_any = lungs["right"] | lungs["left"]
    coarse = rng.standard_normal((s // 12 + 2, s // 12 + 2)).astype(np.float32)
    markings = _upsample_bilinear(coarse, s)
    img = np.where(lung_any, 0.17 + 0.025 * markings, img)
    abdomen = body & (ys > th.bottom - th.dome * 0.5) & ~lung_any
    img = np.where(abdomen, 0.60, img)
    ctr = rng.uniform(0.56, 0.72) if has_cardio else rng.uniform(0.38, 0.46)
    heart = _heart_mask(rng, th, ctr)
    medi = (np.abs(xs - th.cx) < 0.045 * s * th.sc) & (ys > th.top - 0.06 * s) & (ys < th.bottom)
    img = np.where(heart | medi, 0.70, img)
    u = (xs - th.cx) / (0.36 * s * th.sc)
    period = 0.085 * s * th.sc
    ribs = (np.cos(2 * np.pi * (ys - th.top - 0.10 * s * th.sc * u * u) / period) > 0.72) & lung_any & ~heart
    img = img + 0.07 * ribs

    # --- lesions ---
    lesions: list[Lesion] = []
    boxes: list[list[float]] = []
    plan = [(c, sd, True) for c, sd in mentioned_plan] + [(c, sd, False) for c, sd in distract_plan]
    if has_cardio:
        hb = _box_of(heart)
        c_m = any(c == "cardiomegaly" for c, _ in mentioned_plan)
        # the heart is kept apart by pixel masks (lesions never cover heart pixels), not by its box
        lesions.append(Lesion("cardiomegaly", "", "", hb, c_m))
    # large basal/apical lesions first so focal ones are placed around them
    plan.sort(key=lambda t: {"effusion": 0, "pneumothorax": 1}.get(t[0], 2))
    for category, side, mentioned in plan:
        if category == "cardiomegaly":
            continue
        placed = False
        for _attempt in range(25):
            zone = str(rng.choice(ZONES_OF[category]))
            if category == "effusion":
                lung = lungs[side]
                height = rng.uniform(0.08, 0.26) * s * th.sc
                medial_x = th.lx[side] + (th.a if side == "right" else -th.a)
                lat = np.abs(xs - medial_x) / (2 * th.a)
                meniscus = th.bottom - height - rng.uniform(0.03, 0.07) * s * lat**2 * th.sc
                mask = lung & ~heart & (ys > meniscus)
                box = _box_of(mask)
                if box is None or any(_overlap(box, b) > 0.15 for b in boxes):
                    continue
                img = np.where(mask, 0.62, img)
                size = _size_word(height / (s * th.sc), 0.08, 0.26)
            elif category == "pneumothorax":
                lung = lungs[side]
                f = rng.uniform(0.5, 0.85)
                shift = rng.uniform(0.3, 0.8) * th.a
                hx = th.lx[side] + (shift if side == "right" else -shift)
                hy = th.top + rng.uniform(0.5, 0.7) * th.h
                inner = (
                    _pow25(np.abs((xs - hx) / (th.a * f))) + _pow25(np.abs((ys - hy) / (th.b * f)))
                ) < 1.0
                level = th.top + rng.uniform(0.25, 0.8) * th.h
                medial_x = th.lx[side] + (th.a if side == "right" else -th.a)
                # the crescent's medial extent varies: from the whole apex to a lateral rim only
                mask = (
                    lung
                    & ~heart
                    & ~inner
                    & (ys < level)
                    & (np.abs(xs - medial_x) > rng.uniform(0.0, 0.9) * th.a)
                )
                box = _box_of(mask)
                if box is None or any(_overlap(box, b) > 0.15 for b in boxes):
                    continue
                edge = inner & ~(
                    (
                        _pow25(np.abs((xs - hx) / (th.a * f - 1.5)))
                        + _pow25(np.abs((ys - hy) / (th.b * f - 1.5)))
                    )
                    < 1.0
                )
                img = np.where(mask, 0.05 + 0.07 * ribs, img)
                img = np.where(edge & (ys < level) & lung, 0.42, img)
                size = _size_word(1.0 - f, 0.2, 0.45)
            else:
                radius_guess = {"nodule": 0.05, "mass": 0.11, "consolidation": 0.10, "atelectasis": 0.11}[
                    category
                ] * s
                center = _sample_center(
                    rng, th, side, zone, radius_guess * (0.6 if category == "atelectasis" else 1.0)
                )
                if center is None:
                    continue
                alpha, density, (r0, c0) = _draw_focal(rng, th, category, *center)
                win = (slice(r0, r0 + alpha.shape[0]), slice(c0, c0 + alpha.shape[1]))
                local = _box_of(alpha > 0.5)
                if local is None or (heart[win] & (alpha > 0.5)).any():
                    continue
                box = [local[0] + c0, local[1] + r0, local[2] + c0, local[3] + r0]
                if any(_overlap(box, b) > 0.15 for b in boxes):
                    continue
                img[win] += density
                size = ""
            lesions.append(Lesion(category, side, zone, box, mentioned, size=size))
            boxes.append(box)
            placed = True
            break
        if not placed and mentioned:
            return None  # redraw the whole example with the next attempt's random stream

    # --- exposure and noise ---
    img = gaussian_filter(img, sigma=0.7 * s / 256.0)
    img = (img - 0.5) * rng.uniform(0.85, 1.15) + 0.5 + rng.uniform(-0.06, 0.06)
    img = np.clip(img, 0.0, 1.0) ** rng.uniform(0.8, 1.25)
    img = img + np.float32(rng.uniform(0.008, 0.03)) * rng.standard_normal(img.shape, dtype=np.float32)
    pixels = (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)

    # --- text ---
    for lesion in lesions:
        if lesion.mentioned:
            lesion.phrase = _phrase(rng, lesion)
    mentioned = [le for le in lesions if le.mentioned]
    # report order = plan order (cardiomegaly first when mentioned), stable
    present = {le.category for le in lesions}
    report = _write_report(rng, [le.phrase for le in mentioned], present)
    findings = [{"phrase": le.phrase, "category": le.category, "boxes": [le.box]} for le in mentioned]
    row = {
        "image": {"bytes": to_png_bytes(pixels), "path": None} if encode else {"array": pixels},
        "report": report,
        "findings": findings,
        "image_id": f"synthcxr-{split}-{index:06d}",
        "patient_id": anonymise_id(f"synthcxr:{seed}:{split}:{index}"),
        "source": SOURCE,
    }
    return SynthCXRExample(row=row, lesions=lesions)


def _resolve_counts(examples_per_split: int | Mapping[str, int] | None) -> dict[str, int]:
    if examples_per_split is None:
        return dict(DEFAULT_EXAMPLES)
    if isinstance(examples_per_split, int):
        return {split: int(examples_per_split) for split in SPLIT_CODES}
    unknown = set(examples_per_split) - set(SPLIT_CODES)
    if unknown:
        raise ValueError(
            f"unknown split(s) {sorted(unknown)} in examples_per_split; expected {list(SPLIT_CODES)}"
        )
    return {k: int(v) for k, v in examples_per_split.items()}


def iter_examples(
    split: str, n: int, seed: int = 0, image_size: int = 256, encode: bool = True
) -> Iterator[SynthCXRExample]:
    for i in range(n):
        yield generate_example(i, split, seed, image_size, encode)


def build_synthcxr(
    data_dir: str | None = None,
    examples_per_split: int | Mapping[str, int] | None = None,
    seed: int = 0,
    image_size: int = 256,
    cache_dir: str | None = None,
    progress: bool | None = None,
):
    """Build SynthCXR as a ``DatasetDict`` (splits train/validation/test; defaults 2000/250/500 images).

    ``data_dir`` is unused (nothing to read) and accepted for a uniform builder signature.
    """
    from .common import build_dataset_dict

    counts = _resolve_counts(examples_per_split)
    return build_dataset_dict(
        {split: [(split, i) for i in range(n)] for split, n in counts.items()},
        make_row=lambda item: generate_example(item[1], item[0], seed, image_size).row,
        fingerprint_parts=("synthcxr", seed, image_size, _GENERATOR_VERSION),
        cache_dir=cache_dir,
        desc="SynthCXR",
        progress=progress,
    )


# Bump when the drawing or text changes, so cached builds are not reused.
_GENERATOR_VERSION = 3
