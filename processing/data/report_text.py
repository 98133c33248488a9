"""Shared report-writing vocabulary: position words (radiological convention) and report templates.

Radiological convention: a PA/AP chest image is viewed as if facing the patient, so the patient's RIGHT
is on the image's LEFT. ``side_of_box`` returns the patient side.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

CENTRAL_CATEGORIES = {"cardiomegaly", "aortic enlargement", "enlarged pa", "mediastinal shift", "edema"}

ZONE_WORDS = {"upper": "upper zone", "middle": "mid zone", "lower": "lower zone"}
ZONE_ALT = {"upper": "upper lung", "middle": "midlung", "lower": "lung base"}

NORMAL_STATEMENTS = [
    "The cardiomediastinal silhouette is within normal limits.",
    "Heart size is normal.",
    "The mediastinal contours are unremarkable.",
    "No acute osseous abnormality.",
    "The visualized osseous structures are intact.",
    "Trachea is midline.",
]

NEGATIONS = {
    "pneumothorax": ["No pneumothorax.", "There is no pneumothorax."],
    "effusion": ["No pleural effusion.", "No large pleural effusion."],
    "consolidation": ["No focal consolidation.", "No focal airspace consolidation."],
    "cardiomegaly": ["Heart size is normal.", "No cardiomegaly."],
    "mass": ["No suspicious mass."],
    "nodule": ["No discrete pulmonary nodule."],
    "atelectasis": ["No atelectasis."],
}

NO_FINDING_IMPRESSIONS = [
    "No acute cardiopulmonary process.",
    "Normal chest radiograph.",
    "No acute cardiopulmonary abnormality.",
]

FINDING_SENTENCES = [
    "There is {p}.",
    "Again noted is {p}.",
    "The radiograph demonstrates {p}.",
    "Findings include {p}.",
    "There is evidence of {p}.",
    "New since the prior study is {p}.",
    "Interval appearance of {p}.",
]


def side_of_box(box: Sequence[float], image_width: float, margin: float = 0.06) -> str:
    """Patient side of a box: 'right' (image left), 'left' (image right) or 'bilateral' (straddles the middle)."""
    x0, _, x1, _ = box
    mid = image_width / 2.0
    if x1 <= mid + margin * image_width and (x0 + x1) / 2 < mid:
        return "right"
    if x0 >= mid - margin * image_width and (x0 + x1) / 2 > mid:
        return "left"
    return "bilateral"


def zone_of_box(box: Sequence[float], image_height: float) -> str:
    """'upper' / 'middle' / 'lower' from the box centre's height (lungs span roughly 10-80 % of a PA image)."""
    cy = (box[1] + box[3]) / 2.0 / image_height
    if cy < 0.38:
        return "upper"
    if cy < 0.58:
        return "middle"
    return "lower"


def location_phrase(label: str, side: str, zone: str, rng: random.Random) -> str:
    """A short phrase (<= ~8 words) naming a finding and its position, e.g. 'nodule in the right upper zone'."""
    label = label.lower()
    if label in CENTRAL_CATEGORIES or side == "bilateral":
        if label in CENTRAL_CATEGORIES:
            return label
        return (
            rng.choice([f"bilateral {label}", f"{label} in both lungs"])
            if zone == ""
            else rng.choice([f"bilateral {ZONE_ALT[zone]} {label}", f"{label} in both {ZONE_WORDS[zone]}s"])
        )
    zone_word = ZONE_WORDS[zone]
    options = [
        f"{side} {zone_word} {label}",
        f"{label} in the {side} {zone_word}",
        f"{label}, position: {side} {zone_word}",
    ]
    if zone == "lower":
        options.append(f"{label} at the {side} base")
    if zone == "upper":
        options.append(f"{label} in the {side} upper lung")
    if label in ("effusion", "pleural effusion"):
        options = [f"{side} pleural effusion", f"{side} {label}", f"{label} on the {side}"]
    if label == "pneumothorax":
        options = [f"{side} pneumothorax", f"{side} {'apical ' if zone == 'upper' else ''}pneumothorax"]
    return rng.choice(options)


def write_report(
    phrases: Sequence[str], absent: Sequence[str], rng: random.Random, view: str | None = None
) -> str:
    """A FINDINGS/IMPRESSION report in which every phrase appears verbatim (lower-case, mid-sentence).

    ``absent``: category keys of ``NEGATIONS`` that may be negated ("no pneumothorax").
    """
    sentences = []
    if view is None:
        view = rng.choice(
            [
                "PA and lateral views of the chest.",
                "Single frontal view of the chest.",
                "Portable AP chest radiograph.",
                "",
            ]
        )
    if view:
        sentences.append(view)
    if len(phrases) >= 2 and rng.random() < 0.35:
        sentences.append(f"There is {phrases[0]} and {phrases[1]}.")
        rest = list(phrases[2:])
    else:
        rest = list(phrases)
    for p in rest:
        sentences.append(rng.choice(FINDING_SENTENCES).format(p=p))
    negs = [rng.choice(NEGATIONS[a]) for a in absent if a in NEGATIONS]
    rng.shuffle(negs)
    sentences.extend(negs[: rng.randint(0, min(3, len(negs)))])
    if not phrases:
        sentences.append(rng.choice(["The lungs are clear.", "Lungs are well expanded and clear."]))
    if rng.random() < 0.5:
        sentences.append(rng.choice(NORMAL_STATEMENTS[3:]))
    if phrases:
        caps = [p[0].upper() + p[1:] for p in phrases]
        impression = (
            " ".join(f"{i + 1}. {c}." for i, c in enumerate(caps)) if len(caps) > 1 else f"{caps[0]}."
        )
    else:
        impression = rng.choice(NO_FINDING_IMPRESSIONS)
    return "FINDINGS: " + " ".join(sentences) + "\n\nIMPRESSION: " + impression
