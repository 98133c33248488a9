"""MS-CXR builder on a fixture in the real CSV + MIMIC-CXR-JPG folder format."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from medrg.processing.data import DataFormatError, load_grounding_dataset
from medrg.processing.data.ms_cxr import COLUMNS
from PIL import Image

IMGS = {
    "d1": "files/p10/p10000032/s50414267/d1.jpg",
    "d2": "files/p10/p10000032/s50414268/d2.jpg",
    "d3": "files/p11/p11000011/s51000011/d3.jpg",
}


def base_rows():
    return [
        ["d1", "Pneumonia", "right lower lobe opacity", IMGS["d1"], 100, 600, 200, 150, 1000, 800, "train"],
        ["d1", "Pneumonia", "right lower lobe opacity", IMGS["d1"], 120, 400, 100, 100, 1000, 800, "train"],
        ["d2", "Pleural Effusion", "small left effusion", IMGS["d2"], 600, 600, 250, 150, 1000, 800, "train"],
        ["d3", "Cardiomegaly", "enlarged heart", IMGS["d3"], 300, 400, 450, 250, 1000, 800, "test"],
    ]


def write_fixture(root: Path, rows, skip_image: str | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for did, rel in IMGS.items():
        if did == skip_image:
            continue
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (80, 100), dtype=np.uint8), "L").save(p)  # downscaled 10x
    with open(root / "MS_CXR_Local_Alignment_v1.1.0.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS if rows is None or len(rows[0]) == len(COLUMNS) else COLUMNS[:-1])
        w.writerows(rows)
    reports = root / "reports" / "files" / "p10" / "p10000032"
    reports.mkdir(parents=True, exist_ok=True)
    (reports / "s50414267.txt").write_text(
        "FINDINGS: There is right lower lobe opacity.\nIMPRESSION: Pneumonia."
    )
    (reports / "s50414268.txt").write_text("FINDINGS: small left effusion.")
    (root / "reports" / "files" / "p11" / "p11000011").mkdir(parents=True, exist_ok=True)
    (root / "reports" / "files" / "p11" / "p11000011" / "s51000011.txt").write_text(
        "FINDINGS: enlarged heart."
    )
    return root


def build(root, tmp_path, **kw):
    return load_grounding_dataset(
        "ms-cxr", str(root), cache_dir=str(tmp_path / "cache"), progress=False, **kw
    )


def test_builds_groups_boxes_and_scales(tmp_path):
    root = write_fixture(tmp_path / "ms", base_rows())
    dd = build(root, tmp_path)
    assert {s: ds.num_rows for s, ds in dd.items()} == {"train": 2, "test": 1}
    d1 = dd["train"].filter(lambda r: r["image_id"] == "d1")[0]
    assert len(d1["findings"]) == 1 and len(d1["findings"][0]["boxes"]) == 2
    np.testing.assert_allclose(d1["findings"][0]["boxes"][0], [10, 60, 30, 75], rtol=1e-5)
    assert d1["findings"][0]["phrase"] in d1["report"]
    assert d1["patient_id"].startswith("p_") and "10000032" not in d1["patient_id"]
    with_reports = build(root, tmp_path, reports_dir=str(root / "reports"))
    d1 = with_reports["train"].filter(lambda r: r["image_id"] == "d1")[0]
    assert d1["report"].startswith("FINDINGS: There is right lower lobe opacity.\nIMPRESSION")


def test_bad_input(tmp_path):
    rows = [r[:-1] for r in base_rows()]
    with pytest.raises(
        DataFormatError, match=r"MS_CXR_Local_Alignment_v1.1.0.csv: missing column\(s\) \['split'\]"
    ):
        build(write_fixture(tmp_path / "a", rows), tmp_path)

    with pytest.raises(DataFormatError, match=r"row 5: image file .*d3.jpg \(field 'path'\) not found"):
        build(write_fixture(tmp_path / "c", base_rows(), skip_image="d3"), tmp_path)

    rows = base_rows() + [base_rows()[2]]
    with pytest.raises(DataFormatError, match=r"row 6: duplicate of row 4"):
        build(write_fixture(tmp_path / "d", rows), tmp_path)


# (case, {(row index, column index): new value} on base_rows(), error message)
BAD_CELLS = [
    ("zero width", {(2, 6): 0}, r"row 4: field 'x,y,w,h'.*zero or negative"),
    ("NaN x", {(2, 4): "nan"}, r"row 4: field 'x' is 'nan'"),
    ("one patient in train (d1) and test (d2)", {(2, 10): "test"}, r"patient leak: .*image d[12]"),
    ("unknown category", {(3, 1): "Fracture"}, r"row 5: field 'category_name' = 'Fracture'"),
]


@pytest.mark.parametrize(("cells", "message"), [c[1:] for c in BAD_CELLS], ids=[c[0] for c in BAD_CELLS])
def test_bad_cell_names_row_and_field(tmp_path, cells, message):
    rows = base_rows()
    for (row, column), value in cells.items():
        rows[row][column] = value
    with pytest.raises(DataFormatError, match=message):
        build(write_fixture(tmp_path / "a", rows), tmp_path)
