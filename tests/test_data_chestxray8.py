"""ChestX-ray8 builder: counts on the shared copy, and real-format fixtures with bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
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
    dd = load_grounding_dataset("chestxray8", str(SHARED), cache_dir=str(tmp_path), progress=False)
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
