"""MedRG: medical report grounding with a multimodal LLM.

`import medrg` makes transformers know the model type `medrg` and the pipeline task `report-grounding`, so
`AutoConfig`, `AutoModel`, `AutoImageProcessor`, `AutoProcessor` and `pipeline("report-grounding", model=...)`
work without `trust_remote_code` (a saved folder also loads with `trust_remote_code=True` where `medrg` is not
installed).

Import time: `import medrg` imports neither torch nor transformers (0.02-0.08 s instead of 4.6-6.7 s on 2 shared
cores), so `medrg --help` is instant. The registration with transformers happens when it is needed: right away for
the parts of transformers that are already imported, otherwise as soon as the import that brings transformers'
Auto classes (`transformers.models.auto.*`), its pipelines (`transformers.pipelines`) or a MedRG class has
finished. This works through a
small import hook (`_RegistrationHook` below); `medrg.register()` does all of it at once, explicitly. The classes
(`medrg.MedRGForReportGrounding`, ...) are imported on first attribute access.
"""

from __future__ import annotations

import importlib
import sys
import threading
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

from medrg.defaults import DEFAULT_MODEL_DIR
from medrg.processing.prompting_medrg import TASK

__version__ = "0.1.0"

# public name -> module that defines it (imported on first access)
_LAZY = {
    "MedRGConfig": "medrg.modeling_medrg.configuration_medrg",
    "MedRGForReportGrounding": "medrg.modeling_medrg.modeling_medrg",
    "MedRGGroundingOutput": "medrg.modeling_medrg.modeling_medrg",
    "MedRGOutput": "medrg.modeling_medrg.modeling_medrg",
    "MedRGImageProcessor": "medrg.processing.image_processing_medrg",
    "MedRGProcessor": "medrg.processing.processing_medrg",
    "ReportGroundingPipeline": "medrg.processing.pipeline_medrg",
    "build_tiny_medrg": "medrg.builders",
    "build_medrg_from_backbones": "medrg.builders",
    "load_grounding_dataset": "medrg.processing.data",
    "MedRGDataCollator": "medrg.training.collator",
    "load_medrg": "medrg.loading",
    "load_pipeline": "medrg.hub",
    "save_hub_folder": "medrg.hub",
}
_LAZY_MODULES = ("hub", "evaluation", "processing", "modeling_medrg", "training", "loading", "overlay")

if TYPE_CHECKING:  # pragma: no cover
    from medrg.builders import build_medrg_from_backbones, build_tiny_medrg
    from medrg.loading import load_medrg
    from medrg.modeling_medrg.configuration_medrg import MedRGConfig
    from medrg.modeling_medrg.modeling_medrg import MedRGForReportGrounding, MedRGGroundingOutput, MedRGOutput
    from medrg.processing.data import load_grounding_dataset
    from medrg.processing.image_processing_medrg import MedRGImageProcessor
    from medrg.processing.pipeline_medrg import ReportGroundingPipeline
    from medrg.processing.processing_medrg import MedRGProcessor
    from medrg.training.collator import MedRGDataCollator


def register() -> None:
    """Register MedRG with transformers now (Auto classes, `save_pretrained` auto_map, the pipeline task).

    Not needed in normal use (it happens on demand, see the module docstring); call it to pay the
    import cost (~5 s: torch, transformers' pipelines) at a moment of your choosing.
    """
    _register_pending(force=True)


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _LAZY_MODULES:
        return importlib.import_module(f"medrg.{name}")
    raise AttributeError(f"module 'medrg' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_LAZY_MODULES))


# --- registration with transformers, on demand -------------------------------------------------------------
# Each piece runs once, as soon as one of its trigger modules is imported (transformers' Auto module or the
# MedRG class it registers) and no transformers/medrg import is still running in this thread (so that no module
# is used half-initialised).
_CONFIG_MODULE = "medrg.modeling_medrg.configuration_medrg"
_MODEL_MODULE = "medrg.modeling_medrg.modeling_medrg"
_IMAGE_PROCESSOR_MODULE = "medrg.processing.image_processing_medrg"
_PROCESSOR_MODULE = "medrg.processing.processing_medrg"
_PIPELINE_MODULE = "medrg.processing.pipeline_medrg"


def _register_config() -> None:
    from transformers import AutoConfig

    from medrg.modeling_medrg.configuration_medrg import MedRGConfig

    AutoConfig.register("medrg", MedRGConfig, exist_ok=True)
    MedRGConfig.register_for_auto_class()  # so save_pretrained writes auto_map and copies the hub code


def _register_model() -> None:
    from transformers import AutoModel

    from medrg.modeling_medrg.configuration_medrg import MedRGConfig
    from medrg.modeling_medrg.modeling_medrg import MedRGForReportGrounding

    AutoModel.register(MedRGConfig, MedRGForReportGrounding, exist_ok=True)
    MedRGForReportGrounding.register_for_auto_class("AutoModel")


def _register_image_processor() -> None:
    from transformers import AutoImageProcessor

    from medrg.modeling_medrg.configuration_medrg import MedRGConfig
    from medrg.processing.image_processing_medrg import MedRGImageProcessor

    AutoImageProcessor.register(
        MedRGConfig, image_processor_classes={"pil": MedRGImageProcessor}, exist_ok=True
    )
    MedRGImageProcessor.register_for_auto_class("AutoImageProcessor")


def _register_processor() -> None:
    from transformers import AutoProcessor

    from medrg.modeling_medrg.configuration_medrg import MedRGConfig
    from medrg.processing.processing_medrg import MedRGProcessor

    AutoProcessor.register(MedRGConfig, MedRGProcessor, exist_ok=True)
    MedRGProcessor.register_for_auto_class()


def _register_pipeline() -> None:
    from transformers import AutoModel
    from transformers.pipelines import PIPELINE_REGISTRY

    from medrg.processing.pipeline_medrg import ReportGroundingPipeline

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


_AUTO = "transformers.models.auto."
# (trigger modules, action), in dependency order
_PIECES: list[tuple[tuple[str, ...], Callable[[], None]]] = [
    ((_AUTO + "configuration_auto", _CONFIG_MODULE), _register_config),
    ((_AUTO + "modeling_auto", _MODEL_MODULE), _register_model),
    ((_AUTO + "image_processing_auto", _IMAGE_PROCESSOR_MODULE), _register_image_processor),
    ((_AUTO + "processing_auto", _PROCESSOR_MODULE), _register_processor),
    (("transformers.pipelines", _PIPELINE_MODULE), _register_pipeline),
]
_PENDING = list(_PIECES)
_LOCK = threading.RLock()
_STATE = threading.local()  # .depth: transformers/medrg module bodies executing in this thread; .busy


def _register_pending(force: bool = False) -> None:
    """Run every pending piece whose trigger module is imported (all of them with `force`)."""
    # never wait here: another thread registering may be waiting for an import lock this thread holds
    if not _LOCK.acquire(blocking=force):  # medrg.register() waits for the other thread
        return
    try:
        if getattr(_STATE, "busy", False):
            return  # the imports of a running piece come back here
        _STATE.busy = True
        try:
            progress = True
            while progress and _PENDING:
                progress = False
                for piece in list(_PENDING):
                    triggers, action = piece
                    if force or any(name in sys.modules for name in triggers):
                        _PENDING.remove(piece)
                        try:
                            action()
                        except BaseException:
                            _PENDING.insert(0, piece)  # medrg.register() tries it again
                            raise
                        progress = True
        finally:
            _STATE.busy = False
    finally:
        _LOCK.release()


class _HookLoader:
    """Wraps a module's loader: after the module body ran, run the pending registration when no watched import
    is still in progress. Everything else is the wrapped loader's (``get_source``, resource readers, ...)."""

    def __init__(self, loader) -> None:
        self._loader = loader

    def __getattr__(self, name: str):
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        _STATE.depth = getattr(_STATE, "depth", 0) + 1
        try:
            self._loader.exec_module(module)
        finally:
            _STATE.depth -= 1
        if _STATE.depth == 0 and _PENDING:
            try:
                _register_pending()
            except Exception as error:  # do not fail the user's (transformers) import because of medrg
                warnings.warn(
                    f"medrg could not register with transformers ({type(error).__name__}: {error}); "
                    "call medrg.register() to see the full error",
                    RuntimeWarning,
                    stacklevel=2,
                )


class _RegistrationHook:
    """A `sys.meta_path` finder that only wraps the loaders of ``transformers`` and ``medrg`` modules."""

    def find_spec(self, fullname: str, path=None, target=None):
        if not _PENDING or not (
            fullname.startswith(("transformers.", "medrg.")) or fullname == "transformers"
        ):
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _HookLoader(spec.loader)
        return spec


def _install_hook() -> None:
    if not any(isinstance(finder, _RegistrationHook) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RegistrationHook())
    # parts of transformers imported before medrg: register them now, unless an import is still running
    initializing = any(
        getattr(getattr(module, "__spec__", None), "_initializing", False)
        for name, module in list(sys.modules.items())
        if name.startswith("transformers") and name != "medrg"
    )
    if not initializing:
        _register_pending()


_install_hook()

__all__ = [
    "DEFAULT_MODEL_DIR",
    "TASK",
    "MedRGConfig",
    "MedRGDataCollator",
    "MedRGForReportGrounding",
    "MedRGGroundingOutput",
    "MedRGImageProcessor",
    "MedRGOutput",
    "MedRGProcessor",
    "ReportGroundingPipeline",
    "build_medrg_from_backbones",
    "build_tiny_medrg",
    "load_grounding_dataset",
    "load_medrg",
    "load_pipeline",
    "register",
    "save_hub_folder",
]
