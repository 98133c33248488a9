"""The report vocabulary, the varied report writer, and reading narrative reports (negation, key phrases)."""

from __future__ import annotations

import collections
import json
import random
import re
from pathlib import Path

import pytest
from medrg.processing.data.report_text import (
    REPORT_STYLES,
    VARIED_STYLES,
    Finding,
    write_report,
)
from medrg.processing.reading_medrg import (
    key_phrase,
    key_phrase_info,
    mentions,
    negated_findings,
    split_sentences,
    stated_findings,
)
from medrg.processing.vocabulary_medrg import (
    CATEGORY_TERMS,
    categories_named,
    category_of_label,
)

REPORTS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "chestxray8" / "reports"
LATERAL = [c for c, t in CATEGORY_TERMS.items() if not t.central]
SIDE_WORDS = re.compile(r"\b(right|left|bilateral|bilaterally|bibasilar|both|lingula|lingular)\b")


# ---- vocabulary ----


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("small left pleural effusion", {"effusion"}),
        ("Blunting of the left costophrenic angle.", {"effusion"}),
        ("fluid in the right pleural space", {"effusion"}),
        ("nodular opacity in the right upper lobe", {"nodule"}),
        ("Right upper lobe mass.", {"mass"}),
        ("airspace opacity at the left base", {"consolidation"}),
        ("enlarged cardiac silhouette", {"cardiomegaly"}),
        ("The heart is enlarged.", {"cardiomegaly"}),
        ("small right apical pneumothorax", {"pneumothorax"}),
        ("plate-like atelectasis", {"atelectasis"}),
        ("patchy infiltrates", {"infiltrate"}),
        ("right lower lobe pneumonia and a left effusion", {"pneumonia", "effusion"}),
        ("Lungs are clear. Heart size is normal.", set()),
    ],
)
def test_categories_named(text, expected):
    assert categories_named(text) == expected


def test_every_writer_noun_names_exactly_its_category():
    for category, terms in CATEGORY_TERMS.items():
        for noun in terms.nouns:
            assert categories_named(noun) == {category}, (category, noun)


@pytest.mark.parametrize(
    ("label", "category"),
    [("Effusion", "effusion"), ("Pleural Effusion", "effusion"), ("Infiltration", "infiltrate"),
     ("Nodule", "nodule"), ("Cardiomegaly", "cardiomegaly")],
)  # fmt: skip
def test_category_of_label(label, category):
    assert category_of_label(label) == category


# ---- the varied writer ----


def _random_findings(rng: random.Random, max_findings: int = 4) -> list[Finding]:
    findings = []
    for category in rng.sample(sorted(CATEGORY_TERMS), rng.choice([0, 1, 1, 2, 3, max_findings])):
        if CATEGORY_TERMS[category].central:
            findings.append(Finding(category))
        else:
            findings.append(
                Finding(
                    category,
                    rng.choice(["right", "left", "bilateral"]),
                    rng.choice(["upper", "middle", "lower", ""]),
                    rng.choice(["", "", "small", "moderate", "large"]),
                )
            )
    return findings


@pytest.fixture(scope="module")
def written():
    out = []
    for seed in range(400):
        rng = random.Random(seed)
        findings = _random_findings(rng)
        out.append((findings, write_report(findings, rng)))
    return out


def test_answer_phrases_are_the_reports_own_words(written):
    for findings, report in written:
        text = report.text.lower()
        assert len(report.phrases) == len(findings)
        sentences = [s.lower() for s in split_sentences(report.text)]
        for finding, phrase in zip(findings, report.phrases):
            assert phrase == phrase.lower() and phrase in text, (phrase, report.text)
            # one sentence holds the whole phrase: no side or finding mixed from another sentence
            assert any(phrase in s for s in sentences), (phrase, report.text)
            assert 1 <= len(phrase.split()) <= 8
            assert categories_named(phrase) == {finding.category}, (phrase, finding)
            if finding.category in LATERAL:
                sides = set(SIDE_WORDS.findall(phrase))
                assert sides, (phrase, finding)
                expected = {"right": {"right"}, "left": {"left", "lingula", "lingular"}}
                assert sides <= expected.get(
                    finding.side, {"bilateral", "bilaterally", "bibasilar", "both"}
                ), (phrase, finding)


def test_no_denied_finding_is_answered(written):
    n_denials = 0
    for findings, report in written:
        present = {f.category for f in findings}
        assert not present & set(report.denied), report.text
        # read back with the NegEx-like reader: nothing present is denied, every denial is read as one
        assert not present & negated_findings(report.text), report.text
        n_denials += len(report.denied)
    assert n_denials >= 200


def test_normal_reports_and_styles(written):
    styles = collections.Counter(report.style for _, report in written)
    assert set(styles) == set(VARIED_STYLES), styles
    normal = [report for findings, report in written if not findings]
    assert len(normal) >= 30
    for report in normal:
        assert report.phrases == []
        # the writers' filler may state a device ("Surgical clips project over the upper abdomen."): read, never
        # one of the written finding categories
        assert not [m for m in stated_findings(report.text) if m.category in CATEGORY_TERMS], report.text
    lengths = [len(report.text.split()) for _, report in written]
    assert min(lengths) <= 4 and max(lengths) >= 80  # one-liners and long reports
    assert any("\n" not in r.text and "FINDINGS" not in r.text for _, r in written)  # plain prose
    assert any("INDICATION" in r.text or "HISTORY" in r.text for _, r in written)
    assert max(len(f) for f, _ in written) >= 4


def test_paraphrases_vary_for_one_finding():
    finding = Finding("effusion", "left", "lower", "small")
    phrases = {write_report([finding], random.Random(seed)).phrases[0] for seed in range(200)}
    assert len(phrases) >= 8
    assert {"small left pleural effusion", "small effusion on the left"} & phrases


def test_same_category_twice_gets_distinct_phrases():
    findings = [Finding("effusion", "left", "lower"), Finding("effusion", "left", "middle"),
                Finding("nodule", "right", "upper"), Finding("nodule", "right", "lower")]  # fmt: skip
    for seed in range(100):
        report = write_report(findings, random.Random(seed))
        assert len(set(report.phrases)) == 4, report.phrases
        assert all(p in report.text.lower() for p in report.phrases)


def test_short_report_example_and_determinism():
    findings = [Finding("pneumothorax", "right", "upper", "small"), Finding("cardiomegaly")]
    a = write_report(findings, random.Random(7), style="short")
    b = write_report(findings, random.Random(7), style="short")
    assert a == b and a.style == "short" and "\n" not in a.text
    assert a.text.lower().startswith(a.phrases[0])


def test_label_outside_the_vocabulary_is_written_with_its_own_words():
    for seed in range(20):
        report = write_report([Finding("Pleural Thickening", "left", "upper")], random.Random(seed))
        (phrase,) = report.phrases
        assert "pleural thickening" in phrase and "left" in phrase and phrase in report.text.lower()


def test_template_style_and_legacy_call():
    findings = [Finding("nodule", "right", "upper"), Finding("effusion", "left", "lower", "small")]
    report = write_report(findings, random.Random(0), style="template")
    assert report.text.startswith("FINDINGS:") and "IMPRESSION:" in report.text
    assert all(p in report.text.split("IMPRESSION:")[0] for p in report.phrases)
    legacy = write_report(["nodule in the right upper zone"], ["pneumothorax"], random.Random(0))
    assert isinstance(legacy, str) and "nodule in the right upper zone" in legacy


def test_writer_errors():
    with pytest.raises(ValueError, match="style must be one of"):
        write_report([], random.Random(0), style="poetry")
    with pytest.raises(ValueError, match=r"findings\[0\]\.category is empty"):
        write_report([Finding(" ", "left", "lower")], random.Random(0))
    with pytest.raises(ValueError, match=r"findings\[1\]\.side = 'dexter'"):
        write_report([Finding("nodule", "left", "lower"), Finding("mass", "dexter")], random.Random(0))
    with pytest.raises(ValueError, match=r"findings\[0\]\.zone = 'apex'"):
        write_report([Finding("nodule", "left", "apex")], random.Random(0))
    with pytest.raises(TypeError, match="rng must be a random.Random"):
        write_report([], 3)
    assert set(VARIED_STYLES) < set(REPORT_STYLES)


# ---- negation scope ----


@pytest.mark.parametrize(
    ("report", "negated", "stated"),
    [
        ("No pneumothorax. Heart size is normal.", {"pneumothorax"}, set()),
        ("There is no pleural effusion or pneumothorax.", {"effusion", "pneumothorax"}, set()),
        ("No evidence of consolidation, but there is a small left pleural effusion.", {"consolidation"},
         {"effusion"}),
        ("The lungs are clear without evidence of focal consolidation.", {"consolidation"}, set()),
        ("Negative for pneumothorax.", {"pneumothorax"}, set()),
        ("The lungs are free of nodules or masses.", {"nodule", "mass"}, set()),
        ("The previously seen right effusion has resolved.", {"effusion"}, set()),
        ("Pneumothorax is not seen.", {"pneumothorax"}, set()),
        ("No significant change in the size of the left pleural effusion.", set(), {"effusion"}),
        ("A right upper lobe nodule; no mass.", {"mass"}, {"nodule"}),
        ("Pneumonia cannot be excluded.", set(), {"pneumonia"}),
        ("Follow-up imaging to rule out pneumothorax.", set(), set()),
        ("Cardiomegaly. There are no significant pulmonary edema or pleural effusions noted.",
         {"edema", "effusion"}, {"cardiomegaly"}),
        ("It may progress to pneumonia if left untreated.", set(), set()),
        ("Moderate left pleural effusion. No pneumothorax.", {"pneumothorax"}, {"effusion"}),
    ],
)  # fmt: skip
def test_negation_scope(report, negated, stated):
    assert negated_findings(report) == negated
    assert {m.category for m in stated_findings(report)} == stated


def test_hypothetical_mentions_are_neither():
    found = mentions("Conditions such as pneumonia or heart failure may present similarly.")
    assert [(m.category, m.status) for m in found] == [("pneumonia", "hypothetical")]


# ---- key phrases of narrative reports (written for this test in several writers' manners) ----

HAND_WRITTEN = [
    (
        "PA chest radiograph. There is a moderate-sized pleural effusion in the left hemithorax with "
        "associated basilar atelectasis. No pneumothorax. The heart is normal in size.",
        "Effusion",
        "left bottom",
        "pleural effusion in the left hemithorax",
        "left",
    ),
    (
        "Findings: A 2.3 cm spiculated mass projects over the right upper lobe. The left lung is clear. "
        "Recommend CT for further characterization.",
        "Mass",
        "right top",
        "mass over the right upper lobe",
        "right",
    ),
    (
        "Comparison is made with the study of last year. A small nodule is again seen in the left upper lobe, "
        "unchanged. No consolidation or effusion.",
        "Nodule",
        "left top",
        "nodule in the left upper lobe",
        "left",
    ),
    (
        "The cardiac silhouette is enlarged. Lungs are clear. No pleural effusion.",
        "Cardiomegaly",
        "",
        "cardiac silhouette is enlarged",
        "",
    ),
    (
        "Right lower lobe consolidation with air bronchograms, compatible with pneumonia in the appropriate "
        "clinical setting. No pneumothorax.",
        "Pneumonia",
        "right bottom",
        "right pneumonia",
        "right",
    ),
    (
        "There is a thin visceral pleural line at the right apex without lung markings beyond it, in keeping "
        "with a small right apical pneumothorax. No effusion.",
        "Pneumothorax",
        "right top",
        "right apical pneumothorax",
        "right",
    ),
    (
        "Patchy bibasilar opacities. Streaky left basilar atelectasis. No right effusion.",
        "Atelectasis",
        "left bottom",
        "left basilar atelectasis",
        "left",
    ),
    (
        "No right pleural effusion. A small effusion is present on the left.",
        "Effusion",
        "left",
        "effusion on the left",
        "left",
    ),
    (
        "Hazy infiltrates are seen in the right mid lung zone. The remainder is unremarkable.",
        "Infiltrate",
        "right",
        "infiltrate in the right mid lung zone",
        "right",
    ),
    (
        "The radiograph shows blunting of the costophrenic angle. This abnormality is on the right side.",
        "Effusion",
        "right",
        "right blunting of the costophrenic angle",
        "right",
    ),
]


@pytest.mark.parametrize(("report", "label", "position", "expected", "side"), HAND_WRITTEN)
def test_key_phrase_on_hand_written_reports(report, label, position, expected, side):
    info = key_phrase_info(report, label, position)
    assert info.phrase == expected and info.from_report and info.side == side
    # every word is the report's (singular/plural aside) and the phrase names the label's category
    words = set(re.findall(r"[a-z0-9-]+", report.lower()))
    assert all(w in words or w + "s" in words for w in info.phrase.split())
    category = category_of_label(label)
    assert category in categories_named(info.phrase) or category == "pneumonia"


def test_key_phrase_never_comes_from_a_denied_sentence():
    report = "No left pleural effusion. There is a small right pleural effusion."
    assert key_phrase(report, "Effusion", "") == "right pleural effusion"


def test_key_phrase_side_belongs_to_its_finding():
    report = "There is airspace disease in the right middle lobe and cardiac enlargement. Left apical nodule."
    assert key_phrase(report, "Cardiomegaly") == "cardiac enlargement"
    assert key_phrase(report, "Consolidation") == "airspace disease in the right middle lobe"
    assert key_phrase(report, "Nodule") == "left apical nodule"


def test_key_phrase_fallback_when_the_report_has_no_wording():
    info = key_phrase_info("Findings were discussed with the referring team.", "Nodule", "right top")
    assert info == type(info)("right upper nodule", False, "right")
    denied = key_phrase_info("No pneumothorax.", "Pneumothorax", "left")
    assert not denied.from_report and denied.phrase == "left pneumothorax"
    with pytest.raises(ValueError, match="not a finding category"):
        key_phrase("x", "Unicorn horn")


@pytest.mark.skipif(not REPORTS.is_dir(), reason="shared ChestX-ray8 narrative reports absent")
def test_key_phrase_on_all_shared_narrative_reports():
    counts = collections.Counter()
    for name in ("train_gpt", "train_llama", "val_gpt", "val_llama"):
        with open(REPORTS / f"{name}.jsonl") as f:
            for line in f:
                row = json.loads(line)
                info = key_phrase_info(row["report"], row["label"], row["position"])
                category = category_of_label(row["label"])
                side = next((w for w in row["position"].split() if w in ("left", "right")), "")
                counts["rows"] += 1
                counts["from_report"] += info.from_report
                counts["category"] += category in categories_named(info.phrase)
                counts["denied"] += category in negated_findings(row["report"])
                if side:
                    counts["sided"] += 1
                    counts["side_agrees"] += info.side == side
    assert counts["rows"] == 1532
    assert counts["from_report"] / counts["rows"] >= 0.98, counts
    assert counts["category"] / counts["rows"] >= 0.98, counts
    assert counts["side_agrees"] / counts["sided"] >= 0.97, counts
    assert counts["denied"] == 0, counts
