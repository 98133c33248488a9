"""The one finding vocabulary of MedRG: finding categories with their wordings (what the report writers write and
the reader reads), the reader's sides and zones, negation, hedge and section triggers, and the open finding
vocabulary as data (``default_vocabulary()``, saved in the processor's ``processor_config.json``;
``FindingVocabulary``). The narrative reader (``reading_medrg.py``) reads with it, the report writers
(``processing/data/report_text.py``) take their nouns from it, and the metric's category check reads labels with a
generated copy of its data (``evaluation/metric_vocabulary.py``). Words only the writers use (position wordings,
the template report style) are in ``processing/data/writing_vocabulary.py``.

Sides are the PATIENT's sides (radiological convention: the patient's right is on the image's left).
Categories are lower-case keys (``"effusion"``, ``"pneumothorax"``...); ``category_of_label`` maps dataset
labels ("Effusion", "Pleural Effusion", "Lung Opacity"...) onto them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


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
        read=(
            r"masse?s?",
            r"mass lesions?",
            r"tumou?rs?",
            r"neoplasms?",
            r"mass-?like (?:opacit(?:y|ies)|densit(?:y|ies)|lesions?|consolidation)",
        ),
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
            r"blunting of (?:the )?(?:\w+ )?costophrenic (?:angles?|sulcus|sulci|recess|xxxx)",
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
            r"pleural air(?: collection)?",
            r"(?:visceral |lateral )?pleural line",
            r"air in the pleural space",
            # a (hydro)pneumothorax written by its air: an air-fluid level in the pleural space or in an effusion
            r"air[- ]fluid levels? (?:in|within) the (?:\w+ )?(?:hemithorax|pleural space|pleural cavity)",
            r"(?:(?<=effusion with )|(?<=effusion with an )|(?<=effusions with ))air[- ]fluid levels?",
        ),  # no severity words; the default negations
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
    "away bundle coronary main hemidiaphragm picc catheter catheters ij internal subclavian jugular arm shoulder "
    "humerus humeral clavicle breast axillary mastectomy port approach chest-wall femoral brachiocephalic "
    "innominate atrial-appendage pacemaker pacer".split()
)

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
    "rather than",
    "instead of",
    "removal of",
    "interval removal of",
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
    "no longer",
    "has cleared",
    "have cleared",
    "cleared",
    "has been removed",
    "have been removed",
    "were removed",
    "was removed",
    "removed",
    "unlikely",
    "less likely",
    "not likely",
    "not evident",
    "not demonstrated",
)
# A mention followed by a colon and one of these is denied ("Pneumothorax: none.", "Effusion: No.").
STRUCTURED_DENIALS = (
    "none",
    "no",
    "negative",
    "absent",
    "not seen",
    "not present",
    "nil",
    "normal",
    "resolved",
)
# Hedges: the finding is named and marked uncertain ("Cannot rule out small right effusion.").
UNCERTAIN_PRE = (
    "cannot rule out",
    "can not rule out",
    "cannot exclude",
    "can not exclude",
    "could not exclude",
    "does not exclude",
    "do not exclude",
    "not excluding",
    "possible",
    "possibly",
    "probable",
    "probably",
    "questionable",
    "suspicious for",
    "suspected",
    "suspect",
    "may represent",
    "could represent",
    "may reflect",
    "likely",
    "concerning for",
    "worrisome for",
    "suggestive of",
    "suggesting",
    "versus",
    "vs",
    "alternatively",
    "equivocal",
    "may be",
    "might be",
    "may also be",
    "suspicion for",
    "suspicion of",
)
UNCERTAIN_POST = (
    "cannot be excluded",
    "cannot be ruled out",
    "can not be excluded",
    "not excluded",
    "is not excluded",
    "not be excluded",
    "is possible",
    "is suspected",
    "are suspected",
    "suspected",
    "also possible",
    "are possible",
    "is questioned",
)
# Section headings: a report's INDICATION / HISTORY / COMPARISON text states no finding of this exam.
NON_FINDING_SECTIONS = (
    "indication",
    "indications",
    "clinical indication",
    "history",
    "clinical history",
    "medical history",
    "past medical history",
    "reason for exam",
    "reason for examination",
    "reason for study",
    "reason",
    "clinical information",
    "clinical data",
    "clinical notes",
    "comparison",
    "comparisons",
    "prior",
    "priors",
)
FINDING_SECTIONS = (
    "findings",
    "finding",
    "impression",
    "impressions",
    "conclusion",
    "conclusions",
    "opinion",
    "interpretation",
    "result",
    "results",
    "report",
    "summary",
    "addendum",
    "technique",
    "examination",
    "exam",
    "procedure",
)
# Function words of other languages: a sentence written mostly in them is not read (it is said to be unsupported).
FOREIGN_WORDS = frozenset(
    "de du des le la les pas sans avec est une aucun aucune gauche droit droite et il y a kein keine keinen "
    "der die das und mit ist ohne links rechts nicht el los las sin con derecho derecha izquierdo izquierda hay "
    "del della senza destro sinistro nessun geen niet een het met".split()
)
ENGLISH_WORDS = frozenset(
    "the a an is are no not of in on and or with without there this that at to be has have was were seen "
    "noted lung lungs heart right left small large mild".split()
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
    "cannot rule out",
    "can not rule out",
    "cannot exclude",
    "can not exclude",
    "not excluded",
    "not exclude",
    "not absent",
    "not unlikely",
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
    "exclude",
    "to identify",
    "to look for",
    "to detect",
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
    "r/o",
    "h/o",
    "rule-out",
    "eval for",
    "evaluation for",
    "question of",
    "prior history of",
    "prior study demonstrated",
    "to suggest",
    "to indicate",
    "could obscure",
    "obscure",
    "considerations would include",
    "consideration",
    "question",
    "unclear whether",
    "whether",
    "prior study showed",
    "prior exam showed",
    "prior examination demonstrated",
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
    "with",
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


# ---- the open finding vocabulary (data: travels in the processor's `processor_config.json`) ----

# Every finding a reader names. Per category: `terms`, regular expressions (lower case, matched at word
# boundaries, most specific wording wins where two overlap) that state it; `sided`: the finding may have a side
# (False: the heart, the aorta, edema; the label is then the wording alone); `grounded`: the model was trained to
# box it (False: the reader names it, the pipeline lists it as read but not grounded, the guide does not ask the
# model for a box); `labels`: dataset labels that mean this category (ChestX-ray8, MS-CXR, VinDr-CXR, CheXpert, IU).
# Fine-tuning adds a dataset's categories and phrases (`FindingVocabulary.extend`).
_TEN = (
    "nodule",
    "mass",
    "consolidation",
    "atelectasis",
    "effusion",
    "pneumothorax",
    "cardiomegaly",
    "infiltrate",
    "pneumonia",
    "edema",
)
_EXTRA_TERMS = {  # wordings of the ten that the writers do not use but radiologists do
    "cardiomegaly": (
        r"(?:heart|cardiac silhouette|cardiac shadow|heart size|cardiomediastinal silhouette) (?:is |appears |remains "
        r"|was )?(?:again |still )?(?:\w+ly |borderline |top normal |upper normal )?(?:enlarged|increased)",
        r"enlarged cardiomediastinal silhouette",
        r"borderline (?:cardiomegaly|heart size|enlarged heart|cardiac enlargement)",
        r"(?:cardiac|heart) (?:silhouette |size )?(?:is )?borderline enlarged",
        r"borderline (?:heart size|cardiac silhouette)",
        r"(?:heart|cardiac silhouette) is (?:\w+ly )?large",
        r"large heart",
        r"cardiomegaly",
    ),
    "edema": (r"fluid overload",),
    "atelectasis": (r"atelectatic", r"bandlike opacit(?:y|ies)"),
    "effusion": (
        r"blunted (?:\w+ )?costophrenic (?:angles?|sulcus|sulci)",
        r"costophrenic (?:angle )?blunting",
    ),
}
_OPEN_CATEGORIES = {
    "opacity": (
        (r"opacit(?:y|ies)", r"opacification", r"densit(?:y|ies)", r"ground[- ]glass(?: opacit(?:y|ies))?"),
        True,
        ("Lung Opacity", "Opacity", "Density"),
    ),
    "granuloma": (
        (
            r"(?:calcified )?granulom(?:as?|ata)",
            r"granulomatous (?:disease|changes?|calcifications?|sequelae)",
            r"(?:prior|previous|old|remote|sequela of) granulomatous (?:infection|disease|process|exposure)",
        ),
        True,
        ("Calcified Granuloma", "Granuloma", "Granulomatous Disease"),
    ),
    "calcification": (
        (
            r"calcifications?",
            r"calcified (?:(?:left|right|hilar|suprahilar|infrahilar|paratracheal|mediastinal|subcarinal|and) )*"
            r"(?:lymph )?(?:nodes?|xxxx)",
            r"calcified densit(?:y|ies)",
            r"calcific densit(?:y|ies)",
        ),
        True,
        ("Calcification", "Calcinosis"),
    ),
    "scarring": ((r"scar(?:s|ring)?", r"cicatri(?:x|cial)", r"fibronodular"), True, ("Cicatrix", "Scarring")),
    "emphysema": (
        (
            r"emphysema(?:tous changes?)?",
            r"copd",
            r"chronic obstructive (?:pulmonary|lung) disease",
            r"bullous changes?",
        ),
        False,
        ("Emphysema", "Pulmonary Emphysema", "Pulmonary Disease, Chronic Obstructive"),
    ),
    "hyperinflation": (
        (
            r"hyperinflat(?:ion|ed)",
            r"hyperexpan(?:sion|ded)",
            r"hyperaerat(?:ion|ed)",
            r"over-?inflat(?:ion|ed)",
            r"hyperlucen(?:t|cy)",
            r"flatten(?:ed|ing) (?:of the )?(?:hemi)?diaphragms?",
            r"(?:hemi)?diaphragms? (?:are |is )?flattened",
        ),
        False,
        ("Hyperinflation", "Lung, Hyperlucent"),
    ),
    "low lung volumes": (
        (
            r"low (?:lung )?volumes?",
            r"lung volumes are (?:\w+ )?low",
            r"hypoinflat(?:ion|ed)",
            r"hypoventilat(?:ion|ed|ory)",
            r"(?:poor|shallow|suboptimal) inspirat(?:ion|ory effort)",
        ),
        False,
        ("Hypoinflation",),
    ),
    "fibrosis": (
        (
            r"(?:pulmonary |interstitial )?fibrosis",
            r"fibrotic (?:changes?|lung disease)",
            r"interstitial lung disease",
            r"ild",
            r"honeycomb(?:ing)?",
        ),
        True,
        ("Pulmonary Fibrosis", "Fibrosis", "ILD", "Lung Diseases, Interstitial"),
    ),
    "interstitial markings": (
        (
            r"(?:interstitial|bronchovascular|reticular|lung|pulmonary) markings",
            r"interstitial (?:prominence|opacit(?:y|ies)|changes?|pattern|thickening)",
            r"reticul(?:ar|onodular) (?:opacit(?:y|ies)|changes?|pattern)",
            r"peribronchial (?:cuffing|thickening)",
            r"bronchial wall thickening",
        ),
        True,
        ("Markings",),
    ),
    "pleural thickening": (
        (
            r"pleural (?:thickening|plaques?|calcifications?|scarring)",
            r"pleural-?parenchymal (?:scarring|thickening)",
            r"thickened pleura",
            r"(?:apical )?pleural cap(?:ping)?",
            r"(?:biapical |apical )thickening",
            r"pleural-based (?:opacit(?:y|ies)|densit(?:y|ies))",
        ),
        True,
        ("Pleural Thickening", "Pleural Other", "Thickening"),
    ),
    "fracture": (
        (r"fractures?", r"fx"),
        True,
        ("Fracture", "Fractures, Bone", "Rib fracture", "Clavicle fracture"),
    ),
    "hernia": ((r"(?:hiatal |hiatus |diaphragmatic )?hernias?",), False, ("Hernia", "Hernia, Hiatal")),
    "device": (
        (
            r"(?:central venous |central |venous |dialysis |indwelling |swan-ganz |pulmonary artery )?catheters?",
            r"(?:central |venous |midline |picc |port )?lines?(?= tip| terminat| courses| extends| in | at | with)",
            r"picc(?: line)?",
            r"port-?a-?cath",
            r"(?:(?:chest |subcutaneous |infusion |power |venous |mediport |central venous )port(?: catheter)?)",
            r"(?:endotracheal|et|nasogastric|ng|orogastric|og|enteric|feeding|chest|tracheostomy|gastrostomy|dobhoff) tubes?",
            r"tracheostomy",
            r"(?:dual[- ]lead |single[- ]lead |cardiac |biventricular )?(?:pacemaker|pacer|aicd|icd|defibrillator)(?: leads?| generator| device| wires?)?",
            r"(?:pacing |pacemaker |transvenous )leads?",
            r"(?:median )?sternotomy(?: wires?| sutures?)?",
            r"sternal (?:wires?|sutures?)",
            r"(?:surgical |vascular |cholecystectomy |axillary )?clips?",
            r"(?:coronary |airway |vascular |endovascular )?stents?",
            r"(?:prosthetic |mechanical )?(?:aortic |mitral )?valve (?:replacement|prosthesis)",
            r"(?:orthopedic |surgical |spinal |fixation )?hardware",
            r"(?:surgical |suture )?sutures?(?= in| at| material)",
            r"(?:monitoring |ekg |ecg )?(?:leads|electrodes)",
            r"loop recorder",
            r"(?:cervical |thoracic |lumbar )?(?:spinal )?fusion",
            r"(?:left |right )?(?:breast )?(?:implants?|prosthes[ie]s)",
            r"foreign bod(?:y|ies)",
            r"(?:(?:left|right) )?(?:chest |subclavian |ij |jugular )?(?:xxxx |catheter |line |port )tips?(?= (?:is |are )?"
            r"(?:projecting|projects|visualized|overlying|overlies|in |at |terminat|near))",
            r"(?:vp |ventriculoperitoneal )?shunt(?: tubing| catheter)?",
            r"closure device",
            r"(?:pacemaker |pacer |cardiac (?:xxxx )?)generator",
            r"prosthetic (?:right |left )?(?:shoulder|hip|humeral head)",
            r"(?:shoulder|hip|joint|humeral) (?:prosthes[ie]s|arthroplasty|replacement)",
        ),
        True,
        (
            "Support Devices",
            "Catheters, Indwelling",
            "Surgical Instruments",
            "Implanted Medical Device",
            "Tube, Inserted",
            "Medical Device",
            "Stents",
            "Device",
        ),
    ),  # fmt: skip
    "aorta": (
        (
            r"(?:tortuous|ectatic|enlarged|dilated|unfolded|calcified|atherosclerotic|prominent|uncoiled|aneurysmal) "
            r"(?:and (?:tortuous|ectatic|calcified|atherosclerotic|unfolded) )?(?:thoracic |descending |ascending )?"
            r"aort(?:a|ic arch|ic knob|ic contour)",
            r"(?:thoracic |descending |ascending )?aort(?:a|ic arch|ic knob) (?:is |appears |remains )?(?:\w+ly )?"
            r"(?:tortuous|ectatic|enlarged|dilated|calcified|unfolded|atherosclerotic|prominent|uncoiled)",
            r"aortic (?:tortuosity|ectasia|enlargement|dilatation|calcifications?|atherosclerosis|unfolding|aneurysm|"
            r"atherosclerotic (?:calcifications?|changes?|disease))",
            r"tortuosity of the (?:thoracic |descending )?aorta",
            r"atherosclero(?:sis|tic (?:calcifications?|changes?|disease|vascular disease))",
            r"(?:vascular|arterial) calcifications?",
        ),
        False,
        ("Aortic enlargement", "Aorta", "Aorta, Thoracic", "Atherosclerosis"),
    ),
    "enlarged pulmonary artery": (
        (
            r"(?:enlarged|prominent|dilated|enlargement of the) (?:main |central )?pulmonary arter(?:y|ies)",
            r"pulmonary arter(?:y|ies|ial) (?:enlargement|dilatation|prominence)",
            r"pulmonary (?:arterial )?hypertension",
        ),
        False,
        ("Enlarged PA", "Pulmonary Artery", "Hypertension, Pulmonary"),
    ),
    "enlarged cardiomediastinum": (
        (
            r"(?:widened|enlarged|widening of the) (?:superior )?mediastinum",
            r"mediastinal (?:widening|enlargement|prominence)",
            r"(?:superior )?mediastinum (?:is |appears )?(?:\w+ly )?(?:widened|enlarged|prominent)",
        ),
        False,
        ("Enlarged Cardiomediastinum", "Mediastinum"),
    ),
    "mediastinal shift": (
        (
            r"mediastinal shift",
            r"shift of the mediastinum",
            r"tracheal deviation",
            r"deviation of the trachea",
        ),
        False,
        ("Mediastinal shift",),
    ),
    "cavity": ((r"cavit(?:y|ies|ation|ary lesions?|ary nodules?)",), True, ("Lung cavity", "Cavitation")),
    "cyst": (
        (r"cysts?", r"cystic (?:lesions?|changes?|spaces?)", r"bullae", r"bulla", r"blebs?"),
        True,
        ("Lung cyst", "Cysts"),
    ),  # fmt: skip
    "lesion": (
        (r"(?:lung |pulmonary |lytic |sclerotic |focal )?lesions?",),
        True,
        ("Lung Lesion", "Other lesion"),
    ),
    "hilar enlargement": (
        (
            r"(?:enlarged|prominent|full|bulky) hil(?:um|a|ar (?:structures|contours?|shadows?))",
            r"hilar (?:enlargement|fullness|prominence|adenopathy|lymphadenopathy|mass)",
            r"(?:mediastinal |hilar |paratracheal )?(?:lymph)?adenopathy",
        ),
        True,
        ("Hilar enlargement", "Lymphadenopathy"),
    ),
    "bronchiectasis": ((r"bronchiectasis", r"bronchiectatic changes?"), True, ("Bronchiectasis",)),
    "elevated hemidiaphragm": (
        (
            r"elevat(?:ed|ion of the) (?:(?:right|left) )?hemidiaphragms?",
            r"(?:right |left )?hemidiaphragm (?:is |remains )?(?:\w+ly )?elevated",
            r"(?:diaphragmatic )?eventration",
        ),
        True,
        ("Elevated hemidiaphragm", "Diaphragm", "Diaphragmatic Eventration"),
    ),
    "subcutaneous emphysema": ((r"subcutaneous (?:emphysema|air|gas)",), True, ("Subcutaneous Emphysema",)),
    "pneumomediastinum": ((r"pneumomediastinum",), False, ("Pneumomediastinum",)),
    "pneumoperitoneum": (
        (
            r"pneumoperitoneum",
            r"free (?:intraperitoneal |subdiaphragmatic )?air",
            r"subdiaphragmatic (?:free )?air",
        ),
        False,
        ("Pneumoperitoneum",),
    ),
    "pericardial effusion": ((r"pericardial effusions?",), False, ("Pericardial Effusion",)),
    "congestion": (
        (
            r"(?:pulmonary |central )?(?:venous |vascular )?congestion",
            r"(?:central )?vascular congestive changes",
            r"cephalization",
            r"(?:increased|prominent|indistinct|engorged) (?:central )?(?:pulmonary )?(?:vascular markings|vascularity|vasculature)",
            r"(?:central )?vascular prominence",
        ),
        False,
        ("Pulmonary Congestion", "Congestion"),
    ),
}
# weaker wordings that may stand for an open category (a "Lung Opacity" of CheXpert, MS-CXR or VinDr-CXR is any
# parenchymal opacity: consolidation, airspace disease, infiltrate)
_OPEN_RELATED = {
    "opacity": (
        r"consolidations?",
        r"consolidative",
        r"air[- ]?space (?:opacit(?:y|ies)|disease|process)",
        r"infiltrates?",
        r"infiltration",
    ),
}
# wordings the writers use for one of the ten that the open vocabulary reads as a category of its own
_OWN_CATEGORY_WORDINGS = frozenset({r"granulomas?", r"vascular congestion"})
_TEN_LABELS = {
    "nodule": ("Nodule", "Lung nodule", "Nodule/Mass"),
    "mass": ("Mass",),
    "consolidation": ("Consolidation", "Airspace Disease"),
    "atelectasis": ("Atelectasis", "Pulmonary Atelectasis"),
    "effusion": ("Effusion", "Pleural Effusion"),
    "pneumothorax": ("Pneumothorax",),
    "cardiomegaly": ("Cardiomegaly",),
    "infiltrate": ("Infiltrate", "Infiltration"),
    "pneumonia": ("Pneumonia",),
    "edema": ("Edema", "Pulmonary Edema"),
}


def _ten_entry(category: str) -> dict:
    terms = CATEGORY_TERMS[category]
    own = [p for p in terms.read if p not in _OWN_CATEGORY_WORDINGS]
    own += [re.escape(n) for n in terms.nouns] + list(_EXTRA_TERMS.get(category, ()))
    return {
        "terms": list(dict.fromkeys(own)),
        "related": list(terms.related),
        "sided": not terms.central,
        "grounded": True,
        "labels": list(_TEN_LABELS[category]),
    }


def default_vocabulary() -> dict:
    """The shipped finding vocabulary as plain data (a fresh copy): `{"version": 1, "findings": {category:
    {"terms", "related", "sided", "grounded", "labels"}}}`. The ten categories the default model was trained to box
    are `grounded`; the others are read and listed, not boxed, until a fine-tuning on data with their boxes."""
    findings = {category: _ten_entry(category) for category in _TEN}
    for category, (terms, sided, labels) in _OPEN_CATEGORIES.items():
        findings[category] = {
            "terms": list(terms),
            "related": list(_OPEN_RELATED.get(category, ())),
            "sided": sided,
            "grounded": False,
            "labels": list(labels),
        }
    return {"version": VOCABULARY_VERSION, "findings": findings}


VOCABULARY_VERSION = 1
_ENTRY_KEYS = {"terms": list, "related": list, "sided": bool, "grounded": bool, "labels": list}
MAX_VOCABULARY_CATEGORIES = 1000
MAX_TERMS_PER_CATEGORY = 500
MAX_TERM_CHARS = 300


class FindingVocabulary:
    """The finding vocabulary a reader reads with: categories, their wordings (regular expressions), whether each
    has a side and whether the model boxes it. Built from plain data (`default_vocabulary()`, or the `vocabulary`
    entry of a folder's `processor_config.json`), validated, compiled once; `to_dict()` gives the data back."""

    def __init__(self, data: dict | None = None):
        data = default_vocabulary() if data is None else data
        self.findings = self._validate(data)
        self._patterns: dict[tuple[str, bool], re.Pattern] = {}
        self._labels = {}
        for category, entry in self.findings.items():
            self._labels[category] = category
            for label in entry["labels"]:
                self._labels[" ".join(label.lower().split())] = category

    @staticmethod
    def _validate(data) -> dict:
        if isinstance(data, FindingVocabulary):
            return {c: dict(e) for c, e in data.findings.items()}
        if not isinstance(data, dict) or not isinstance(data.get("findings"), dict):
            raise ValueError(
                "vocabulary must be a dict {'version': 1, 'findings': {category: {...}}}, got "
                f"{type(data).__name__}"
            )
        if data.get("version", VOCABULARY_VERSION) != VOCABULARY_VERSION:
            raise ValueError(f"vocabulary version {data.get('version')!r} is not supported (expected 1)")
        if len(data["findings"]) > MAX_VOCABULARY_CATEGORIES:
            raise ValueError(
                f"vocabulary has {len(data['findings'])} categories, more than {MAX_VOCABULARY_CATEGORIES}"
            )
        findings = {}
        for category, entry in data["findings"].items():
            where = f"vocabulary['findings'][{category!r}]"
            if not isinstance(category, str) or not category.strip() or category != category.strip().lower():
                raise ValueError(f"{where}: a category is a non-empty lower-case string")
            if not isinstance(entry, dict):
                raise ValueError(
                    f"{where} must be a dict with {sorted(_ENTRY_KEYS)}, got {type(entry).__name__}"
                )
            clean = {"terms": [], "related": [], "sided": True, "grounded": False, "labels": []}
            for key, value in entry.items():
                if key not in _ENTRY_KEYS:
                    raise ValueError(f"{where} has an unknown key {key!r} (expected {sorted(_ENTRY_KEYS)})")
                if not isinstance(value, _ENTRY_KEYS[key]):
                    raise ValueError(f"{where}[{key!r}] must be a {_ENTRY_KEYS[key].__name__}, got {value!r}")
                clean[key] = list(value) if isinstance(value, list) else value
            for key in ("terms", "related"):
                if len(clean[key]) > MAX_TERMS_PER_CATEGORY:
                    raise ValueError(f"{where}[{key!r}] has more than {MAX_TERMS_PER_CATEGORY} terms")
                for term in clean[key]:
                    if not isinstance(term, str) or not term or len(term) > MAX_TERM_CHARS:
                        raise ValueError(
                            f"{where}[{key!r}]: a term is a string of 1-{MAX_TERM_CHARS} characters, got {term!r}"
                        )
                    try:
                        re.compile(term)
                    except re.error as error:
                        raise ValueError(
                            f"{where}[{key!r}]: {term!r} is not a regular expression: {error}"
                        ) from None
            if not clean["terms"]:
                clean["terms"] = [re.escape(category)]
            if not all(isinstance(label, str) for label in clean["labels"]):
                raise ValueError(f"{where}['labels'] must be strings")
            findings[category] = clean
        return findings

    def to_dict(self) -> dict:
        """The vocabulary as plain JSON-able data (what `processor_config.json` holds)."""
        return {"version": VOCABULARY_VERSION, "findings": {c: dict(e) for c, e in self.findings.items()}}

    def __contains__(self, category: str) -> bool:
        return category in self.findings

    def __len__(self) -> int:
        return len(self.findings)

    @property
    def categories(self) -> list[str]:
        return list(self.findings)

    def sided(self, category: str) -> bool:
        return self.findings[category]["sided"]

    def grounded(self, category: str) -> bool:
        return self.findings[category]["grounded"]

    def category_of_label(self, label: str) -> str | None:
        """The category a dataset label or category name means ("Pleural Effusion" -> "effusion"), else None."""
        key = " ".join(str(label).lower().replace("_", " ").split())
        return self._labels.get(key) or self._labels.get(category_of_label(key))

    def pattern(self, category: str, related: bool = False) -> re.Pattern:
        """A compiled regex of the category's wordings (``related``: its weak wordings)."""
        key = (category, related)
        if key not in self._patterns:
            entry = self.findings[category]
            terms = entry["related"] if related else entry["terms"]
            self._patterns[key] = (
                re.compile(rf"\b(?:{_alternation(terms)})\b") if terms else re.compile(r"(?!x)x")
            )
        return self._patterns[key]

    def extend(self, category: str, phrases=(), grounded: bool = True, label: str | None = None) -> str:
        """Add (or widen) a category: `phrases` (a dataset's answer phrases, plain text) become wordings of it; a
        new category gets its own name as a wording too. `grounded`: the model is (being) trained to box it.
        Returns the category key."""
        key = self.category_of_label(label or category) or " ".join(
            category.lower().replace("_", " ").split()
        )
        if not key:
            raise ValueError(f"extend needs a non-empty category name, got {category!r}")
        entry = self.findings.setdefault(
            key, {"terms": [re.escape(key)], "related": [], "sided": True, "grounded": False, "labels": []}
        )
        self._patterns = {k: v for k, v in self._patterns.items() if k[0] != key}
        for phrase in phrases:
            words = [w.strip(".,;:") for w in str(phrase).lower().split()]
            words = [w for w in words if w and w not in _PLACE_WORDS]
            text = " ".join(words)
            if not words or len(words) > 3 or self.pattern(key).fullmatch(text):
                continue  # a long phrase, or one the category's wordings already read
            if len(entry["terms"]) < MAX_TERMS_PER_CATEGORY:
                entry["terms"].append(re.escape(text))
                self._patterns.pop((key, False), None)
        for name in (category, label):
            if name and name not in entry["labels"]:
                entry["labels"].append(name)
                self._labels[" ".join(name.lower().split())] = key
        self._labels[key] = key
        entry["grounded"] = entry["grounded"] or bool(grounded)
        self._patterns = {k: v for k, v in self._patterns.items() if k[0] != key}
        return key


_PLACE_WORDS = frozenset(
    "a an the in of on at right left bilateral both upper middle mid lower lobe lung zone base apex apical basal "
    "basilar small moderate large mild severe tiny minimal".split()
)
