"""Save a trained MedRG as a hub-ready folder: merged weights (safetensors), hub code, processor, model card."""

from __future__ import annotations

import json
from pathlib import Path

DEFAULT_CARD = """---
library_name: transformers
pipeline_tag: report-grounding
tags: [medical, chest-x-ray, grounding, medrg]
license: apache-2.0
---
# {name}

MedRG report-grounding model: reads a chest X-ray and its free-text report, writes each key finding phrase
followed by a `<BOX>` token and grounds it with boxes and confidences.

```python
import medrg  # or pass trust_remote_code=True without the package
from transformers import pipeline
pipe = pipeline("report-grounding", model="{path}")
pipe("cxr.png", report="Small nodule in the right upper zone.")
```

{metrics}
Not a medical device; for research only.
"""


def merge_adapters(model):
    """A plain MedRG from a PEFT-wrapped one (LoRA merged into the weights); other models pass through."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    return model


def save_hub_folder(
    model, processor, out_dir, card_text: str | None = None, metrics: dict | None = None
) -> Path:
    """Write `model` (LoRA merged) + `processor` + README card to `out_dir`; loadable with
    `AutoModel.from_pretrained(out_dir)` (or `trust_remote_code=True` without `medrg` installed) and
    `pipeline("report-grounding", model=out_dir)`. Returns the folder."""
    import medrg  # noqa: F401  (registers auto classes so save_pretrained copies the hub code and auto_map)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = merge_adapters(getattr(model, "module", model))
    # plain save_pretrained (not Pipeline.save_pretrained): a `custom_pipelines` entry in config.json would make
    # `pipeline("report-grounding", model=out_dir)` demand trust_remote_code even with `medrg` installed
    model.save_pretrained(out)
    processor.save_pretrained(out)
    if metrics is not None:
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    if card_text is None:
        lines = ""
        if metrics:
            lines = "## Measured\n\n| split | metric | value |\n|---|---|---|\n"
            for split, values in metrics.items():
                if isinstance(values, dict):
                    for key in ("accuracy@0.1", "accuracy@0.3", "accuracy@0.5", "mean_iou"):
                        if isinstance(values.get(key), (int, float)):
                            lines += f"| {split} | {key} | {values[key]:.4f} |\n"
            lines += "\n"
        card_text = DEFAULT_CARD.format(name=out.name, path=str(out), metrics=lines)
    (out / "README.md").write_text(card_text)
    return out


__all__ = ["merge_adapters", "save_hub_folder"]
