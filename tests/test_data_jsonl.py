"""JSONL builder on a fixture: one record per line (image path, report, findings)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from medrg.processing.data import DataFormatError, load_grounding_dataset
from PIL import Image


def rec(name, patient, findings, report="FINDINGS: There is right upper lobe nodule."):
    return {
        "image": f"img/{name}.png",
        "report": report,
        "findings": findings,
        "image_id": name,
        "patient_id": patient,
    }


NOD = [{"phrase": "right upper lobe nodule", "category": "nodule", "boxes": [[5, 5, 15, 15]]}]


def write_fixture(root: Path, splits: dict[str, list], raw_lines: dict[str, list[str]] | None = None) -> Path:
    (root / "img").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for lines in splits.values():
        for r in lines:
            Image.fromarray(rng.integers(0, 65535, (40, 48), dtype=np.uint16)).save(
                root / r["image"]
            )  # 16-bit
    for split, lines in splits.items():
        text = [json.dumps(r) for r in lines] + (raw_lines or {}).get(split, [])
        (root / f"{split}.jsonl").write_text("\n".join(text) + "\n")
    return root


def build(root, tmp_path, **kw):
    return load_grounding_dataset("jsonl", str(root), cache_dir=str(tmp_path / "cache"), progress=False, **kw)


def test_builds(tmp_path):
    root = write_fixture(
        tmp_path / "j",
        {
            "train": [rec("a", "P1", NOD), rec("b", "P2", [], "FINDINGS: Normal.")],
            "test": [rec("c", "P3", NOD)],
        },
    )
    dd = build(root, tmp_path)
    assert {s: ds.num_rows for s, ds in dd.items()} == {"train": 2, "test": 1}
    a = dd["train"][0]
    assert a["findings"][0]["boxes"] == [[5.0, 5.0, 15.0, 15.0]] and a["image"].size == (48, 40)
    assert a["image"].mode == "L" and a["patient_id"].startswith("p_") and a["patient_id"] != "P1"
    assert dd["train"][1]["findings"] == []


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"image": "img/a.png", "findings": []}, r"train.jsonl, row 2: field 'report' is missing"),
        (
            rec("z", "P9", [{"phrase": "x", "boxes": [[5, 5, 5, 9]]}]),
            r"train.jsonl, row 2: field 'findings\[0\].boxes\[0\]'.*zero",
        ),
        (
            rec("z", "P9", [{"phrase": "x", "boxes": [[5, 5, None, 9]]}]),
            r"train.jsonl, row 2: field 'findings\[0\].boxes\[0\]'.*NaN",
        ),
        (
            rec("z", "P9", [{"phrase": "x", "boxes": [[-9, 5, 20, 9]]}]),
            r"train.jsonl, row 2: field 'findings\[0\].boxes\[0\]'.*outside",
        ),
    ],
)
def test_bad_records(tmp_path, bad, message):
    root = write_fixture(tmp_path / "j", {"train": [rec("a", "P1", NOD)]}, {"train": [json.dumps(bad)]})
    if bad.get("image_id") == "z":
        Image.fromarray(np.zeros((40, 48), np.uint8)).save(root / "img" / "z.png")
    with pytest.raises(DataFormatError, match=message):
        build(root, tmp_path)


def test_missing_image_duplicate_leak(tmp_path):
    root = write_fixture(tmp_path / "a", {"train": [rec("a", "P1", NOD)]})
    (root / "img" / "a.png").unlink()
    with pytest.raises(
        DataFormatError, match=r"train.jsonl, row 1: image file .*a.png \(field 'image'\) not found"
    ):
        build(root, tmp_path)
    root = write_fixture(tmp_path / "b", {"train": [rec("a", "P1", NOD), rec("a", "P1", NOD)]})
    with pytest.raises(DataFormatError, match=r"train.jsonl, row 2: duplicate image 'a' \(also at .*row 1\)"):
        build(root, tmp_path)
    root = write_fixture(tmp_path / "c", {"train": [rec("a", "P1", NOD)], "test": [rec("b", "P1", NOD)]})
    with pytest.raises(DataFormatError, match=r"patient leak: the patient of image [ab]"):
        build(root, tmp_path)
