"""The report reader on adversarial report wordings (denials, hedges, resolutions, sections) and its open vocabulary."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from medrg.processing.reading_medrg import MAX_REPORT_CHARS, ReportReader
from medrg.processing.vocabulary_medrg import FindingVocabulary, default_vocabulary

READER = ReportReader()


def labels(report: str) -> list[str]:
    return READER.read(report).labels


@pytest.mark.parametrize(
    "report",
    [
        # history, indication and comparison are not findings of this exam
        "INDICATION: h/o pneumonia. FINDINGS: Lungs are clear.",
        "Reason for exam: pneumonia? Findings: no acute process.",
        "r/o pneumonia.",
        "Comparison: chest x-ray 1/1/2020 showed a right pneumothorax. Findings: lungs clear.",
        # resolved findings
        "The right pneumothorax is no longer visible.",
        "The left effusion has cleared.",
        "Right upper lobe mass has been removed.",
        "Prior study demonstrated a left effusion, which is no longer present.",
        # structured denials
        "Pneumothorax: none.",
        "Pleural effusion: negative.",
        # scope
        "Pneumonia is unlikely.",
        "No focal consolidation, suspicious pulmonary opacity, large pleural effusion, or pneumothorax is identified.",
        # another language, and look-alike letters of another script
        "Épanchement pleural gauche modéré. Pas de pneumothorax.",
        "Linksseitiger Pleuraerguss. Kein Pneumothorax.",
        "N\u043e pneumothorax.",
    ],
)
def test_nothing_is_read_where_nothing_is_stated(report):
    assert labels(report) == []


@pytest.mark.parametrize(
    ("report", "expected"),
    [
        ("FINDINGS:\nEffusion: No.\nPneumothorax: small, right apex.", ["right pneumothorax"]),
        ("No pneumothorax, effusion is present on the left.", ["effusion is present on the left"]),
        ("Left pleural effusion is not absent.", ["left pleural effusion"]),
        ("Right and left pleural effusions.", ["right pleural effusion", "left pleural effusion"]),
        (
            "Small right and moderate left pleural effusions.",
            ["small right pleural effusion", "moderate left pleural effusion"],
        ),
        (
            "Nodules in the right upper lobe and the left lower lobe.",
            ["nodule in the right upper lobe", "nodule in the left lower lobe"],
        ),
        (
            "Left upper lobe nodule. Left lower lobe nodule.",
            ["left upper lobe nodule", "left lower lobe nodule"],
        ),
        ("Small left effusi\u043en.", ["small left effusion"]),  # a Cyrillic о inside the word
        # the report's own words, with size, severity and character
        ("Small left apical pneumothorax.", ["small left apical pneumothorax"]),
        (
            "A spiculated 2.5 cm mass in the left upper lobe.",
            ["spiculated 2.5 cm mass in the left upper lobe"],
        ),
        ("Calcified granuloma.", ["calcified granuloma"]),
        ("Moderate left pleural effusion. No pneumothorax.", ["moderate left pleural effusion"]),
        ("Borderline cardiomegaly.", ["borderline cardiomegaly"]),
        ("The heart is mildly enlarged.", ["heart is mildly enlarged"]),
        ("Pneumothorax, left, moderate.", ["left pneumothorax"]),  # the side rule
        # a "\nFindings:" line is a section heading like any other: it changes nothing read
        ("Left apical pneumothorax.\nFindings: No pneumothorax.", ["left apical pneumothorax"]),
    ],
)
def test_stated_findings_in_the_reports_words(report, expected):
    assert labels(report) == expected


def test_side_is_not_taken_from_another_object():
    found = READER.read("A small pleural effusion with the right PICC tip in the SVC.").stated
    effusion = next(f for f in found if f.category == "effusion")
    assert effusion.label == "small pleural effusion" and effusion.side == ""


def test_hedges_are_named_and_marked_uncertain():
    (finding,) = READER.read("Cannot rule out small right effusion.").stated
    assert finding.label == "small right effusion" and finding.uncertain and finding.side == "right"
    found = READER.read("Likely atelectasis rather than pneumonia.").stated
    assert [(f.category, f.uncertain) for f in found] == [("atelectasis", True)]


def test_findings_outside_the_ten_are_read_and_not_grounded():
    for report, category in [
        ("Left lower lobe airspace disease.", "consolidation"),
        ("Calcified granuloma in the right upper lobe.", "granuloma"),
        ("Increased opacity at the right base.", "opacity"),
        ("Biapical pleural thickening.", "pleural thickening"),
        ("Emphysema.", "emphysema"),
        ("Right IJ central venous catheter tip in the SVC.", "device"),
        ("Tortuous aorta.", "aorta"),
        ("Small hiatal hernia.", "hernia"),
        ("Healed left rib fractures.", "fracture"),
    ]:
        (finding,) = READER.read(report).stated
        assert finding.category == category, (report, finding)
        assert finding.grounded == (category == "consolidation"), (report, finding)
        assert finding.label in report.lower()


def test_many_findings_are_all_read():
    sides = ("right", "left")
    zones = ("upper", "middle", "lower")
    names = ("nodule", "mass", "opacity", "granuloma")
    report = " ".join(
        f"{side.capitalize()} {zone} lobe {name}." for name in names for side in sides for zone in zones
    )[:2000]
    result = READER.read(report)
    assert len(result.stated) == 24 and len(set(result.labels)) == 24
    assert len(result.phrases) == 12  # the groundable ones (nodule, mass) go to the guide


def test_unsupported_language_is_said():
    result = READER.read("Épanchement pleural gauche modéré. Pas de pneumothorax. Small left effusion.")
    assert result.labels == ["small left effusion"]
    assert len(result.unsupported) == 2


def test_reading_is_linear_and_bounded():
    sentence = "Small left pleural effusion, no pneumothorax, and a right upper lobe nodule are seen. "
    times = []
    for n in (200, 800):
        start = time.perf_counter()
        READER.read(sentence * n)
        times.append(time.perf_counter() - start)
    assert times[1] < 8 * times[0] + 0.05, times  # 4x the text, about 4x the time (not 16x)
    start = time.perf_counter()
    READER.read("effusion " * (MAX_REPORT_CHARS // 10))  # one sentence without a full stop
    assert time.perf_counter() - start < 5
    with pytest.raises(ValueError, match="characters"):
        READER.read("x" * (MAX_REPORT_CHARS + 1))


def test_vocabulary_covers_the_public_label_sets():
    vocabulary = FindingVocabulary()
    label_sets = {
        "ChestX-ray8": "Atelectasis Cardiomegaly Effusion Infiltration Mass Nodule Pneumonia Pneumothorax",
        "MS-CXR": "Atelectasis|Cardiomegaly|Consolidation|Edema|Lung Opacity|Pleural Effusion|Pneumonia|Pneumothorax",
        "VinDr-CXR": "Aortic enlargement|Atelectasis|Calcification|Cardiomegaly|Clavicle fracture|Consolidation|"
        "Edema|Emphysema|Enlarged PA|ILD|Infiltration|Lung cavity|Lung cyst|Lung Opacity|Mediastinal shift|"
        "Nodule/Mass|Other lesion|Pleural effusion|Pleural thickening|Pneumothorax|Pulmonary fibrosis|Rib fracture",
        "CheXpert": "Enlarged Cardiomediastinum|Cardiomegaly|Lung Opacity|Lung Lesion|Edema|Consolidation|"
        "Pneumonia|Atelectasis|Pneumothorax|Pleural Effusion|Pleural Other|Fracture|Support Devices",
    }
    for name, labels_text in label_sets.items():
        separator = "|" if "|" in labels_text else " "
        for label in labels_text.split(separator):
            assert vocabulary.category_of_label(label) in vocabulary, (name, label)
    for category, entry in default_vocabulary()["findings"].items():
        assert isinstance(entry["sided"], bool) and entry["terms"], category


def test_vocabulary_is_data_and_is_validated():
    data = default_vocabulary()
    assert FindingVocabulary(data).to_dict() == data
    with pytest.raises(ValueError, match="not a regular expression"):
        FindingVocabulary({"version": 1, "findings": {"x": {"terms": ["("]}}})
    with pytest.raises(ValueError, match="unknown key"):
        FindingVocabulary({"version": 1, "findings": {"x": {"synonyms": ["x"]}}})
    with pytest.raises(ValueError, match="must be a dict"):
        FindingVocabulary([1, 2])
    reader = ReportReader({"version": 1, "findings": {"widget": {"terms": ["widgets?"], "sided": True}}})
    assert reader.read("Small left widget. No pneumothorax.").labels == ["small left widget"]


@pytest.mark.parametrize(
    "report",
    [
        # a finding named only as the purpose of a further study is not stated
        "Recommend CT to exclude an underlying lesion or mass.",
        "Follow-up imaging could help to identify a small nodule.",
        "Repeat radiograph to look for a pneumothorax after the procedure.",
    ],
)
def test_purposes_state_no_finding(report):
    assert labels(report) == []


@pytest.mark.parametrize(
    "report, label",
    [
        ("There may also be a small left pleural effusion.", "small left pleural effusion"),
        ("Suspicion for small bilateral effusions.", "small bilateral effusions"),
        ("Mild interstitial edema is suspected.", "mild interstitial edema"),
        ("Aspiration or edema are also possible.", "edema"),
        ("Scarring, alternatively a small right pleural effusion.", "small right pleural effusion"),
        ("The study does not exclude a right upper lobe nodule.", "right upper lobe nodule"),
    ],
)
def test_more_hedges_are_named_and_marked_uncertain(report, label):
    found = {f.label: f for f in READER.read(report).stated}
    assert found[label].uncertain, (report, found)


@pytest.mark.parametrize(
    "report, category, label",
    [
        # a (hydro)pneumothorax written by its air
        ("Moderate right pleural effusion with an air-fluid level.", "pneumothorax", "air-fluid level"),
        ("Air-fluid level in the left hemithorax.", "pneumothorax", "air-fluid level in the left hemithorax"),
        ("Small apical pleural air collection on the right.", "pneumothorax", None),
        ("Large masslike opacity at the left base.", "mass", "large masslike opacity at the left base"),
        # a pericardial effusion is no pleural effusion; vascular congestion is congestion, not edema
        (
            "Enlarged cardiac silhouette with a pericardial effusion.",
            "pericardial effusion",
            "pericardial effusion",
        ),
        ("Central vascular congestion.", "congestion", "central vascular congestion"),
    ],
)
def test_findings_written_by_their_signs(report, category, label):
    found = READER.read(report).stated
    assert category in {f.category for f in found}, (report, found)
    if label is not None:
        assert label in {f.label for f in found}, (report, found)


def test_air_fluid_level_elsewhere_is_no_pneumothorax():
    found = READER.read("Air-fluid level in the middle mediastinum, likely a hiatal hernia.").stated
    assert "pneumothorax" not in {f.category for f in found}
    found = READER.read("Moderate right pleural effusion with an air-fluid level.").stated
    assert {f.category for f in found} == {"effusion", "pneumothorax"}
    found = READER.read("Central vascular congestion and mild interstitial edema.").stated
    assert {f.category for f in found} == {"congestion", "edema"}


def test_the_default_model_folder_reads_with_the_shipped_vocabulary():
    """The embedded default model's processor_config.json holds the vocabulary the reader ships (rewrite its
    `vocabulary` entry from `default_vocabulary()` when the vocabulary changes)."""
    import json

    from medrg.training import default_model_path

    saved = json.loads((Path(default_model_path()) / "processor_config.json").read_text())
    assert saved["vocabulary"] == default_vocabulary()
