"""Report-grounding accuracy (accuracy@IoU, mIoU, matching, AP, calibration) as an `evaluate` module.

The math lives in the flat sibling file ``grounding_metrics.py`` (numpy + scipy only), which
``evaluate.load(folder)`` copies into its module cache with this script, and which
``medrg.evaluation`` re-exports: one source of truth. Its category check reads labels with the sibling data
file ``finding_vocabulary.py`` (generated from MedRG's report reader); ``evaluate`` copies only the files this
script imports, so it imports that one too.
"""

from __future__ import annotations

import datasets
import evaluate

from .finding_vocabulary import VOCABULARY
from .grounding_metrics import compute_grounding_metrics, validate_inputs

_CITATION = """\
@article{zou2024medrg,
  title={MedRG: Medical Report Grounding with Multi-modal Large Language Model},
  author={Zou, Ke and Bai, Yang and Chen, Zhihao and Zhou, Yang and Chen, Yidi and Ouyang, Kai and
          Zhang, Sheng and Goh, Rick Siow Mong and Liu, Yong and Fu, Huazhu},
  journal={arXiv preprint arXiv:2404.06798},
  year={2024}
}
"""

_DESCRIPTION = """\
Grounding metrics for medical report grounding: a model reads an image and a report, names each
finding and gives a box and a confidence. Reference findings are matched one-to-one to predictions
(Hungarian on IoU); accuracy@t is the share of reference findings with IoU >= t, mean_iou the mean
IoU over reference findings (missing predictions count 0); label_accuracy@t also needs the matched
label to name the finding's category (the report reader's vocabulary, negated mentions excluded). Also: phrase exact match / token F1,
no-finding handling, per-category results, AP@0.5 by score, expected calibration error and the
risk-coverage curve (AURC). See README.md for every definition.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `dict`): per sample, the prediction records
        `{"label": str, "score": float in [0, 1], "box": {"xmin", "ymin", "xmax", "ymax"}}` (pixels).
    references (`list` of `list` of `dict`): per sample, the dataset's findings
        `{"phrase": str, "category": str, "boxes": [[xmin, ymin, xmax, ymax], ...]}`; `[]` = no finding.
    iou_thresholds (`list` of `float`, default `[0.1, 0.3, 0.5, 0.7]`): thresholds of accuracy@t.
    multi_box (`str`, default `"max"`): several boxes per finding: `"max"` or `"union"`.
    hit_iou (`float` in [0, 1], default 0.5): IoU of a hit, for AP and calibration.
    num_calibration_bins (`int` >= 1, default 10): bins of the expected calibration error.
Returns:
    `dict`: `accuracy@0.1`, `accuracy@0.3`, `accuracy@0.5`, `accuracy@0.7`, `mean_iou`, `label_accuracy@t`,
    `average_precision@0.5`, `phrase_exact_match`, `phrase_token_f1`, `expected_calibration_error`,
    `aurc`, `no_finding_accuracy`, `false_boxes_per_no_finding_report`, `extra_predictions_per_sample`,
    counts, `per_category`, `reliability`, `risk_coverage` (fractions in [0, 1]; None if undefined).
Examples:
    >>> import evaluate
    >>> metric = evaluate.load("evaluation/grounding_accuracy")  # doctest: +SKIP
    >>> predictions = [[{"label": "left effusion", "score": 0.9,
    ...                  "box": {"xmin": 10, "ymin": 10, "xmax": 50, "ymax": 50}}], []]
    >>> references = [[{"phrase": "left effusion", "category": "Effusion", "boxes": [[10, 10, 50, 30]]}], []]
    >>> results = metric.compute(predictions=predictions, references=references)  # doctest: +SKIP
    >>> results["accuracy@0.5"], results["mean_iou"], results["no_finding_accuracy"]  # doctest: +SKIP
    (1.0, 0.5, 1.0)
"""

_BOX = {key: datasets.Value("float64") for key in ("xmin", "ymin", "xmax", "ymax")}
_FEATURES = datasets.Features(
    {
        "predictions": datasets.List(
            {"label": datasets.Value("string"), "score": datasets.Value("float64"), "box": _BOX}
        ),
        "references": datasets.List(
            {
                "phrase": datasets.Value("string"),
                "category": datasets.Value("string"),
                "boxes": datasets.List(datasets.List(datasets.Value("float64"), length=4)),
            }
        ),
    }
)


def _to_plain(predictions, references):
    """Validate first (errors name the sample), then keep exactly the declared fields for Arrow."""
    checked_predictions, checked_references = validate_inputs(predictions, references)
    plain_predictions = [
        [
            {
                "label": p["label"],
                "score": p["score"],
                "box": dict(zip(("xmin", "ymin", "xmax", "ymax"), p["box"].tolist())),
            }
            for p in sample
        ]
        for sample in checked_predictions
    ]
    plain_references = [
        [{"phrase": f["phrase"], "category": f["category"], "boxes": f["boxes"].tolist()} for f in sample]
        for sample in checked_references
    ]
    return plain_predictions, plain_references


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class GroundingAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=_FEATURES,
            reference_urls=["https://arxiv.org/abs/2404.06798"],
        )

    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Validate (errors name the sample index and field), then add a batch."""
        if predictions is not None or references is not None:
            predictions, references = _to_plain(predictions or [], references or [])
        return super().add_batch(predictions=predictions, references=references, **kwargs)

    def compute(self, *, predictions=None, references=None, **kwargs):
        """Compute the grounding metrics (zero samples allowed)."""
        if predictions is not None and references is not None and len(predictions) == 0 == len(references):
            # Arrow cannot store an empty batch; the metric of zero samples is well defined.
            return compute_grounding_metrics([], [], **kwargs)
        return super().compute(predictions=predictions, references=references, **kwargs)

    def _compute(
        self,
        predictions,
        references,
        iou_thresholds=(0.1, 0.3, 0.5, 0.7),
        multi_box="max",
        hit_iou=0.5,
        num_calibration_bins=10,
    ):
        return compute_grounding_metrics(
            predictions,
            references,
            iou_thresholds=iou_thresholds,
            multi_box=multi_box,
            hit_iou=hit_iou,
            num_calibration_bins=num_calibration_bins,
        )


__all__ = ["VOCABULARY", "GroundingAccuracy"]  # the vocabulary is imported here so that evaluate copies it
