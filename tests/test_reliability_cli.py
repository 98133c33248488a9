"""Reliability of the `medrg` command line: every user error is ONE line on stderr naming the problem, with a
non-zero exit status and no traceback; `--debug` shows the traceback instead.

The cases run in-process through `medrg.cli.main` (fast); one runs the installed console script in a subprocess,
with and without `--debug`.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from medrg.cli import main

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT / "docs" / "example_cxr.png"
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
    # --- the cases named in issue 11
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
    # --- more cases
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
