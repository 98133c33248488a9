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

import re
from dataclasses import dataclass

from .vocabulary_medrg import (
    CATEGORY_TERMS,
    HYPOTHETICAL_PRE,
    NEGATION_POST,
    NEGATION_PRE,
    NOT_A_SIDE_AFTER,
    PSEUDO_NEGATION,
    SCOPE_END,
    SIDE_WORDS,
    ZONE_READ,
    category_of_label,
    category_pattern,
)

MAX_KEY_PHRASE_WORDS = 8
TRIGGER_WINDOW_WORDS = 8  # a pre-trigger reaches at most this many words ahead
POST_WINDOW_WORDS = 5

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\"'])|\n+|(?<=:)\s+(?=\d+\.\s)")
_WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")


def _phrase_regex(phrases) -> re.Pattern:
    alternation = "|".join(re.escape(p) for p in sorted(phrases, key=len, reverse=True))
    return re.compile(rf"\b(?:{alternation})\b")


_PRE = _phrase_regex(NEGATION_PRE)
_POST = _phrase_regex(NEGATION_POST)
_PSEUDO = _phrase_regex(PSEUDO_NEGATION)
_HYPO = _phrase_regex(HYPOTHETICAL_PRE)
_SCOPE_END = re.compile(rf"[;:]|\b(?:{'|'.join(re.escape(p) for p in SCOPE_END)})\b")
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
    ``sentence``; ``status`` is "stated", "negated" or "hypothetical"; ``related`` for a weak wording
    (e.g. "opacity" read as pneumonia)."""

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


def split_sentences(report: str) -> list[str]:
    """Sentences (and section lines) of a report, stripped, none empty."""
    return [s.strip() for s in _SENTENCE_END.split(report) if s and s.strip()]


def _words_between(text: str) -> int:
    return len(_WORD.findall(text))


def _status(sentence: str, start: int, end: int) -> str:
    """NegEx-like status of the mention at sentence[start:end] (sentence in lower case)."""
    before = sentence[:start]
    pseudo = [(m.start(), m.end()) for m in _PSEUDO.finditer(sentence)]

    def real(m) -> bool:
        return not any(a <= m.start() < b for a, b in pseudo)

    def in_scope(gap: str) -> bool:
        return not _SCOPE_END.search(gap) and _words_between(gap) <= TRIGGER_WINDOW_WORDS

    pre = [m for m in _PRE.finditer(before) if real(m)]
    if pre and in_scope(before[pre[-1].end() :]):
        return "negated"
    post = next((m for m in _POST.finditer(sentence, end) if real(m)), None)
    if post is not None:
        gap = sentence[end : post.start()]
        if not _SCOPE_END.search(gap) and _words_between(gap) <= POST_WINDOW_WORDS:
            return "negated"
    hypo = list(_HYPO.finditer(before))
    if hypo and in_scope(before[hypo[-1].end() :]):
        return "hypothetical"
    return "stated"


def _category_spans(sentence: str, related: bool) -> list[tuple[int, int, str, bool]]:
    """(start, end, category, related) of category wordings, overlaps resolved to the longest."""
    spans = []
    for category in CATEGORY_TERMS:
        for m in category_pattern(category).finditer(sentence):
            spans.append((m.start(), m.end(), category, False))
        if related:
            for m in category_pattern(category, related=True).finditer(sentence):
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


def mentions(report: str, related: bool = False) -> list[Mention]:
    """Every category wording in ``report`` with its status (see the module docstring); ``related`` adds
    the weak wordings of ``CategoryTerms.related``."""
    found = []
    for k, sentence in enumerate(split_sentences(report)):
        low = sentence.lower()
        for start, end, category, is_related in _category_spans(low, related):
            found.append(
                Mention(category, low[start:end], k, start, end, _status(low, start, end), is_related)
            )
    return found


def stated_findings(report: str) -> list[Mention]:
    """The mentions the report states (not negated, not hypothetical), own wordings only."""
    return [m for m in mentions(report) if m.status == "stated"]


def negated_findings(report: str) -> set[str]:
    """Categories the report denies and never states ("No pneumothorax. Heart size is normal." ->
    {"pneumothorax"}; the cardiac sentence names no category wording)."""
    found = mentions(report)
    stated = {m.category for m in found if m.status == "stated"}
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


def _segment(all_mentions: list[Mention], mention: Mention, length: int) -> tuple[int, int]:
    """The part of the mention's sentence that belongs to it: from the end of the previous wording of
    another category to the start of the next one ("airspace disease in the right middle lobe and
    cardiac enlargement": the side belongs to the airspace disease)."""
    lo, hi = 0, length
    related = category_pattern(mention.category, related=True)
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
) -> KeyPhrase:
    term = mention.text
    if CATEGORY_TERMS[mention.category].central:
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
    sides: list[tuple[str, str]] = []
    k = best.sentence + 1
    if (
        k < len(sentences)
        and _ANAPHORA.match(sentences[k])
        and not any(m.sentence == k for m in all_mentions)
    ):
        sides += [(side, word) for _, side, word in _sides(sentences[k])]
    for m in found:
        if m.status == "stated" and m.sentence != best.sentence:
            lo, hi = _segment(all_mentions, m, len(sentences[m.sentence]))
            sides += [(side, word) for p, side, word in _sides(sentences[m.sentence]) if lo <= p < hi]
    return sorted(sides, key=lambda sw: sw[0] == "bilateral")


def _rank(mention: Mention, label_word: str) -> tuple:
    """Lower is better: stated before hypothetical, the label's own word, own wording before related."""
    return (
        mention.status != "stated",
        mention.related,
        label_word not in mention.text,
        mention.sentence,
        mention.start,
    )


def key_phrase_info(report: str, label: str, position: str = "") -> KeyPhrase:
    """The key phrase of ``label``'s finding in ``report`` with where it came from (see ``key_phrase``)."""
    category = category_of_label(label)
    if category not in CATEGORY_TERMS:
        raise ValueError(
            f"label {label!r} is not a finding category of the vocabulary {sorted(CATEGORY_TERMS)}"
        )
    want_side, want_zone = _position_side_zone(position)
    sentences = [s.lower() for s in split_sentences(report)]
    all_mentions = mentions(report, related=True)
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


# ---- every stated finding of a report (inference) ----

MAX_REPORT_PHRASES = 16


def _phrase_of(sentences: list[str], own: list[Mention], mention: Mention) -> KeyPhrase:
    same = [m for m in own if m.category == mention.category and m.status != "negated"]
    segment = _segment(own, mention, len(sentences[mention.sentence]))
    built = _build(
        sentences[mention.sentence], mention, segment, "", _other_sides(sentences, own, same, mention)
    )
    words = built.phrase.split()
    if len(words) > MAX_KEY_PHRASE_WORDS:
        return KeyPhrase(_singular(mention.text, built.side), True, built.side)
    if (
        len(words) > 1 and words[0] in SIDE_WORDS and words[0] in words[1:]
    ):  # "right blunting of the right ..."
        return KeyPhrase(" ".join(words[1:]), True, built.side)
    return built


def report_key_phrases(report: str, max_phrases: int = MAX_REPORT_PHRASES) -> list[str]:
    """Every finding ``report`` states, once each, as a key phrase in the report's own words (in report order).

    One phrase per (category, side): "Small right basilar effusion. IMPRESSION: Effusion on the right side." gives
    one phrase, the first one ("right basilar effusion", as ``key_phrase`` picks for training answers); a side-less
    phrase is dropped when
    the same category is stated with a side. Negated and hypothetical mentions give nothing, so a normal or
    denial-only report gives ``[]``. A weak wording ("opacity", read as pneumonia/consolidation/infiltrate)
    counts only where no own wording of those categories is stated anywhere in the report.
    """
    sentences = [s.lower() for s in split_sentences(report)]
    all_mentions = mentions(report, related=True)
    own = [m for m in all_mentions if not m.related]
    stated_own = [m for m in own if m.status == "stated"]
    stated_categories = {m.category for m in stated_own}
    chosen: dict[tuple[str, str], str] = {}
    for mention in stated_own:
        built = _phrase_of(sentences, own, mention)
        chosen.setdefault((mention.category, built.side), built.phrase)
    related_spans = set()
    for mention in all_mentions:
        if not mention.related or mention.status != "stated" or mention.category in stated_categories:
            continue
        span = (mention.sentence, mention.start, mention.end)
        if span in related_spans:  # one phrase per wording, whichever category it may be read as
            continue
        if any(o.sentence == mention.sentence for o in stated_own):  # "opacity ... may represent atelectasis"
            continue
        related_spans.add(span)
        built = _phrase_of(sentences, [*own, mention], mention)
        chosen.setdefault((mention.category, built.side), built.phrase)
    sided = {category for category, side in chosen if side}
    phrases = [p for (category, side), p in chosen.items() if side or category not in sided]
    out: list[str] = []
    for phrase in phrases:
        if phrase not in out:
            out.append(phrase)
    return out[:max_phrases]
