"""Report writing for the data builders: position words and ``write_report``, the one report writer.

``write_report(findings, rng, style=...)`` turns structured findings (``Finding``: category, patient side,
zone, severity) into a report and returns, for every finding, its ANSWER phrase: a short key phrase that is
a verbatim span of the report (case-insensitive) and names that finding's category and side. Styles:

- ``"varied"`` (default): one of ``VARIED_STYLES`` drawn per report: paraphrases, synonyms, word order,
  one-line and long reports, FINDINGS/IMPRESSION sections or plain prose, indication/technique/comparison,
  clinical filler and recommendations, negated absent findings, normal reports.
- one of ``VARIED_STYLES`` to force it; ``"template"`` for the first, fixed FINDINGS/IMPRESSION wording.

Finding nouns come from ``vocabulary_medrg.py`` (shared with the reader), position and template words from
``writing_vocabulary.py`` (the writers' own). A category in ``findings`` is never negated; answers never come from a
negated or hypothetical sentence ("Evaluate for pneumonia."), so they never name a finding the report denies.

Radiological convention: a PA/AP chest image is viewed as if facing the patient, so the patient's RIGHT
is on the image's LEFT. ``side_of_box`` returns the patient side.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from ..vocabulary_medrg import CATEGORY_TERMS, CategoryTerms, category_of_label
from .writing_vocabulary import (
    LOCATION_ADJECTIVES,
    LOCATION_NOUNS,
    NO_FINDING_IMPRESSIONS,
    SIDE_ADJECTIVES,
    SIDE_TRAILERS,
    SIDES,
    TEMPLATE_BONES,
    TEMPLATE_CLEAR_LUNGS,
    TEMPLATE_FINDING_SENTENCES,
    TEMPLATE_NEGATIONS,
    TEMPLATE_VIEWS,
    ZONES,
    article,
)

CENTRAL_CATEGORIES = {"cardiomegaly", "aortic enlargement", "enlarged pa", "mediastinal shift", "edema"}

ZONE_WORDS = {"upper": "upper zone", "middle": "mid zone", "lower": "lower zone"}
ZONE_ALT = {"upper": "upper lung", "middle": "midlung", "lower": "lung base"}

VARIED_STYLES = ("findings_impression", "structured", "prose", "short", "impression", "narrative")
REPORT_STYLES = ("varied", "template", *VARIED_STYLES)
# how often each varied style is drawn (same order as VARIED_STYLES)
STYLE_WEIGHTS = (0.25, 0.15, 0.2, 0.15, 0.1, 0.15)
# opacity-type categories that a present one makes inappropriate to deny ("consolidation ... No pneumonia.")
MAX_PHRASE_WORDS = 8
PLEURAL_CATEGORIES = ("effusion", "pneumothorax")
LUNG_CATEGORIES = ("nodule", "mass", "consolidation", "atelectasis", "effusion", "pneumothorax")
RELATED_GROUPS = ({"consolidation", "pneumonia", "infiltrate"}, {"nodule", "mass"})

# ---- neutral sentences (they name no finding category) ----
TECHNIQUES = (
    "PA and lateral views of the chest.",
    "Single frontal view of the chest.",
    "Portable AP chest radiograph.",
    "Frontal and lateral chest radiographs were obtained.",
    "Single portable semi-upright view of the chest.",
    "AP supine radiograph of the chest.",
)
INDICATIONS = (
    "Shortness of breath.",
    "Cough and fever.",
    "Chest pain.",
    "Preoperative evaluation.",
    "Follow-up.",
    "Dyspnea on exertion.",
    "Hypoxia.",
    "Fall, chest wall pain.",
    "Productive cough for two weeks.",
    "Weakness and fatigue.",
)
HYPOTHETICAL_INDICATIONS = ("Evaluate for {n}.", "Rule out {n}.", "Assess for {n}.", "Concern for {n}.")
COMPARISONS = (
    "None.",
    "Prior radiograph.",
    "Chest radiograph from the previous admission.",
    "No prior studies available.",
    "Prior chest CT.",
)
NEUTRAL_STATEMENTS = (
    "The visualized osseous structures are intact.",
    "No acute osseous abnormality.",
    "Trachea is midline.",
    "The mediastinal contours are unremarkable.",
    "Soft tissues are unremarkable.",
    "The upper abdomen is unremarkable.",
    "Degenerative changes of the thoracic spine.",
    "The hila are normal in size.",
    "Surgical clips project over the upper abdomen.",
    "The diaphragm is well defined.",
)
CLEAR_LUNGS = (
    "The lungs are clear.",
    "Lungs are well expanded and clear.",
    "The lungs are clear bilaterally.",
)
CLEAR_REST = (
    "The remainder of the lungs is clear.",
    "Otherwise, the lungs are clear.",
    "The other lung is clear.",
)
NARRATIVE_FILLER = (
    "This finding may reflect an infectious, inflammatory or neoplastic process.",
    "Correlation with the patient's clinical history and symptoms is recommended.",
    "Comparison with previous imaging, if available, would help to assess for interval change.",
    "The exact size cannot be determined from this single view.",
    "The clinical implications of this finding depend on the underlying cause.",
    "The surrounding lung parenchyma appears otherwise unremarkable.",
    "No other significant abnormality is seen on this study.",
    "These findings were discussed with the referring clinician.",
)
RECOMMENDATIONS = (
    "Recommend CT of the chest for further characterization.",
    "Clinical correlation is recommended.",
    "Follow-up radiograph in 4 to 6 weeks is suggested to document resolution.",
    "The patient should be referred to a pulmonologist for further evaluation and management.",
    "Further evaluation with a contrast-enhanced CT scan is advised.",
    "Recommend short-interval follow-up.",
)
NORMAL_SHORT = (
    "Lungs are clear. Heart size normal. No acute cardiopulmonary process.",
    "Normal chest.",
    "No acute findings.",
    "Clear lungs. Normal heart size.",
    "No acute cardiopulmonary abnormality.",
)
NORMAL_IMPRESSIONS = (
    *NO_FINDING_IMPRESSIONS,
    "No acute intrathoracic process.",
    "Normal chest.",
    "No active disease.",
)
NARRATIVE_OPENERS = (
    "The chest x-ray reveals {a}{p}.",
    "The chest radiograph shows {a}{p}.",
    "On this frontal view there is {a}{p}.",
    "The image demonstrates {a}{p}.",
    "Review of the chest x-ray shows {a}{p}.",
)
FINDING_SENTENCES = (
    "There is {a}{p}.",
    "{A}{p}.",
    "{A}{p} is noted.",
    "{A}{p} is present.",
    "{A}{p} is again seen.",
    "Again seen is {a}{p}.",
    "The radiograph demonstrates {a}{p}.",
    "Findings are consistent with {a}{p}.",
    "There is evidence of {a}{p}.",
    "Interval development of {a}{p}.",
    "Redemonstrated {p}.",
    "Of note, there is {a}{p}.",
    "{A}{p} is seen, new compared with the prior examination.",
    "There is {a}{p}, unchanged from the prior study.",
    "There is {a}{p}, new since the prior study.",
)
# the severity after the phrase: "Left-sided effusion, small."
SEVERITY_AFTER = ("{A}{p}, {s}.", "{A}{p}, which is {s}.", "{A}{p}, {s} in size.")


@dataclass(frozen=True)
class Finding:
    """A finding to write: ``category`` (a vocabulary key or dataset label), patient ``side`` ("right",
    "left", "bilateral" or "" for central findings), ``zone`` ("upper", "middle", "lower" or ""),
    ``severity`` ("small", "moderate", "large", "mild"... or "")."""

    category: str
    side: str = ""
    zone: str = ""
    severity: str = ""


@dataclass
class WrittenReport:
    """``text``; ``phrases[i]``: the answer phrase of ``findings[i]`` (lower case, a span of ``text``);
    ``denied``: categories the report negates; ``style``: the style used."""

    text: str
    phrases: list[str]
    denied: list[str] = field(default_factory=list)
    style: str = "varied"


def terms_of(category: str) -> CategoryTerms:
    """The vocabulary entry of a category or dataset label; a label outside the vocabulary ("pleural
    thickening") is written with its own words and never denied."""
    key = category_of_label(category)
    if key in CATEGORY_TERMS:
        return CATEGORY_TERMS[key]
    return CategoryTerms(nouns=(key,), negations=(), countable=False, central=key in CENTRAL_CATEGORIES)


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
    """A short phrase (<= ~8 words) naming a finding and its position, e.g. 'nodule in the right upper zone'
    (the template style's finding phrase for a dataset label)."""
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


def template_report(
    phrases: Sequence[str],
    negatable: Sequence[str],
    rng: random.Random,
    shuffle: bool = True,
    min_negations: int | None = None,
    view: str | None = None,
) -> str:
    """The "template" style: ``FINDINGS: ... IMPRESSION: ...`` in which every phrase appears verbatim.

    ``negatable``: categories (keys of ``TEMPLATE_NEGATIONS``) that may be denied, in this order;
    ``min_negations``: at least this many denials (default: 1 for a normal report, else 0).
    """
    sentences = []
    if view is None:
        view = rng.choice(TEMPLATE_VIEWS)
    if view:
        sentences.append(view)
    order = list(phrases)
    if shuffle:
        rng.shuffle(order)
    if len(order) >= 2 and rng.random() < 0.35:
        sentences.append(f"There is {order[0]} and {order[1]}.")
        order = order[2:]
    for p in order:
        sentences.append(rng.choice(TEMPLATE_FINDING_SENTENCES).format(p=p))
    negs = [rng.choice(TEMPLATE_NEGATIONS[k]) for k in negatable if k in TEMPLATE_NEGATIONS]
    rng.shuffle(negs)
    low = (0 if phrases else 1) if min_negations is None else min_negations
    sentences.extend(negs[: rng.randint(min(low, len(negs)), min(3, len(negs)))])
    if not phrases:
        sentences.append(rng.choice(TEMPLATE_CLEAR_LUNGS))
    if rng.random() < 0.5:
        sentences.append(rng.choice(TEMPLATE_BONES))
    if phrases:
        caps = [p[0].upper() + p[1:] for p in phrases]
        impression = (
            " ".join(f"{i + 1}. {c}." for i, c in enumerate(caps)) if len(caps) > 1 else f"{caps[0]}."
        )
    else:
        impression = rng.choice(NO_FINDING_IMPRESSIONS)
    return "FINDINGS: " + " ".join(sentences) + "\n\nIMPRESSION: " + impression


# ---- the varied writer ----


def _plural(noun: str) -> str:
    """Plural of a countable noun phrase ("nodular opacity" -> "nodular opacities")."""
    head, _, last = noun.rpartition(" ")
    irregular = {"pneumothorax": "pneumothoraces", "mass": "masses", "atelectasis": "atelectasis"}
    if last in irregular:
        last = irregular[last]
    elif last.endswith("y"):
        last = last[:-1] + "ies"
    else:
        last += "s"
    return f"{head} {last}".strip()


def _with_severity(severity: str, phrase: str) -> str:
    return f"{severity} {phrase}" if severity and not phrase.startswith(severity) else phrase


def finding_phrase(
    finding: Finding, rng: random.Random, severity: str = "", avoid: Collection[str] = ()
) -> str:
    """One wording (lower case, <= ``MAX_PHRASE_WORDS`` words) naming the finding's category and, when it
    has one, its side: "small left pleural effusion", "nodule in the lingula", "effusion on the right side",
    "cardiomegaly". ``severity`` is put in front when given; a wording in ``avoid`` (the phrases of the
    report's other findings) is not reused while the finding has a zone that tells it apart."""
    terms = terms_of(finding.category)
    for _ in range(8):
        words = _one_phrase(finding, rng, severity).split()
        # no doubled word where a location adjective meets a noun ("right apical apical ...")
        phrase = " ".join(w for k, w in enumerate(words) if k == 0 or w != words[k - 1])
        if len(words) <= MAX_PHRASE_WORDS and phrase not in avoid:
            return phrase
    noun = min(terms.nouns, key=len)
    places = _places(LOCATION_NOUNS, category_of_label(finding.category), finding.side, finding.zone)
    if places and not terms.central:
        return f"{noun} in the {places[0]}".replace("the both", "both")
    return f"{finding.side} {noun}".strip() if not terms.central else noun


def _distinct_phrases(findings: Sequence[Finding], rng: random.Random) -> list[str]:
    phrases: list[str] = []
    for f in findings:
        phrases.append(finding_phrase(f, rng, f.severity, avoid=set(phrases)))
    return phrases


def _places(table: dict, category: str, side: str, zone: str) -> tuple[str, ...]:
    """Location words for (side, zone); pleural findings are not placed in a lobe."""
    places = table.get((side, zone), ())
    if category in PLEURAL_CATEGORIES:
        places = tuple(
            p for p in places if not any(w in p for w in ("lobe", "lingul", "midlung", "perihilar"))
        )
    return places


def _one_phrase(finding: Finding, rng: random.Random, severity: str) -> str:
    category = category_of_label(finding.category)
    terms = terms_of(category)
    noun = rng.choice(terms.nouns)
    side, zone = finding.side, finding.zone
    if terms.central or not side:
        if noun.startswith("enlarged"):
            return noun
        return _with_severity(severity, noun)
    if side == "bilateral" and terms.countable:
        noun = _plural(noun)
    forms = ["side_adjective", "side_trailer"]
    if _places(LOCATION_NOUNS, category, side, zone):
        forms += ["location_noun", "location_noun"]
    if _places(LOCATION_ADJECTIVES, category, side, zone):
        forms.append("location_adjective")
    if category == "effusion" and side != "bilateral" and severity in ("", "small", "trace"):
        forms.append("blunting")
    if category in ("effusion", "pneumothorax") and zone in ("lower", "upper") and side != "bilateral":
        forms.append("at_base_or_apex")
    form = rng.choice(forms)
    if form == "side_adjective":
        return _with_severity(severity, f"{rng.choice(SIDE_ADJECTIVES[side])} {noun}")
    if form == "side_trailer":
        return _with_severity(severity, f"{noun} {rng.choice(SIDE_TRAILERS[side])}")
    if form == "location_adjective":
        return _with_severity(
            severity, f"{rng.choice(_places(LOCATION_ADJECTIVES, category, side, zone))} {noun}"
        )
    if form == "location_noun":
        place = rng.choice(_places(LOCATION_NOUNS, category, side, zone))
        return _with_severity(severity, f"{noun} in {'' if place.startswith('both') else 'the '}{place}")
    if form == "blunting":
        return f"blunting of the {side} costophrenic angle"
    return _with_severity(severity, f"{noun} at the {side} {'base' if zone == 'lower' else 'apex'}")


def _cap(sentence: str) -> str:
    return sentence[:1].upper() + sentence[1:]


def _article_for(finding: Finding, phrase: str) -> str:
    terms = terms_of(finding.category)
    countable = (terms.countable or phrase.startswith("enlarged")) and not phrase.startswith("blunting")
    countable = countable and finding.side != "bilateral"
    return f"{article(phrase)} " if countable else ""


def _finding_sentence(
    finding: Finding, rng: random.Random, narrative: bool = False, avoid: Collection[str] = ()
) -> tuple[str, str]:
    """(sentence, answer phrase) for one finding; ``avoid``: the answer phrases already used."""
    severity = finding.severity
    after = bool(severity) and rng.random() < 0.2
    if not severity and rng.random() < 0.25:
        options = terms_of(finding.category).severities
        severity = rng.choice(options) if options else ""
    phrase = finding_phrase(finding, rng, "" if after else severity, avoid)
    a = "" if after else _article_for(finding, phrase)
    if after:
        template = rng.choice(SEVERITY_AFTER)
    elif narrative:
        template = rng.choice(NARRATIVE_OPENERS)
    else:
        template = rng.choice(FINDING_SENTENCES)
    sentence = template.format(a=a, A=_cap(a), p=phrase, s=finding.severity)
    return _cap(sentence), phrase


def deniable_categories(present: Sequence[str]) -> list[str]:
    """Vocabulary categories a report may deny when ``present`` categories are in the image: all but the
    present ones and those related to them (a present consolidation blocks "No pneumonia.")."""
    present = {category_of_label(c) for c in present}
    blocked = set(present)
    for group in RELATED_GROUPS:
        if present & group:
            blocked |= group
    return [c for c in CATEGORY_TERMS if c not in blocked]


def _negatable(findings: Sequence[Finding], absent: Sequence[str] | None) -> list[str]:
    allowed = deniable_categories([f.category for f in findings])
    if absent is None:
        return allowed
    return [c for c in dict.fromkeys(category_of_label(a) for a in absent) if c in allowed]


def _denials(categories: Sequence[str], rng: random.Random) -> list[str]:
    """One denial sentence per category (sometimes two categories joined: "No pleural effusion or
    pneumothorax.")."""
    out: list[str] = []
    rest = list(categories)
    if len(rest) >= 2 and rng.random() < 0.3:
        a, b = rest.pop(), rest.pop()
        if not CATEGORY_TERMS[a].central and not CATEGORY_TERMS[b].central:
            na, nb = rng.choice(CATEGORY_TERMS[a].nouns[:2]), rng.choice(CATEGORY_TERMS[b].nouns[:2])
            out.append(
                rng.choice(["No {x} or {y}.", "There is no {x} or {y}.", "Without evidence of {x} or {y}."])
                .format(x=na, y=nb)
                .capitalize()
            )
        else:
            rest += [a, b]
    for c in rest:
        terms = CATEGORY_TERMS[c]
        out.append(rng.choice(terms.negations).format(n=terms.nouns[0]))
    return out


def write_report(
    findings: Sequence[Finding] | Sequence[str],
    rng: random.Random | Sequence[str],
    *legacy,
    style: str = "varied",
    absent: Sequence[str] | None = None,
    view: str | None = None,
) -> WrittenReport | str:
    """Write a report for ``findings`` (a sequence of ``Finding``) with ``rng``; see the module docstring.

    ``absent``: categories the report may deny (default: every vocabulary category that no finding has, nor
    a related one). Returns a ``WrittenReport`` whose ``phrases`` are the answer phrases in ``findings``
    order. A category outside the vocabulary is written with its own words. Raises ValueError for an unknown
    style, an empty category, or a side/zone outside ``SIDES``/``ZONES``.

    Legacy call form (until every builder passes ``Finding``s): ``write_report(phrases, absent, rng,
    view=None)`` returns the template-style text for given phrases.
    """
    if not isinstance(rng, random.Random):
        if not legacy or not isinstance(legacy[0], random.Random):
            raise TypeError("write_report(findings, rng, style=...): rng must be a random.Random")
        return template_report(
            list(findings), list(rng), legacy[0], shuffle=False, min_negations=0, view=view
        )
    if style not in REPORT_STYLES:
        raise ValueError(f"style must be one of {list(REPORT_STYLES)}, got {style!r}")
    findings = [f if isinstance(f, Finding) else Finding(**f) for f in findings]
    for i, f in enumerate(findings):
        if not f.category.strip():
            raise ValueError(f"findings[{i}].category is empty; expected a category or dataset label")
        if f.side not in ("", *SIDES):
            raise ValueError(f"findings[{i}].side = {f.side!r}; expected one of {['', *SIDES]}")
        if f.zone not in ("", *ZONES):
            raise ValueError(f"findings[{i}].zone = {f.zone!r}; expected one of {['', *ZONES]}")
    negatable = _negatable(findings, absent)
    if style == "template":
        phrases = _distinct_phrases(findings, rng)
        text = template_report(phrases, negatable, rng, view=view)
        return WrittenReport(text, phrases, [], "template")
    if style == "varied":
        style = rng.choices(VARIED_STYLES, weights=STYLE_WEIGHTS)[0]
    return _STYLE_WRITERS[style](findings, negatable, rng, view)


def _body(findings, negatable, rng, narrative=False) -> tuple[list[str], list[str], list[str]]:
    """(sentences, answer phrases, denied categories) of the findings part, findings in a random order."""
    phrases: list[str] = [""] * len(findings)
    sentences: list[str] = []
    order = list(range(len(findings)))
    rng.shuffle(order)
    if len(order) >= 2 and not narrative and rng.random() < 0.3:
        (i, j), order = order[:2], order[2:]
        pi = finding_phrase(findings[i], rng, findings[i].severity)
        pj = finding_phrase(findings[j], rng, findings[j].severity, avoid={pi})
        ai, aj = _article_for(findings[i], pi), _article_for(findings[j], pj)
        sentences.append(
            _cap(
                rng.choice(["There is {a}{p} and {b}{q}.", "{A}{p} and {b}{q}."]).format(
                    a=ai, A=_cap(ai), p=pi, b=aj, q=pj
                )
            )
        )
        phrases[i], phrases[j] = pi, pj
    for k, i in enumerate(order):
        sentence, phrases[i] = _finding_sentence(
            findings[i], rng, narrative=narrative and k == 0, avoid=set(phrases)
        )
        sentences.append(sentence)
        if narrative and not _central(findings[i]) and rng.random() < 0.6:
            noun = terms_of(findings[i].category).nouns[0]
            sentences.append(
                rng.choice(
                    [
                        f"The {noun} appears well defined.",
                        f"The {noun} is of moderate extent.",
                        f"The size of the {noun} is best assessed on cross-sectional imaging.",
                    ]
                )
            )
    denied = rng.sample(negatable, rng.randint(0 if findings else 1, min(3, len(negatable))))
    sentences += _denials(denied, rng)
    lung = [f for f in findings if not _central(f)]
    if _lungs_clear_ok(findings, negatable):
        if not lung and rng.random() < 0.7:
            sentences.append(rng.choice(CLEAR_LUNGS))
        elif lung and rng.random() < 0.3:
            sentences.append(rng.choice(CLEAR_REST))
    if rng.random() < 0.5:
        sentences.append(rng.choice(NEUTRAL_STATEMENTS))
    return sentences, phrases, denied


def _central(finding: Finding) -> bool:
    return terms_of(finding.category).central or not finding.side


def _lungs_clear_ok(findings, negatable) -> bool:
    """ "The lungs are clear" only when every lung category is either a finding or deniable (an unmentioned
    lesion, e.g. a SynthCXR distractor, is neither)."""
    present = {category_of_label(f.category) for f in findings}
    return all(c in present or c in negatable for c in LUNG_CATEGORIES)


def _impression(findings, rng) -> str:
    if not findings:
        return rng.choice(NORMAL_IMPRESSIONS)
    items = [_cap(finding_phrase(f, rng, f.severity)) + "." for f in findings]
    if len(items) == 1:
        return items[0]
    return " ".join(f"{i + 1}. {s}" for i, s in enumerate(items)) if rng.random() < 0.7 else " ".join(items)


def _write_findings_impression(findings, negatable, rng, view) -> WrittenReport:
    sentences, phrases, denied = _body(findings, negatable, rng)
    technique = view if view is not None else rng.choice((*TECHNIQUES, "", ""))
    sep = rng.choice(["\n\n", "\n", " "])
    text = "FINDINGS: " + " ".join(([technique] if technique else []) + sentences)
    text += sep + "IMPRESSION: " + _impression(findings, rng)
    return WrittenReport(text, phrases, denied, "findings_impression")


def _write_structured(findings, negatable, rng, view) -> WrittenReport:
    sentences, phrases, denied = _body(findings, negatable, rng)
    indication = rng.choice(INDICATIONS)
    if negatable and rng.random() < 0.3:  # a hypothetical mention: neither a finding nor a denial
        indication = rng.choice(HYPOTHETICAL_INDICATIONS).format(
            n=CATEGORY_TERMS[rng.choice(negatable)].nouns[0]
        )
    parts = [
        f"{rng.choice(['INDICATION', 'CLINICAL HISTORY', 'HISTORY'])}: {indication}",
        f"TECHNIQUE: {view if view else rng.choice(TECHNIQUES)}",
        f"COMPARISON: {rng.choice(COMPARISONS)}",
        "FINDINGS: " + " ".join(sentences),
        "IMPRESSION: " + _impression(findings, rng),
    ]
    if findings and rng.random() < 0.3:
        parts.append("RECOMMENDATION: " + rng.choice(RECOMMENDATIONS))
    return WrittenReport("\n".join(parts), phrases, denied, "structured")


def _write_prose(findings, negatable, rng, view) -> WrittenReport:
    sentences, phrases, denied = _body(findings, negatable, rng)
    head = [view] if view else ([rng.choice(TECHNIQUES)] if rng.random() < 0.5 else [])
    tail = [rng.choice(RECOMMENDATIONS)] if findings and rng.random() < 0.4 else []
    if not findings and rng.random() < 0.5:
        tail = [rng.choice(NORMAL_IMPRESSIONS)]
    return WrittenReport(" ".join(head + sentences + tail), phrases, denied, "prose")


def _write_short(findings, negatable, rng, view) -> WrittenReport:
    if not findings:
        denied = rng.sample(negatable, min(len(negatable), rng.randint(0, 1)))
        normal = rng.choice(NORMAL_SHORT) if _lungs_clear_ok(findings, negatable) else "No acute findings."
        text = " ".join([normal, *_denials(denied, rng)])
        return WrittenReport(text, [], denied, "short")
    phrases = _distinct_phrases(findings, rng)
    sentences = [_cap(phrase) + "." for phrase in phrases]
    denied = rng.sample(negatable, min(len(negatable), rng.randint(0, 1)))
    return WrittenReport(" ".join(sentences + _denials(denied, rng)), phrases, denied, "short")


def _write_impression(findings, negatable, rng, view) -> WrittenReport:
    phrases = _distinct_phrases(findings, rng)
    denied = rng.sample(negatable, rng.randint(0 if findings else 1, min(2, len(negatable))))
    items = [_cap(p) + "." for p in phrases] + _denials(denied, rng)
    if not findings:
        items.insert(0, rng.choice(NORMAL_IMPRESSIONS))
    body = "\n".join(f"{i + 1}. {s}" for i, s in enumerate(items))
    return WrittenReport("IMPRESSION:\n" + body, phrases, denied, "impression")


def _write_narrative(findings, negatable, rng, view) -> WrittenReport:
    if not findings:
        sentences = (
            ["The chest x-ray shows clear lungs and a normal cardiac silhouette."]
            if _lungs_clear_ok(findings, negatable) and "cardiomegaly" in negatable
            else ["The chest x-ray was reviewed."]
        )
        denied = rng.sample(negatable, min(len(negatable), rng.randint(1, 3)))
        sentences += _denials(denied, rng)
        sentences.append(rng.choice(NORMAL_IMPRESSIONS))
        return WrittenReport(" ".join(sentences), [], denied, "narrative")
    sentences, phrases, denied = _body(findings, negatable, rng, narrative=True)
    filler = rng.sample(NARRATIVE_FILLER, rng.randint(1, 3))
    recommendation = rng.sample(RECOMMENDATIONS, rng.randint(1, 2))
    first = " ".join(sentences + filler)
    text = first + rng.choice(["\n\n", " "]) + " ".join(recommendation)
    return WrittenReport(text, phrases, denied, "narrative")


_STYLE_WRITERS = {
    "findings_impression": _write_findings_impression,
    "structured": _write_structured,
    "prose": _write_prose,
    "short": _write_short,
    "impression": _write_impression,
    "narrative": _write_narrative,
}
