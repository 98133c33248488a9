"""The one report vocabulary of MedRG: finding categories with their synonyms, sides, zones, severities and
negation templates. The report writers (``report_text.write_report``, used by SynthCXR and the template
reports of real datasets) draw their words from here, and the narrative reader (``reading_medrg.py``) and the
category check of answer phrases read with the same tables.

Sides are the PATIENT's sides (radiological convention: the patient's right is on the image's left).
Categories are lower-case keys (``"effusion"``, ``"pneumothorax"``...); ``category_of_label`` maps dataset
labels ("Effusion", "Pleural Effusion", "Lung Opacity"...) onto them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SIDES = ("right", "left", "bilateral")
ZONES = ("upper", "middle", "lower")


@dataclass(frozen=True)
class CategoryTerms:
    """How one finding category is written and read.

    - ``nouns``: names a writer may use for a present finding (each one names the category unambiguously).
    - ``read``: regular expressions (lower-case, matched at word boundaries) that state the category when
      reading a report, most specific first; ``nouns`` are always read too.
    - ``related``: weaker wordings that may stand for the category when its own terms are absent
      (e.g. "consolidation" for pneumonia); never used by writers.
    - ``severities``: descriptive words a writer may put before a noun when no severity is given (sizes
      such as "small"/"moderate"/"large" come from the finding itself, never invented).
    - ``negations``: whole sentences that deny the category; ``{n}`` is replaced by a noun.
    - ``countable``: whether "a"/"an" goes before a singular noun ("a nodule", but "consolidation").
    - ``central``: a finding without a side (the heart).
    """

    nouns: tuple[str, ...]
    read: tuple[str, ...] = ()
    related: tuple[str, ...] = ()
    severities: tuple[str, ...] = ()
    negations: tuple[str, ...] = ("No {n}.", "There is no {n}.", "No evidence of {n}.", "Negative for {n}.")
    countable: bool = True
    central: bool = False


CATEGORY_TERMS: dict[str, CategoryTerms] = {
    "nodule": CategoryTerms(
        nouns=("nodule", "pulmonary nodule", "nodular opacity", "rounded nodule", "nodular density"),
        read=(
            r"nodules?",
            r"nodular (?:opacit(?:y|ies)|densit(?:y|ies)|lesions?)",
            r"coin lesions?",
            r"granulomas?",
        ),
        severities=("small", "tiny", "subcentimeter", "well-defined", "calcified"),
        negations=(
            "No {n}.",
            "No discrete pulmonary nodule.",
            "No suspicious nodule is identified.",
            "Negative for pulmonary nodules.",
        ),
    ),
    "mass": CategoryTerms(
        nouns=("mass", "lung mass", "mass lesion", "lobulated mass", "pulmonary mass"),
        read=(r"masse?s?", r"mass lesions?", r"tumou?rs?", r"neoplasms?"),
        severities=("large", "lobulated", "ill-defined", "spiculated", "bulky"),
        negations=(
            "No {n}.",
            "No suspicious pulmonary mass.",
            "There is no mass lesion.",
            "No evidence of a mass.",
        ),
    ),
    "consolidation": CategoryTerms(
        nouns=("consolidation", "airspace opacity", "airspace consolidation", "airspace disease"),
        read=(
            r"consolidations?",
            r"consolidative opacit(?:y|ies)",
            r"airspace (?:opacit(?:y|ies)|disease|process)",
            r"air[- ]space (?:opacit(?:y|ies)|disease)",
            r"air bronchograms?",
        ),
        related=(r"opacit(?:y|ies)", r"opacification"),
        severities=("patchy", "dense", "focal", "confluent", "mild"),
        negations=(
            "No focal consolidation.",
            "No focal airspace consolidation.",
            "There is no consolidation.",
            "No evidence of {n}.",
        ),
        countable=False,
    ),
    "atelectasis": CategoryTerms(
        nouns=("atelectasis", "subsegmental atelectasis", "plate-like atelectasis", "linear atelectasis"),
        read=(
            r"atelectas[ie]s",
            r"atelectatic (?:change|changes|band|opacity)",
            r"(?:lobar |segmental )?collapse",
            r"volume loss",
        ),
        related=(r"opacit(?:y|ies)", r"opacification", r"bands?"),
        severities=("mild", "minimal", "discoid"),
        negations=("No {n}.", "There is no atelectasis.", "No evidence of {n}."),
        countable=False,
    ),
    "effusion": CategoryTerms(
        nouns=("pleural effusion", "effusion", "pleural fluid collection"),
        read=(
            r"pleural effusions?",
            r"effusions?",
            r"hydrothorax",
            r"pleural fluid",
            r"fluid (?:layers |layering |collects |collecting )?in the (?:\w+ )?pleural (?:space|cavity)",
            r"fluid collection",
            r"blunting of the (?:\w+ )?costophrenic (?:angles?|sulcus|sulci)",
            r"(?:costophrenic|cp) angle blunting",
            r"meniscus sign",
        ),
        severities=("layering", "loculated"),
        negations=(
            "No pleural effusion.",
            "No large pleural effusion.",
            "There is no pleural effusion.",
            "The costophrenic angles are sharp.",
            "No evidence of pleural fluid.",
        ),
    ),
    "pneumothorax": CategoryTerms(
        nouns=("pneumothorax",),
        read=(
            r"pneumothora(?:x|ces)",
            r"hydropneumothorax",
            r"(?:visceral |lateral )?pleural line",
            r"air in the pleural space",
        ),
        severities=(),
        negations=(
            "No pneumothorax.",
            "There is no pneumothorax.",
            "No evidence of pneumothorax.",
            "Negative for pneumothorax.",
        ),
    ),
    "cardiomegaly": CategoryTerms(
        nouns=("cardiomegaly", "enlarged cardiac silhouette", "cardiac enlargement", "enlarged heart"),
        read=(
            r"cardiomegaly",
            r"enlarged (?:heart|cardiac)(?: shadow| silhouette| size)?",
            r"enlargement of the (?:heart|cardiac silhouette)",
            r"cardiac enlargement",
            r"(?:heart|cardiac silhouette|heart shadow) (?:is|appears|remains)(?: \w+ly)? enlarged",
            r"(?:increased|enlarged) cardiothoracic ratio",
        ),
        severities=("mild", "moderate", "marked", "severe"),
        negations=(
            "Heart size is normal.",
            "The cardiac silhouette is normal in size.",
            "No cardiomegaly.",
            "The cardiomediastinal silhouette is within normal limits.",
        ),
        countable=False,
        central=True,
    ),
    "infiltrate": CategoryTerms(
        nouns=("infiltrate", "patchy infiltrate", "interstitial infiltrate", "pulmonary infiltrate"),
        read=(r"infiltrates?", r"infiltration", r"infiltrative (?:opacit(?:y|ies)|process|changes?)"),
        related=(r"(?:patchy |hazy |interstitial |reticular )opacit(?:y|ies)", r"opacit(?:y|ies)"),
        severities=("patchy", "hazy", "faint", "mild", "diffuse"),
        negations=("No {n}.", "No focal infiltrate.", "No evidence of pulmonary infiltrates."),
    ),
    "pneumonia": CategoryTerms(
        nouns=("pneumonia", "bronchopneumonia", "lobar pneumonia"),
        read=(r"pneumonias?", r"bronchopneumonia", r"pneumonic"),
        related=(
            r"consolidations?",
            r"airspace (?:opacit(?:y|ies)|disease)",
            r"infiltrates?",
            r"opacit(?:y|ies)",
            r"air bronchograms?",
        ),
        severities=("multifocal", "early", "patchy", "focal"),
        negations=("No {n}.", "No evidence of pneumonia.", "No radiographic evidence of pneumonia."),
        countable=False,
    ),
    "edema": CategoryTerms(
        nouns=("pulmonary edema", "edema", "interstitial edema"),
        read=(r"(?:pulmonary |interstitial |alveolar )?o?edema", r"vascular congestion", r"kerley b lines"),
        severities=("mild", "moderate", "severe"),
        negations=("No pulmonary edema.", "No evidence of pulmonary edema.", "No vascular congestion."),
        countable=False,
        central=True,
    ),
}

# dataset labels -> category keys (labels not listed map to their own lower-case form)
LABEL_CATEGORIES = {
    "pleural effusion": "effusion",
    "effusion": "effusion",
    "infiltration": "infiltrate",
    "infiltrate": "infiltrate",
    "lung opacity": "consolidation",
    "nodule/mass": "nodule",
    "lung nodule": "nodule",
}

# Words that name the patient's side; what follows some of them makes them anatomy, not a side.
SIDE_WORDS = {
    "right": "right",
    "left": "left",
    "right-sided": "right",
    "left-sided": "left",
    "bilateral": "bilateral",
    "bilaterally": "bilateral",
    "both": "bilateral",
    "bibasilar": "bilateral",
}
NOT_A_SIDE_AFTER = frozenset(
    "ventricle ventricular ventricles atrium atrial heart untreated unchecked unattended alone unanswered "
    "away bundle coronary main hemidiaphragm".split()
)

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

# Zone words when reading (mapped to the zone they name).
ZONE_READ = {
    r"upper (?:lobes?|zones?|lungs?|lung zones?|lung fields?|thoracic region)": "upper",
    r"ap(?:ex|ices|ical)": "upper",
    r"top": "upper",
    r"(?:middle|mid) (?:lobes?|zones?|lung zones?|lung fields?)": "middle",
    r"midlungs?": "middle",
    r"lingula(?:r)?": "middle",
    r"(?:peri)?hil(?:ar|um)": "middle",
    r"lower (?:lobes?|zones?|lungs?|lung zones?|lung fields?|thoracic region)": "lower",
    r"(?:lung )?bases?": "lower",
    r"bas(?:ilar|al)": "lower",
    r"bibasilar": "lower",
    r"bottom": "lower",
    r"costophrenic (?:angles?|recess)": "lower",
    r"retrocardiac": "lower",
}

# NegEx-like triggers (lower case). A pre-trigger negates category mentions after it, up to a scope
# terminator; a post-trigger negates mentions before it in the same clause.
NEGATION_PRE = (
    "no evidence of",
    "no radiographic evidence of",
    "no definite",
    "no signs of",
    "no sign of",
    "negative for",
    "free of",
    "without evidence of",
    "without",
    "absence of",
    "no",
    "not",
    "none",
    "rules out",
    "ruled out",
    "there is no",
    "there are no",
    "resolution of",
    "resolved",
    "clear of",
)
NEGATION_POST = (
    "is not seen",
    "are not seen",
    "is not identified",
    "are not identified",
    "not identified",
    "is absent",
    "are absent",
    "absent",
    "has resolved",
    "have resolved",
    "resolved",
    "is ruled out",
    "was ruled out",
    "not seen",
    "not present",
    "is not present",
    "are not present",
    "not visualized",
    "is excluded",
    "not appreciated",
)
# Phrases that contain a trigger but negate nothing.
PSEUDO_NEGATION = (
    "no change",
    "no significant change",
    "no interval change",
    "not only",
    "no increase",
    "without change",
    "cannot be excluded",
    "cannot be ruled out",
    "can not be excluded",
    "not be excluded",
    "no longer",
    "without delay",
    "not specified",
    "not be determined",
    "cannot be determined",
    "not possible",
    "not clear",
    "no prior",
    "no previous",
    "not available",
    "no comparison",
)
# Hypothetical mentions ("may lead to pneumothorax", "conditions such as pneumonia", "rule out pneumonia"):
# neither stated nor denied.
HYPOTHETICAL_PRE = (
    "such as",
    "including",
    "if",
    "risk of",
    "complications",
    "complication",
    "rule out",
    "evaluate for",
    "assess for",
    "to exclude",
    "lead to",
    "leading to",
    "result in",
    "cause",
    "causes",
    "can be",
    "could be a",
    "differential",
    "concern for",
    "history of",
    "prevent",
    "progress to",
    "progression to",
    "develop into",
)
# Words that end a trigger's scope.
SCOPE_END = (
    "but",
    "however",
    "although",
    "though",
    "except",
    "aside from",
    "apart from",
    "which",
    "that",
    "whereas",
    "while",
    "with the exception of",
    "consistent with",
    "indicating",
    "indicative of",
    "suggesting",
    "suggestive of",
    "compatible with",
    "representing",
    "likely",
    "possibly",
    "there is",
    "there are",
)


def category_of_label(label: str) -> str:
    """The category key of a dataset label ("Effusion" -> "effusion", "Infiltration" -> "infiltrate")."""
    key = label.strip().lower()
    return LABEL_CATEGORIES.get(key, key)


def _alternation(patterns) -> str:
    return "|".join(sorted(set(patterns), key=len, reverse=True))


def category_pattern(category: str, related: bool = False) -> re.Pattern:
    """A compiled regex stating ``category`` (its nouns and read terms; ``related`` for the weak wordings)."""
    key = (category, related)
    if key not in _PATTERNS:
        terms = CATEGORY_TERMS[category]
        pats = terms.related if related else terms.read + tuple(re.escape(n) for n in terms.nouns)
        _PATTERNS[key] = re.compile(rf"\b(?:{_alternation(pats)})\b") if pats else re.compile(r"(?!x)x")
    return _PATTERNS[key]


_PATTERNS: dict[tuple[str, bool], re.Pattern] = {}


def categories_named(text: str) -> set[str]:
    """Categories whose own terms occur in ``text`` (case-insensitive), with overlaps resolved to the longest
    term: "nodular opacity" names nodule only, "pleural effusion" effusion only."""
    low = text.lower()
    spans: list[tuple[int, int, str]] = []
    for category in CATEGORY_TERMS:
        for m in category_pattern(category).finditer(low):
            spans.append((m.start(), m.end(), category))
    spans.sort(key=lambda s: (s[0], -(s[1] - s[0])))
    named: set[str] = set()
    end = -1
    for start, stop, category in spans:
        if start >= end:
            named.add(category)
            end = stop
        elif stop > end:  # a longer overlapping term of another category
            end = stop
    return named


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
TEMPLATE_LOCATION_ADJECTIVES = {
    ("right", "upper"): ("right upper lobe", "right upper zone", "right apical"),
    ("right", "middle"): ("right middle lobe", "right mid zone", "right midlung"),
    ("right", "lower"): ("right lower lobe", "right lower zone", "right basilar"),
    ("left", "upper"): ("left upper lobe", "left upper zone", "left apical"),
    ("left", "middle"): ("lingular", "left mid zone", "left midlung"),
    ("left", "lower"): ("left lower lobe", "left lower zone", "left basilar"),
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
