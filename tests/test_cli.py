"""Behaviour of the `medrg` command line: a light `import medrg` that still registers MedRG with transformers,
`medrg ground` (default model, `--json`, `--overlay`, DICOM input), `medrg export`, `medrg evaluate`'s default
split, `evaluate.load` of the metric from any working directory, and user errors: one stderr line naming the
problem (`--debug` for the traceback)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medrg.cli import main
from medrg.loading import ModelLoadError

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT / "docs" / "example_cxr.png"
REPORT_FILE = ROOT / "docs" / "example_report.txt"
CHESTXRAY8 = ROOT.parent / "shared" / "data" / "chestxray8"


def _python(code: str, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env
    )


@pytest.fixture(scope="module")
def default_model():
    from medrg.loading import load_medrg

    return load_medrg("default")


@pytest.fixture(scope="module")
def expected(default_model):
    """The records of the pipeline's default call (report-guided, no threshold: each stated finding's best box)."""
    from medrg.processing.pipeline_medrg import ReportGroundingPipeline

    model, processor = default_model
    report = REPORT_FILE.read_text(encoding="utf-8")
    records = ReportGroundingPipeline(model=model, processor=processor)(Image.open(IMAGE), report=report)
    assert records, "the default model grounds the example report (test precondition)"
    return records


# ------------------------------------------------------------------------------------------------ import time
def test_import_medrg_and_help_import_neither_torch_nor_transformers():
    result = _python(
        "import sys, io, contextlib\n"
        "import medrg\n"
        "from medrg.cli import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    try:\n"
        "        main(['--help'])\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'datasets', 'matplotlib', 'scipy') if m in sys.modules)\n"
        "print(heavy)\n"
        "print(all(c in out.getvalue() for c in ('ground', 'evaluate', 'train', 'export', 'demo')))\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["[]", "True"]


REGISTRATION_CHECK = """
from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoProcessor
from transformers.pipelines import PIPELINE_REGISTRY
d = str(medrg.DEFAULT_MODEL_DIR)
model = AutoModel.from_pretrained(d)
print(type(AutoConfig.from_pretrained(d)).__name__, type(model).__name__,
      type(AutoProcessor.from_pretrained(d)).__name__, type(AutoImageProcessor.from_pretrained(d)).__name__)
print("report-grounding" in PIPELINE_REGISTRY.get_supported_tasks())
import tempfile, json, os
with tempfile.TemporaryDirectory() as out:
    model.save_pretrained(out)
    print(sorted(json.load(open(os.path.join(out, "config.json")))["auto_map"]))
"""
REGISTERED = [
    "MedRGConfig MedRGForReportGrounding MedRGProcessor MedRGImageProcessor",
    "True",
    "['AutoConfig', 'AutoModel']",
]


@pytest.mark.parametrize(
    "first",
    [
        "import medrg",  # transformers imported after medrg: registered when its Auto modules are imported
        "import transformers.pipelines\nimport medrg",  # before: registered at `import medrg`
        "import medrg\nfrom medrg.modeling_medrg.modeling_medrg import MedRGForReportGrounding",
    ],
    ids=["medrg-first", "transformers-first", "class-import"],
)
def test_import_medrg_registers_auto_classes_and_task(first):
    result = _python(first + "\n" + REGISTRATION_CHECK)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[-3:] == REGISTERED


def test_medrg_attributes_are_lazy_and_complete():
    import medrg

    for name in medrg.__all__:
        assert getattr(medrg, name) is not None, name
    assert medrg.MedRGForReportGrounding.__name__ == "MedRGForReportGrounding"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        medrg.nope  # noqa: B018


# ------------------------------------------------------------------------------------------------ medrg ground
def test_ground_json_default_model_and_overlay(expected, tmp_path, capsys):
    from medrg.overlay import PALETTE, draw_groundings

    overlay = tmp_path / "out.png"
    argv = ["ground", "--image", str(IMAGE), "--report-file", str(REPORT_FILE), "--json"]
    assert main([*argv, "--overlay", str(overlay)]) == 0
    records = json.loads(capsys.readouterr().out)
    assert records == json.loads(json.dumps(expected))
    # `--model default` names the embedded model: same records as no --model and as the folder's path
    import medrg

    assert json.loads(_run(capsys, [*argv, "--model", "default"])) == records
    assert json.loads(_run(capsys, [*argv, "--model", str(medrg.DEFAULT_MODEL_DIR)])) == records
    # the overlay is the shared drawing: enlarged for legibility, boxes drawn in the palette colours
    drawn = Image.open(overlay)
    reference = draw_groundings(Image.open(IMAGE), records)
    assert drawn.size == reference.size == (768, 768)
    assert np.array_equal(np.asarray(drawn.convert("RGB")), np.asarray(reference))
    scale = 768 / 256
    box = records[0]["box"]
    x, y = round(box["xmin"] * scale), round((box["ymin"] + box["ymax"]) / 2 * scale)
    assert tuple(np.asarray(drawn.convert("RGB"))[y, x + 1]) == PALETTE[0]  # the left edge of the first box


def _run(capsys, argv: list[str]) -> str:
    assert main(argv) == 0
    return capsys.readouterr().out


def test_ground_text_output_names_model_threshold_and_findings(expected, capsys):
    out = _run(capsys, ["ground", "--image", str(IMAGE), "--report-file", str(REPORT_FILE)])
    lines = out.splitlines()
    # report-guided (the default) without --threshold: each stated finding shows its best box and its score
    header = "model: default (embedded medrg/default_model); threshold none (each stated finding's best box)"
    assert lines[0] == header
    assert len(lines) == 1 + len(expected)
    for line, record in zip(lines[1:], expected):
        assert line.startswith(f"{record['label']!r}: score {record['score']:.2f}, box [")
    # a threshold the caller sets filters every box; the findings whose box is dropped are still shown as read
    out = _run(
        capsys, ["ground", "--image", str(IMAGE), "--report-file", str(REPORT_FILE), "--threshold", "1"]
    )
    assert out.splitlines()[0].endswith("; threshold 1")
    assert out.splitlines()[1:] == ["No finding grounded."] + [
        f"read, not grounded: {record['label']!r} (its box scored below the threshold)" for record in expected
    ]
    # a finding the model was never trained to box is read and shown, not silently dropped
    argv = ["ground", "--image", str(IMAGE), "--report", "Emphysema. Calcified granuloma."]
    assert _run(capsys, argv).splitlines()[1:] == [
        "No finding grounded.",
        "read, not grounded: 'emphysema' (not a finding the model was trained to box)",
        "read, not grounded: 'calcified granuloma' (not a finding the model was trained to box)",
    ]
    # free reading: threshold 1.0 drops every box (a phrase's best box included)
    argv = ["ground", "--image", str(IMAGE), "--report-file", str(REPORT_FILE), "--threshold", "1", "--free"]
    free = _run(capsys, argv).splitlines()[1:]
    assert free[0] == "No finding grounded."
    assert all(line.startswith("read, not grounded: ") for line in free[1:])
    # a report that only denies findings: no box
    argv = [
        "ground",
        "--image",
        str(IMAGE),
        "--report",
        "No pneumothorax. No pleural effusion. Heart size is normal.",
    ]
    assert _run(capsys, argv).splitlines()[1:] == ["No finding grounded."]


def test_ground_reads_dicom_by_suffix_and_by_marker(tmp_path, capsys):
    pytest.importorskip("pydicom")
    from conftest import write_dicom

    pixels = np.asarray(Image.open(IMAGE), dtype=np.float64)
    pixels = np.round((pixels - pixels.min()) / (pixels.max() - pixels.min()) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "full_range.png")  # DICOM display is min-max stretched: match it
    write_dicom(tmp_path / "study.dcm", pixels)
    write_dicom(tmp_path / "IM0001", pixels)  # no suffix: recognised by the DICM marker
    results = {}
    for name in ("full_range.png", "study.dcm", "IM0001"):
        argv = ["ground", "--image", str(tmp_path / name), "--report-file", str(REPORT_FILE), "--json"]
        results[name] = json.loads(_run(capsys, [*argv, "--overlay", str(tmp_path / f"{name}.png")]))
    assert results["study.dcm"] == results["IM0001"] == results["full_range.png"]
    assert results["study.dcm"], "the DICOM copy is grounded like the PNG"
    assert Image.open(tmp_path / "study.dcm.png").size == (768, 768)


# ------------------------------------------------------------------------------------------------ overlay
def test_overlay_handles_16_bit_arrays_small_images_and_boxes_outside():
    from medrg.overlay import PALETTE, draw_groundings

    image = np.arange(64 * 80, dtype=np.uint16).reshape(64, 80) * 12  # 16-bit range
    records = [
        {"label": "nodule", "score": 0.9, "box": {"xmin": 10.0, "ymin": 20.0, "xmax": 30.0, "ymax": 40.0}},
        {"label": "effusion", "score": 0.4, "box": {"xmin": -5.0, "ymin": 50.0, "xmax": 200.0, "ymax": 90.0}},
    ]
    drawn = draw_groundings(image, records)
    assert drawn.mode == "RGB" and drawn.size == (960, 768)  # shorter side enlarged to 768, aspect kept
    pixels = np.asarray(drawn)
    assert tuple(pixels[30 * 12, 10 * 12 + 1]) == PALETTE[0]
    assert tuple(pixels[60 * 12, 1]) == PALETTE[1]  # a box leaving the image is clipped to it
    plain = draw_groundings(image, [], min_side=0)
    assert plain.size == (80, 64)
    grey = np.asarray(plain)[..., 0]
    assert grey.min() == 0 and grey.max() == 255  # deeper than 8 bits: stretched for display
    with pytest.raises(ValueError, match=r"\(H, W\) or \(H, W, 3\|4\)"):
        draw_groundings(np.zeros((2, 3, 4, 5)), [])


def test_demo_findings_table_rounds_scores_and_boxes():
    from medrg.demo import findings_table

    rows = findings_table(
        [
            {
                "label": "mass",
                "score": 0.71649,
                "box": {"xmin": 159.4, "ymin": 82.0, "xmax": 208.6, "ymax": 127.2},
            }
        ]
    )
    assert rows == [["mass", 0.716, "[159, 82, 209, 127]"]]


# ------------------------------------------------------------------------------------------------ export
def test_export_writes_a_hub_folder_with_card_metrics(tmp_path, expected, capsys):
    metrics = {"chestxray8_validation": {"accuracy@0.5": 0.25, "mean_iou": 0.3125}}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    out = tmp_path / "hub"
    argv = [
        "export",
        "--model",
        "default",
        "--out",
        str(out),
        "--card-metrics",
        str(tmp_path / "metrics.json"),
    ]
    assert main(argv) == 0
    assert capsys.readouterr().out.startswith(f"wrote {out}: ")
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "medrg" and "report-grounding" in config["custom_pipelines"]
    assert {"AutoConfig", "AutoModel"} <= set(config["auto_map"])
    assert json.loads((out / "metrics.json").read_text()) == metrics
    card = (out / "README.md").read_text()
    assert "0.3125" in card and "library_name: transformers" in card and str(tmp_path) not in card
    from medrg.hub import load_pipeline

    pipe = load_pipeline(str(out))
    records = pipe(str(IMAGE), report=REPORT_FILE.read_text(encoding="utf-8"))
    assert records == expected
    # the metrics.json that `medrg evaluate --out` writes is accepted too
    evaluated = {"model": "x", "dataset": "chestxray8", "split": "validation", "num_samples": 4,
                 "metrics": {"accuracy@0.5": 0.5, "mean_iou": 0.4, "no_finding_accuracy": None, "per_category": {}}}  # fmt: skip
    (tmp_path / "evaluated.json").write_text(json.dumps(evaluated))
    from medrg.export_cli import read_card_metrics

    assert read_card_metrics(str(tmp_path / "evaluated.json")) == {
        "chestxray8_validation": {"accuracy@0.5": 0.5, "mean_iou": 0.4}
    }


# ------------------------------------------------------------------------------------------------ evaluate
def test_evaluate_choose_split():
    from medrg.evaluation.cli import choose_split

    assert choose_split(["train", "validation", "test"], None, "synthcxr") == (
        "test",
        "default: the dataset's test split",
    )
    assert choose_split(["train", "validation"], None, "chestxray8") == (
        "validation",
        "default: dataset 'chestxray8' has no test split",
    )
    assert choose_split(["train", "validation"], "train", "chestxray8") == ("train", "as requested")
    with pytest.raises(
        ValueError, match=r"has no test or validation split \(splits: \['train'\]\); pass --split"
    ):
        choose_split(["train"], None, "jsonl")


def test_evaluate_defaults_to_the_test_split_when_there_is_one(tmp_path, capsys):
    out = tmp_path / "out"
    tiny = "--dataset-option=examples_per_split={train: 4, validation: 2, test: 3}"
    argv = ["evaluate", "--model", "center", "--dataset", "synthcxr", tiny, "--dataset-option=image_size=64"]
    assert main([*argv, "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "split: test (default: the dataset's test split)" in lines
    assert json.loads(lines[-1])["split"] == "test" and json.loads(lines[-1])["num_samples"] == 3
    assert json.loads((out / "metrics.json").read_text())["split"] == "test"


@pytest.mark.skipif(not CHESTXRAY8.is_dir(), reason=f"ChestX-ray8 copy not found at {CHESTXRAY8}")
def test_evaluate_chestxray8_defaults_to_validation(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["evaluate", "--model", "center", "--dataset", "chestxray8", "--data-dir", str(CHESTXRAY8)]
    assert main([*argv, "--max-samples", "4", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "split: validation (default: dataset 'chestxray8' has no test split)" in lines
    summary = json.loads(lines[-1])
    assert summary["split"] == "validation" and summary["num_samples"] == 4
    assert json.loads((out / "metrics.json").read_text())["split"] == "validation"


def test_metric_loads_from_any_working_directory(tmp_path):
    code = (
        "import evaluate, medrg.evaluation as E\n"
        "m = evaluate.load(E.METRIC_PATH)\n"
        "box = {'xmin': 10.0, 'ymin': 10.0, 'xmax': 50.0, 'ymax': 50.0}\n"
        "pred = [[{'label': 'mass', 'score': 0.9, 'box': box}]]\n"
        "ref = [[{'phrase': 'mass', 'category': 'Mass', 'boxes': [[10.0, 10.0, 50.0, 30.0]]}]]\n"
        "r = m.compute(predictions=pred, references=ref)\n"
        "print(r['accuracy@0.5'], r['mean_iou'])\n"
        f"m2 = evaluate.load({str(ROOT / 'evaluation' / 'grounding_accuracy')!r})\n"
        "print(m2.compute(predictions=pred, references=ref)['mean_iou'])\n"
    )
    result = _python(code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["1.0", "0.5", "0.5"]


def test_evaluate_default_model_records_its_source(tmp_path, capsys):
    out = tmp_path / "out"
    tiny = "--dataset-option=examples_per_split={train: 2, validation: 2, test: 2}"
    assert main(["evaluate", "--model", "default", "--dataset", "synthcxr", tiny, "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["num_samples"] == 2
    written = json.loads((out / "metrics.json").read_text())
    assert written["config"]["model_source"] == "default" and written["split"] == "test"
    assert written["model"] == "medrg-default"


# ------------------------------------------------------------------------- user errors
# Every user error is ONE line on stderr naming the problem, with a non-zero exit status and no traceback;
# `--debug` shows the traceback instead. The cases run in-process through `medrg.cli.main` (fast); one runs the
# installed console script in a subprocess, with and without `--debug`.
TINY_DATA = "--dataset-option=examples_per_split={train: 2, validation: 2, test: 2}"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Inputs for the cases: a small image, bad report/image/DICOM/JSON/YAML files, a file where a folder goes."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("cli")
    Image.new("L", (48, 40), 90).save(folder / "x.png")
    (folder / "latin1.txt").write_bytes("Épanchement pleural gauche.".encode("latin-1"))
    (folder / "blank.txt").write_text("  \n\t\n")
    (folder / "not_an_image.png").write_text("this is text, not a PNG")
    (folder / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00garbage")
    (folder / "a_file").write_text("not a folder")
    (folder / "bad.json").write_text("{not json")
    (folder / "metrics_list.json").write_text(json.dumps([1, 2]))
    (folder / "metrics_text.json").write_text(json.dumps({"validation": {"accuracy@0.5": "high"}}))
    (folder / "unknown_option.yaml").write_text(
        "data:\n  sources:\n    - name: synthcxr\n      options: {examples_per_split: {train: 4}, nosuch: 1}\n"
        "training:\n  use_cpu: true\n"
    )
    (folder / "good.yaml").write_text(
        "data:\n  sources:\n    - name: synthcxr\n      options: {examples_per_split: {train: 4}, image_size: 64, "
        "progress: false}\ntraining:\n  use_cpu: true\n"
    )
    return {p.name: p for p in folder.iterdir()}


def F(name: str) -> str:  # noqa: N802  (a placeholder replaced by the fixture's file path)
    return "{" + name + "}"


# (case, argv with {file} placeholders, regex the one stderr line must match)
CASES = [
    # --- missing and mistyped arguments and files
    ("report file missing", ["ground", "--image", F("x.png"), "--report-file", "nope.txt"],
     r"report file not found: nope\.txt"),
    ("model folder missing", ["ground", "--image", F("x.png"), "--report", "Nodule.", "--model", "missing-folder"],
     r"model folder not found: missing-folder"),
    ("empty report", ["ground", "--image", F("x.png"), "--report", ""], r"--report is empty"),
    ("unknown dataset", ["evaluate", "--model", "center", "--dataset", "nosuch", "--out", "{out}"],
     r"unknown dataset 'nosuch'; expected one of \[.*'chestxray8'"),
    ("missing --data-dir", ["evaluate", "--model", "center", "--dataset", "chestxray8", "--out", "{out}"],
     r"dataset 'chestxray8' is read from a local copy: pass --data-dir FOLDER"),
    ("wrong --split", ["evaluate", "--model", "center", "--dataset", "synthcxr", TINY_DATA, "--split", "tset",
                       "--out", "{out}"],
     r"--split 'tset': dataset 'synthcxr' has no such split; available: \['test', 'train', 'validation'\]"),
    ("bad --set (no =)", ["train", "--config", F("good.yaml"), "--set", "training.learning_rate", "--dry-run"],
     r"--set expects SECTION\.KEY=VALUE .*'training\.learning_rate'"),
    ("bad --set (unknown key)", ["train", "--config", F("good.yaml"), "--set", "training.learning_rat=2e-3",
                                 "--dry-run"],
     r"unknown key training\.learning_rat"),
    ("unknown dataset option (evaluate)", ["evaluate", "--model", "center", "--dataset", "synthcxr",
                                           "--dataset-option", "nosuch=1", "--out", "{out}"],
     r"unknown option\(s\) \['nosuch'\] for dataset 'synthcxr'"),
    ("unknown dataset option (train config)", ["train", "--config", F("unknown_option.yaml"), "--dry-run"],
     r"unknown option\(s\) \['nosuch'\] for dataset 'synthcxr'"),
    # --- wrong files and folders, values out of range, bad metrics files
    ("image missing", ["ground", "--image", "nope.png", "--report", "Nodule."], r"image file not found: nope\.png"),
    ("image is a folder", ["ground", "--image", "{dir}", "--report", "Nodule."], r"is a folder; expected an image"),
    ("image not an image", ["ground", "--image", F("not_an_image.png"), "--report", "Nodule."],
     r"Cannot read image file .*not_an_image\.png"),
    ("DICOM unreadable", ["ground", "--image", F("broken.dcm"), "--report", "Nodule."],
     r"DICOM file .*broken\.dcm is unreadable"),
    ("report file not UTF-8", ["ground", "--image", F("x.png"), "--report-file", F("latin1.txt")],
     r"report file .*latin1\.txt is not UTF-8 text"),
    ("report file blank", ["ground", "--image", F("x.png"), "--report-file", F("blank.txt")],
     r"report file .*blank\.txt is empty"),
    ("threshold out of range", ["ground", "--image", F("x.png"), "--report", "Nodule.", "--threshold", "1.5"],
     r"--threshold must be a confidence in \[0, 1\], got 1\.5"),
    ("threshold not a number", ["ground", "--image", F("x.png"), "--report", "Nodule.", "--threshold", "high"],
     r"argument --threshold: invalid float value: 'high'"),
    ("max-new-tokens 0", ["ground", "--image", F("x.png"), "--report", "Nodule.", "--max-new-tokens", "0"],
     r"--max-new-tokens must be a positive number of tokens, got 0"),
    ("overlay folder missing", ["ground", "--image", F("x.png"), "--report", "N.", "--overlay", "/nonexistent/o.png"],
     r"--overlay /nonexistent/o\.png: folder /nonexistent does not exist"),
    ("overlay wrong type", ["ground", "--image", F("x.png"), "--report", "N.", "--overlay", "{dir}/o.gif"],
     r"--overlay .*o\.gif: expected a \.png or \.jpg file name"),
    ("model is a file", ["ground", "--image", F("x.png"), "--report", "Nodule.", "--model", F("a_file")],
     r"a_file is a file; expected a MedRG model folder"),
    ("model folder not a model", ["ground", "--image", F("x.png"), "--report", "Nodule.", "--model", "{dir}"],
     r"config\.json not found: .* is not a saved model folder"),
    ("no report given", ["ground", "--image", F("x.png")],
     r"one of the arguments --report --report-file is required"),
    ("unknown command", ["groudn"], r"argument COMMAND: invalid choice: 'groudn'"),
    ("unknown flag", ["ground", "--image", F("x.png"), "--report", "N.", "--tresh", "0.2"],
     r"unrecognized arguments: --tresh 0\.2"),
    ("--out is a file", ["evaluate", "--model", "center", "--dataset", "synthcxr", "--out", F("a_file")],
     r"--out '.*a_file' is a file"),
    ("dataset option malformed", ["evaluate", "--model", "center", "--dataset", "synthcxr", "--dataset-option",
                                  "seed", "--out", "{out}"],
     r"--dataset-option 'seed': expected KEY=VALUE"),
    ("data dir missing", ["evaluate", "--model", "center", "--dataset", "chestxray8", "--data-dir", "/nonexistent",
                          "--out", "{out}"],
     r"--data-dir /nonexistent is not a folder"),
    ("batch size 0", ["evaluate", "--model", "center", "--dataset", "synthcxr", "--batch-size", "0", "--out", "{out}"],
     r"--batch-size must be a positive integer, got 0"),
    ("train config missing", ["train", "--config", "nope.yaml"], r"nope\.yaml"),
    ("export metrics missing", ["export", "--model", "default", "--out", "{out}", "--card-metrics", "nope.json"],
     r"--card-metrics file not found: nope\.json"),
    ("export metrics not JSON", ["export", "--model", "default", "--out", "{out}", "--card-metrics", F("bad.json")],
     r"--card-metrics .*bad\.json is not valid JSON"),
    ("export metrics a list", ["export", "--model", "default", "--out", "{out}", "--card-metrics",
                               F("metrics_list.json")],
     r"--card-metrics .*metrics_list\.json: expected a JSON object, got list"),
    ("export metrics text value", ["export", "--model", "default", "--out", "{out}", "--card-metrics",
                                   F("metrics_text.json")],
     r"validation\.accuracy@0\.5 must be a finite number, got 'high'"),
    ("export --out is a file", ["export", "--model", "default", "--out", F("a_file")],
     r"--out .*a_file is a file"),
    ("export model missing", ["export", "--model", "missing-folder", "--out", "{out}"],
     r"model folder not found: missing-folder"),
]  # fmt: skip


def _argv(argv: list[str], files: dict[str, Path], tmp_path: Path) -> list[str]:
    values = {name: str(path) for name, path in files.items()}
    values.update(out=str(tmp_path / "out"), dir=str(tmp_path))
    return [re.sub(r"\{([\w.]+)\}", lambda m: values.get(m.group(1), m.group(0)), word) for word in argv]


@pytest.mark.parametrize("case, argv, pattern", CASES, ids=[c[0] for c in CASES])
def test_user_error_is_one_line_naming_the_problem(case, argv, pattern, files, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(_argv(argv, files, tmp_path))
    code = exit_info.value.code
    captured = capsys.readouterr()
    stderr = captured.err + (f"{code}\n" if isinstance(code, str) else "")
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code not in (0, None), f"{case}: exit status 0"
    assert len(lines) == 1, f"{case}: expected one stderr line, got {len(lines)}:\n{stderr}"
    assert "Traceback" not in stderr
    assert re.search(r"^medrg( \w+)?: ", lines[0]), lines[0]
    assert re.search(pattern, lines[0]), f"{case}: {lines[0]!r} does not match {pattern!r}"


def test_missing_optional_package_is_one_line_with_the_install_hint(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` now raises ModuleNotFoundError
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--port", "7999"])
    assert exit_info.value.code == (
        "medrg demo: error: the optional package 'gradio' is not installed; install it with "
        "pip install 'medrg[demo]'"
    )


def test_debug_shows_the_traceback_in_process(files):
    argv = ["ground", "--image", str(files["x.png"]), "--report-file", "nope.txt"]
    with pytest.raises(ValueError, match=r"report file not found: nope\.txt"):
        main(["--debug", *argv])
    with pytest.raises(ValueError, match=r"report file not found: nope\.txt"):
        main([argv[0], "--debug", *argv[1:]])


def test_console_script_one_line_and_debug_traceback(files):
    script = shutil.which("medrg") or str(Path(sys.executable).with_name("medrg"))
    argv = [
        script,
        "ground",
        "--image",
        str(files["x.png"]),
        "--report",
        "Nodule.",
        "--model",
        "missing-folder",
    ]
    plain = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert plain.returncode == 1 and plain.stdout == ""
    assert plain.stderr.splitlines() == [
        "medrg ground: error: model folder not found: missing-folder (expected a saved MedRG folder, or "
        "'default' for the embedded model)"
    ]
    debug = subprocess.run([argv[0], "--debug", *argv[1:]], capture_output=True, text=True, timeout=300)
    assert debug.returncode == 1
    assert debug.stderr.startswith("Traceback (most recent call last):")
    assert "medrg.loading.ModelLoadError: model folder not found: missing-folder" in debug.stderr
    # pydicom warns (to stderr) while failing on a broken file: after an error only the error line is shown
    broken = subprocess.run(
        [script, "ground", "--image", str(files["broken.dcm"]), "--report", "Nodule."],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert broken.returncode == 1 and len(broken.stderr.splitlines()) == 1, broken.stderr
    assert re.match(r"medrg ground: error: DICOM file .*broken\.dcm is unreadable", broken.stderr)
    usage = subprocess.run([script, "ground", "--image"], capture_output=True, text=True, timeout=300)
    assert usage.returncode == 2 and len(usage.stderr.splitlines()) == 1
    assert "argument --image: expected one argument" in usage.stderr


# ------------------------------------------------------------------------- errors are one line; --debug shows the traceback
def test_cli_errors_are_one_line_and_debug_shows_the_traceback(tmp_path):
    from medrg.cli import main

    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("L", (32, 32)).save(image)
    argv = ["ground", "--model", str(tmp_path / "nowhere"), "--image", str(image), "--report", "Nodule."]
    with pytest.raises(
        SystemExit, match=r"^medrg ground: error: model folder not found: .*nowhere"
    ) as exit_info:
        main(argv)
    assert "\n" not in str(exit_info.value.code)
    with pytest.raises(ModelLoadError, match="model folder not found"):
        main(["--debug", *argv])
    with pytest.raises(ModelLoadError, match="model folder not found"):
        main([*argv[:1], "--debug", *argv[1:]])
    with pytest.raises(SystemExit, match=r"medrg ground: error: image file not found"):
        main(["ground", "--image", str(tmp_path / "missing.png"), "--report", "Nodule."])
