"""Reliability of the dataset builders (issue 9 items 6-7 and what a demanding user tries next).

Table-driven: ``JSONL_ERRORS`` holds bad JSON-lines files with the ``DataFormatError`` each must give (file,
row, field); ``CASES`` holds the cases that need more setup, each either expecting an error or asserting the
correct result itself.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from medrg.processing.data import DataFormatError, export_to_hub_folder, load_grounding_dataset
from medrg.processing.data.common import ID_SECRET_FILE, anonymise_id, build_dataset_dict, keyed_id
from PIL import Image

SECRET = "test-secret"
FINDING = {"phrase": "right upper lobe nodule", "category": "nodule", "boxes": [[5, 5, 15, 15]]}


def rec(**over) -> dict:
    base = {"image": "img/a.png", "report": "There is a right upper lobe nodule.", "findings": [FINDING]}
    return {**base, **over}


def finding(**over) -> dict:
    return {**FINDING, **over}


def write_jsonl(
    root: Path, lines: list, name: str = "train.jsonl", images=("a", "b"), newline: str = "\n"
) -> Path:
    """``root`` with ``img/{a,b}.png`` (40 x 48) and one JSON-lines file of ``lines`` (dicts or raw text)."""
    (root / "img").mkdir(parents=True, exist_ok=True)
    for n in images:
        Image.fromarray(np.full((40, 48), 90, np.uint8)).save(root / "img" / f"{n}.png")
    text = newline.join(x if isinstance(x, str) else json.dumps(x) for x in lines) + newline
    (root / name).write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return root


def build_jsonl(root: Path, tmp_path: Path, **kw):
    kw.setdefault("id_secret", SECRET)
    return load_grounding_dataset("jsonl", str(root), cache_dir=str(tmp_path / "cache"), progress=False, **kw)


def published_text(dd) -> str:
    """Every published value except the pixels, as one string."""
    return repr([ds.remove_columns("image").to_list() for ds in dd.values()])


# (case, lines of train.jsonl, expected DataFormatError message)
JSONL_ERRORS = [
    ("image null", [rec(image=None)], r"train.jsonl, row 1: field 'image' = None, expected a non-empty string"),
    ("image int", [rec(image=7)], r"train.jsonl, row 1: field 'image' = 7, expected a non-empty string"),
    ("phrase null", [rec(findings=[finding(phrase=None)])], r"row 1: field 'findings\[0\].phrase' = None"),
    ("phrase dict", [rec(findings=[finding(phrase={"a": 1})])], r"row 1: field 'findings\[0\].phrase' = \{'a': 1\}"),
    ("phrase empty", [rec(findings=[finding(phrase="  ")])], r"row 1: field 'findings\[0\].phrase' is empty"),
    ("boolean coordinate", [rec(findings=[finding(boxes=[[True, 5, 15, 15]])])], r"field 'findings\[0\].boxes\[0\]'"),
    ("category dict", [rec(findings=[finding(category={"x": 1})])], r"row 1: field 'findings\[0\].category'"),
    ("report empty", [rec(report="")], r"row 1: field 'report' is empty"),
    ("report int", [rec(report=3)], r"row 1: field 'report' = 3"),
    ("deep JSON", ["[" * 100_000 + "]" * 100_000], r"train.jsonl, row 1: JSON nested too deeply"),
    ("not an object", ["[1, 2]"], r"train.jsonl, row 1: expected a JSON object, got list"),
    ("truncated JSON", [rec(), '{"image": "img/b.png", "rep'], r"train.jsonl, row 2: not valid JSON"),
    ("integer of 5000 digits", ['{"image": "img/a.png", "report": "r", "findings": [], "x": ' + "9" * 5000 + "}"],
     r"row 1: not valid JSON"),
    ("NaN literal coordinate", ['{"image": "img/a.png", "report": "r", "findings": [{"phrase": "p", "boxes": '
     "[[NaN, 5, 15, 15]]}]}"], r"row 1: field 'findings\[0\].boxes\[0\]'.*NaN"),
    ("box 100 px outside", [rec(findings=[finding(boxes=[[5, 5, 148, 15]])])], r"row 1: field 'findings\[0\]"
     r".boxes\[0\]'.*outside the 48x40 image"),
    ("duplicate image id", [rec(), rec()], r"train.jsonl, row 2: duplicate image 'img_[0-9a-f]{16}' \(also at .*row 1\)"),
    ("image id with a path", [rec(image_id="Doe_John/a.png")], r"row 1: field 'image_id' contains a path separator"),
    ("patient id boolean", [rec(patient_id=True)], r"row 1: field 'patient_id' = True"),
    ("image outside data_dir", [rec(image="../../etc/a.png")], r"train.jsonl, row 1: field 'image' = "
     r"'../../etc/a.png' lies outside the data folder"),
    ("absolute path outside data_dir", [rec(image="/etc/hostname")], r"row 1: field 'image' = '/etc/hostname' lies outside"),
    ("missing findings", [{"image": "img/a.png", "report": "r"}], r"row 1: field 'findings' is missing"),
    ("unknown split field", [rec(split="holdout")], r"row 1: field 'split': unknown split 'holdout'"),
]  # fmt: skip


@pytest.mark.parametrize("lines, message", [c[1:] for c in JSONL_ERRORS], ids=[c[0] for c in JSONL_ERRORS])
def test_jsonl_errors(tmp_path, lines, message):
    root = write_jsonl(tmp_path / "j", lines)
    with pytest.raises(DataFormatError, match=message):
        build_jsonl(root, tmp_path)


# ---------------------------------------------------------------- cases with more setup

CASES = {}


def case(name: str, raises: type[BaseException] | None = None, match: str | None = None):
    """Register a case: ``fn(tmp_path, monkeypatch, caplog)`` must raise ``raises`` matching ``match``, or
    (``raises=None``) run and assert the correct result itself."""

    def register(fn):
        CASES[name] = (fn, raises, match)
        return fn

    return register


def two_patients(root: Path) -> Path:
    return write_jsonl(root, [rec(patient_id="123456"), rec(image="img/b.png", patient_id="123456")])


@case("same patient: same id within one secret, another id with another secret")
def _(tmp_path, monkeypatch, caplog):
    root = two_patients(tmp_path / "j")
    a = build_jsonl(root, tmp_path)["train"]["patient_id"]
    b = build_jsonl(root, tmp_path, id_secret="other secret")["train"]["patient_id"]
    assert a[0] == a[1] and b[0] == b[1] and a[0] != b[0]
    assert a[0] == keyed_id("jsonl:patient:123456", SECRET.encode())


@case("a 6-digit MRN cannot be brute-forced from the published id without the secret")
def _(tmp_path, monkeypatch, caplog):
    pid = build_jsonl(two_patients(tmp_path / "j"), tmp_path)["train"]["patient_id"][0]
    # every unkeyed hash an attacker can compute (old public salt, plain SHA-256) misses the published id
    for mrn in [f"{n:06d}" for n in range(0, 1_000_000, 997)] + ["123456"]:
        for raw in (mrn, f"jsonl:{mrn}", f"jsonl:patient:{mrn}", f"patient:{mrn}"):
            assert pid not in (anonymise_id(raw), "p_" + hashlib.sha256(raw.encode()).hexdigest()[:16])
    assert pid != keyed_id("jsonl:patient:123456", b"a guessed secret")


@case("no path or folder name in any published column, rows or parquet export")
def _(tmp_path, monkeypatch, caplog):
    root = tmp_path / "j"
    (root / "Doe_John_MRN12345").mkdir(parents=True)
    Image.fromarray(np.zeros((40, 48), np.uint8)).save(root / "Doe_John_MRN12345" / "a.png")
    write_jsonl(root, [rec(image="Doe_John_MRN12345/a.png")], images=())
    dd = build_jsonl(root, tmp_path)
    assert dd["train"][0]["image_id"].startswith("img_")
    out = export_to_hub_folder(dd, tmp_path / "hub")
    from datasets import load_dataset

    back = load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), cache_dir=str(tmp_path / "c2"))
    for text in (published_text(dd), published_text(back), (out / "README.md").read_text()):
        assert "Doe" not in text and "MRN12345" not in text and str(tmp_path) not in text
    assert build_jsonl(root, tmp_path, image_ids="stem")["train"][0]["image_id"] == "a"


@case("secret generated once beside the data (mode 0600) and reused")
def _(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("MEDRG_ID_SECRET", raising=False)
    root = two_patients(tmp_path / "j")
    first = build_jsonl(root, tmp_path, id_secret=None)["train"]["patient_id"]
    secret_file = root / ID_SECRET_FILE
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600 and len(secret_file.read_bytes().strip()) == 64
    assert build_jsonl(root, tmp_path, id_secret=None)["train"]["patient_id"] == first
    assert first[0] == keyed_id("jsonl:patient:123456", secret_file.read_bytes().strip())


@case("read-only data folder: the secret goes to ~/.cache/medrg, the log says so")
def _(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("MEDRG_ID_SECRET", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home_cache"))
    root = two_patients(tmp_path / "j")
    os.chmod(root, 0o555)
    try:
        with caplog.at_level(logging.WARNING, logger="medrg.processing.data"):
            ids = build_jsonl(root, tmp_path, id_secret=None)["train"]["patient_id"]
    finally:
        os.chmod(root, 0o755)
    assert not (root / ID_SECRET_FILE).exists()
    (stored,) = (tmp_path / "home_cache" / "medrg" / "id_secrets").iterdir()
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600 and "read-only" in caplog.text
    assert ids[0] == keyed_id("jsonl:patient:123456", stored.read_bytes().strip())


@case("MEDRG_ID_SECRET environment variable is the secret")
def _(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("MEDRG_ID_SECRET", "from-env")
    root = two_patients(tmp_path / "j")
    assert build_jsonl(root, tmp_path, id_secret=None)["train"]["patient_id"][0] == keyed_id(
        "jsonl:patient:123456", b"from-env"
    )
    assert not (root / ID_SECRET_FILE).exists()


@case(
    "latin-1 byte in a UTF-8 JSONL file", DataFormatError, r"train.jsonl, row 2: not valid UTF-8 \(byte 0xe9"
)
def _(tmp_path, monkeypatch, caplog):
    root = write_jsonl(tmp_path / "j", [rec()])
    with open(root / "train.jsonl", "ab") as f:
        f.write(
            json.dumps(rec(image="img/b.png", report="effusion")).encode().replace(b"effusion", b"caf\xe9")
        )
    build_jsonl(root, tmp_path)


@case("UTF-8 BOM and CRLF line endings are accepted")
def _(tmp_path, monkeypatch, caplog):
    root = write_jsonl(tmp_path / "j", [rec(), rec(image="img/b.png")], newline="\r\n")
    (root / "train.jsonl").write_bytes(b"\xef\xbb\xbf" + (root / "train.jsonl").read_bytes())
    dd = build_jsonl(root, tmp_path)
    assert dd["train"].num_rows == 2 and dd["train"][0]["report"] == rec()["report"]


@case("U+2028 inside a report (valid JSON) does not split the record")
def _(tmp_path, monkeypatch, caplog):
    report = "There is a right upper lobe nodule.\u2028No effusion."
    root = write_jsonl(tmp_path / "j", [json.dumps(rec(report=report), ensure_ascii=False)])
    assert build_jsonl(root, tmp_path)["train"][0]["report"] == report


@case("decompression-bomb image", DataFormatError, r"train.jsonl, row 1: image file .*bomb.png is refused")
def _(tmp_path, monkeypatch, caplog):
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    root = write_jsonl(tmp_path / "j", [rec(image="img/bomb.png")])
    ihdr = struct.pack(">IIBBBBB", 30_000, 30_000, 8, 0, 0, 0, 0)  # 900 Mpx declared in a 60-byte file
    png = (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )
    (root / "img" / "bomb.png").write_bytes(png)
    build_jsonl(root, tmp_path)


@case("unreadable image: DataFormatError naming the row, not datasets' DatasetGenerationError",
      DataFormatError, r"train.jsonl, row 1: image file .*a.png is unreadable")  # fmt: skip
def _(tmp_path, monkeypatch, caplog):
    root = write_jsonl(tmp_path / "j", [rec()])
    (root / "img" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    build_jsonl(root, tmp_path)


@case("a reader's raw error inside generation is unwrapped to a DataFormatError naming the item",
      DataFormatError, r"demo split 'train', item 1: KeyError: 'report'")  # fmt: skip
def _(tmp_path, monkeypatch, caplog):
    from medrg.processing.data.images import to_png_bytes

    good = {"image": {"bytes": to_png_bytes(np.zeros((8, 8), np.uint8)), "path": None}, "findings": [],
            "image_id": "i", "patient_id": "p", "source": "s"}  # fmt: skip
    items = [{"report": "r"}, {"text": "r"}]  # item 1 lacks the key its reader wants
    build_dataset_dict(
        {"train": items}, lambda it: {**good, "report": it["report"]}, (), str(tmp_path), "demo"
    )


@case("a row that datasets cannot encode: DataFormatError, not DatasetGenerationError",
      DataFormatError, r"demo split 'train': could not write the rows")  # fmt: skip
def _(tmp_path, monkeypatch, caplog):
    row = {"image": None, "report": "r", "findings": [{"phrase": "p", "category": "c", "boxes": [["x"] * 4]}],
           "image_id": "i", "patient_id": "p", "source": "s"}  # fmt: skip
    build_dataset_dict({"train": [0]}, lambda _: row, (), cache_dir=str(tmp_path / "c"), desc="demo")


@case(
    "train.jsonl + training.jsonl in one folder",
    DataFormatError,
    r"split 'train' is given by two files: .*train",
)
def _(tmp_path, monkeypatch, caplog):
    root = write_jsonl(tmp_path / "j", [rec()])
    write_jsonl(root, [rec(image="img/b.png")], name="training.jsonl")
    build_jsonl(root, tmp_path)


@case("one data.jsonl becomes the train split")
def _(tmp_path, monkeypatch, caplog):
    dd = build_jsonl(
        write_jsonl(tmp_path / "j", [rec(), rec(image="img/b.png")], name="data.jsonl"), tmp_path
    )
    assert {s: ds.num_rows for s, ds in dd.items()} == {"train": 2}


@case("a record's split field overrides the single file's train split")
def _(tmp_path, monkeypatch, caplog):
    lines = [rec(patient_id="1"), rec(image="img/b.png", patient_id="2", split="test")]
    dd = build_jsonl(write_jsonl(tmp_path / "j", lines, name="data.jsonl"), tmp_path)
    assert {s: ds.num_rows for s, ds in dd.items()} == {"train": 1, "test": 1}


@case("an empty JSONL file", DataFormatError, r"test.jsonl: empty file")
def _(tmp_path, monkeypatch, caplog):
    root = write_jsonl(tmp_path / "j", [rec()])
    (root / "test.jsonl").write_text("\n\n")
    build_jsonl(root, tmp_path)


@case("../.. image path allowed only with allow_outside_data_dir=True")
def _(tmp_path, monkeypatch, caplog):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    Image.fromarray(np.zeros((40, 48), np.uint8)).save(outside / "x.png")
    root = write_jsonl(tmp_path / "j", [rec(image="../elsewhere/x.png")])
    dd = build_jsonl(root, tmp_path, allow_outside_data_dir=True)
    assert dd["train"].num_rows == 1 and "elsewhere" not in published_text(dd)


@case("dataset name None", TypeError, r"dataset name must be a string, one of .*got None")
def _(tmp_path, monkeypatch, caplog):
    load_grounding_dataset(None)


@case("image_size=0", ValueError, r"option image_size must be a positive integer \(pixels\), got 0")
def _(tmp_path, monkeypatch, caplog):
    load_grounding_dataset("synthcxr", image_size=0, examples_per_split=1, cache_dir=str(tmp_path))


@case("a typo in an option names the accepted ones", TypeError, r"unknown option\(s\) \['report'\] for dataset "
      r"'chestxray8'; accepted options: \[.*'reports'")  # fmt: skip
def _(tmp_path, monkeypatch, caplog):
    load_grounding_dataset("chestxray8", str(tmp_path), report="gpt")


# ---------------------------------------------------------------- ChestX-ray8 format

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


@case(
    "invalid UTF-8 in the annotation CSV",
    DataFormatError,
    r"BBox_List_2017.csv, row 3: not valid UTF-8 \(byte 0xff",
)
def _(tmp_path, monkeypatch, caplog):
    build_cx8(cx8(tmp_path / "c", [CX8_ROWS[0], CX8_ROWS[1].replace(b"Effusion", b"Eff\xffusion")]), tmp_path)


@case("unknown reports= value names the allowed ones", ValueError,
      r"reports='narrative': expected one of \['template', 'gpt', 'llama', 'all'\]")  # fmt: skip
def _(tmp_path, monkeypatch, caplog):
    build_cx8(cx8(tmp_path / "c"), tmp_path, reports="narrative")


@case("an extra unnamed column in the CSV changes nothing")
def _(tmp_path, monkeypatch, caplog):
    plain = build_cx8(cx8(tmp_path / "a"), tmp_path)
    extra = build_cx8(cx8(tmp_path / "b", [r + b",,,junk" for r in CX8_ROWS]), tmp_path)
    assert published_text(plain) == published_text(extra)


@case("the same split given by two split files", DataFormatError,
      r"split 'train' is given by two files: .*train_images.txt and .*train_list.txt")  # fmt: skip
def _(tmp_path, monkeypatch, caplog):
    root = cx8(tmp_path / "c")
    (root / "train_list.txt").write_text("00000001_000.png\n")
    build_cx8(root, tmp_path)


@case("an annotation CSV with a header only", DataFormatError, r"BBox_List_2017.csv: no annotation rows")
def _(tmp_path, monkeypatch, caplog):
    build_cx8(cx8(tmp_path / "c", rows=[]), tmp_path)


@case("negative clip tolerance", ValueError, r"clip_tolerance_px must be a number >= 0, got -1")
def _(tmp_path, monkeypatch, caplog):
    build_cx8(cx8(tmp_path / "c"), tmp_path, clip_tolerance_px=-1)


@pytest.mark.parametrize("name", list(CASES), ids=list(CASES))
def test_case(name, tmp_path, monkeypatch, caplog):
    fn, raises, match = CASES[name]
    if raises is None:
        fn(tmp_path, monkeypatch, caplog)
    else:
        with pytest.raises(raises, match=match):
            fn(tmp_path, monkeypatch, caplog)


def test_case_count():
    """The suite's size (issue 9 asks for the count of reliability cases)."""
    assert len(JSONL_ERRORS) + len(CASES) >= 45
