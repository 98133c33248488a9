"""Before/after of the speed fix in the model code: HEAD's `modeling_medrg` (read with `git show`, imported from
a temporary package) against this tree's, with the same weights and inputs, timed alternately in one run."""

from __future__ import annotations

import importlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from .common import REPO_ROOT, Settings, md_table
from .roofline import batch_inputs

HUB_FILES = ("configuration_medrg.py", "medrg_box_decoder.py", "medrg_loss.py", "modeling_medrg.py")
_PACKAGE = "medrg_head_modeling"
# the commit before the speed fix of issue 12 (the grounding pass re-ran the vision tower); "HEAD" when unreachable
BEFORE_REVISION = "49259469628ee09ff8cb9e33edc5d000ca8c4801"


def _git_show(path: str, revision: str) -> str | None:
    try:
        result = subprocess.run(
            ["git", "show", f"{revision}:{path}"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return result.stdout


def reference_model(model, revision: str = BEFORE_REVISION):
    """`model`'s weights in the model class of `revision` (None when git or the files are not available)."""
    sources = {name: _git_show(f"modeling_medrg/{name}", revision) for name in HUB_FILES}
    if any(text is None for text in sources.values()):
        return None
    folder = Path(tempfile.mkdtemp(prefix="medrg_bench_")) / _PACKAGE
    folder.mkdir()
    (folder / "__init__.py").write_text("")
    for name, text in sources.items():
        (folder / name).write_text(text)
    sys.path.insert(0, str(folder.parent))
    try:
        module = importlib.import_module(f"{_PACKAGE}.modeling_medrg")
    finally:
        sys.path.remove(str(folder.parent))
    reference = module.MedRGForReportGrounding(model.config)
    reference.load_state_dict(model.state_dict())
    reference.generation_config = model.generation_config
    return reference.eval()


def _max_difference(a, b) -> float:
    if a.sequences.shape != b.sequences.shape or not torch.equal(a.sequences, b.sequences):
        return float("inf")
    if a.pred_boxes.shape != b.pred_boxes.shape:
        return float("inf")
    if a.pred_boxes.numel() == 0:
        return 0.0
    return max(
        float((a.pred_boxes - b.pred_boxes).abs().max()), float((a.pred_scores - b.pred_scores).abs().max())
    )


def compare_with_head(model, processor, settings: Settings) -> dict[str, Any]:
    revision = BEFORE_REVISION if _git_show("modeling_medrg/modeling_medrg.py", BEFORE_REVISION) else "HEAD"
    changed = (
        subprocess.run(
            ["git", "diff", "--quiet", revision, "--", "modeling_medrg/"], cwd=REPO_ROOT, capture_output=True
        ).returncode
        == 1
    )
    reference = reference_model(model, revision)
    if reference is None:
        return {"available": False, "markdown": "(git or HEAD's model files not available: no before/after)"}
    reps = settings.reps(30, 10, 1)
    rows = []
    for batch in (1,) if settings.dry_run else (1, settings.batch):
        inputs = batch_inputs(processor, batch, max_new_tokens=settings.max_new_tokens)
        after_output, before_output = (
            model.generate_grounding(**inputs),
            reference.generate_grounding(**inputs),
        )
        times = {"before": [], "after": []}
        for _ in range(reps):  # alternate, so that load changes hit both alike
            for name, candidate in (("before", reference), ("after", model)):
                start = time.perf_counter()
                candidate.generate_grounding(**inputs)
                times[name].append(time.perf_counter() - start)
        before = sorted(times["before"])[reps // 2] * 1e3
        after = sorted(times["after"])[reps // 2] * 1e3
        rows.append(
            {
                "batch": batch,
                "before_ms": round(before, 3),
                "after_ms": round(after, 3),
                "speedup": round(before / after, 3),
                "max_output_difference": _max_difference(after_output, before_output),
            }
        )
    table = md_table(
        ["batch", f"before ms ({revision[:7]})", "after ms (tree)", "speed-up", "max abs diff boxes/scores"],
        [[r["batch"], r["before_ms"], r["after_ms"], r["speedup"], r["max_output_difference"]] for r in rows],
    )
    note = "" if changed else f"\n\n(the model code equals {revision[:7]}: no speed change in this tree)"
    return {
        "available": True,
        "before_revision": revision,
        "model_code_changed": changed,
        "rows": rows,
        "markdown": table + note,
    }
