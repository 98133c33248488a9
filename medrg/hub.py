"""MedRG hub folders: THE one writer of a model folder, and loading one as a pipeline without running its code.

``save_hub_folder(model, processor, out_dir)`` writes what every producer writes (``medrg train``'s export,
``medrg export``, ``pipe.save_pretrained``):

- ``model.safetensors`` (a PEFT/LoRA model is merged first; never pickled weights);
- ``config.json`` with ``auto_map`` (AutoConfig/AutoModel) AND ``custom_pipelines`` (``report-grounding``), so
  that ``pipeline("report-grounding", model=dir, trust_remote_code=True)`` works where ``medrg`` is not installed;
- the processor (``processor_config.json`` with ``auto_map``, tokenizer files);
- the flat hub code (``modeling_medrg.py``, ``configuration_medrg.py``, ``processing_medrg.py``,
  ``image_processing_medrg.py``, ``prompting_medrg.py``, ``pipeline_medrg.py``...), copied at write time;
- ``metrics.json`` (when measured) and ``README.md``, the model card rendered by ``medrg.hub_cards.model_card``.

No absolute local path is written anywhere in the folder (checked before returning).

With ``medrg`` installed a folder that has ``custom_pipelines`` makes ``pipeline("report-grounding", model=dir)``
refuse without ``trust_remote_code=True`` (transformers prefers the folder's own pipeline code). Load it with the
installed code instead, running nothing from the folder::

    pipe = medrg.hub.load_pipeline(dir)
    # the same as
    pipe = pipeline("report-grounding", model=dir, pipeline_class=medrg.ReportGroundingPipeline)
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medrg.processing.pipeline_medrg import TASK, ReportGroundingPipeline, write_code_folder

# folder names that say nothing about the model: the card is then named after the folder above
_GENERIC_FOLDER_NAMES = {"final", "export", "exported", "model", "output", "outputs", "best", "hub", "tmp"}
_TEXT_SUFFIXES = {".json", ".md", ".py", ".txt", ".yaml", ".yml", ".jinja", ".model"}


def merge_adapters(model: Any) -> Any:
    """A plain MedRG from a PEFT-wrapped one (LoRA merged into the weights); other models pass through (a DDP
    wrapper is unwrapped)."""
    model = getattr(model, "module", model)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    return model


def default_model_name(out_dir: str | os.PathLike) -> str:
    """The model's name for the card: the folder's name, or its parent's for generic names like ``final``."""
    folder = Path(out_dir).resolve()
    for part in (folder, *folder.parents):
        if part.name and part.name.lower() not in _GENERIC_FOLDER_NAMES:
            return part.name
    return "medrg-model"


def _register() -> None:
    """Make sure transformers knows MedRG (Auto classes with `register_for_auto_class`, the pipeline task)."""
    import medrg

    register = getattr(medrg, "register", None)  # explicit registration where `import medrg` is lazy
    if callable(register):
        register()


def _local_paths(out: Path) -> list[str]:
    """Absolute local paths that must not appear in a published folder (as written, resolved, with ``~``)."""
    import medrg

    candidates = {
        str(out.resolve()),
        str(out.absolute()),
        str(Path(medrg.__file__).resolve().parent.parent),
        str(Path.home()),
    }
    return sorted((c for c in candidates if len(c) > 1), key=len, reverse=True)


def _drop_local_names(data: dict) -> bool:
    """Delete path-valued name keys from `data` and its nested mappings (`text_config`, `vision_config`, ...: a
    model built from local backbone folders keeps their paths there); True when something was deleted."""
    changed = False
    for key in ("_name_or_path", "name_or_path", "processor_class_path"):
        value = data.get(key)
        if isinstance(value, str) and (os.path.isabs(value) or value.startswith(("~", "."))):
            del data[key]
            changed = True
    for value in data.values():
        if isinstance(value, dict):
            changed = _drop_local_names(value) or changed
    return changed


def _strip_local_paths(out: Path) -> None:
    """Drop `_name_or_path`-style keys that hold absolute paths from the folder's JSON files."""
    for path in out.glob("*.json"):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(data, dict) and _drop_local_names(data):
            path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def check_no_local_paths(out_dir: str | os.PathLike) -> None:
    """Raise ValueError naming the file if any text file of the folder holds an absolute local path."""
    out = Path(out_dir)
    pattern = re.compile("|".join(re.escape(p) for p in _local_paths(out)))
    for path in sorted(out.rglob("*")):
        if not path.is_file() or (path.suffix not in _TEXT_SUFFIXES and path.name != "README.md"):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        found = pattern.search(text)
        if found:
            raise ValueError(
                f"{path.name} in the hub folder holds the local path {found.group(0)!r}; a published folder must "
                "not name local paths"
            )


def save_hub_folder(
    model: Any,
    processor: Any,
    out_dir: str | os.PathLike,
    *,
    name: str | None = None,
    card: str | None = None,
    metrics: Mapping | None = None,
    summary: str | None = None,
    datasets: Sequence[str] = (),
    base_models: Sequence[str] = (),
    license: str | None = None,
    training: Mapping | None = None,
    repo_id: str | None = None,
) -> Path:
    """Write ``model`` + ``processor`` as a self-contained hub folder (see the module docstring for its files).

    Args:
        model: a ``MedRGForReportGrounding`` (PEFT-wrapped: LoRA merged; DDP-wrapped: unwrapped).
        processor: its ``MedRGProcessor``.
        out_dir: the folder (created; existing files of the same names are replaced).
        name: the model's name (card title, name of its evaluation results); default: the folder's name, or its parent's when the
            folder has a generic name such as ``final``.
        card: a complete card text to write instead of rendering the template.
        metrics: measured values ``{split or dataset_split: {"accuracy@0.5": fraction, ...}}``; written to
            ``metrics.json`` and rendered into the card's evaluation results (YAML) and results table.
        summary, datasets, base_models, license, training, repo_id: passed to
            ``medrg.hub_cards.model_card.render_model_card``.

    Returns:
        The folder, loadable with ``medrg.hub.load_pipeline(out_dir)``, ``AutoModel.from_pretrained(out_dir)``
        (after ``import medrg``) and, without ``medrg``, with ``trust_remote_code=True``.

    Raises:
        ValueError: ``out_dir`` is a file, or a written file would hold an absolute local path.
    """
    from medrg.hub_cards.model_card import DEFAULT_LICENSE, render_model_card

    _register()  # save_pretrained then writes auto_map and copies the code
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file; save_hub_folder needs a folder")
    out.mkdir(parents=True, exist_ok=True)
    write_code_folder(merge_adapters(model), processor, out, ReportGroundingPipeline)
    _strip_local_paths(out)
    if metrics is not None:
        (out / "metrics.json").write_text(
            json.dumps(metrics, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
    if card is None:
        model_config = json.loads((out / "config.json").read_text(encoding="utf-8"))
        model_config["image_size"] = getattr(processor, "image_size", None)
        card = render_model_card(
            name or default_model_name(out),
            metrics=metrics,
            summary=summary,
            datasets=datasets,
            base_models=base_models,
            license=license or DEFAULT_LICENSE,
            training=training,
            model_config=model_config,
            repo_id=repo_id,
        )
    (out / "README.md").write_text(card, encoding="utf-8")
    check_no_local_paths(out)
    return out


def load_pipeline(model: Any = None, **kwargs: Any) -> ReportGroundingPipeline:
    """``pipeline("report-grounding", ...)`` with the INSTALLED ``ReportGroundingPipeline``: a folder with
    ``custom_pipelines`` loads without ``trust_remote_code`` and none of its ``.py`` files is executed.

    Args:
        model: a MedRG folder or Hub id, a loaded ``MedRGForReportGrounding`` (pass ``processor=`` too), or None /
            ``"default"`` for the embedded default model.
        **kwargs: passed to ``transformers.pipeline`` (``device``, ``dtype``, ``batch_size``, ``processor``, call
            defaults such as ``threshold``...). ``trust_remote_code=True`` would run the folder's model code: not
            needed for MedRG folders.

    Returns:
        A ``ReportGroundingPipeline``.
    """
    from transformers import pipeline

    from medrg.defaults import DEFAULT_MODEL_DIR

    _register()  # the task and the Auto classes
    if model is None or (isinstance(model, str) and model == "default"):
        model = DEFAULT_MODEL_DIR
    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    if isinstance(model, str) and os.path.exists(model):
        # a local folder gets load_medrg's checks first: one error naming the file (and field) at fault instead
        # of transformers' (a Hub download attempt, a raw SafetensorError, a non-MedRG model without
        # generate_grounding), before any weight is allocated
        from medrg.loading import check_model_folder

        check_model_folder(model, trust_remote_code=bool(kwargs.get("trust_remote_code", False)))
    kwargs.setdefault("pipeline_class", ReportGroundingPipeline)
    return pipeline(TASK, model=model, **kwargs)


# `pipe.save_pretrained(d)` of the installed pipeline class writes its folder with this one writer
ReportGroundingPipeline.hub_folder_writer = save_hub_folder

__all__ = ["check_no_local_paths", "default_model_name", "load_pipeline", "merge_adapters", "save_hub_folder"]
