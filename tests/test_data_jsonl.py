"""JSONL builder on a fixture: one record per line (image path, report, findings); what every builder shares,
through it: one error naming file, row and field for a bad file, keyed ids and their secret, nothing identifying
published."""

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
from conftest import published_text
from medrg.processing.data import DataFormatError, export_to_hub_folder, load_grounding_dataset
from medrg.processing.data.common import ID_SECRET_FILE, anonymise_id, build_dataset_dict, keyed_id
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


# ------------------------------------------------------------------------- bad files and what a user tries next
# ``JSONL_ERRORS``: bad JSON-lines files with the ``DataFormatError`` each must give (file, row, field);
# ``CASES``: the cases that need more setup, each expecting an error or asserting the correct result itself.
SECRET = "test-secret"
FINDING = {"phrase": "right upper lobe nodule", "category": "nodule", "boxes": [[5, 5, 15, 15]]}


def record(**over) -> dict:
    """A valid JSON-lines record (one nodule) with the fields in ``over`` replaced."""
    base = {"image": "img/a.png", "report": "There is a right upper lobe nodule.", "findings": [FINDING]}
    return {**base, **over}


def nodule(**over) -> dict:
    """The nodule finding of ``record`` with the fields in ``over`` replaced."""
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


# (case, lines of train.jsonl, expected DataFormatError message)
JSONL_ERRORS = [
    ("image null", [record(image=None)], r"train.jsonl, row 1: field 'image' = None, expected a non-empty string"),
    ("image int", [record(image=7)], r"train.jsonl, row 1: field 'image' = 7, expected a non-empty string"),
    ("phrase null", [record(findings=[nodule(phrase=None)])], r"row 1: field 'findings\[0\].phrase' = None"),
    ("phrase dict", [record(findings=[nodule(phrase={"a": 1})])], r"row 1: field 'findings\[0\].phrase' = \{'a': 1\}"),
    ("phrase empty", [record(findings=[nodule(phrase="  ")])], r"row 1: field 'findings\[0\].phrase' is empty"),
    ("boolean coordinate", [record(findings=[nodule(boxes=[[True, 5, 15, 15]])])], r"field 'findings\[0\].boxes\[0\]'"),
    ("category dict", [record(findings=[nodule(category={"x": 1})])], r"row 1: field 'findings\[0\].category'"),
    ("report empty", [record(report="")], r"row 1: field 'report' is empty"),
    ("report int", [record(report=3)], r"row 1: field 'report' = 3"),
    ("deep JSON", ["[" * 100_000 + "]" * 100_000], r"train.jsonl, row 1: JSON nested too deeply"),
    ("not an object", ["[1, 2]"], r"train.jsonl, row 1: expected a JSON object, got list"),
    ("truncated JSON", [record(), '{"image": "img/b.png", "rep'], r"train.jsonl, row 2: not valid JSON"),
    ("integer of 5000 digits", ['{"image": "img/a.png", "report": "r", "findings": [], "x": ' + "9" * 5000 + "}"],
     r"row 1: not valid JSON"),
    ("NaN literal coordinate", ['{"image": "img/a.png", "report": "r", "findings": [{"phrase": "p", "boxes": '
     "[[NaN, 5, 15, 15]]}]}"], r"row 1: field 'findings\[0\].boxes\[0\]'.*NaN"),
    ("box 100 px outside", [record(findings=[nodule(boxes=[[5, 5, 148, 15]])])], r"row 1: field 'findings\[0\]"
     r".boxes\[0\]'.*outside the 48x40 image"),
    ("duplicate image id", [record(), record()], r"train.jsonl, row 2: duplicate image 'img_[0-9a-f]{16}' \(also at .*row 1\)"),
    ("image id with a path", [record(image_id="Doe_John/a.png")], r"row 1: field 'image_id' contains a path separator"),
    ("patient id boolean", [record(patient_id=True)], r"row 1: field 'patient_id' = True"),
    ("image outside data_dir", [record(image="../../etc/a.png")], r"train.jsonl, row 1: field 'image' = "
     r"'../../etc/a.png' lies outside the data folder"),
    ("absolute path outside data_dir", [record(image="/etc/hostname")], r"row 1: field 'image' = '/etc/hostname' lies outside"),
    ("missing findings", [{"image": "img/a.png", "report": "r"}], r"row 1: field 'findings' is missing"),
    ("unknown split field", [record(split="holdout")], r"row 1: field 'split': unknown split 'holdout'"),
]  # fmt: skip


@pytest.mark.parametrize("lines, message", [c[1:] for c in JSONL_ERRORS], ids=[c[0] for c in JSONL_ERRORS])
def test_jsonl_errors(tmp_path, lines, message):
    root = write_jsonl(tmp_path / "j", lines)
    with pytest.raises(DataFormatError, match=message):
        build_jsonl(root, tmp_path)


# ---------------------------------------------------------------- cases with more setup

CASES = {}
REGISTERED: list[str] = []  # every registration, so that a name given twice is caught


def case(name: str, raises: type[BaseException] | None = None, match: str | None = None):
    """Register a case: ``fn(tmp_path, monkeypatch, caplog)`` must raise ``raises`` matching ``match``, or
    (``raises=None``) run and assert the correct result itself."""

    def register(fn):
        REGISTERED.append(name)
        CASES[name] = (fn, raises, match)
        return fn

    return register


def two_patients(root: Path) -> Path:
    return write_jsonl(root, [record(patient_id="123456"), record(image="img/b.png", patient_id="123456")])


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
    write_jsonl(root, [record(image="Doe_John_MRN12345/a.png")], images=())
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
    root = write_jsonl(tmp_path / "j", [record()])
    with open(root / "train.jsonl", "ab") as f:
        f.write(
            json.dumps(record(image="img/b.png", report="effusion")).encode().replace(b"effusion", b"caf\xe9")
        )
    build_jsonl(root, tmp_path)


@case("UTF-8 BOM and CRLF line endings are accepted")
def _(tmp_path, monkeypatch, caplog):
    root = write_jsonl(tmp_path / "j", [record(), record(image="img/b.png")], newline="\r\n")
    (root / "train.jsonl").write_bytes(b"\xef\xbb\xbf" + (root / "train.jsonl").read_bytes())
    dd = build_jsonl(root, tmp_path)
    assert dd["train"].num_rows == 2 and dd["train"][0]["report"] == record()["report"]


@case("U+2028 inside a report (valid JSON) does not split the record")
def _(tmp_path, monkeypatch, caplog):
    report = "There is a right upper lobe nodule.\u2028No effusion."
    root = write_jsonl(tmp_path / "j", [json.dumps(record(report=report), ensure_ascii=False)])
    assert build_jsonl(root, tmp_path)["train"][0]["report"] == report


@case("decompression-bomb image", DataFormatError, r"train.jsonl, row 1: image file .*bomb.png is refused")
def _(tmp_path, monkeypatch, caplog):
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    root = write_jsonl(tmp_path / "j", [record(image="img/bomb.png")])
    ihdr = struct.pack(">IIBBBBB", 30_000, 30_000, 8, 0, 0, 0, 0)  # 900 Mpx declared in a 60-byte file
    png = (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )
    (root / "img" / "bomb.png").write_bytes(png)
    build_jsonl(root, tmp_path)


@case("unreadable image: DataFormatError naming the row, not datasets' DatasetGenerationError",
      DataFormatError, r"train.jsonl, row 1: image file .*a.png is unreadable")  # fmt: skip
def _(tmp_path, monkeypatch, caplog):
    root = write_jsonl(tmp_path / "j", [record()])
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
    root = write_jsonl(tmp_path / "j", [record()])
    write_jsonl(root, [record(image="img/b.png")], name="training.jsonl")
    build_jsonl(root, tmp_path)


@case("one data.jsonl becomes the train split")
def _(tmp_path, monkeypatch, caplog):
    dd = build_jsonl(
        write_jsonl(tmp_path / "j", [record(), record(image="img/b.png")], name="data.jsonl"), tmp_path
    )
    assert {s: ds.num_rows for s, ds in dd.items()} == {"train": 2}


@case("a record's split field overrides the single file's train split")
def _(tmp_path, monkeypatch, caplog):
    lines = [record(patient_id="1"), record(image="img/b.png", patient_id="2", split="test")]
    dd = build_jsonl(write_jsonl(tmp_path / "j", lines, name="data.jsonl"), tmp_path)
    assert {s: ds.num_rows for s, ds in dd.items()} == {"train": 1, "test": 1}


@case("an empty JSONL file", DataFormatError, r"test.jsonl: empty file")
def _(tmp_path, monkeypatch, caplog):
    root = write_jsonl(tmp_path / "j", [record()])
    (root / "test.jsonl").write_text("\n\n")
    build_jsonl(root, tmp_path)


@case("../.. image path allowed only with allow_outside_data_dir=True")
def _(tmp_path, monkeypatch, caplog):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    Image.fromarray(np.zeros((40, 48), np.uint8)).save(outside / "x.png")
    root = write_jsonl(tmp_path / "j", [record(image="../elsewhere/x.png")])
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


@pytest.mark.parametrize("name", list(CASES), ids=list(CASES))
def test_case(name, tmp_path, monkeypatch, caplog):
    fn, raises, match = CASES[name]
    if raises is None:
        fn(tmp_path, monkeypatch, caplog)
    else:
        with pytest.raises(raises, match=match):
            fn(tmp_path, monkeypatch, caplog)


def test_every_registered_case_runs():
    """A case registered under a name already taken would replace the first one without a word."""
    assert len(REGISTERED) == len(set(REGISTERED)) == len(CASES)
    assert len({c[0] for c in JSONL_ERRORS}) == len(JSONL_ERRORS)
