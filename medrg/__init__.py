"""MedRG: medical report grounding with a multimodal LLM.

`import medrg` registers the Auto classes for model type `medrg` and the pipeline task `report-grounding`, so
`AutoModel`, `AutoImageProcessor`, `AutoProcessor` and `pipeline("report-grounding", model=...)` work without
`trust_remote_code` (a saved folder also loads with `trust_remote_code=True` where `medrg` is not installed).
Registration only fills transformers' lookup tables: nothing is loaded or built at import.
"""

from __future__ import annotations

from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoProcessor
from transformers.pipelines import PIPELINE_REGISTRY

from medrg.defaults import DEFAULT_MODEL_DIR
from medrg.modeling_medrg.configuration_medrg import MedRGConfig
from medrg.modeling_medrg.modeling_medrg import (
    MedRGForReportGrounding,
    MedRGGroundingOutput,
    MedRGOutput,
)
from medrg.processing.image_processing_medrg import MedRGImageProcessor
from medrg.processing.pipeline_medrg import ReportGroundingPipeline
from medrg.processing.processing_medrg import MedRGProcessor

__version__ = "0.1.0"
TASK = "report-grounding"


def _register() -> None:
    AutoConfig.register("medrg", MedRGConfig, exist_ok=True)
    AutoModel.register(MedRGConfig, MedRGForReportGrounding, exist_ok=True)
    AutoImageProcessor.register(
        MedRGConfig, image_processor_classes={"pil": MedRGImageProcessor}, exist_ok=True
    )
    AutoProcessor.register(MedRGConfig, MedRGProcessor, exist_ok=True)
    # so save_pretrained writes auto_map and copies the flat hub code next to the weights
    MedRGConfig.register_for_auto_class()
    MedRGForReportGrounding.register_for_auto_class("AutoModel")
    MedRGImageProcessor.register_for_auto_class("AutoImageProcessor")
    MedRGProcessor.register_for_auto_class()
    PIPELINE_REGISTRY.register_pipeline(
        TASK, pipeline_class=ReportGroundingPipeline, pt_model=AutoModel, type="multimodal"
    )
    # `pipeline("report-grounding")` without a model uses the embedded default model. The default goes on a copy
    # of the registry entry only: `Pipeline.save_pretrained` writes the class's own entry into a saved
    # config.json, which must not carry this installation's local path.
    entry = PIPELINE_REGISTRY.supported_tasks[TASK]
    PIPELINE_REGISTRY.supported_tasks[TASK] = {
        **entry,
        "default": {"model": (str(DEFAULT_MODEL_DIR), "main")},
    }


_register()


def __getattr__(name: str):
    # heavier or optional parts are imported on first use
    if name in ("build_tiny_medrg", "build_medrg_from_backbones"):
        from medrg import builders

        return getattr(builders, name)
    if name == "load_grounding_dataset":
        from medrg.processing.data import load_grounding_dataset

        return load_grounding_dataset
    if name == "MedRGDataCollator":
        from medrg.training.collator import MedRGDataCollator

        return MedRGDataCollator
    raise AttributeError(f"module 'medrg' has no attribute {name!r}")


__all__ = [
    "DEFAULT_MODEL_DIR",
    "TASK",
    "MedRGConfig",
    "MedRGForReportGrounding",
    "MedRGGroundingOutput",
    "MedRGImageProcessor",
    "MedRGOutput",
    "MedRGProcessor",
    "ReportGroundingPipeline",
    "build_medrg_from_backbones",
    "build_tiny_medrg",
    "load_grounding_dataset",
]
