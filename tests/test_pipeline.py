"""pipeline("report-grounding"): input forms, batching, options, record format, bad input."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, xray_like
from PIL import Image
from transformers import pipeline

REPORTS = ["Nodule in the right upper lobe.", "Left pleural effusion and cardiomegaly.", "No acute disease."]


@pytest.fixture(scope="module")
def pipe(tiny):
    model, processor = tiny
    return pipeline("report-grounding", model=model, processor=processor)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("imgs")
    path = folder / "cxr.png"
    Image.fromarray(xray_like(100, 90, seed=2)).save(path)
    return [Image.fromarray(xray_like(96, 80, seed=0)), str(path), xray_like(70, 120, seed=1)]


def _check_records(records, width, height):
    assert isinstance(records, list)
    for record in records:
        assert set(record) == {"label", "score", "box"}
        assert isinstance(record["label"], str) and 0.0 <= record["score"] <= 1.0
        box = record["box"]
        assert set(box) == {"xmin", "ymin", "xmax", "ymax"}
        assert all(math.isfinite(v) for v in box.values())
        assert 0 <= box["xmin"] <= box["xmax"] <= width and 0 <= box["ymin"] <= box["ymax"] <= height


def test_input_forms_agree(pipe, images):
    image = images[0]
    a = pipe(image, report=REPORTS[0], max_new_tokens=16)
    b = pipe({"image": image, "report": REPORTS[0]}, max_new_tokens=16)
    c = pipe([image], report=[REPORTS[0]], max_new_tokens=16)
    d = pipe([{"image": image, "report": REPORTS[0]}], max_new_tokens=16)
    assert a == b == c[0] == d[0]
    _check_records(a, 80, 96)


def test_batched_equals_single(pipe, images):
    inputs = [{"image": im, "report": r} for im, r in zip(images, REPORTS)]
    single = [pipe(x, max_new_tokens=16) for x in inputs]
    batched = pipe(inputs, batch_size=3, max_new_tokens=16)
    assert len(batched) == 3
    for one, many in zip(single, batched):
        assert [r["label"] for r in one] == [r["label"] for r in many]
        for r1, r2 in zip(one, many):
            assert abs(r1["score"] - r2["score"]) <= 1e-5
            assert all(
                abs(r1["box"][k] - r2["box"][k]) <= 1e-3 for k in r1["box"]
            )  # pixels: 1e-5 of the frame


def test_threshold_filters_every_box_and_keep_top_box_is_the_explicit_exemption(default_pipe):
    everything = default_pipe(EXAMPLE, report=EXAMPLE_REPORT, threshold=0.0, top_k=None)
    assert len(everything) > len({r["label"] for r in everything})  # several hypotheses for some phrase
    assert (
        default_pipe(EXAMPLE, report=EXAMPLE_REPORT, threshold=1.0, keep_top_box=False) == []
    )  # a phrase's best box is no exception
    # a threshold the caller sets filters in the guided default too; the findings stay listed as read
    assert default_pipe(EXAMPLE, report=EXAMPLE_REPORT, threshold=1.0) == []
    status = default_pipe(EXAMPLE, report=EXAMPLE_REPORT, threshold=1.0, return_status=True)
    assert status["findings"] == [] and status["read"]
    assert all(not r["grounded"] and "threshold" in r["reason"] for r in status["read"])
    # keep_top_box=False with a threshold that drops every box: the stated findings are still listed as read
    status = default_pipe(
        EXAMPLE, report=EXAMPLE_REPORT, threshold=0.999, keep_top_box=False, return_status=True
    )
    assert status["findings"] == [] and len(status["read"]) == 2
    assert all(not r["grounded"] and "threshold" in r["reason"] for r in status["read"])
    # no threshold set: a guided answer keeps each stated finding's best box, whatever its score
    assert len(default_pipe(EXAMPLE, report=EXAMPLE_REPORT)) == len(status["read"])
    assert default_pipe(EXAMPLE, report=EXAMPLE_REPORT, threshold=1.0, guided=False) == []
    best = default_pipe(EXAMPLE, report=EXAMPLE_REPORT, threshold=1.0, keep_top_box=True)
    labels = [r["label"] for r in best]
    assert labels and len(labels) == len(set(labels)) == len({r["label"] for r in everything})
    for record in best:  # each phrase's best hypothesis
        assert record["score"] == max(r["score"] for r in everything if r["label"] == record["label"])


def test_path_image_shape_is_the_callers(pipe, images):
    _check_records(pipe(images[1], report=REPORTS[0], max_new_tokens=16), 90, 100)
    _check_records(pipe(images[2], report=REPORTS[0], max_new_tokens=16), 120, 70)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda p, d: p(str(d / "missing.png"), report="Nodule."), "Image file not found"),
        (lambda p, d: p(str(d / "corrupt.png"), report="Nodule."), "Cannot read image file"),
        (lambda p, d: p(np.zeros((0, 5), np.uint8), report="Nodule."), "zero size"),
        (lambda p, d: p(xray_like(), report=""), "report is empty"),
        (lambda p, d: p(xray_like()), "needs a report"),
        (lambda p, d: p({"image": xray_like()}), "needs 'image' and 'report'"),
        (lambda p, d: p([xray_like(), xray_like()], report=["one"]), "list of reports of the same length"),
    ],
)
def test_bad_input_is_a_clear_error(pipe, tmp_path, call, message):
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(ValueError, match=message):
        call(pipe, tmp_path)


def test_non_string_report_is_a_type_error(pipe):
    with pytest.raises(TypeError, match="report must be a string"):
        pipe(xray_like(), report=123)


@pytest.fixture(scope="module")
def default_pipe():
    import medrg  # noqa: F401  (registers the task and its embedded default model)

    return pipeline("report-grounding")


EXAMPLE = REPO_ROOT / "docs" / "example_cxr.png"
EXAMPLE_REPORT = (REPO_ROOT / "docs" / "example_report.txt").read_text()


def test_no_model_means_the_embedded_default_model(default_pipe):
    from medrg.defaults import DEFAULT_MODEL_DIR

    assert Path(default_pipe.model.name_or_path) == DEFAULT_MODEL_DIR
    assert type(default_pipe.processor).__name__ == "MedRGProcessor"
    assert default_pipe.image_processor is default_pipe.processor.image_processor


def test_return_status_tells_cut_off_from_finished(default_pipe, caplog):
    done = default_pipe(EXAMPLE, report=EXAMPLE_REPORT, return_status=True)
    assert set(done) == {"findings", "finished", "report_truncated", "read", "unsupported_text"}
    assert done["finished"] is True and done["report_truncated"] is False and done["findings"]
    assert done["findings"] == default_pipe(
        EXAMPLE, report=EXAMPLE_REPORT
    )  # same records as the default output
    cut = default_pipe(EXAMPLE, report=EXAMPLE_REPORT, max_new_tokens=3, return_status=True)
    assert cut["finished"] is False and cut["findings"] == []
    with caplog.at_level("WARNING", logger="medrg.processing.pipeline_medrg"):
        assert default_pipe(EXAMPLE, report=EXAMPLE_REPORT, max_new_tokens=3) == []
    assert "max_new_tokens=3" in caplog.text and "Input 0:" in caplog.text  # names the input, not a path


def test_return_status_reports_truncation_per_input(default_pipe):
    long_report = "Patchy consolidation in the right lower lobe. " * 200
    with pytest.warns(UserWarning, match="truncated"):
        statuses = default_pipe(
            [EXAMPLE, EXAMPLE], report=[long_report, EXAMPLE_REPORT], batch_size=2, return_status=True
        )
    assert [s["report_truncated"] for s in statuses] == [True, False]
