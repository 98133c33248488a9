"""Where the embedded default MedRG lives: `medrg/default_model/` is a pure artefact folder (weights, JSON,
tokenizer, documents; no code), used by `pipeline("report-grounding")` and `medrg ground` when no model is named.

Load with `MedRGForReportGrounding.from_pretrained(DEFAULT_MODEL_DIR)` or
`pipeline("report-grounding", model=DEFAULT_MODEL_DIR)` after `import medrg`.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default_model"


def require_default_model() -> Path:
    """The folder of the embedded default model; a clear error if its weights are not there."""
    if (
        not (DEFAULT_MODEL_DIR / "model.safetensors").is_file()
        or not (DEFAULT_MODEL_DIR / "config.json").is_file()
    ):
        raise FileNotFoundError(
            f"The embedded default model is missing from {DEFAULT_MODEL_DIR} (no model.safetensors/config.json); "
            "pass --model DIR or reinstall medrg"
        )
    return DEFAULT_MODEL_DIR


__all__ = ["DEFAULT_MODEL_DIR", "require_default_model"]
