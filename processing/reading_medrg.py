"""Reading narrative reports written by someone else: which findings a report states or denies, and the
short key phrase (the report's own words) that names a given finding.

- ``mentions(report)``: every category wording (``vocabulary.CATEGORY_TERMS``) with its status:
  ``"stated"``, ``"negated"`` (NegEx-like: a trigger such as "no", "without", "negative for", "free of",
  "no evidence of", "ruled out" before it, or "is not seen", "has resolved" after it, within its clause) or
  ``"hypothetical"`` ("conditions such as pneumonia", "rule out pneumothorax", "if left untreated").
- ``stated_findings(report)`` / ``negated_findings(report)``.
- ``key_phrase(report, label, position)``: e.g. "left pleural effusion", "nodule in the left upper lobe",
  "right upper lobe mass", built from the words of the sentence that states the label's finding (side words
  of other sentences stating the same finding may complete it). Only when the report has no usable wording
  does it fall back to label + position words (``key_phrase_info(...).from_report`` is then False).

Sides are the patient's: ``position`` words ("left", "right top", "left bottom", "middle", "") are the
patient's side and zone as given to the report writers.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from dataclasses import dataclass, field

from .vocabulary_medrg import (
    ENGLISH_WORDS,
    FINDING_SECTIONS,
    FOREIGN_WORDS,
    HYPOTHETICAL_PRE,
    NEGATION_POST,
    NEGATION_PRE,
    NON_FINDING_SECTIONS,
    NOT_A_SIDE_AFTER,
    PSEUDO_NEGATION,
    SCOPE_END,
    SIDE_WORDS,
    STRUCTURED_DENIALS,
    UNCERTAIN_POST,
    UNCERTAIN_PRE,
    ZONE_READ,
    FindingVocabulary,
    category_of_label,
)

MAX_KEY_PHRASE_WORDS = 8
MAX_LABEL_WORDS = 10
TRIGGER_WINDOW_WORDS = (
    8  # a pre-trigger reaches at most this many words ahead (a denial list: LIST_WINDOW_WORDS)
)
LIST_WINDOW_WORDS = 30
POST_WINDOW_WORDS = 5
# Reading is linear in the report: a report longer than this is refused with a ValueError (a chest X-ray report
# is a few KB; 100,000 characters is ~15,000 words), and a sentence longer than MAX_SENTENCE_CHARS is read in
# pieces of at most that length (cut at a comma or semicolon where there is one).
MAX_REPORT_CHARS = 100_000
MAX_SENTENCE_CHARS = 600

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\"'])|\n+|(?<=:)\s+(?=\d+\.\s)")
_WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")
_HEADER = re.compile(r"^\s*([a-z][a-z /]{1,40}?)\s*:")
# Look-alike letters of other scripts read as the Latin letter they imitate ("Nо" with a Cyrillic о), and
# characters that are invisible in text.
_LOOKALIKES = str.maketrans(
    "асеорхуіјѕԁАВЕКМНОРСТХУІЈЅοαινκτρχυΟΑΒΕΚΜΝΡΤΧΥΙ",
    "aceopxyijsdABEKMHOPCTXYIJSoaivktpxuOABEKMNPTXYI",
)
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"), None)


def _phrase_regex(phrases) -> re.Pattern:
    alternation = "|".join(re.escape(p) for p in sorted(phrases, key=len, reverse=True))
    return re.compile(rf"(?<![\w/-])(?:{alternation})(?![\w/-])")


_PRE = _phrase_regex(NEGATION_PRE)
_POST = _phrase_regex(NEGATION_POST)
_PSEUDO = _phrase_regex(PSEUDO_NEGATION)
_HYPO = _phrase_regex(HYPOTHETICAL_PRE)
_UNCERTAIN_PRE = _phrase_regex(UNCERTAIN_PRE)
_UNCERTAIN_POST = _phrase_regex(UNCERTAIN_POST)
_SCOPE_END = re.compile(rf"[;:]|\b(?:{'|'.join(re.escape(p) for p in SCOPE_END)})\b")
_POST_SCOPE_END = re.compile(
    rf"[;:]|\b(?:{'|'.join(re.escape(p) for p in SCOPE_END if p not in ('which', 'that'))})\b"
)
_STRUCTURED_DENIAL = re.compile(
    rf"^\s*[:\-\u2013]\s*(?:{'|'.join(re.escape(p) for p in STRUCTURED_DENIALS)})\b"
)
_LIST_SPLIT = re.compile(r",|\b(?:or|and|nor)\b")
_AFFIRMATIVE = re.compile(
    r"^\s+(?:(?:is|are|was|were|has been|have been)\s+)(?:again\s+|also\s+|now\s+|still\s+)?"
    r"(?:present|seen|noted|identified|demonstrated|visible|evident|unchanged|stable|new|redemonstrated|"
    r"increased|enlarged|persistent)\b"
)
_ZONES = [(re.compile(rf"\b(?:{pattern})\b"), zone) for pattern, zone in ZONE_READ.items()]
_SIDE = re.compile(
    r"\b(right-sided|left-sided|right|left|bilateral(?:ly)?|bibasilar|both|lingula)r?\b(?:\s+([a-z]+))?"
)
_BOTH_OK = frozenset("lungs sides bases hemithoraces apices".split())

LOCATION_WORDS = frozenset(
    "right left right-sided left-sided bilateral upper middle mid lower lobe lobes lung apical basilar basal "
    "bibasilar perihilar lingular hilar zone base".split()
)
DESCRIPTOR_WORDS = frozenset(
    "small moderate large mild marked severe trace tiny minimal patchy dense focal hazy faint diffuse "
    "layering loculated well-defined ill-defined spiculated lobulated rounded calcified subtle significant "
    "possible probable new partial complete subsegmental plate-like linear discoid".split()
)
# words that may stand before a finding's wording in its label ("small left apical", "spiculated 2.5 cm")
MODIFIER_WORDS = (
    DESCRIPTOR_WORDS
    | LOCATION_WORDS
    | frozenset(
        "moderate-sized small-to-moderate moderate-to-large small-moderate streaky bandlike band-like nodular "
        "reticular reticulonodular interstitial alveolar retrocardiac subpleural peripheral central scattered "
        "multiple several few numerous biapical old healed chronic acute residual persistent increased increasing "
        "decreased worsening improving borderline slight slightly mildly moderately markedly severely "
        "noncalcified non-calcified cavitary irregular ovoid round punctate coarse infrahilar suprahilar "
        "paramediastinal posterior anterior lateral medial superior inferior costophrenic apex lingula "
        "cm mm x multifocal confluent ground-glass granulomatous atherosclerotic tortuous ectatic rib ribs clavicle "
        "clavicular humeral vertebral compression displaced nondisplaced non-displaced".split()
    )
)
_NUMBER = re.compile(r"^\d+(?:\.\d+)?(?:cm|mm)?$")


_LOCATION_NOUN = (
    r"(?:(?:right|left|both)(?:-sided)?\s+)?(?:(?:upper|middle|mid|lower)\s+)?"
    r"(?:lobes?|lungs?(?:\s+fields?|\s+bases?|\s+zones?|\s+ap(?:ex|ices))?|hemithorax|side|bases?|ap(?:ex|ices)|zones?|lingula|"
    r"hil(?:um|a)|perihilar region|costophrenic angles?|chest|(?:thoracic\s+)?region|pleural space|"
    r"lung field|midlung)(?:\s+of\s+the\s+(?:right|left)\s+lung)?"
    r"|(?:right|left)(?![\w-])(?!\s+(?:ventric|atri|heart))"  # "effusion on the right"
)
_POST_LOCATION = re.compile(
    r"^\s*,?\s*(?:(?:which is|that is|is|are|seen|noted|present|visible|identified|located|situated|"
    r"predominantly|primarily|mainly|mostly|specifically|appearing|projecting|projects|projected|involving|"
    r"again|lies|persists|also)\s+){0,3}"
    rf"(in|within|at|on|over|of|along)\s+(?:the\s+)?({_LOCATION_NOUN})\b"
)


@dataclass(frozen=True)
class Mention:
    """One wording of a category in a report: ``text`` (lower case) at ``start``:``end`` of sentence
    ``sentence``; ``status`` is "stated", "uncertain" (hedged: "cannot rule out", "possible"), "negated",
    "hypothetical" ("rule out", "history of") or "history" (in an INDICATION / HISTORY / COMPARISON section);
    ``related`` for a weak wording (e.g. "consolidation" read as pneumonia)."""

    category: str
    text: str
    sentence: int
    start: int
    end: int
    status: str
    related: bool = False


@dataclass(frozen=True)
class KeyPhrase:
    """``phrase``; ``from_report``: built from the report's words (False = label + position fallback);
    ``side``: the side it names ("right"/"left"/"bilateral"/"")."""

    phrase: str
    from_report: bool
    side: str


_DEFAULT_VOCABULARY: list[FindingVocabulary] = []


def default_finding_vocabulary() -> FindingVocabulary:
    """The shipped vocabulary (``vocabulary_medrg.default_vocabulary()``), compiled once per process."""
    if not _DEFAULT_VOCABULARY:
        _DEFAULT_VOCABULARY.append(FindingVocabulary())
    return _DEFAULT_VOCABULARY[0]


def normalize_report(report: str) -> tuple[str, int]:
    """The report as the reader reads it: Unicode NFKC, invisible characters removed, look-alike letters of other
    scripts inside Latin words read as Latin letters. Returns (text, number of look-alike letters replaced)."""
    text = unicodedata.normalize("NFKC", report).translate(_INVISIBLE)
    folded = text.translate(_LOOKALIKES)
    return folded, sum(a != b for a, b in zip(text, folded))


def _check_length(report: str) -> None:
    if len(report) > MAX_REPORT_CHARS:
        raise ValueError(
            f"the report has {len(report):,} characters; MedRG reads reports of up to {MAX_REPORT_CHARS:,} "
            "characters (a chest X-ray report is a few thousand)"
        )


def _pieces(sentence: str) -> list[str]:
    """A sentence cut into pieces of at most MAX_SENTENCE_CHARS (at a comma/semicolon where possible)."""
    out = []
    while len(sentence) > MAX_SENTENCE_CHARS:
        cut = max(sentence.rfind(",", 0, MAX_SENTENCE_CHARS), sentence.rfind(";", 0, MAX_SENTENCE_CHARS))
        cut = cut + 1 if cut > MAX_SENTENCE_CHARS // 4 else MAX_SENTENCE_CHARS
        out.append(sentence[:cut])
        sentence = sentence[cut:]
    out.append(sentence)
    return out


def split_sentences(report: str) -> list[str]:
    """Sentences (and section lines) of a report, stripped, none empty."""
    _check_length(report)
    return [
        p.strip()
        for s in _SENTENCE_END.split(report)
        if s and s.strip()
        for p in _pieces(s.strip())
        if p.strip()
    ]


def _supported(sentence: str) -> bool:
    """False for a sentence written in another language (its function words are not English ones)."""
    words = _WORD.findall(sentence)
    foreign = sum(w in FOREIGN_WORDS for w in words)
    english = sum(w in ENGLISH_WORDS for w in words)
    other_letters = any(c.isalpha() and ord(c) > 127 for c in sentence)
    return not ((foreign and foreign >= english) or (other_letters and not english))


def _sections(sentences: list[str]) -> list[str]:
    """Per (lower-case) sentence its reading: "read", "history" (an INDICATION / HISTORY / COMPARISON section:
    until the next section heading; with no later heading, its own sentence only) or "unsupported"."""
    headers = []
    for k, sentence in enumerate(sentences):
        m = _HEADER.match(sentence)
        name = " ".join(m.group(1).split()) if m else ""
        if name in NON_FINDING_SECTIONS:
            headers.append((k, "history"))
        elif name in FINDING_SECTIONS:
            headers.append((k, "read"))
    out = ["read"] * len(sentences)
    for index, (k, kind) in enumerate(headers):
        if kind != "history":
            continue
        stop = headers[index + 1][0] if index + 1 < len(headers) else k + 1
        for j in range(k, stop):
            out[j] = "history"
    for k, sentence in enumerate(sentences):
        if out[k] == "read" and not _supported(sentence):
            out[k] = "unsupported"
    return out


def _words_between(text: str) -> int:
    return len(_WORD.findall(text))


def _in_scope(gap: str) -> bool:
    """A pre-trigger reaches the mention: no scope end in between, and few words (or a denial list of short
    items: "no focal consolidation, suspicious opacity, large effusion, or pneumothorax")."""
    if _SCOPE_END.search(gap):
        return False
    if _words_between(gap) <= TRIGGER_WINDOW_WORDS:
        return True
    items = _LIST_SPLIT.split(gap)
    return _words_between(gap) <= LIST_WINDOW_WORDS and all(_words_between(i) <= 5 for i in items)


def _status(sentence: str, start: int, end: int) -> str:
    """Status of the mention at sentence[start:end] (sentence in lower case): "negated", "uncertain",
    "hypothetical" or "stated"."""
    before, after = sentence[:start], sentence[end:]
    pseudo = [(m.start(), m.end()) for m in _PSEUDO.finditer(sentence)]

    def real(m) -> bool:
        return not any(a <= m.start() < b for a, b in pseudo)

    if _STRUCTURED_DENIAL.match(after):  # "Pneumothorax: none."
        return "negated"
    pre = [m for m in _PRE.finditer(before) if real(m)]
    if pre and _in_scope(before[pre[-1].end() :]):
        gap = before[pre[-1].end() :]
        last_word = (_WORD.findall(gap) or [""])[-1]
        # "No pneumothorax, effusion is present on the left.": a new clause after the denial
        new_clause = "," in gap and last_word not in ("or", "and", "nor") and _AFFIRMATIVE.match(after)
        if not new_clause:
            return "negated"
    post = next((m for m in _POST.finditer(sentence, end) if real(m)), None)
    if post is not None:
        gap = sentence[end : post.start()]
        if not _POST_SCOPE_END.search(gap) and _words_between(gap) <= POST_WINDOW_WORDS:
            return "negated"
    hedge = next(iter(_UNCERTAIN_POST.finditer(sentence, end)), None)
    if hedge is not None:
        gap = sentence[end : hedge.start()]
        if not _POST_SCOPE_END.search(gap) and _words_between(gap) <= POST_WINDOW_WORDS:
            return "uncertain"
    hypo = [m for m in _HYPO.finditer(before) if real(m)]
    if hypo and _in_scope(before[hypo[-1].end() :]):
        return "hypothetical"
    hedge_pre = list(_UNCERTAIN_PRE.finditer(before))
    if hedge_pre and _words_between(before[hedge_pre[-1].end() :]) <= TRIGGER_WINDOW_WORDS:
        if not re.search(r"[;:]", before[hedge_pre[-1].end() :]):
            return "uncertain"
    return "stated"


def _category_spans(
    sentence: str, related: bool, vocabulary: FindingVocabulary
) -> list[tuple[int, int, str, bool]]:
    """(start, end, category, related) of category wordings, overlaps resolved to the longest."""
    spans = []
    for category in vocabulary.categories:
        for m in vocabulary.pattern(category).finditer(sentence):
            spans.append((m.start(), m.end(), category, False))
        if related:
            for m in vocabulary.pattern(category, related=True).finditer(sentence):
                spans.append((m.start(), m.end(), category, True))
    spans.sort(key=lambda s: (s[0], -(s[1] - s[0]), s[3]))
    out: list[tuple[int, int, str, bool]] = []
    for span in spans:
        if out and span[0] < out[-1][1]:
            # an equal span of another category (a related wording) is kept as an alternative
            if span[:2] == out[-1][:2]:
                out.append(span)
            continue
        out.append(span)
    return out


def _read_sentences(report: str) -> tuple[list[str], list[str], int]:
    text, lookalikes = normalize_report(report)
    sentences = [s.lower() for s in split_sentences(text)]
    return sentences, _sections(sentences), lookalikes


def mentions(
    report: str, related: bool = False, vocabulary: FindingVocabulary | None = None
) -> list[Mention]:
    """Every category wording in ``report`` with its status (see ``Mention``); ``related`` adds the weak
    wordings. Sentences of another language are skipped."""
    vocabulary = vocabulary or default_finding_vocabulary()
    sentences, sections, _ = _read_sentences(report)
    return _mentions(sentences, sections, related, vocabulary)


def _mentions(sentences, sections, related, vocabulary) -> list[Mention]:
    found = []
    for k, low in enumerate(sentences):
        if sections[k] == "unsupported":
            continue
        for start, end, category, is_related in _category_spans(low, related, vocabulary):
            status = "history" if sections[k] == "history" else _status(low, start, end)
            found.append(Mention(category, low[start:end], k, start, end, status, is_related))
    return found


def stated_findings(report: str) -> list[Mention]:
    """The mentions the report states (not negated, not hypothetical), own wordings only."""
    return [m for m in mentions(report) if m.status in ("stated", "uncertain")]


def negated_findings(report: str) -> set[str]:
    """Categories the report denies and never states ("No pneumothorax. Heart size is normal." ->
    {"pneumothorax"}; the cardiac sentence names no category wording)."""
    found = mentions(report)
    stated = {m.category for m in found if m.status in ("stated", "uncertain")}
    return {m.category for m in found if m.status == "negated"} - stated


# ---- key phrases ----


def _position_side_zone(position: str) -> tuple[str, str]:
    words = position.lower().split()
    side = next((w for w in words if w in ("left", "right")), "")
    zone = {"top": "upper", "bottom": "lower", "upper": "upper", "lower": "lower"}
    return side, next((zone[w] for w in words if w in zone), "")


def _sides(sentence: str) -> list[tuple[int, str, str]]:
    """(position, side, the report's word) of side words that name a side of the chest."""
    out = []
    for m in _SIDE.finditer(sentence):
        word, following = m.group(1), m.group(2) or ""
        if following in NOT_A_SIDE_AFTER:
            continue
        if word == "both" and following not in _BOTH_OK:
            continue
        side = "left" if word == "lingula" else SIDE_WORDS.get(word, "bilateral")
        out.append((m.start(1), side, f"both {following}" if word == "both" else word))
    return out


def _singular(term: str, side: str) -> str:
    if side == "bilateral":
        return term
    head, _, last = term.rpartition(" ")
    for plural, single in (
        ("pneumothoraces", "pneumothorax"),
        ("masses", "mass"),
        ("opacities", "opacity"),
        ("densities", "density"),
        ("angles", "angle"),
        ("effusions", "effusion"),
        ("nodules", "nodule"),
        ("infiltrates", "infiltrate"),
        ("lesions", "lesion"),
        ("consolidations", "consolidation"),
        ("granulomas", "granuloma"),
        ("bases", "base"),
    ):
        if last == plural:
            last = single
            break
    return f"{head} {last}".strip()


def _premodifiers(sentence: str, start: int) -> list[str]:
    """Location words right before a mention ("right lower lobe" in "right lower lobe atelectasis"),
    skipping descriptors ("small", "patchy")."""
    words = sentence[:start].split()[-6:]
    kept: list[str] = []
    for word in reversed(words):
        word = word.strip(",")
        if word in LOCATION_WORDS:
            kept.insert(0, word)
        elif word in DESCRIPTOR_WORDS and not kept:
            continue
        else:
            break
    while kept and kept[-1] in ("lung", "lobe", "lobes", "zone", "base") and len(kept) == 1:
        kept.pop()
    return kept


def _segment(
    all_mentions: list[Mention], mention: Mention, length: int, vocabulary: FindingVocabulary | None = None
) -> tuple[int, int]:
    """The part of the mention's sentence that belongs to it: from the end of the previous wording of
    another category to the start of the next one ("airspace disease in the right middle lobe and
    cardiac enlargement": the side belongs to the airspace disease)."""
    lo, hi = 0, length
    related = (vocabulary or default_finding_vocabulary()).pattern(mention.category, related=True)
    for m in all_mentions:
        if m.sentence != mention.sentence or m.category == mention.category or related.fullmatch(m.text):
            continue
        if m.end <= mention.start:
            lo = max(lo, m.end)
        elif m.start >= mention.end:
            hi = min(hi, m.start)
    return lo, hi


def _build(
    sentence: str,
    mention: Mention,
    segment: tuple[int, int],
    want_side: str,
    other_sides: list[tuple[str, str]],
    vocabulary: FindingVocabulary | None = None,
) -> KeyPhrase:
    term = mention.text
    if not (vocabulary or default_finding_vocabulary()).sided(mention.category):
        return KeyPhrase(term, True, "")
    pre = _premodifiers(sentence[segment[0] :], mention.start - segment[0])
    post = _POST_LOCATION.match(sentence[mention.end : segment[1]])
    pre_side = next((SIDE_WORDS.get(w, "") for w in pre if w in SIDE_WORDS), "")
    if post:
        post_side = next((s for _, s, _ in _sides(post.group(2))), "")
        has_zone = any(p.search(post.group(2)) for p, _ in _ZONES)
        if post_side or has_zone:
            side = post_side or pre_side
            lead = " ".join(pre) + " " if pre and not post_side else ""
            phrase = f"{lead}{_singular(term, side)} {post.group(1)} the {post.group(2)}"
            phrase = phrase.replace("the both", "both")
            if len(phrase.split()) <= MAX_KEY_PHRASE_WORDS:
                return KeyPhrase(phrase, True, side)
    if pre_side and want_side and pre_side != want_side:
        # "moderate right and small left pleural effusions" read for the right one
        if any(side == want_side for p, side, _ in _sides(sentence) if segment[0] <= p < mention.start):
            return KeyPhrase(f"{want_side} {_singular(term, want_side)}", True, want_side)
    if pre_side:
        return KeyPhrase(" ".join([*pre, _singular(term, pre_side)]), True, pre_side)
    # a side word elsewhere in its part of the sentence (preferring the position's side, then the nearest),
    # else in another sentence about the same finding
    candidates = [
        (side != want_side, abs(p - mention.start), side, word)
        for p, side, word in _sides(sentence)
        if segment[0] <= p < segment[1]
    ]
    side, word = min(candidates)[2:] if candidates else ("", "")
    if not side and other_sides:
        side, word = next(((s, w) for s, w in other_sides if s == want_side), other_sides[0])
    words = [w for w in pre if w not in SIDE_WORDS]
    if word.startswith("both "):  # "pneumonia in both lungs"
        return KeyPhrase(" ".join([*words, term, "in", word]), True, side)
    if word == "lingula":
        return KeyPhrase(" ".join([*words, _singular(term, side), "in the lingula"]), True, side)
    if word:
        words = [word, *words]
    return KeyPhrase(" ".join([*words, _singular(term, side)]), True, side)


_ANAPHORA = re.compile(
    r"^(?:[a-z]+, )?(?:this|these|it|they|the (?:abnormality|finding|findings|opacity|lesion|condition))\b"
)


def _other_sides(
    sentences: list[str], all_mentions: list[Mention], found: list[Mention], best: Mention
) -> list[tuple[str, str]]:
    """Sides named in other sentences about the same finding: a sentence right after the chosen one that
    refers back to it ("This abnormality is noticeable on the left side.") and names no other category,
    then the parts of sentences holding the finding's other stated mentions; specific sides first."""
    by_sentence = _by_sentence(all_mentions)
    sides: list[tuple[str, str]] = []
    k = best.sentence + 1
    if k < len(sentences) and _ANAPHORA.match(sentences[k]) and not by_sentence.get(k):
        sides += [(side, word) for _, side, word in _sides(sentences[k])]
    others = (m for m in found if m.status in ("stated", "uncertain") and m.sentence != best.sentence)
    for m in itertools.islice(others, MAX_OTHER_SENTENCES):  # bounded: reading stays linear in the report
        lo, hi = _segment(by_sentence.get(m.sentence, []), m, len(sentences[m.sentence]))
        sides += [(side, word) for p, side, word in _sides(sentences[m.sentence]) if lo <= p < hi]
    return sorted(sides, key=lambda sw: sw[0] == "bilateral")


MAX_OTHER_SENTENCES = 8


class _Index(dict):
    """Mentions grouped by sentence (built once per list)."""


def _by_sentence(all_mentions) -> dict:
    if isinstance(all_mentions, _Index):
        return all_mentions
    index = _Index()
    for m in all_mentions:
        index.setdefault(m.sentence, []).append(m)
    return index


def _rank(mention: Mention, label_word: str) -> tuple:
    """Lower is better: stated before hypothetical, the label's own word, own wording before related."""
    return (
        mention.status not in ("stated", "uncertain"),
        mention.related,
        label_word not in mention.text,
        mention.sentence,
        mention.start,
    )


def key_phrase_info(report: str, label: str, position: str = "") -> KeyPhrase:
    """The key phrase of ``label``'s finding in ``report`` with where it came from (see ``key_phrase``)."""
    vocabulary = default_finding_vocabulary()
    category = vocabulary.category_of_label(label) or category_of_label(label)
    if category == "opacity" and category_of_label(label) in vocabulary:
        category = category_of_label(label)  # the writers' mapping for training answers ("Lung Opacity")
    if category not in vocabulary:
        raise ValueError(
            f"label {label!r} is not a finding category of the vocabulary {sorted(vocabulary.categories)}"
        )
    want_side, want_zone = _position_side_zone(position)
    sentences, sections, _ = _read_sentences(report)
    all_mentions = _mentions(sentences, sections, True, vocabulary)
    found = [m for m in all_mentions if m.category == category and m.status != "negated"]
    if found:
        own = [m for m in found if not m.related]
        best = min(own or found, key=lambda m: _rank(m, category[:6]))
        others = [m for m in all_mentions if not m.related]
        segment = _segment(others, best, len(sentences[best.sentence]))
        built = _build(
            sentences[best.sentence], best, segment, want_side, _other_sides(sentences, others, found, best)
        )
        if len(built.phrase.split()) <= MAX_KEY_PHRASE_WORDS:
            return built
    zone_word = {"upper": "upper", "lower": "lower"}.get(want_zone, "")
    words = [w for w in (want_side, zone_word) if w]
    return KeyPhrase(" ".join([*words, label.strip().lower()]), False, want_side)


def key_phrase(report: str, label: str, position: str = "") -> str:
    """A short normalised key phrase (lower case, <= 8 words) naming ``label``'s finding with the report's
    own words, e.g. "left pleural effusion", "nodule in the left upper lobe", "right upper lobe mass".
    Never taken from a sentence that denies the finding. Falls back to ``position`` words + label when the
    report has no usable wording. ``position``: the patient-side position words given to the writer."""
    return key_phrase_info(report, label, position).phrase


# ---- every stated finding of a report (inference): the reader ----

MAX_REPORT_PHRASES = (
    32  # findings the model is asked to box per report; the rest are listed as read, not grounded
)
_COORDINATED_SIDES = re.compile(
    r"(?:([a-z-]+) )?(right|left)(?:-sided)?,? and (?:([a-z-]+) )?(right|left)(?:-sided)? ((?:[a-z-]+ ){0,3})$"
)
_POST_AND = re.compile(rf"^\s*,?\s*and\s+(?:(in|within|at|on|over|of)\s+)?(?:the\s+)?({_LOCATION_NOUN})\b")


@dataclass(frozen=True)
class ReadFinding:
    """One finding a report states, as the reader names it.

    - ``label``: the report's own words (see ``ReportReader``): a contiguous span of its sentence with the size,
      severity and character words before the finding and its location after it ("small left apical
      pneumothorax", "spiculated 2.5 cm mass in the left upper lobe"); where the side stands apart from the
      finding ("Pneumothorax, left, moderate."), the side word of that sentence goes before the span
      ("left pneumothorax"), and where one wording holds two sides ("small right and moderate left pleural
      effusions") each side with its own size word goes before the finding's singular wording.
    - ``category``: the vocabulary category; ``side``: "right", "left", "bilateral" or "".
    - ``uncertain``: hedged in the report ("cannot rule out", "possible", "likely").
    - ``grounded``: the vocabulary says the model boxes this category (False: read, listed, not boxed).
    """

    label: str
    category: str
    side: str = ""
    uncertain: bool = False
    grounded: bool = True
    sentence: int = 0

    def to_dict(self) -> dict:
        return {
            "label": self.label,
            "category": self.category,
            "side": self.side,
            "uncertain": self.uncertain,
            "groundable": self.grounded,
        }


@dataclass
class ReadResult:
    """What a reader read in one report: ``stated`` findings (report order, each once), ``denied`` categories,
    ``unsupported`` sentences (another language: not read), ``lookalike_letters`` (letters of other scripts read
    as Latin ones), ``overflow`` (stated findings beyond ``max_findings``: read, never boxed)."""

    stated: list[ReadFinding] = field(default_factory=list)
    denied: list[str] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)
    lookalike_letters: int = 0
    max_findings: int = MAX_REPORT_PHRASES

    @property
    def phrases(self) -> list[str]:
        """The labels the model is asked to box (report-guided decoding): the groundable stated findings, at most
        ``max_findings``."""
        return [f.label for f in self.stated if f.grounded][: self.max_findings]

    @property
    def labels(self) -> list[str]:
        return [f.label for f in self.stated]


def zone_of(text: str) -> str:
    """The lung zone a lower-case text names ("upper", "mid", "hilar", "lower") or ""."""
    return next((zone for pattern, zone in _ZONES if pattern.search(text)), "")


def _modifier(word: str) -> bool:
    return word in MODIFIER_WORDS or bool(_NUMBER.match(word)) or word.endswith("-sized")


_LABEL_WORD = re.compile(r"[a-z0-9]+(?:[.\-'][a-z0-9]+)*")


def _span_start(sentence: str, lo: int, start: int) -> int:
    """Where the label of the wording at ``start`` begins: the run of modifier words right before it (within
    its part of the sentence, no comma in between; articles end it)."""
    position = start
    count = 0
    for m in reversed(list(_LABEL_WORD.finditer(sentence, lo, start))):
        between = sentence[m.end() : position]
        if between.strip(" ") or not _modifier(m.group()) or count >= 6:
            break
        position = m.start()
        count += 1
    return position


def _side_of(text: str) -> tuple[str, str]:
    found = _sides(text)
    return (found[0][1], found[0][2]) if found else ("", "")


def _labels_of(
    sentences: list[str], own: dict, same_category: dict, mention: Mention, vocabulary: FindingVocabulary
) -> list[tuple[str, str]]:
    """(label, side) of the finding(s) a stated wording names (two for "right and left pleural effusions")."""
    sentence = sentences[mention.sentence]
    lo, hi = _segment(own.get(mention.sentence, []), mention, len(sentence), vocabulary)
    term = mention.text
    if not vocabulary.sided(mention.category):
        begin = _span_start(sentence, lo, mention.start)
        return [(sentence[begin : mention.end], "")]
    coordinated = _COORDINATED_SIDES.search(sentence[lo : mention.start])
    if coordinated and all(_modifier(w) for w in coordinated.group(5).split()):
        first, side1, second, side2, middle = coordinated.groups()
        out = []
        for size, side in ((first, side1), (second, side2)):
            words = [w for w in (size if size and _modifier(size) else "", side, middle.strip()) if w]
            out.append((" ".join([*words, _singular(term, side)]), side))
        return out
    begin = _span_start(sentence, lo, mention.start)
    stop = mention.end
    post = _POST_LOCATION.match(sentence[mention.end : hi])
    second = None
    if post and (_side_of(post.group(2))[0] or any(p.search(post.group(2)) for p, _ in _ZONES)):
        stop = mention.end + post.end()
        more = _POST_AND.match(sentence[stop:hi])
        if more and _side_of(more.group(2))[0] not in ("", _side_of(post.group(2))[0]):
            prep = more.group(1) or post.group(1)
            second = (f"{_singular(term, 'x')} {prep} the {more.group(2)}", _side_of(more.group(2))[0])
    span = sentence[begin:stop]
    if len(span.split()) > MAX_LABEL_WORDS:
        span = (
            sentence[mention.start : stop]
            if len(sentence[mention.start : stop].split()) <= MAX_LABEL_WORDS
            else term
        )
    side, _ = _side_of(span)
    if side:
        label = (span, side)
    else:  # the side stands apart from the finding: the side word of its sentence (or of another) goes first
        same = same_category.get(mention.category, [])
        built = _build(
            sentence, mention, (lo, hi), "", _other_sides(sentences, own, same, mention), vocabulary
        )
        word = next((w for w in built.phrase.split() if w in SIDE_WORDS), "") if built.side else ""
        if word and not word.startswith("both") and word not in span.split():
            label = (f"{word} {span}", built.side)
        else:
            label = (span, built.side)
    if second is not None:
        singular = f"{_singular(term, 'x')} {post.group(1)} the {post.group(2)}"
        return [(singular if len(singular.split()) <= MAX_LABEL_WORDS else label[0], label[1]), second]
    return [label]


class ReportReader:
    """Reads a free-text radiology report: which findings it states, in its own words, which it denies.

    The one reader of MedRG: the processor owns one (with the vocabulary saved in its `processor_config.json`),
    report-guided decoding asks the model for a box for each stated groundable finding, and the pipeline lists
    the others as read but not grounded. Rules, in order:

    - the report is read as Unicode NFKC; look-alike letters of other scripts (a Cyrillic "о") are read as Latin;
      a sentence in another language is not read and is listed as unsupported;
    - INDICATION / HISTORY / REASON FOR EXAM / COMPARISON sections state no finding of this exam;
    - NegEx-style scope: a denial ("no", "without", "negative for", "rather than", a denial list), a structured
      denial ("Pneumothorax: none."), a resolution ("has resolved", "no longer visible", "has cleared",
      "has been removed"), "unlikely" deny a finding; "rule out", "r/o", "history of" and a purpose ("to exclude",
      "to identify", "to look for") make it hypothetical; "cannot rule out", "does not exclude", "possible",
      "likely", "may be", "suspicion for", "is suspected", "also possible", "alternatively" name it as uncertain;
      "stable" or "borderline" findings are stated;
    - each stated finding once: one per category, side and zone (a wording without a zone joins the same
      category and side); two sides in one wording give two findings;
    - labels: see ``ReadFinding.label`` (the side rule).

    Reading is linear in the report; a report over ``MAX_REPORT_CHARS`` characters raises ``ValueError``.
    """

    def __init__(
        self, vocabulary: FindingVocabulary | dict | None = None, max_findings: int = MAX_REPORT_PHRASES
    ):
        if vocabulary is None:
            vocabulary = default_finding_vocabulary()
        elif not isinstance(vocabulary, FindingVocabulary):
            vocabulary = FindingVocabulary(vocabulary)
        self.vocabulary = vocabulary
        self.max_findings = int(max_findings)

    def read(self, report: str) -> ReadResult:
        if not isinstance(report, str):
            raise TypeError(f"the report must be a string, got {type(report).__name__}")
        _check_length(report)
        vocabulary = self.vocabulary
        sentences, sections, lookalikes = _read_sentences(report)
        own = _mentions(sentences, sections, False, vocabulary)
        result = ReadResult(lookalike_letters=lookalikes, max_findings=self.max_findings)
        result.unsupported = [s for s, kind in zip(sentences, sections) if kind == "unsupported"]
        chosen: list[ReadFinding] = []
        keys: list[tuple[str, str, str]] = []
        by_sentence = _by_sentence(own)
        same_category: dict[str, list[Mention]] = {}
        for m in own:
            if m.status != "negated":
                same_category.setdefault(m.category, []).append(m)
        for mention in own:
            if mention.status not in ("stated", "uncertain"):
                continue
            for label, side in _labels_of(sentences, by_sentence, same_category, mention, vocabulary):
                label = " ".join(label.split()).strip(" ,;:")
                zone = zone_of(label) if vocabulary.sided(mention.category) else ""
                side = side if vocabulary.sided(mention.category) else ""
                merged = False
                for category, other_side, other_zone in keys:
                    if category != mention.category or other_side != side:
                        continue
                    if zone == other_zone or not zone or not other_zone:
                        merged = True
                        break
                if merged or not label:
                    continue
                keys.append((mention.category, side, zone))
                chosen.append(
                    ReadFinding(
                        label,
                        mention.category,
                        side,
                        mention.status == "uncertain",
                        vocabulary.grounded(mention.category),
                        mention.sentence,
                    )
                )
        # a side-less finding is dropped when the same category is stated with a side
        sided = {f.category for f in chosen if f.side}
        result.stated = [f for f in chosen if f.side or f.category not in sided]
        stated = {f.category for f in result.stated}
        result.denied = sorted({m.category for m in own if m.status == "negated"} - stated)
        return result


def report_key_phrases(report: str, max_phrases: int = MAX_REPORT_PHRASES) -> list[str]:
    """Every finding ``report`` states, once each, in the report's own words (report order), as the default
    ``ReportReader`` reads it (grounded or not). A normal or denial-only report gives ``[]``."""
    return ReportReader().read(report).labels[:max_phrases]
