"""The one dataset schema every MedRG data source produces (see docs/DESIGN in the repo README).

Boxes are absolute pixel ``[xmin, ymin, xmax, ymax]`` in the frame of the stored image.
An empty ``findings`` list means "no finding".
"""

from __future__ import annotations

import datasets

FINDING_FEATURES = {
    "phrase": datasets.Value("string"),
    "category": datasets.Value("string"),
    "boxes": datasets.List(datasets.List(datasets.Value("float32"), length=4)),
}

GROUNDING_FEATURES = datasets.Features(
    {
        "image": datasets.Image(),
        "report": datasets.Value("string"),
        "findings": datasets.List(FINDING_FEATURES),
        "image_id": datasets.Value("string"),
        "patient_id": datasets.Value("string"),
        "source": datasets.Value("string"),
    }
)

REQUIRED_COLUMNS = tuple(GROUNDING_FEATURES)
