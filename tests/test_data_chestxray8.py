"""ChestX-ray8 builder: counts on the shared copy, and real-format fixtures with bad input."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import published_text
from medrg.processing.data import DataFormatError, load_grounding_dataset
from PIL import Image

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "chestxray8"
HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,\n"


def write_fixture(
    root: Path, rows: list[str], images: list[str], splits: dict[str, list[str]] | None = None, size=64
):
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in images:
        arr = rng.integers(0, 255, (size, size), dtype=np.uint8)
        Image.fromarray(arr, "L").convert("RGBA").save(root / "images" / name)  # RGBA like some originals
    (root / "BBox_List_2017.csv").write_text(HEADER + "".join(r + "\n" for r in rows))
    for split, names in (splits or {}).items():
        (root / f"{split}_images.txt").write_text("\n".join(names) + "\n")
    return root


ROWS = [
    "00000001_000.png,Nodule,100.0,200.0,80.0,60.0",
    "00000001_000.png,Cardiomegaly,300.0,500.0,400.0,300.0",
    "00000002_000.png,Effusion,650.0,600.0,250.0,200.0",
    "00000003_001.png,Mass,600.0,100.0,200.0,200.0",
]
IMAGES = ["00000001_000.png", "00000002_000.png", "00000003_001.png"]
SPLITS = {"train": ["00000001_000.png", "00000002_000.png"], "val": ["00000003_001.png"]}


def build(root, tmp_path, **kw):
    return load_grounding_dataset(
        "chestxray8", str(root), cache_dir=str(tmp_path / "cache"), progress=False, **kw
    )


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def verbatim(phrase: str, report: str) -> bool:
    """The reader's label rule: a contiguous span of the report (case, punctuation and spacing aside), or a side
    word of the span's sentence before such a span."""
    normal = " ".join(re.findall(r"[a-z0-9]+(?:[-'][a-z0-9]+)*", phrase.lower()))
    sentences = [
        " " + " ".join(re.findall(r"[a-z0-9]+(?:[-'][a-z0-9]+)*", s.lower())) + " "
        for s in re.split(r"[.\n;]", report)
    ]
    if any(f" {normal} " in s for s in sentences):
        return True
    side, _, span = normal.partition(" ")
    return side in ("left", "right", "bilateral") and any(
        f" {span} " in s and f" {side} " in s for s in sentences
    )


def taken_from(phrase: str, report: str) -> bool:
    """Every word of the key phrase is a word of the report (singular of a plural counts: "effusions")."""
    rw = words(report)
    return all(w in rw or f"{w}s" in rw or f"{w}es" in rw for w in words(phrase))


NARRATIVE = {  # image -> (label, position, report, box_xyxy in the 1024 frame) of the fixture's CSV rows
    "00000001_000.png": [
        (
            "Nodule",
            "right top",
            "A small nodule is seen in the right upper lung. No effusion.",
            [100, 200, 180, 260],
        ),
        ("Cardiomegaly", "", "The heart is enlarged, consistent with cardiomegaly.", [300, 500, 700, 800]),
    ],
    "00000002_000.png": [
        (
            "Effusion",
            "left bottom",
            "There is a left pleural effusion blunting the angle.",
            [650, 600, 900, 800],
        )
    ],
    "00000003_001.png": [
        ("Mass", "left top", "A large mass occupies the left upper zone.", [600, 100, 800, 300])
    ],
}


def write_reports(root: Path, writer: str, splits=SPLITS, edit=None) -> None:
    (root / "reports").mkdir(exist_ok=True)
    for split, names in splits.items():
        rows = [
            {"image": n, "label": lab, "position": pos, "report": rep, "box_xyxy": box}
            for n in names
            for lab, pos, rep, box in NARRATIVE[n]
        ]
        if edit is not None:
            edit(rows)
        (root / "reports" / f"{split}_{writer}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_fixture_builds_with_scaled_boxes_and_positions(tmp_path):
    root = write_fixture(tmp_path / "cx8", ROWS, IMAGES, SPLITS)
    dd = build(root, tmp_path)
    assert dd["train"].num_rows == 2 and dd["validation"].num_rows == 1
    row = [r for r in dd["train"] if r["image_id"] == "00000001_000.png"][0]
    nod = [f for f in row["findings"] if f["category"] == "nodule"][0]
    np.testing.assert_allclose(nod["boxes"][0], [100 / 16, 200 / 16, 180 / 16, 260 / 16], rtol=1e-5)
    # image left = patient right
    assert "right" in nod["phrase"] and nod["phrase"] in row["report"]
    eff = dd["train"].filter(lambda r: r["image_id"] == "00000002_000.png")[0]["findings"][0]
    assert "left" in eff["phrase"]
    assert row["patient_id"].startswith("p_") and "00000001" not in row["patient_id"]
    assert row["image"].mode == "L"


def test_hash_split_without_split_files_is_patient_disjoint(tmp_path):
    rows = ROWS + ["00000001_001.png,Nodule,500.0,200.0,80.0,60.0"]
    root = write_fixture(tmp_path / "cx8", rows, IMAGES + ["00000001_001.png"])
    dd = build(root, tmp_path, split_fractions={"train": 0.5, "test": 0.5})
    owners = {}
    for split, ds in dd.items():
        for pid in ds["patient_id"]:
            assert owners.setdefault(pid, split) == split
    assert sum(ds.num_rows for ds in dd.values()) == 4


@pytest.mark.parametrize(
    "bad_row, message",
    [
        ("00000002_000.png,Effusion,nan,600.0,250.0,200.0", r"row 4: field 'Bbox x' is 'nan'"),
        (
            "00000002_000.png,Effusion,650.0,600.0,0.0,200.0",
            r"row 4: field 'Bbox \[x,y,w,h\]'.*zero or negative",
        ),
        ("00000002_000.png,Effusion,900.0,600.0,250.0,200.0", r"row 4: field 'Bbox \[x,y,w,h\]'.*outside"),
        ("00000002_000.png,Fracture,650.0,600.0,250.0,200.0", r"row 4: field 'Finding Label' = 'Fracture'"),
        ("00000002_000.png,Effusion,650.0,600.0", r"row 4: field 'Bbox \[x,y,w,h\]' has fewer"),
    ],
)
def test_bad_rows_name_file_row_field(tmp_path, bad_row, message):
    rows = ROWS[:2] + [bad_row] + ROWS[3:]
    root = write_fixture(tmp_path / "cx8", rows, IMAGES, SPLITS)
    with pytest.raises(DataFormatError, match=message) as e:
        build(root, tmp_path)
    assert "BBox_List_2017.csv" in str(e.value)


def test_small_overhang_is_clipped_and_logged(tmp_path, caplog):
    rows = ROWS[:2] + ["00000002_000.png,Effusion,800.0,600.0,225.0,200.0"] + ROWS[3:]  # 1 px over 1024
    root = write_fixture(tmp_path / "cx8", rows, IMAGES, SPLITS)
    with caplog.at_level("INFO", logger="medrg.processing.data"):
        dd = build(root, tmp_path)
    box = dd["train"].filter(lambda r: r["image_id"] == "00000002_000.png")[0]["findings"][0]["boxes"][0]
    assert box[2] == 64.0
    assert "clipped 1 box" in caplog.text


def test_missing_column_missing_image_duplicate_and_leak(tmp_path):
    root = write_fixture(tmp_path / "a", ROWS, IMAGES, SPLITS)
    (root / "BBox_List_2017.csv").write_text("Image Index,Bbox [x,y,w,h],,,\n" + "00000001_000.png,1,2,3,4\n")
    with pytest.raises(DataFormatError, match=r"BBox_List_2017.csv: missing column 'Finding Label'"):
        build(root, tmp_path)

    root = write_fixture(tmp_path / "b", ROWS, IMAGES, SPLITS)
    (root / "images" / "00000003_001.png").unlink()
    with pytest.raises(
        DataFormatError, match=r"row 5: image file 00000003_001.png \(field 'Image Index'\) not found"
    ):
        build(root, tmp_path)

    root = write_fixture(tmp_path / "c", ROWS + [ROWS[0]], IMAGES, SPLITS)
    with pytest.raises(DataFormatError, match=r"row 6: duplicate of row 2"):
        build(root, tmp_path)

    leak = {
        "train": ["00000001_000.png", "00000002_000.png"],
        "val": ["00000003_001.png", "00000001_005.png"],
    }
    rows = ROWS + ["00000001_005.png,Nodule,500.0,200.0,80.0,60.0"]
    root = write_fixture(tmp_path / "d", rows, IMAGES + ["00000001_005.png"], leak)
    with pytest.raises(DataFormatError, match=r"patient leak: .*00000001_00[05].png"):
        build(root, tmp_path)

    root = write_fixture(tmp_path / "e", ROWS, IMAGES, SPLITS)
    (root / "images" / "00000002_000.png").write_bytes(b"not a png")
    with pytest.raises(DataFormatError, match=r"row 4: image file .*00000002_000.png is unreadable"):
        build(root, tmp_path)


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared ChestX-ray8 copy absent")
def test_shared_copy_counts(tmp_path):
    dd = load_grounding_dataset(
        "chestxray8", str(SHARED), id_secret="t", cache_dir=str(tmp_path), progress=False
    )
    counts = {
        s: (ds.num_rows, sum(len(f["boxes"]) for fs in ds["findings"] for f in fs)) for s, ds in dd.items()
    }
    assert counts == {"train": (599, 667), "validation": (88, 99)}
    for ds in dd.values():
        for report, findings in zip(ds["report"], ds["findings"]):
            assert all(f["phrase"] in report for f in findings)
    train_p, val_p = set(dd["train"]["patient_id"]), set(dd["validation"]["patient_id"])
    assert len(train_p) == 502 and len(val_p) == 78 and not train_p & val_p


def test_edited_annotations_are_not_served_from_cache(tmp_path):
    root = write_fixture(tmp_path / "cx8", ROWS, IMAGES, SPLITS)
    first = build(root, tmp_path)["validation"][0]["findings"][0]["boxes"][0]
    rows = ROWS[:3] + ["00000003_001.png,Mass,600.0,100.0,300.0,200.0"]
    (root / "BBox_List_2017.csv").write_text(HEADER + "".join(r + "\n" for r in rows))
    second = build(root, tmp_path)["validation"][0]["findings"][0]["boxes"][0]
    assert first[2] == 50.0 and second[2] == 56.25


def test_narrative_reports_one_sample_per_report_row(tmp_path):
    root = write_fixture(tmp_path / "cx8", ROWS, IMAGES, SPLITS)
    write_reports(root, "gpt")
    template, gpt = build(root, tmp_path, id_secret="s"), build(root, tmp_path, reports="gpt", id_secret="s")
    assert {s: ds.num_rows for s, ds in gpt.items()} == {"train": 3, "validation": 1}
    rows = {r["image_id"]: r for r in gpt["train"]}
    assert sorted(rows) == [
        "00000001_000.png#gpt:cardiomegaly", "00000001_000.png#gpt:nodule", "00000002_000.png#gpt:effusion"
    ]  # fmt: skip
    nod = rows["00000001_000.png#gpt:nodule"]
    assert nod["report"] == NARRATIVE["00000001_000.png"][0][2] and nod["source"] == "chestxray8:gpt"
    # exactly the finding its report states, with the CSV box mapped to the 64-px image
    assert [f["category"] for f in nod["findings"]] == ["nodule"]
    np.testing.assert_allclose(
        nod["findings"][0]["boxes"], [[100 / 16, 200 / 16, 180 / 16, 260 / 16]], rtol=1e-5
    )
    for r in list(gpt["train"]) + list(gpt["validation"]):
        (finding,) = r["findings"]
        assert finding["phrase"] and taken_from(finding["phrase"], r["report"]), finding["phrase"]
    # same patient, same id, across writers and samples
    t1 = [r for r in template["train"] if r["image_id"] == "00000001_000.png"][0]
    assert nod["patient_id"] == rows["00000001_000.png#gpt:cardiomegaly"]["patient_id"] == t1["patient_id"]


def test_reports_all_mixes_sources_and_missing_writer_files(tmp_path):
    root = write_fixture(tmp_path / "cx8", ROWS, IMAGES, SPLITS)
    write_reports(root, "gpt")
    mixed = build(root, tmp_path, reports="all")  # no llama files: template + gpt
    sources = {s: sorted(ds["source"]) for s, ds in mixed.items()}
    assert sources == {
        "train": ["chestxray8"] * 2 + ["chestxray8:gpt"] * 3,
        "validation": ["chestxray8", "chestxray8:gpt"],
    }
    assert build(root, tmp_path, reports=["gpt", "template"])["train"].num_rows == 5
    with pytest.raises(
        DataFormatError, match=r"train_llama.jsonl: reports of writer 'llama' for split 'train'"
    ):
        build(root, tmp_path, reports="llama")


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda rows: rows[0].update(box_xyxy=[10, 10, 50, 50]),
            r"train_gpt.jsonl, row 1: field 'box_xyxy'.*matches no",
        ),
        (
            lambda rows: rows[0].update(label="Fracture"),
            r"train_gpt.jsonl, row 1: field 'label' = 'Fracture'",
        ),
        (
            lambda rows: rows[2].update(image="00000003_001.png"),
            r"row 3: field 'image' = '00000003_001.png' is not",
        ),
        (lambda rows: rows[1].update(report=None), r"train_gpt.jsonl, row 2: field 'report' = None"),
        (lambda rows: rows[1].pop("box_xyxy"), r"train_gpt.jsonl, row 2: field 'box_xyxy' = None"),
    ],
)
def test_bad_report_rows_name_file_row_field(tmp_path, edit, message):
    root = write_fixture(tmp_path / "cx8", ROWS, IMAGES, SPLITS)
    write_reports(root, "gpt", {"train": SPLITS["train"]}, edit)
    write_reports(root, "gpt", {"val": SPLITS["val"]})
    with pytest.raises(DataFormatError, match=message):
        build(root, tmp_path, reports="gpt")


@pytest.mark.skipif(not (SHARED / "reports").is_dir(), reason="shared ChestX-ray8 reports absent")
def test_shared_copy_all_report_sources(tmp_path):
    dd = load_grounding_dataset(
        "chestxray8", str(SHARED), reports="all", id_secret="t", cache_dir=str(tmp_path), progress=False
    )
    counts = {(s, src): n for s, ds in dd.items() for src, n in Counter(ds["source"]).items()}
    narrative = verbatim_phrases = 0
    assert counts == {
        ("train", "chestxray8"): 599, ("train", "chestxray8:gpt"): 667, ("train", "chestxray8:llama"): 667,
        ("validation", "chestxray8"): 88, ("validation", "chestxray8:gpt"): 99,
        ("validation", "chestxray8:llama"): 99,
    }  # fmt: skip
    for ds in dd.values():
        ids = {}
        for image_id, pid, source, report, findings in zip(
            ds["image_id"], ds["patient_id"], ds["source"], ds["report"], ds["findings"]
        ):
            assert (
                ids.setdefault(image_id.split("#")[0], pid) == pid
            )  # one patient id per image, every source
            if source != "chestxray8":
                (finding,) = findings
                assert len(finding["boxes"]) == 1 and finding["phrase"]
                assert taken_from(finding["phrase"], report), (finding["phrase"], report[:200])
                narrative += 1
                verbatim_phrases += verbatim(finding["phrase"], report)
    # answers are the report's words by the reader's label rule
    assert verbatim_phrases >= 0.95 * narrative, (verbatim_phrases, narrative)
    train_p, val_p = set(dd["train"]["patient_id"]), set(dd["validation"]["patient_id"])
    assert len(train_p) == 502 and len(val_p) == 78 and not train_p & val_p


# ------------------------------------------------------------------------- bad files and options
SECRET = "test-secret"

CX8_HEADER = b"Image Index,Finding Label,Bbox [x,y,w,h],,,\n"
CX8_ROWS = [
    b"00000001_000.png,Nodule,100.0,200.0,80.0,60.0",
    b"00000002_000.png,Effusion,650.0,600.0,250.0,200.0",
]


def cx8(root: Path, rows=CX8_ROWS, header=CX8_HEADER) -> Path:
    (root / "images").mkdir(parents=True, exist_ok=True)
    for name in ("00000001_000.png", "00000002_000.png"):
        Image.fromarray(np.full((64, 64), 70, np.uint8)).save(root / "images" / name)
    (root / "BBox_List_2017.csv").write_bytes(header + b"\n".join(rows) + b"\n")
    (root / "train_images.txt").write_text("00000001_000.png\n")
    (root / "val_images.txt").write_text("00000002_000.png\n")
    return root


def build_cx8(root: Path, tmp_path: Path, **kw):
    return load_grounding_dataset(
        "chestxray8", str(root), cache_dir=str(tmp_path / "cache"), progress=False, id_secret=SECRET, **kw
    )


def test_invalid_utf8_in_the_annotation_csv_names_row_and_byte(tmp_path):
    with pytest.raises(DataFormatError, match=r"BBox_List_2017.csv, row 3: not valid UTF-8 \(byte 0xff"):
        build_cx8(
            cx8(tmp_path / "c", [CX8_ROWS[0], CX8_ROWS[1].replace(b"Effusion", b"Eff\xffusion")]), tmp_path
        )


def test_unknown_reports_value_names_the_allowed_ones(tmp_path):
    with pytest.raises(
        ValueError, match=r"reports='narrative': expected one of \['template', 'gpt', 'llama', 'all'\]"
    ):
        build_cx8(cx8(tmp_path / "c"), tmp_path, reports="narrative")


def test_extra_unnamed_csv_column_changes_nothing(tmp_path):
    plain = build_cx8(cx8(tmp_path / "a"), tmp_path)
    extra = build_cx8(cx8(tmp_path / "b", [r + b",,,junk" for r in CX8_ROWS]), tmp_path)
    assert published_text(plain) == published_text(extra)


def test_same_split_given_by_two_split_files_is_refused(tmp_path):
    root = cx8(tmp_path / "c")
    (root / "train_list.txt").write_text("00000001_000.png\n")
    with pytest.raises(
        DataFormatError, match=r"split 'train' is given by two files: .*train_images.txt and .*train_list.txt"
    ):
        build_cx8(root, tmp_path)


def test_annotation_csv_with_a_header_only_is_refused(tmp_path):
    with pytest.raises(DataFormatError, match=r"BBox_List_2017.csv: no annotation rows"):
        build_cx8(cx8(tmp_path / "c", rows=[]), tmp_path)


def test_negative_clip_tolerance_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"clip_tolerance_px must be a number >= 0, got -1"):
        build_cx8(cx8(tmp_path / "c"), tmp_path, clip_tolerance_px=-1)
