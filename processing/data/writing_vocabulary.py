"""The report writers' own words: sides, zones and position wordings, and the first "template" report style
(kept to reproduce it). Only the writers (``report_text.write_report``, SynthCXR, the template reports of real
datasets) use these; the finding categories and their wordings, which writers and the reader share, are in
``vocabulary_medrg.py`` (hub code, copied into model folders), and what is only written stays here.

Sides are the PATIENT's sides (radiological convention: the patient's right is on the image's left).
"""

from __future__ import annotations

SIDES = ("right", "left", "bilateral")
ZONES = ("upper", "middle", "lower")

# Writer's words for position. Side-specific location nouns/adjectives per (side, zone).
LOCATION_NOUNS = {
    ("right", "upper"): ("right upper lobe", "right upper zone", "right upper lung", "right apex"),
    ("right", "middle"): ("right middle lobe", "right mid zone", "right midlung"),
    ("right", "lower"): ("right lower lobe", "right lower zone", "right lung base", "right base"),
    ("left", "upper"): ("left upper lobe", "left upper zone", "left upper lung", "left apex"),
    ("left", "middle"): ("lingula", "left mid zone", "left midlung"),
    ("left", "lower"): ("left lower lobe", "left lower zone", "left lung base", "left base"),
    ("bilateral", "upper"): ("both upper zones", "both upper lobes", "upper lobes bilaterally"),
    ("bilateral", "middle"): ("both mid zones", "both midlungs"),
    ("bilateral", "lower"): ("both lung bases", "both lower zones", "lung bases bilaterally"),
}
LOCATION_ADJECTIVES = {
    ("right", "upper"): ("right upper lobe", "right upper zone", "right apical"),
    ("right", "middle"): ("right middle lobe", "right mid zone", "right midlung", "right perihilar"),
    ("right", "lower"): ("right lower lobe", "right lower zone", "right basilar", "right basal"),
    ("left", "upper"): ("left upper lobe", "left upper zone", "left apical"),
    ("left", "middle"): ("lingular", "left mid zone", "left midlung", "left perihilar"),
    ("left", "lower"): ("left lower lobe", "left lower zone", "left basilar", "left basal"),
    ("bilateral", "upper"): ("bilateral upper zone", "bilateral apical", "bilateral upper lobe"),
    ("bilateral", "middle"): ("bilateral mid zone", "bilateral perihilar"),
    ("bilateral", "lower"): ("bilateral lower zone", "bibasilar", "bilateral basal"),
}
SIDE_ADJECTIVES = {
    "right": ("right", "right-sided"),
    "left": ("left", "left-sided"),
    "bilateral": ("bilateral",),
}
SIDE_TRAILERS = {
    "right": ("on the right", "on the right side", "in the right hemithorax", "of the right lung"),
    "left": ("on the left", "on the left side", "in the left hemithorax", "of the left lung"),
    "bilateral": ("on both sides", "in both lungs", "bilaterally"),
}


def article(phrase: str) -> str:
    """'an' before a vowel sound, else 'a' (good enough for the vocabulary's words)."""
    return "an" if phrase[:1].lower() in "aeio" else "a"


# ---- the "template" report style (the first SynthCXR / template-report wording, kept to reproduce it) ----
TEMPLATE_NOUNS = {
    "nodule": ("nodule", "pulmonary nodule", "nodular opacity", "small nodule", "rounded nodule"),
    "mass": ("mass", "large mass", "rounded mass", "mass lesion", "lobulated mass"),
    "consolidation": ("consolidation", "airspace opacity", "airspace consolidation", "patchy consolidation"),
    "atelectasis": (
        "atelectasis",
        "plate-like atelectasis",
        "linear atelectasis",
        "subsegmental atelectasis",
    ),
}
# a leading qualifier stays in front of a location adjective: "small right apical nodule"
TEMPLATE_QUALIFIERS = frozenset(
    {"small", "rounded", "large", "lobulated", "patchy", "linear", "subsegmental", "plate-like"}
)
TEMPLATE_LOCATION_NOUNS = {
    ("right", "upper"): ("right upper lobe", "right upper zone", "right upper lung"),
    ("right", "middle"): ("right middle lobe", "right mid zone", "right midlung"),
    ("right", "lower"): ("right lower lobe", "right lower zone", "right lung base"),
    ("left", "upper"): ("left upper lobe", "left upper zone", "left upper lung"),
    ("left", "middle"): ("lingula", "left mid zone", "left midlung"),
    ("left", "lower"): ("left lower lobe", "left lower zone", "left lung base"),
}
# the same places before a noun ("right apical nodule"): a location noun with an adjective of its own takes it
_LOCATION_ADJECTIVE_OF = {
    "right upper lung": "right apical",
    "right lung base": "right basilar",
    "left upper lung": "left apical",
    "lingula": "lingular",
    "left lung base": "left basilar",
}
TEMPLATE_LOCATION_ADJECTIVES = {
    place: tuple(_LOCATION_ADJECTIVE_OF.get(noun, noun) for noun in nouns)
    for place, nouns in TEMPLATE_LOCATION_NOUNS.items()
}
TEMPLATE_NEGATIONS = {
    "pneumothorax": ("No pneumothorax.", "There is no pneumothorax."),
    "effusion": ("No pleural effusion.", "No large pleural effusion."),
    "consolidation": ("No focal consolidation.", "No focal airspace consolidation."),
    "cardiomegaly": ("Heart size is normal.", "The cardiac silhouette is normal in size."),
    "mass": ("No suspicious pulmonary mass.",),
    "nodule": ("No discrete pulmonary nodule.",),
    "atelectasis": ("No atelectasis.",),
}
TEMPLATE_FINDING_SENTENCES = (
    "There is {p}.",
    "Again noted is {p}.",
    "The radiograph demonstrates {p}.",
    "Findings include {p}.",
    "There is evidence of {p}.",
    "New since the prior study is {p}.",
    "Redemonstrated is {p}.",
    "Of note, there is {p}.",
)
TEMPLATE_VIEWS = (
    "PA and lateral views of the chest.",
    "Single frontal view of the chest.",
    "Portable AP chest radiograph.",
    "",
)
TEMPLATE_CLEAR_LUNGS = ("The lungs are clear.", "Lungs are well expanded and clear.")
TEMPLATE_BONES = ("No acute osseous abnormality.", "The visualized osseous structures are intact.")
NO_FINDING_IMPRESSIONS = (
    "No acute cardiopulmonary process.",
    "Normal chest radiograph.",
    "No acute cardiopulmonary abnormality.",
)
