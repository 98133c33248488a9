"""Pipeline inputs: what a demanding user tries with `pipeline("report-grounding")`, one table row each.

Runs the embedded default model on the shipped example (docs/example_cxr.png, whose reference findings are in
docs/example_findings.json), so that filtering, top_k and input forms are checked on real boxes."""

from __future__ import annotations

import functools
import http.server
import json
import logging
import threading
import warnings

import numpy as np
import pytest
from conftest import REPO_ROOT, xray_like
from medrg.processing.pipeline_medrg import DEFAULT_THRESHOLD, DEFAULT_TOP_K, ReportGroundingPipeline
from PIL import Image
from transformers import pipeline

import medrg
import medrg.hub

EXAMPLE = REPO_ROOT / "docs" / "example_cxr.png"
REPORT = (REPO_ROOT / "docs" / "example_report.txt").read_text()
REFERENCE = json.loads((REPO_ROOT / "docs" / "example_findings.json").read_text())


@functools.cache
def _findings() -> frozenset:
    """The phrases the embedded model writes for the example (not pinned: they change when it is retrained)."""
    records = medrg.hub.load_pipeline()(Image.open(EXAMPLE).copy(), report=REPORT, threshold=0.0)
    return frozenset(record["label"] for record in records)


def test_the_example_phrases_name_the_reference_findings():
    from medrg.evaluation.grounding_accuracy.grounding_metrics import names_category

    assert len(_findings()) == len(REFERENCE)
    for finding in REFERENCE:
        assert any(names_category(label, finding["category"]) for label in _findings()), (
            finding,
            _findings(),
        )


@pytest.fixture(scope="module")
def pipe():
    return medrg.hub.load_pipeline()


@pytest.fixture(scope="module")
def image():
    return Image.open(EXAMPLE).copy()


@pytest.fixture(scope="module")
def everything(pipe):
    """Every hypothesis of the example (no threshold, every box of every phrase)."""
    return pipe(EXAMPLE, report=REPORT, threshold=0.0, top_k=None)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A local http.server on 127.0.0.1 serving the example image (and nothing else: other paths are 404)."""
    folder = tmp_path_factory.mktemp("www")
    (folder / "cxr.png").write_bytes(EXAMPLE.read_bytes())

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # no request log on stderr
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)


# ---------------------------------------------------------------------------------------------- options: table
def _labels(records):
    return [r["label"] for r in records]


OPTION_CASES = [
    # (id, call options, check on the records, given every hypothesis)
    (
        "threshold=1.0 removes every box (without the best-box exemption)",
        {"threshold": 1.0, "keep_top_box": False},
        lambda recs, everything: recs == [],
    ),
    (
        "threshold=0.5 keeps exactly the phrases with a box at or above it",
        {"threshold": 0.5, "keep_top_box": False},
        lambda recs, everything: (
            all(r["score"] >= 0.5 for r in recs)
            and set(_labels(recs)) == {r["label"] for r in everything if r["score"] >= 0.5}
        ),
    ),
    (
        "top_k=1 gives one box per phrase, the best",
        {"top_k": 1, "threshold": 0.0},
        lambda recs, everything: (
            sorted(_labels(recs)) == sorted(_findings())
            and all(
                r["score"] == max(e["score"] for e in everything if e["label"] == r["label"]) for r in recs
            )
        ),
    ),
    (
        "top_k=2 gives up to two boxes per phrase",
        {"top_k": 2, "threshold": 0.0},
        lambda recs, everything: (
            max(_labels(recs).count(x) for x in _findings()) == 2
            and all(_labels(recs).count(x) <= 2 for x in _findings())
        ),
    ),
    (
        "top_k=None keeps every hypothesis",
        {"top_k": None, "threshold": 0.0},
        lambda recs, everything: recs == everything,
    ),
    (
        "the defaults: report-guided, top_k=1, each stated finding keeps its best box (threshold only for more)",
        {},
        lambda recs, everything: (
            sorted(_labels(recs)) == sorted(_findings())
            and all(
                r["score"] == max(e["score"] for e in everything if e["label"] == r["label"]) for r in recs
            )
        ),
    ),
    (
        "free reading: DEFAULT_THRESHOLD filters every box",
        {"guided": False},
        lambda recs, everything: all(r["score"] >= DEFAULT_THRESHOLD for r in recs),
    ),
    (
        "keep_top_box=True is the explicit best-box exemption",
        {"threshold": 1.0, "keep_top_box": True},
        lambda recs, everything: sorted(_labels(recs)) == sorted(_findings()),
    ),
]


@pytest.mark.parametrize(
    ("options", "check"), [c[1:] for c in OPTION_CASES], ids=[c[0] for c in OPTION_CASES]
)
def test_options_filter_like_transformers_detection_pipelines(pipe, everything, options, check):
    assert len(everything) > len(_findings())  # the example has several hypotheses per phrase
    records = pipe(EXAMPLE, report=REPORT, **options)
    assert check(records, everything), records


def test_the_documented_defaults():
    assert DEFAULT_THRESHOLD == 0.1 and DEFAULT_TOP_K == 1


# ------------------------------------------------------------------------------------------ bad options: table
BAD_OPTIONS = [
    ({"treshold": 0.9}, TypeError, r"'treshold' \(did you mean 'threshold'\?\)"),
    ({"topk": 1}, TypeError, r"'topk' \(did you mean 'top_k'\?\)"),
    ({"max_tokens": 5, "foo": 1}, TypeError, r"'foo'.*'max_tokens'"),
    ({"top_k": 0}, ValueError, "top_k must be a positive integer or None, got 0"),
    ({"top_k": -2}, ValueError, "top_k must be a positive integer or None, got -2"),
    ({"top_k": 1.5}, TypeError, "top_k must be a positive integer"),
    ({"top_k": True}, TypeError, "top_k must be a positive integer"),
    ({"threshold": 1.5}, ValueError, r"threshold must be a confidence in \[0, 1\], got 1.5"),
    ({"threshold": -0.1}, ValueError, r"threshold must be a confidence in \[0, 1\]"),
    ({"threshold": float("nan")}, ValueError, r"threshold must be a confidence in \[0, 1\]"),
    ({"threshold": "0.5"}, TypeError, "threshold must be a number"),
    ({"max_new_tokens": 0}, ValueError, "max_new_tokens must be a positive integer, got 0"),
    ({"timeout": -1}, ValueError, "timeout must be a positive number of seconds"),
]


@pytest.mark.parametrize(("options", "error", "message"), BAD_OPTIONS, ids=[str(c[0]) for c in BAD_OPTIONS])
def test_bad_options_raise_before_any_inference(pipe, options, error, message):
    with pytest.raises(error, match=message):
        pipe(EXAMPLE, report=REPORT, **options)


def test_an_unknown_option_at_construction_is_also_a_type_error(pipe):
    with pytest.raises(TypeError, match="'treshold'"):
        ReportGroundingPipeline(model=pipe.model, processor=pipe.processor, treshold=0.5)


def test_construction_options_are_call_defaults(pipe):
    strict = ReportGroundingPipeline(
        model=pipe.model, processor=pipe.processor, threshold=1.0, keep_top_box=False
    )
    assert strict(EXAMPLE, report=REPORT) == []
    assert sorted(_labels(strict(EXAMPLE, report=REPORT, threshold=0.0))) == sorted(
        _findings()
    )  # a call overrides


# ------------------------------------------------------------------------------------------------ input forms
def test_datasets_rows_dataset_and_key_dataset(pipe, image):
    from datasets import Dataset, Features, Value
    from datasets import Image as ImageFeature
    from transformers.pipelines.pt_utils import KeyDataset

    blank = xray_like(90, 80, seed=3)
    rows = {
        "image": [image, Image.fromarray(blank)],
        "report": [REPORT, "Small nodule in the right upper lobe."],
        "image_id": ["a", "b"],  # other columns are ignored
        "findings": ["[]", "[]"],
    }
    features = Features({"image": ImageFeature(), "report": Value("string"), "image_id": Value("string")})
    features["findings"] = Value("string")
    ds = Dataset.from_dict(rows, features=features)
    expected = pipe([{"image": im, "report": r} for im, r in zip(ds["image"], ds["report"])])
    assert pipe(ds[0]) == expected[0]  # a datasets row
    from_dataset = pipe(ds)  # a datasets.Dataset: a list, one result per row
    assert isinstance(from_dataset, list) and from_dataset == expected
    from_keys = list(pipe(KeyDataset(ds, "image"), report=ds["report"]))  # KeyDataset: an iterator
    assert from_keys == expected
    assert list(pipe(row for row in ds)) == expected  # a generator
    assert sorted(_labels(expected[0])) == sorted(_findings())


def test_a_dataset_without_report_column_names_its_columns(pipe):
    from datasets import Dataset

    ds = Dataset.from_dict({"image": [xray_like()], "text": ["Nodule."]})
    with pytest.raises(ValueError, match=r"'image' and 'report' columns; it has \['image', 'text'\]"):
        pipe(ds)


def _same_records(one, other, box_px: float = 1e-3) -> bool:
    return _labels(one) == _labels(other) and all(
        abs(a["score"] - b["score"]) <= 1e-5
        and all(abs(a["box"][k] - b["box"][k]) <= box_px for k in a["box"])
        for a, b in zip(one, other)
    )


def test_an_http_url_is_loaded_through_transformers(pipe, server):
    from_url = pipe(f"{server}/cxr.png", report=REPORT, timeout=10)
    # transformers' load_image hands over an RGB copy of the grayscale PNG: equal up to float rounding
    assert _same_records(from_url, pipe(EXAMPLE, report=REPORT))
    assert sorted(_labels(from_url)) == sorted(_findings())


def test_a_404_url_is_a_clear_error_naming_the_url(pipe, server):
    url = f"{server}/missing.png"
    with pytest.raises(ValueError, match=rf"Cannot load the image at URL {url}: .*not an image.*404"):
        pipe(url, report=REPORT, timeout=10)


def test_an_unreachable_url_is_a_clear_error_naming_the_url(pipe):
    url = "http://127.0.0.1:9/cxr.png"  # discard port: nothing listens
    with pytest.raises(ValueError, match=rf"Cannot load the image at URL {url}: \w+"):
        pipe(url, report=REPORT, timeout=5)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda p: p([]), None),
        (
            lambda p: p({"image": EXAMPLE, "report": REPORT}, report="Other."),
            "either in the input dict or as report=",
        ),
        (lambda p: p([EXAMPLE, EXAMPLE], report=[REPORT]), "list of reports of the same length"),
        (lambda p: p(EXAMPLE), "Input 0: the report-grounding pipeline needs a report"),
        (
            lambda p: p([{"image": EXAMPLE, "report": REPORT}, {"image": EXAMPLE}]),
            r"Input 1: .*'image' and 'report'",
        ),
    ],
    ids=["empty list", "report twice", "reports mismatch", "no report", "row 1 without report"],
)
def test_input_mistakes(pipe, call, message):
    if message is None:
        assert call(pipe) == []
        return
    with pytest.raises(ValueError, match=message):
        call(pipe)


def test_batched_equals_single_with_options(pipe, image):
    inputs = [{"image": image, "report": REPORT}, {"image": xray_like(70, 120, seed=1), "report": "Nodule."}]
    options = {"threshold": 0.2, "top_k": 2}
    single = [pipe(x, **options) for x in inputs]
    batched = pipe(inputs, batch_size=2, **options)
    for one, many in zip(single, batched):
        assert _labels(one) == _labels(many)
        for a, b in zip(one, many):
            assert abs(a["score"] - b["score"]) <= 1e-5
            assert all(abs(a["box"][k] - b["box"][k]) <= 1e-3 for k in a["box"])


# ------------------------------------------------------------------------- nothing hidden in the default output
def test_unfinished_answer_warns_naming_the_input(pipe, caplog):
    with caplog.at_level(logging.WARNING, logger="medrg.processing.pipeline_medrg"):
        out = pipe([{"image": EXAMPLE, "report": REPORT}] * 2, max_new_tokens=3)
    assert out == [[], []]
    assert "Input 0: the model's answer was cut off at max_new_tokens=3" in caplog.text
    assert "Input 1: the model's answer was cut off" in caplog.text
    assert str(EXAMPLE) not in caplog.text  # inputs are named by position, never by path


def test_truncated_report_warns_naming_the_input(pipe):
    long_report = "Patchy consolidation in the right lower lobe. " * 200
    with pytest.warns(
        UserWarning, match=r"^Input 1: the report has \d+ tokens.*truncated.*return_status=True"
    ):
        pipe([EXAMPLE, EXAMPLE], report=[REPORT, long_report], batch_size=2)


def test_a_normal_call_warns_nothing(pipe):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pipe(EXAMPLE, report=REPORT)


# --------------------------------------------------------------------------------------- save_pretrained folders
def test_pipe_save_pretrained_folder_reloads_with_its_processor(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "saved")
    reloaded = medrg.hub.load_pipeline(tmp_path / "saved")
    assert type(reloaded.processor).__name__ == "MedRGProcessor"
    assert reloaded.processor.image_size == pipe.processor.image_size
    assert reloaded(EXAMPLE, report=REPORT) == pipe(EXAMPLE, report=REPORT)
    config = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert "report-grounding" in config["custom_pipelines"]
    # what transformers itself does with the folder, with medrg installed: it prefers the folder's own pipeline
    # code and refuses it unless asked; `pipeline_class=` (what load_pipeline passes) needs no remote code
    with pytest.raises(ValueError, match="trust_remote_code"):
        pipeline("report-grounding", model=str(tmp_path / "saved"))
    assert type(
        pipeline("report-grounding", model=str(tmp_path / "saved"), pipeline_class=ReportGroundingPipeline)
    )


def test_save_pretrained_without_the_package_writer_writes_the_same_folder(pipe, tmp_path, monkeypatch):
    """The folder's own pipeline class (no `medrg`) has no hub_folder_writer: it writes the same files, no card."""
    pipe.save_pretrained(tmp_path / "with_writer")
    monkeypatch.setattr(ReportGroundingPipeline, "hub_folder_writer", None)
    # the folder's copy of the file is not `medrg.processing.pipeline_medrg`: no package writer to fall back to
    monkeypatch.setattr("medrg.processing.pipeline_medrg._package_hub_folder_writer", lambda: None)
    pipe.save_pretrained(tmp_path / "plain")
    with_writer = {p.name for p in (tmp_path / "with_writer").iterdir()}
    plain = {p.name for p in (tmp_path / "plain").iterdir()}
    assert with_writer - plain == {"README.md"} and plain <= with_writer
    for name in ("config.json", "processor_config.json"):
        a = json.loads((tmp_path / "with_writer" / name).read_text())
        b = json.loads((tmp_path / "plain" / name).read_text())
        assert a["auto_map"] == b["auto_map"]
    assert (
        json.loads((tmp_path / "plain" / "config.json").read_text())["custom_pipelines"]
        == json.loads((tmp_path / "with_writer" / "config.json").read_text())["custom_pipelines"]
    )
    reloaded = medrg.hub.load_pipeline(tmp_path / "plain")
    assert reloaded(EXAMPLE, report=REPORT) == pipe(EXAMPLE, report=REPORT)


def test_load_pipeline_default_and_array_input(pipe, image):
    assert medrg.hub.load_pipeline("default").model.name_or_path == pipe.model.name_or_path
    as_array = pipe(np.asarray(image), report=REPORT)
    assert sorted(_labels(as_array)) == sorted(_findings())


def test_a_threshold_between_two_phrases_best_scores_drops_the_weaker_phrase(pipe, image):
    everything = pipe(image, report=REPORT, threshold=0.0)
    best = sorted({max(r["score"] for r in everything if r["label"] == label) for label in _findings()})
    assert len(best) >= 2 and best[0] < best[-1], best
    threshold = (best[0] + best[-1]) / 2
    kept = pipe(image, report=REPORT, threshold=threshold, keep_top_box=False)
    assert kept and set(_labels(kept)) != _findings()
    assert all(r["score"] >= threshold for r in kept)
