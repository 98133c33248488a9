"""DICOM reading (real chest DICOM of pydicom-data) and the DICOM-based builders: RSNA Pneumonia, VinDr-CXR."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")

from conftest import DICOM_IDENTIFYING_TAGS as SECRET  # noqa: E402
from conftest import write_dicom  # noqa: E402
from medrg.processing.data import DataFormatError, load_grounding_dataset  # noqa: E402
from medrg.processing.data.common import keyed_id  # noqa: E402
from medrg.processing.data.dicom import dicom_to_uint8, read_dicom_image  # noqa: E402


def gradient(h=64, w=64):
    return (np.tile(np.arange(w), (h, 1)) * (4000 // w)).astype(np.uint16)


def test_windowing_inversion_and_rescale(tmp_path):
    arr = gradient()
    write_dicom(tmp_path / "m2.dcm", arr)
    write_dicom(tmp_path / "m1.dcm", arr, photometric="MONOCHROME1")
    m2, m1 = read_dicom_image(tmp_path / "m2.dcm"), read_dicom_image(tmp_path / "m1.dcm")
    assert m2.dtype == np.uint8 and m2[:, 0].max() == 0 and m2[:, -1].min() == 255
    np.testing.assert_array_equal(m1, 255 - m2)
    # rescale slope/intercept then VOI window centre 1000 / width 2000 -> linear ramp clipped at 2000
    out = dicom_to_uint8(arr, slope=0.5, intercept=0.0, window_center=1000.0, window_width=2000.0)
    assert out[0, 0] == 0 and out[0, -1] > 240
    write_dicom(tmp_path / "w.dcm", arr, slope=0.5, intercept=0.0, window=(1000, 2000))
    np.testing.assert_array_equal(read_dicom_image(tmp_path / "w.dcm"), out)


def test_real_chest_dicom():
    from pydicom.data import get_testdata_file

    path = get_testdata_file("RG1_UNCR.dcm")
    if path is None:
        pytest.skip("pydicom-data chest DICOM absent")
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    img = read_dicom_image(path)
    assert img.shape == (ds.Rows, ds.Columns) and img.dtype == np.uint8
    assert img.std() > 10
    # MONOCHROME1: the smallest stored value is displayed white
    raw = ds.pixel_array
    assert img[raw == raw.min()].mean() > img[raw == raw.max()].mean()


def test_one_dicom_reader_for_datasets_and_pipeline(tmp_path):
    from medrg.processing.image_processing_medrg import load_image

    write_dicom(
        tmp_path / "w.dcm",
        gradient(),
        photometric="MONOCHROME1",
        slope=0.5,
        intercept=0.0,
        window=(1000, 2000),
    )
    (tmp_path / "IM0001").write_bytes((tmp_path / "w.dcm").read_bytes())  # no suffix: found by its DICM magic
    dataset_pixels = read_dicom_image(tmp_path / "w.dcm", where="rows.csv, row 2")
    np.testing.assert_array_equal(load_image(tmp_path / "w.dcm"), dataset_pixels)
    np.testing.assert_array_equal(load_image(tmp_path / "IM0001"), dataset_pixels)
    (tmp_path / "broken.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\x01" * 10)
    with pytest.raises(DataFormatError, match=r"rows.csv, row 2: DICOM file .*broken.dcm is unreadable"):
        read_dicom_image(tmp_path / "broken.dcm", where="rows.csv, row 2")


# ---------------------------------------------------------------- RSNA

RSNA_COLS = ["patientId", "x", "y", "width", "height", "Target"]


def write_rsna(root: Path, rows, skip=None):
    for pid in dict.fromkeys(r[0] for r in rows):
        if pid != skip:
            write_dicom(root / "stage_2_train_images" / f"{pid}.dcm", gradient(), photometric="MONOCHROME2")
    with open(root / "stage_2_train_labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(RSNA_COLS[: len(rows[0])])
        w.writerows(rows)
    return root


RSNA_ROWS = [
    ["aaa-1", 4, 30, 20, 20, 1],
    ["aaa-1", 40, 30, 18, 20, 1],
    ["bbb-2", "", "", "", "", 0],
    ["ccc-3", 10, 8, 12, 14, 1],
]


ID_SECRET = b"test-secret"


def rsna(root, tmp_path):
    return load_grounding_dataset(
        "rsna-pneumonia",
        str(root),
        split_fractions={"train": 0.5, "test": 0.5},
        id_secret=ID_SECRET,
        cache_dir=str(tmp_path / "c"),
        progress=False,
    )


def test_rsna_builds_without_phi(tmp_path):
    dd = rsna(write_rsna(tmp_path / "r", RSNA_ROWS), tmp_path)
    rows = [r for ds in dd.values() for r in ds]
    assert len(rows) == 3
    by_id = {r["image_id"]: r for r in rows}
    a = by_id[keyed_id("rsna-image:aaa-1", ID_SECRET, prefix="img_")]
    assert len(a["findings"]) == 2 and {("right" in f["phrase"]) for f in a["findings"]} == {True, False}
    assert by_id[keyed_id("rsna-image:bbb-2", ID_SECRET, prefix="img_")]["findings"] == []
    # ids are keyed: another secret gives other image and patient ids for the same patients
    other = load_grounding_dataset(
        "rsna-pneumonia", str(tmp_path / "r"), split_fractions={"train": 0.5, "test": 0.5},
        id_secret=b"another-secret", cache_dir=str(tmp_path / "c"), progress=False,
    )  # fmt: skip
    other_rows = [r for ds in other.values() for r in ds]
    assert not {r["image_id"] for r in other_rows} & set(by_id)
    assert not {r["patient_id"] for r in other_rows} & {r["patient_id"] for r in rows}
    text = repr([{k: v for k, v in r.items() if k != "image"} for r in rows])
    for secret in (*SECRET, "aaa-1", "bbb-2", "ccc-3"):
        assert secret not in text


# ---------------------------------------------------------------- VinDr-CXR

VINDR_COLS = ["image_id", "rad_id", "class_name", "x_min", "y_min", "x_max", "y_max"]
VINDR_TRAIN = [
    ["img1", "R1", "Nodule/Mass", 10, 10, 20, 20],
    ["img1", "R2", "Nodule/Mass", 11, 11, 21, 21],
    ["img1", "R3", "No finding", "", "", "", ""],
    ["img2", "R1", "Cardiomegaly", 20, 40, 50, 60],
    ["img3", "R2", "No finding", "", "", "", ""],
]
VINDR_TEST = [["img4", "R9", "Pleural effusion", 40, 40, 60, 60]]


def write_vindr(root: Path, train, test=VINDR_TEST, skip=None, cols=VINDR_COLS):
    for part, rows in (("train", train), ("test", test)):
        for iid in dict.fromkeys(r[0] for r in rows):
            if iid != skip:
                write_dicom(root / part / f"{iid}.dicom", gradient(), photometric="MONOCHROME1")
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        with open(root / "annotations" / f"annotations_{part}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(cols)
            w.writerows(rows)
    return root


def vindr(root, tmp_path, **kw):
    return load_grounding_dataset(
        "vindr-cxr", str(root), val_fraction=0.0, cache_dir=str(tmp_path / "c"), progress=False, **kw
    )


def test_vindr_keep_and_fuse_readers(tmp_path):
    root = write_vindr(tmp_path / "v", VINDR_TRAIN)
    keep = vindr(root, tmp_path)
    assert {s: ds.num_rows for s, ds in keep.items()} == {"train": 3, "test": 1}
    img1 = keep["train"].filter(lambda r: r["image_id"] == "img1")[0]
    assert len(img1["findings"]) == 1 and len(img1["findings"][0]["boxes"]) == 2
    fused = vindr(root, tmp_path, readers="fuse")
    img1 = fused["train"].filter(lambda r: r["image_id"] == "img1")[0]
    assert img1["findings"][0]["boxes"] == [[10.5, 10.5, 20.5, 20.5]]
    assert fused["train"].filter(lambda r: r["image_id"] == "img3")[0]["findings"] == []
    assert (
        keep["train"].filter(lambda r: r["image_id"] == "img2")[0]["findings"][0]["phrase"] == "cardiomegaly"
    )


def replaced(rows, index, row):
    """A copy of ``rows`` with ``rows[index]`` replaced by ``row``."""
    return [row if i == index else r[:] for i, r in enumerate(rows)]


def without_rad_id(rows):
    return [[r[0]] + r[2:] for r in rows]


VINDR_WITHOUT_RAD_ID = {
    "train": without_rad_id(VINDR_TRAIN),
    "test": without_rad_id(VINDR_TEST),
    "cols": [c for c in VINDR_COLS if c != "rad_id"],
}
# case -> (builder, its fixture writer's arguments, the error it must raise); one bad thing per case, one line each
BAD_INPUTS = {
    "rsna missing column": ("rsna", {"rows": [r[:-1] for r in RSNA_ROWS]}, r"stage_2_train_labels.csv: missing column\(s\) \['Target'\]"),
    "rsna box outside the image": ("rsna", {"rows": replaced(RSNA_ROWS, 3, ["ccc-3", 60, 8, 12, 14, 1])}, r"row 5: field 'x,y,width,height'.*outside"),  # x1 = 72 > 64
    "rsna image missing": ("rsna", {"rows": RSNA_ROWS, "skip": "ccc-3"}, r"row 5: image file .*ccc-3.dcm \(field 'patientId'\) not found"),
    "rsna duplicate row": ("rsna", {"rows": RSNA_ROWS + [RSNA_ROWS[3]]}, r"row 6: duplicate of row 5"),
    "rsna contradicting target": ("rsna", {"rows": RSNA_ROWS + [["aaa-1", "", "", "", "", 0]]}, r"row 6: field 'Target' = 0 contradicts row 2"),
    "vindr missing column": ("vindr", VINDR_WITHOUT_RAD_ID, r"annotations_train.csv: missing column\(s\) \['rad_id'\]"),
    "vindr nan coordinate": ("vindr", {"train": replaced(VINDR_TRAIN, 3, ["img2", "R1", "Cardiomegaly", 20, 40, 50, "nan"])}, r"annotations_train.csv, row 5: field 'y_max' is 'nan'"),
    "vindr image missing": ("vindr", {"train": VINDR_TRAIN, "skip": "img2"}, r"row 5: image file .*img2.dicom \(field 'image_id'\) not found"),
    "vindr duplicate row": ("vindr", {"train": VINDR_TRAIN + [VINDR_TRAIN[0]]}, r"row 7: duplicate of row 2"),
    "vindr image in two splits": ("vindr", {"train": VINDR_TRAIN, "test": VINDR_TEST + [["img1", "R9", "Nodule/Mass", 10, 10, 20, 20]]}, r"patient leak|duplicate image 'img1'"),
    "vindr unknown class": ("vindr", {"train": VINDR_TRAIN + [["img2", "R2", "Broken heart", 1, 1, 5, 5]]}, r"row 7: field 'class_name' = 'Broken heart'"),
}  # fmt: skip
BUILDERS = {"rsna": (write_rsna, rsna), "vindr": (write_vindr, vindr)}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_names_the_row_and_field(tmp_path, case):
    source, fixture, error = BAD_INPUTS[case]
    write, build = BUILDERS[source]
    with pytest.raises(DataFormatError, match=error):
        build(write(tmp_path / "data", **fixture), tmp_path)


def test_vindr_downscaled_png_with_meta(tmp_path):
    from PIL import Image

    root = tmp_path / "vpng"
    for part, rows in (("train", VINDR_TRAIN), ("test", VINDR_TEST)):
        (root / part).mkdir(parents=True, exist_ok=True)
        for iid in dict.fromkeys(r[0] for r in rows):
            Image.fromarray(np.zeros((32, 32), np.uint8)).save(root / part / f"{iid}.png")
        (root / "annotations").mkdir(exist_ok=True)
        with open(root / "annotations" / f"annotations_{part}.csv", "w", newline="") as f:
            csv.writer(f).writerows([VINDR_COLS, *rows])
    with open(root / "meta.csv", "w", newline="") as f:
        csv.writer(f).writerows(
            [["image_id", "dim0", "dim1"], *[[i, 64, 64] for i in ("img1", "img2", "img3", "img4")]]
        )
    dd = vindr(root, tmp_path, readers="fuse", image_meta_file=str(root / "meta.csv"))
    img4 = dd["test"][0]
    assert img4["findings"][0]["boxes"] == [[20.0, 20.0, 30.0, 30.0]] and img4["image"].size == (32, 32)
