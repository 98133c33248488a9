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
- The finding phrase (<= 8 words) is the report's own words for the finding (a verbatim span, case aside);
  ``report_style="varied"`` (default) writes every style of ``report_text.write_report`` (sections or prose,
  one line or long, synonyms, negated absent findings); ``"template"`` the first fixed FINDINGS/IMPRESSION
  wording, in whose FINDINGS section the phrase appears verbatim. Pixels and boxes do not depend on the style.

Appearance parameters are named in the ``*Look`` dataclasses (``ANATOMY``, ``LOOKS``).

Sides follow the radiological convention: the patient's right is on the image's left.
"""

from __future__ import annotations

import operator
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from .report_text import Finding, deniable_categories, template_report, write_report
from .writing_vocabulary import (
    TEMPLATE_LOCATION_ADJECTIVES,
    TEMPLATE_LOCATION_NOUNS,
    TEMPLATE_NEGATIONS,
    TEMPLATE_NOUNS,
    TEMPLATE_QUALIFIERS,
)

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
REPORT_STYLES = ("varied", "template")
DEFAULT_REPORT_STYLE = "varied"


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


# ---- named appearance parameters (all sizes are fractions of the image side unless stated) ----


@dataclass(frozen=True)
class AnatomyLook:
    """Densities (0 = air, 1 = bone/metal) and proportions of the drawn thorax."""

    body_half_width: float = 0.47  # x semi-axis of the body ellipse (times the thorax scale)
    body_half_height: float = 0.62
    body_drop: float = 0.08  # body ellipse centre below the lung centre
    body_density: float = 0.50
    outside_density: float = 0.06
    lung_density: float = 0.17
    marking_amplitude: float = 0.025  # lung markings: bilinear noise on a 12-px grid
    marking_cell_px: int = 12
    abdomen_density: float = 0.60
    cardiothoracic_ratio_enlarged: tuple[float, float] = (0.56, 0.72)
    cardiothoracic_ratio_normal: tuple[float, float] = (0.38, 0.46)
    heart_density: float = 0.70
    mediastinum_half_width: float = 0.045
    mediastinum_above_lungs: float = 0.06
    rib_curve_width: float = 0.36  # ribs bend with (x / this)^2
    rib_period: float = 0.085
    rib_bend: float = 0.10
    rib_threshold: float = 0.72  # cos(...) above this is rib
    rib_density: float = 0.07


@dataclass(frozen=True)
class NoduleLook:
    radius: tuple[float, float] = (0.035, 0.05)
    density: float = 0.40


@dataclass(frozen=True)
class MassLook:
    radius: tuple[float, float] = (0.07, 0.105)
    lobulation: tuple[tuple[int, float], ...] = ((3, 0.10), (5, 0.05))  # (angular frequency, rel. amplitude)
    density: float = 0.30
    centre_density: float = 0.06  # extra density rising toward the centre


@dataclass(frozen=True)
class ConsolidationLook:
    radius_x: tuple[float, float] = (0.065, 0.095)
    radius_y: tuple[float, float] = (0.06, 0.09)
    waves: int = 3  # sinusoidal ripples of the outline
    wavelength: tuple[float, float] = (0.04, 0.08)
    wave_amplitude: float = 0.18
    mottle: tuple[float, float] = (0.45, 1.0)  # per-pixel density factor
    density: float = 0.28
    bronchograms: int = 2  # thin dark branches through the opacity
    bronchogram_width: float = 0.006  # at least 1 px
    bronchogram_darkening: float = 0.14
    bronchogram_core: float = 0.25  # drawn where the outline field exceeds this


@dataclass(frozen=True)
class AtelectasisLook:
    length: tuple[float, float] = (0.15, 0.22)
    thickness: tuple[float, float] = (0.045, 0.06)
    tilt_degrees: tuple[float, float] = (8.0, 25.0)  # either direction
    density: float = 0.36


@dataclass(frozen=True)
class EffusionLook:
    height: tuple[float, float] = (0.08, 0.26)  # fluid height (times the thorax scale); sets the size word
    meniscus_rise: tuple[float, float] = (0.03, 0.07)  # lateral rise of the meniscus
    density: float = 0.62


@dataclass(frozen=True)
class PneumothoraxLook:
    lung_fraction: tuple[float, float] = (0.5, 0.85)  # collapsed-lung ellipse / lung; sets the size word
    lung_shift: tuple[float, float] = (0.3, 0.8)  # medial shift of the collapsed lung (times lung half-width)
    lung_centre: tuple[float, float] = (0.5, 0.7)  # height of its centre within the lung
    level: tuple[float, float] = (0.25, 0.8)  # air drawn above this height within the lung
    medial_cut: tuple[float, float] = (0.0, 0.9)  # air only this far (times half-width) from the medial edge
    air_density: float = 0.05
    rib_density: float = 0.07
    pleural_line_density: float = 0.42
    pleural_line_px: float = 1.5
    size_range: tuple[float, float] = (0.2, 0.45)  # of (1 - lung_fraction) for small/moderate/large


ANATOMY = AnatomyLook()
LOOKS = {
    "nodule": NoduleLook(),
    "mass": MassLook(),
    "consolidation": ConsolidationLook(),
    "atelectasis": AtelectasisLook(),
    "effusion": EffusionLook(),
    "pneumothorax": PneumothoraxLook(),
}
# focal lesions: radius used to keep the centre inside the lung, and the local drawing window (half side)
PLACEMENT_RADIUS = {"nodule": 0.05, "mass": 0.11, "consolidation": 0.10, "atelectasis": 0.11}
PLACEMENT_SHRINK = {"atelectasis": 0.6}  # thin lesions may come closer to the lung edge
FOCAL_WINDOW = 0.14
MAX_OVERLAP = 0.15  # intersection / smaller box allowed between two lesions
PLACEMENT_ATTEMPTS = 25
NOISE_SIGMA_AT_256 = 0.7  # blur sigma in px at 256 px
CONTRAST = (0.85, 1.15)
BRIGHTNESS = (-0.06, 0.06)
GAMMA = (0.8, 1.25)
NOISE_STD = (0.008, 0.03)


def _window(th: _Thorax, cx: float, cy: float):
    """(dx, dy, (row, col) offset) of the local window around a focal lesion centre."""
    s = th.size
    half = int(FOCAL_WINDOW * s) + 2
    r0, c0 = max(0, int(cy) - half), max(0, int(cx) - half)
    r1, c1 = min(s, int(cy) + half), min(s, int(cx) + half)
    xs, ys = _grid(s)
    return xs[r0:r1, c0:c1] - cx, ys[r0:r1, c0:c1] - cy, (r0, c0)


def _draw_nodule(rng, s: int, dx: np.ndarray, dy: np.ndarray, look: NoduleLook):
    r = rng.uniform(*look.radius) * s
    d = np.sqrt(dx * dx + dy * dy)
    alpha = np.clip(r - d + 0.5, 0.0, 1.0)
    return alpha, look.density * alpha


def _draw_mass(rng, s: int, dx: np.ndarray, dy: np.ndarray, look: MassLook):
    r = rng.uniform(*look.radius) * s
    theta = np.arctan2(dy, dx)
    outline = 1.0
    for frequency, amplitude in look.lobulation:
        outline = outline + amplitude * np.sin(frequency * theta + rng.uniform(0, 6.3))
    rt = r * outline
    d = np.sqrt(dx * dx + dy * dy)
    alpha = np.clip(rt - d + 0.5, 0.0, 1.0)
    return alpha, alpha * (look.density + look.centre_density * (1.0 - d / (rt + 1e-6)).clip(0, 1))


def _draw_consolidation(rng, s: int, dx: np.ndarray, dy: np.ndarray, look: ConsolidationLook):
    rx, ry = rng.uniform(*look.radius_x) * s, rng.uniform(*look.radius_y) * s
    field = 1.0 - (dx / rx) ** 2 - (dy / ry) ** 2
    for _ in range(look.waves):
        k = 2 * np.pi / (rng.uniform(*look.wavelength) * s)
        ang = rng.uniform(0, np.pi)
        field = field + look.wave_amplitude * np.sin(
            k * (dx * np.cos(ang) + dy * np.sin(ang)) + rng.uniform(0, 6.3)
        )
    alpha = (field > 0).astype(np.float32)
    mottle = rng.uniform(*look.mottle, size=dx.shape).astype(np.float32)
    density = look.density * alpha * mottle
    for _ in range(look.bronchograms):
        ang = rng.uniform(0, np.pi)
        line = np.abs(-dx * np.sin(ang) + dy * np.cos(ang)) < max(1.0, look.bronchogram_width * s)
        density = density - look.bronchogram_darkening * (line & (field > look.bronchogram_core))
    return alpha, density


def _draw_atelectasis(rng, s: int, dx: np.ndarray, dy: np.ndarray, look: AtelectasisLook):
    length = rng.uniform(*look.length) * s
    thick = rng.uniform(*look.thickness) * s
    ang = np.deg2rad(rng.uniform(*look.tilt_degrees) * rng.choice([-1, 1]))
    u = dx * np.cos(ang) + dy * np.sin(ang)
    v = -dx * np.sin(ang) + dy * np.cos(ang)
    alpha = ((u / (length / 2)) ** 2 + (v / (thick / 2)) ** 2 < 1.0).astype(np.float32)
    return alpha, look.density * alpha


_FOCAL_DRAWERS = {
    "nodule": _draw_nodule,
    "mass": _draw_mass,
    "consolidation": _draw_consolidation,
    "atelectasis": _draw_atelectasis,
}


def _draw_focal(rng, th: _Thorax, category: str, cx: float, cy: float):
    """(alpha in [0,1], added density, (row, col) offset) of a nodule, mass, consolidation or atelectasis
    centred at (cx, cy), computed in a local window around the centre."""
    if category not in _FOCAL_DRAWERS:
        raise ValueError(f"category must be one of {sorted(_FOCAL_DRAWERS)}, got {category!r}")
    dx, dy, off = _window(th, cx, cy)
    alpha, density = _FOCAL_DRAWERS[category](rng, th.size, dx, dy, LOOKS[category])
    return alpha, density, off


def _size_word(value: float, lo: float, hi: float) -> str:
    t = (value - lo) / (hi - lo)
    return "small" if t < 0.34 else ("moderate" if t < 0.67 else "large")


def _fits(box: list[float] | None, boxes: list[list[float]]) -> bool:
    return box is not None and not any(_overlap(box, b) > MAX_OVERLAP for b in boxes)


def _medial_x(th: _Thorax, side: str) -> float:
    return th.lx[side] + (th.a if side == "right" else -th.a)


@dataclass
class _Canvas:
    """The image being drawn (float32 densities) and the anatomy masks lesions are placed against."""

    img: np.ndarray
    lungs: dict[str, np.ndarray]
    heart: np.ndarray
    ribs: np.ndarray


def _place_effusion(rng, th: _Thorax, canvas: _Canvas, side: str, boxes) -> tuple[list[float], str] | None:
    look: EffusionLook = LOOKS["effusion"]
    xs, ys = _grid(th.size)
    s = th.size
    height = rng.uniform(*look.height) * s * th.sc
    lat = np.abs(xs - _medial_x(th, side)) / (2 * th.a)
    meniscus = th.bottom - height - rng.uniform(*look.meniscus_rise) * s * lat**2 * th.sc
    mask = canvas.lungs[side] & ~canvas.heart & (ys > meniscus)
    box = _box_of(mask)
    if not _fits(box, boxes):
        return None
    canvas.img = np.where(mask, look.density, canvas.img)
    return box, _size_word(height / (s * th.sc), *look.height)


def _place_pneumothorax(
    rng, th: _Thorax, canvas: _Canvas, side: str, boxes
) -> tuple[list[float], str] | None:
    look: PneumothoraxLook = LOOKS["pneumothorax"]
    xs, ys = _grid(th.size)
    lung = canvas.lungs[side]
    f = rng.uniform(*look.lung_fraction)
    shift = rng.uniform(*look.lung_shift) * th.a
    hx = th.lx[side] + (shift if side == "right" else -shift)
    hy = th.top + rng.uniform(*look.lung_centre) * th.h
    inner = (_pow25(np.abs((xs - hx) / (th.a * f))) + _pow25(np.abs((ys - hy) / (th.b * f)))) < 1.0
    level = th.top + rng.uniform(*look.level) * th.h
    # the crescent's medial extent varies: from the whole apex to a lateral rim only
    cut = np.abs(xs - _medial_x(th, side)) > rng.uniform(*look.medial_cut) * th.a
    mask = lung & ~canvas.heart & ~inner & (ys < level) & cut
    box = _box_of(mask)
    if not _fits(box, boxes):
        return None
    px = look.pleural_line_px
    inside_line = (
        _pow25(np.abs((xs - hx) / (th.a * f - px))) + _pow25(np.abs((ys - hy) / (th.b * f - px)))
    ) < 1.0
    edge = inner & ~inside_line
    canvas.img = np.where(mask, look.air_density + look.rib_density * canvas.ribs, canvas.img)
    canvas.img = np.where(edge & (ys < level) & lung, look.pleural_line_density, canvas.img)
    return box, _size_word(1.0 - f, *look.size_range)


def _place_focal(rng, th: _Thorax, canvas: _Canvas, category: str, side: str, zone: str, boxes):
    radius = PLACEMENT_RADIUS[category] * th.size
    center = _sample_center(rng, th, side, zone, radius * PLACEMENT_SHRINK.get(category, 1.0))
    if center is None:
        return None
    alpha, density, (r0, c0) = _draw_focal(rng, th, category, *center)
    win = (slice(r0, r0 + alpha.shape[0]), slice(c0, c0 + alpha.shape[1]))
    local = _box_of(alpha > 0.5)
    if local is None or (canvas.heart[win] & (alpha > 0.5)).any():
        return None
    box = [local[0] + c0, local[1] + r0, local[2] + c0, local[3] + r0]
    if not _fits(box, boxes):
        return None
    canvas.img[win] += density
    return box, ""


def _draw_anatomy(rng, th: _Thorax, enlarged_heart: bool) -> _Canvas:
    a = ANATOMY
    s = th.size
    xs, ys = _grid(s)
    body = (
        ((xs - th.cx) / (a.body_half_width * s * th.sc)) ** 2
        + ((ys - th.cy - a.body_drop * s) / (a.body_half_height * s)) ** 2
    ) < 1.0
    img = np.where(body, a.body_density, a.outside_density).astype(np.float32)
    lungs = {side: th.lung_mask(side) for side in ("right", "left")}
    lung_any = lungs["right"] | lungs["left"]
    n = s // a.marking_cell_px + 2
    markings = _upsample_bilinear(rng.standard_normal((n, n)).astype(np.float32), s)
    img = np.where(lung_any, a.lung_density + a.marking_amplitude * markings, img)
    abdomen = body & (ys > th.bottom - th.dome * 0.5) & ~lung_any
    img = np.where(abdomen, a.abdomen_density, img)
    ctr = rng.uniform(*(a.cardiothoracic_ratio_enlarged if enlarged_heart else a.cardiothoracic_ratio_normal))
    heart = _heart_mask(rng, th, ctr)
    medi = (
        (np.abs(xs - th.cx) < a.mediastinum_half_width * s * th.sc)
        & (ys > th.top - a.mediastinum_above_lungs * s)
        & (ys < th.bottom)
    )
    img = np.where(heart | medi, a.heart_density, img)
    u = (xs - th.cx) / (a.rib_curve_width * s * th.sc)
    period = a.rib_period * s * th.sc
    bend = a.rib_bend * s * th.sc * u * u
    ribs = (np.cos(2 * np.pi * (ys - th.top - bend) / period) > a.rib_threshold) & lung_any & ~heart
    img = img + a.rib_density * ribs
    return _Canvas(img, lungs, heart, ribs)


def _place_lesions(rng, th: _Thorax, canvas: _Canvas, mentioned_plan, distract_plan) -> list[Lesion] | None:
    """Draw every planned lesion into ``canvas``; None when a mentioned one cannot be placed."""
    lesions: list[Lesion] = []
    boxes: list[list[float]] = []
    plan = [(c, sd, True) for c, sd in mentioned_plan] + [(c, sd, False) for c, sd in distract_plan]
    if any(c == "cardiomegaly" for c, _, _ in plan):
        # the heart is kept apart by pixel masks (lesions never cover heart pixels), not by its box
        mentioned = any(c == "cardiomegaly" for c, _ in mentioned_plan)
        lesions.append(Lesion("cardiomegaly", "", "", _box_of(canvas.heart), mentioned))
    # large basal/apical lesions first so focal ones are placed around them
    plan.sort(key=lambda t: {"effusion": 0, "pneumothorax": 1}.get(t[0], 2))
    for category, side, mentioned in plan:
        if category == "cardiomegaly":
            continue
        for _attempt in range(PLACEMENT_ATTEMPTS):
            zone = str(rng.choice(ZONES_OF[category]))
            if category == "effusion":
                placed = _place_effusion(rng, th, canvas, side, boxes)
            elif category == "pneumothorax":
                placed = _place_pneumothorax(rng, th, canvas, side, boxes)
            else:
                placed = _place_focal(rng, th, canvas, category, side, zone, boxes)
            if placed is not None:
                box, size = placed
                lesions.append(Lesion(category, side, zone, box, mentioned, size=size))
                boxes.append(box)
                break
        else:
            if mentioned:
                return None  # redraw the whole example with the next attempt's random stream
    return lesions


def _expose(rng, img: np.ndarray, size: int) -> np.ndarray:
    """Blur, contrast, brightness, gamma and noise -> uint8 pixels."""
    from scipy.ndimage import gaussian_filter

    img = gaussian_filter(img, sigma=NOISE_SIGMA_AT_256 * size / 256.0)
    img = (img - 0.5) * rng.uniform(*CONTRAST) + 0.5 + rng.uniform(*BRIGHTNESS)
    img = np.clip(img, 0.0, 1.0) ** rng.uniform(*GAMMA)
    img = img + np.float32(rng.uniform(*NOISE_STD)) * rng.standard_normal(img.shape, dtype=np.float32)
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


# ---- text ----


def _template_phrase(rng: np.random.Generator, lesion: Lesion) -> str:
    """The "template" style's finding phrase (numpy stream, so that a seed gives the same template reports as it always has)."""
    c, side, zone = lesion.category, lesion.side, lesion.zone
    pick = lambda xs: xs[int(rng.integers(len(xs)))]  # noqa: E731
    if c in TEMPLATE_NOUNS:
        noun = pick(TEMPLATE_NOUNS[c])
        if rng.random() < 0.5:
            first, _, rest = noun.partition(" ")
            if (
                first in TEMPLATE_QUALIFIERS and rest
            ):  # "small right apical nodule", not "right apical small .."
                return f"{first} {pick(TEMPLATE_LOCATION_ADJECTIVES[(side, zone)])} {rest}"
            return f"{pick(TEMPLATE_LOCATION_ADJECTIVES[(side, zone)])} {noun}"
        return f"{noun} in the {pick(TEMPLATE_LOCATION_NOUNS[(side, zone)])}"
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
    raise ValueError(f"lesion category must be one of {list(CATEGORIES)}, got {c!r}")


def _write_text(rng: np.random.Generator, lesions: list[Lesion], report_style: str) -> str:
    """Set ``phrase`` on every mentioned lesion and return the report (report order = plan order)."""
    mentioned = [le for le in lesions if le.mentioned]
    present = {le.category for le in lesions}
    if report_style == "template":
        for lesion in mentioned:
            lesion.phrase = _template_phrase(rng, lesion)
        r = random.Random(int(rng.integers(2**62)))
        negatable = [c for c in TEMPLATE_NEGATIONS if c not in present]
        return template_report([le.phrase for le in mentioned], negatable, r)
    r = random.Random(int(rng.integers(2**62)))
    findings = [Finding(le.category, le.side, le.zone, le.size) for le in mentioned]
    written = write_report(findings, r, style=report_style, absent=deniable_categories(sorted(present)))
    for lesion, phrase in zip(mentioned, written.phrases):
        lesion.phrase = phrase
    return written.text


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


def generate_example(
    index: int,
    split: str = "train",
    seed: int = 0,
    image_size: int = 256,
    encode: bool = True,
    report_style: str = DEFAULT_REPORT_STYLE,
) -> SynthCXRExample:
    """Draw example ``index`` of ``split`` (deterministic in (seed, split, index, image_size, report_style)).

    Returns the schema row (image as ``{"bytes": png}``; as ``{"array": uint8 HxW}`` when ``encode=False``)
    and every drawn lesion, mentioned or not. ``report_style``: ``"varied"`` (any writer style of
    ``report_text``) or ``"template"`` (the first fixed FINDINGS/IMPRESSION wording). The image and the boxes
    do not depend on the style (the text is drawn after the pixels).
    """
    if split not in SPLIT_CODES:
        raise ValueError(f"split must be one of {list(SPLIT_CODES)}, got {split!r}")
    if image_size < 64:
        raise ValueError(f"image_size must be >= 64, got {image_size}")
    if report_style not in REPORT_STYLES:
        raise ValueError(f"report_style must be one of {list(REPORT_STYLES)}, got {report_style!r}")
    for attempt in range(20):
        rng = np.random.default_rng([seed, SPLIT_CODES[split], index, image_size, attempt])
        example = _draw(rng, index, split, seed, image_size, encode, report_style)
        if example is not None:
            return example
    raise RuntimeError(f"could not place the lesions of example {index} ({split}) in 20 attempts")


def _draw(
    rng: np.random.Generator,
    index: int,
    split: str,
    seed: int,
    image_size: int,
    encode: bool,
    report_style: str = DEFAULT_REPORT_STYLE,
):
    """One drawing attempt; None when a mentioned lesion could not be placed without overlap."""
    from .common import anonymise_id
    from .images import to_png_bytes

    th = _Thorax(rng, image_size)
    mentioned_plan, distract_plan = _plan(rng)
    has_cardio = any(c == "cardiomegaly" for c, _ in mentioned_plan + distract_plan)
    canvas = _draw_anatomy(rng, th, has_cardio)
    lesions = _place_lesions(rng, th, canvas, mentioned_plan, distract_plan)
    if lesions is None:
        return None
    pixels = _expose(rng, canvas.img, image_size)
    report = _write_text(rng, lesions, report_style)
    findings = [
        {"phrase": le.phrase, "category": le.category, "boxes": [le.box]} for le in lesions if le.mentioned
    ]
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
        examples_per_split = {split: examples_per_split for split in SPLIT_CODES}
    unknown = set(examples_per_split) - set(SPLIT_CODES)
    if unknown:
        raise ValueError(
            f"unknown split(s) {sorted(unknown)} in examples_per_split; expected {list(SPLIT_CODES)}"
        )
    counts = {}
    for split, count in examples_per_split.items():
        try:
            counts[split] = -1 if isinstance(count, bool) else operator.index(count)  # ints, numpy ints
        except TypeError:
            counts[split] = -1
        if counts[split] < 0:
            raise ValueError(f"examples_per_split[{split!r}] must be an integer >= 0, got {count!r}")
    return counts


def iter_examples(
    split: str,
    n: int,
    seed: int = 0,
    image_size: int = 256,
    encode: bool = True,
    report_style: str = DEFAULT_REPORT_STYLE,
) -> Iterator[SynthCXRExample]:
    """Examples 0..n-1 of ``split`` (see ``generate_example``)."""
    for i in range(n):
        yield generate_example(i, split, seed, image_size, encode, report_style)


def build_synthcxr(
    data_dir: str | None = None,
    examples_per_split: int | Mapping[str, int] | None = None,
    seed: int = 0,
    image_size: int = 256,
    cache_dir: str | None = None,
    progress: bool | None = None,
    report_style: str = DEFAULT_REPORT_STYLE,
    streaming: bool = False,
):
    """Build SynthCXR as a ``DatasetDict`` (splits train/validation/test; defaults 2000/250/500 images).

    ``data_dir`` is unused (nothing to read) and accepted for a uniform builder signature.
    ``report_style``: ``"varied"`` (default) or ``"template"`` (see ``generate_example``).
    """
    from .common import build_dataset_dict

    if report_style not in REPORT_STYLES:
        raise ValueError(f"report_style must be one of {list(REPORT_STYLES)}, got {report_style!r}")
    counts = _resolve_counts(examples_per_split)
    return build_dataset_dict(
        {split: [(split, i) for i in range(n)] for split, n in counts.items()},
        make_row=lambda item: (
            generate_example(item[1], item[0], seed, image_size, report_style=report_style).row
        ),
        fingerprint_parts=("synthcxr", seed, image_size, report_style, _GENERATOR_VERSION),
        cache_dir=cache_dir,
        desc="SynthCXR",
        progress=progress,
        streaming=streaming,
    )


# Bump when the drawing or text changes, so cached builds are not reused.
_GENERATOR_VERSION = 4
