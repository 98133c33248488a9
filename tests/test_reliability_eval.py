"""Reliability of evaluation, loading and the CLI: hostile or faulty inputs give the right number or one clear error.

Table-driven: each row is one case a user (or a broken file) produces, with what must happen. Items of the
reliability issue: 2 (no folder code without --trust-remote-code), 10 (metric edge cases), 11 (checkpoint
errors that name the file, --out checked before inference), plus what a demanding user tries next.
"""

from __future__ import annotations

import json
import math
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from medrg.evaluation import METRIC_PATH, box_iou_matrix, compute_grounding_metrics, predict_groundings

from medrg.loading import ModelLoadError, check_safetensors, load_medrg

BOX_KEYS = ("xmin", "ymin", "xmax", "ymax")


def pred(box, score=0.9, label="finding"):
    return {"label": label, "score": score, "box": dict(zip(BOX_KEYS, box))}


def finding(*boxes, phrase="finding", category="A"):
    return {"phrase": phrase, "category": category, "boxes": [list(b) for b in boxes]}


# ------------------------------------------------------------------------------------------------
# Metric: values that must come out right
# ------------------------------------------------------------------------------------------------
IOU_CASES = [
    # (case, box a, box b, IoU)
    ("identical boxes at 1e200 (overflowed to 0 before)", (1e200, 1e200, 3e200, 2e200), (1e200, 1e200, 3e200, 2e200), 1.0),
    ("half overlap at 1e200", (0, 0, 2e200, 1e200), (0, 0, 1e200, 1e200), 0.5),
    ("identical boxes at 1e-200 (underflow)", (0, 0, 1e-200, 2e-200), (0, 0, 1e-200, 2e-200), 1.0),
    ("half overlap at 1e-200", (0, 0, 2e-200, 1e-200), (0, 0, 1e-200, 1e-200), 0.5),
    ("boxes spanning the whole float range", (-1e308, -1e308, 1e308, 1e308), (-1e308, -1e308, 1e308, 1e308), 1.0),
    ("zero-area box with itself", (5, 5, 5, 9), (5, 5, 5, 9), 0.0),
    ("disjoint far apart", (0, 0, 1, 1), (1e300, 1e300, 2e300, 2e300), 0.0),
]  # fmt: skip


@pytest.mark.parametrize(("case", "box_a", "box_b", "expected"), IOU_CASES, ids=[c[0] for c in IOU_CASES])
def test_iou_is_scale_safe(case, box_a, box_b, expected):
    assert box_iou_matrix([box_a], [box_b])[0, 0] == pytest.approx(expected, abs=1e-12)
    metrics = compute_grounding_metrics([[pred(box_a)]], [[finding(box_b)]])
    assert metrics["mean_iou"] == pytest.approx(expected, abs=1e-12)


VALUE_CASES = [
    # (case, predictions, references, kwargs, expected subset of the result)
    ("no samples at all", [], [], {}, {"num_samples": 0, "accuracy@0.5": None, "mean_iou": None,
                                       "expected_calibration_error": None, "label_accuracy@0.5": None}),
    ("empty predictions and empty references", [[], []], [[], []], {},
     {"num_samples": 2, "no_finding_accuracy": 1.0, "accuracy@0.5": None, "aurc": None}),
    ("findings but no prediction at all", [[]], [[finding((0, 0, 10, 10))]], {},
     {"accuracy@0.1": 0.0, "mean_iou": 0.0, "average_precision@0.5": 0.0, "label_accuracy@0.1": 0.0}),
    ("threshold 0 and 1 are allowed", [[pred((0, 0, 10, 10))]], [[finding((0, 0, 10, 10))]],
     {"iou_thresholds": [0.0, 1.0]}, {"accuracy@0": 1.0, "accuracy@1": 1.0}),
    ("hit_iou 1 counts only exact boxes", [[pred((0, 0, 10, 9))]], [[finding((0, 0, 10, 10))]],
     {"hit_iou": 1.0}, {"average_precision@1": 0.0}),
    ("one calibration bin", [[pred((0, 0, 10, 10), score=0.25)]], [[finding((0, 0, 10, 10))]],
     {"num_calibration_bins": 1}, {"expected_calibration_error": 0.75}),
    ("numpy thresholds and integer boxes", [[pred((0, 0, 10, 10))]], [[finding((0, 0, 10, 20))]],
     {"iou_thresholds": np.array([0.5])}, {"accuracy@0.5": 1.0}),
    ("None label of a prediction is an empty label", [[{"label": None, "score": 0.5, "box": dict(zip(BOX_KEYS, (0, 0, 1, 1)))}]],
     [[finding((0, 0, 1, 1))]], {}, {"accuracy@0.5": 1.0, "phrase_token_f1": 0.0, "label_accuracy@0.5": 0.0}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "predictions", "references", "kwargs", "expected"), VALUE_CASES, ids=[c[0] for c in VALUE_CASES]
)
def test_metric_values_on_edge_inputs(case, predictions, references, kwargs, expected):
    result = compute_grounding_metrics(predictions, references, **kwargs)
    for key, value in expected.items():
        assert result[key] == (pytest.approx(value) if isinstance(value, float) else value), key


# ------------------------------------------------------------------------------------------------
# Metric: clear errors naming the argument / sample / field
# ------------------------------------------------------------------------------------------------
OPTION_CASES = [
    ("hit_iou negative", {"hit_iou": -1}, r"hit_iou: expected an IoU in \[0, 1\], got -1"),
    ("hit_iou above 1", {"hit_iou": 1.5}, r"hit_iou"),
    ("hit_iou NaN", {"hit_iou": math.nan}, r"hit_iou"),
    ("hit_iou a string", {"hit_iou": "0.5"}, r"hit_iou: expected a number"),
    ("threshold above 1", {"iou_thresholds": [1.5, math.nan]}, r"iou_thresholds\[0\]: expected an IoU in \[0, 1\], got 1.5"),
    ("threshold NaN", {"iou_thresholds": [0.5, math.nan]}, r"iou_thresholds\[1\]: expected an IoU in \[0, 1\], got nan"),
    ("threshold negative", {"iou_thresholds": [-0.1]}, r"iou_thresholds\[0\]"),
    ("thresholds a single number", {"iou_thresholds": 0.5}, r"iou_thresholds: expected a list"),
    ("thresholds a string", {"iou_thresholds": "0.5"}, r"iou_thresholds: expected a list"),
    ("threshold a bool", {"iou_thresholds": [True]}, r"iou_thresholds\[0\]: expected a number"),
    ("zero calibration bins", {"num_calibration_bins": 0}, r"num_calibration_bins: expected a positive integer, got 0"),
    ("fractional calibration bins", {"num_calibration_bins": 2.5}, r"num_calibration_bins"),
    ("bool calibration bins", {"num_calibration_bins": True}, r"num_calibration_bins"),
    ("unknown multi_box rule", {"multi_box": "mean"}, r"multi_box must be one of"),
]  # fmt: skip


@pytest.fixture(scope="module")
def metric():
    evaluate = pytest.importorskip("evaluate")
    return evaluate.load(METRIC_PATH)


@pytest.mark.parametrize(("case", "kwargs", "message"), OPTION_CASES, ids=[c[0] for c in OPTION_CASES])
def test_bad_metric_options_name_the_argument(case, kwargs, message, metric):
    predictions, references = [[pred((0, 0, 10, 10))]], [[finding((0, 0, 10, 10))]]
    with pytest.raises(ValueError, match=message):
        compute_grounding_metrics(predictions, references, **kwargs)
    if case in ("thresholds a single number", "thresholds a string", "threshold a bool"):
        return  # evaluate passes these through unchanged; the plain function is the check
    with pytest.raises(ValueError, match=message):
        metric.compute(predictions=predictions, references=references, **kwargs)
    with pytest.raises(ValueError, match=message):  # zero samples take a separate path in the module
        metric.compute(predictions=[], references=[], **kwargs)


INPUT_CASES = [
    ("predictions shorter than references", [[]], [[], []], r"predictions has 1 samples but references has 2"),
    ("a record without box", [[{"label": "x", "score": 0.5}]], [[]], r"predictions\[0\]\[0\]: missing key\(s\) \['box'\]"),
    ("box as a list instead of a dict", [[{"label": "x", "score": 0.5, "box": [0, 0, 1, 1]}]], [[]],
     r"predictions\[0\]\[0\]\['box'\]: expected a dict"),
    ("score above 1", [[pred((0, 0, 1, 1), score=1.2)]], [[]], r"predictions\[0\]\[0\]\['score'\]: 1.2 is outside \[0, 1\]"),
    ("negative score", [[pred((0, 0, 1, 1), score=-0.3)]], [[]], r"\['score'\]: -0.3 is outside \[0, 1\]"),
    ("NaN score", [[pred((0, 0, 1, 1), score=math.nan)]], [[]], r"\['score'\]: expected a finite number, got nan"),
    ("score as a string", [[pred((0, 0, 1, 1), score="0.5")]], [[]], r"\['score'\]: expected a number"),
    ("boolean coordinate", [[pred((0, 0, True, 1))]], [[]], r"\['box'\]\['xmax'\]: expected a number"),
    ("infinite reference box", [[]], [[finding((0, 0, math.inf, 1))]], r"references\[0\]\[0\]\['boxes'\]\[0\]\[2\]"),
    ("a finding with 3 numbers", [[]], [[finding((0, 0, 1))]], r"expected 4 numbers"),
    ("references as one dict per sample", [[]], [{"phrase": "x", "boxes": [[0, 0, 1, 1]]}], r"references\[0\]: expected a list"),
    ("category as a number", [[]], [[{"phrase": "x", "category": 3, "boxes": [[0, 0, 1, 1]]}]], r"\['category'\]: expected a string"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "predictions", "references", "message"), INPUT_CASES, ids=[c[0] for c in INPUT_CASES]
)
def test_bad_metric_inputs_name_the_sample_and_field(case, predictions, references, message):
    with pytest.raises(ValueError, match=message):
        compute_grounding_metrics(predictions, references)


# ------------------------------------------------------------------------------------------------
# Loading model folders: one clear error naming the file
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory):
    import medrg

    model, processor = medrg.build_tiny_medrg(seed=0)
    folder = tmp_path_factory.mktemp("tiny") / "model"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _copy(folder: Path, tmp_path: Path, name: str = "copy") -> Path:
    target = tmp_path / name
    shutil.copytree(folder, target)
    return target


def _truncate_weights(folder: Path) -> None:
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])


def _drop_processor_config(folder: Path) -> None:
    (folder / "processor_config.json").unlink()


def _make_trainer_checkpoint(folder: Path) -> Path:
    checkpoint = folder.parent / "checkpoint-15"
    folder.rename(checkpoint)
    (checkpoint / "trainer_state.json").write_text("{}")
    return checkpoint


def _break_config_json(folder: Path) -> None:
    (folder / "config.json").write_text("{not json")


def _pickle_only(folder: Path) -> None:
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")


def _drop_tensors(folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(folder / "model.safetensors")
    kept = {k: v for k, v in tensors.items() if "box_decoder" not in k}
    assert len(kept) < len(tensors)
    save_file(kept, folder / "model.safetensors", metadata={"format": "pt"})


def _drop_tokenizer(folder: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink(missing_ok=True)


FOLDER_CASES = [
    # (case, how to break a copy of a saved tiny MedRG, error message)
    ("truncated safetensors", _truncate_weights, r"model\.safetensors is truncated or corrupt"),
    ("missing processor_config.json", _drop_processor_config, r"processor_config\.json not found"),
    ("Trainer checkpoint-N folder", _make_trainer_checkpoint,
     r"checkpoint-15 is a Trainer training checkpoint.*medrg train --config CONFIG --resume.*final"),
    ("config.json not JSON", _break_config_json, r"config\.json is not valid JSON"),
    ("pickled weights only", _pickle_only, r"model\.safetensors not found \(found pytorch_model\.bin"),
    ("weights missing tensors", _drop_tensors, r"model\.safetensors.* does not (fit|match) .*missing.*box_decoder"),
    ("no tokenizer files", _drop_tokenizer, r"has no tokenizer"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "break_folder", "message"), FOLDER_CASES, ids=[c[0] for c in FOLDER_CASES])
def test_broken_model_folder_gives_one_error_naming_the_file(
    case, break_folder, message, saved_tiny, tmp_path
):
    folder = _copy(saved_tiny, tmp_path)
    folder = break_folder(folder) or folder
    with pytest.raises(ModelLoadError, match=message):
        load_medrg(folder)


def _bert_folder(path: Path) -> None:
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=32, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8
    )
    BertModel(config).save_pretrained(path)


def _gpt2_folder(path: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(vocab_size=32, n_embd=8, n_layer=1, n_head=2, n_positions=16)).save_pretrained(
        path
    )


OTHER_FOLDER_CASES = [
    ("a BERT folder", _bert_folder, r"config\.json: model_type 'bert' is not a MedRG model"),
    ("a GPT-2 folder", _gpt2_folder, r"config\.json: model_type 'gpt2' is not a MedRG model"),
    ("a missing folder", None, r"model folder not found: .*nowhere"),
    ("a file instead of a folder", lambda p: p.write_text("x"), r"nowhere is a file; expected a MedRG model folder"),
    ("a folder without config.json", lambda p: p.mkdir(), r"nowhere/config\.json not found"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "make", "message"), OTHER_FOLDER_CASES, ids=[c[0] for c in OTHER_FOLDER_CASES]
)
def test_not_a_medrg_folder_gives_one_error(case, make, message, tmp_path):
    path = tmp_path / "nowhere"
    if make is not None:
        make(path)
    with pytest.raises(ModelLoadError, match=message):
        load_medrg(path)


def test_safetensors_check_accepts_a_complete_file_and_names_a_cut_one(saved_tiny, tmp_path):
    check_safetensors(saved_tiny / "model.safetensors")  # complete: no error
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(struct.pack("<Q", 10**6) + b"{}")
    with pytest.raises(ModelLoadError, match=r"cut\.safetensors is truncated or not a safetensors file"):
        check_safetensors(cut)


# ------------------------------------------------------------------------------------------------
# Remote code: never run a folder's own code without --trust-remote-code
# ------------------------------------------------------------------------------------------------
EVIL_CODE = """
import pathlib
pathlib.Path({marker!r}).write_text("the folder's code ran")
from transformers import PretrainedConfig, PreTrainedModel


class EvilConfig(PretrainedConfig):
    model_type = "evilmodel"


class EvilModel(PreTrainedModel):
    config_class = EvilConfig
"""


def _evil_folder(tmp_path: Path, saved_tiny: Path) -> tuple[Path, Path]:
    """A complete-looking folder of another model type whose auto_map points at code that writes a marker."""
    import torch
    from safetensors.torch import save_file

    folder, marker = tmp_path / "evil", tmp_path / "marker.txt"
    folder.mkdir()
    (folder / "evil.py").write_text(EVIL_CODE.format(marker=str(marker)))
    config = {
        "model_type": "evilmodel",
        "auto_map": {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"},
    }
    (folder / "config.json").write_text(json.dumps(config))
    for name in ("processor_config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(saved_tiny / name, folder / name)
    save_file({"weight": torch.zeros(1)}, folder / "model.safetensors")
    return folder, marker


def test_folder_code_does_not_run_without_trust_remote_code(saved_tiny, tmp_path, monkeypatch):
    folder, marker = _evil_folder(tmp_path, saved_tiny)
    with pytest.raises(ModelLoadError, match=r"evil\.py\); it was not run\. .*pass --trust-remote-code"):
        load_medrg(folder)
    assert not marker.exists()
    from medrg.cli import main

    with pytest.raises(SystemExit, match=r"^medrg evaluate: error: .*--trust-remote-code") as exit_info:
        main(
            ["evaluate", "--model", str(folder), "--dataset", "never-loaded", "--out", str(tmp_path / "out")]
        )
    assert "\n" not in str(exit_info.value.code)
    assert not marker.exists()
    # the flag is what gates it: with it, the folder's code runs (and this non-MedRG folder is then refused)
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    with pytest.raises(ModelLoadError):
        load_medrg(folder, trust_remote_code=True)
    assert marker.read_text() == "the folder's code ran"


def test_medrg_folder_with_own_code_loads_with_the_installed_code(saved_tiny, tmp_path):
    folder = _copy(saved_tiny, tmp_path)
    marker = tmp_path / "marker.txt"
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "medrg"
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "evil.py").write_text(EVIL_CODE.format(marker=str(marker)))
    model, processor = load_medrg(folder)
    assert type(model).__module__.startswith("medrg.") and not marker.exists()
    assert type(processor).__name__ == "MedRGProcessor" and not model.training


# ------------------------------------------------------------------------------------------------
# CLI: --out checked first, one line per error, --debug for the traceback
# ------------------------------------------------------------------------------------------------
def test_evaluate_checks_out_before_loading_anything(tmp_path):
    from medrg.evaluation import evaluate_model

    from medrg.cli import main

    a_file = tmp_path / "metrics.txt"
    a_file.write_text("not a folder")
    # the dataset name does not exist: the --out error must come first
    with pytest.raises(SystemExit, match=r"^medrg evaluate: error: --out '.*metrics\.txt' is a file"):
        main(["evaluate", "--model", "prior", "--dataset", "no-such-dataset", "--out", str(a_file)])
    with pytest.raises(SystemExit, match=r"--out '.*metrics\.txt/sub' is not a writable folder"):
        main(["evaluate", "--model", "prior", "--dataset", "no-such-dataset", "--out", str(a_file / "sub")])
    calls = []

    def predict(examples):
        calls.append(len(examples))
        return [[] for _ in examples]

    rows = [{"image": None, "report": "x", "findings": []}]
    with pytest.raises(ValueError, match="is a file"):
        evaluate_model(predict, rows, out_dir=a_file)
    with pytest.raises(ValueError, match=r"iou_thresholds\[0\]"):  # metric options too, before inference
        evaluate_model(predict, rows, iou_thresholds=[2.0])
    with pytest.raises(ValueError, match="multi_box"):
        evaluate_model(predict, rows, multi_box="mean")
    assert calls == []
    assert evaluate_model(predict, rows, out_dir=tmp_path / "new" / "out")["num_samples"] == 1 and calls == [
        1
    ]
    assert (tmp_path / "new" / "out" / "metrics.json").is_file()


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


# ------------------------------------------------------------------------------------------------
# The prediction path
# ------------------------------------------------------------------------------------------------
PREDICT_CASES = [
    ("a row without report", [{"image": None}], {}, r"rows\[0\]: expected a mapping with keys 'image' and 'report'"),
    ("a row that is a string", ["image.png"], {}, r"rows\[0\]: expected a mapping"),
    ("batch size 0", [], {"batch_size": 0}, r"batch_size must be a positive integer, got 0"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "rows", "kwargs", "message"), PREDICT_CASES, ids=[c[0] for c in PREDICT_CASES]
)
def test_predict_groundings_rejects_bad_rows(case, rows, kwargs, message):
    with pytest.raises(ValueError, match=message):
        predict_groundings(None, None, rows, **kwargs)


def test_predict_groundings_of_no_rows_is_empty():
    assert predict_groundings(None, None, []) == []
