"""Hub round trip in a fresh process where `medrg` cannot be imported, and the hub-code import rule."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT, run_fresh_python, xray_like
from PIL import Image
from transformers import pipeline

MODEL_HUB_DIR = REPO_ROOT / "modeling_medrg"
PROCESSOR_HUB_DIR = REPO_ROOT / "processing"
REPORTS = ["Nodule in the right upper lobe. No effusion.", "Consolidation in the left lower lobe."]

FRESH_PROCESS = r"""
import json, sys
sys.modules["medrg"] = None  # any `import medrg` now fails: only the saved hub code may be used
import torch
from transformers import AutoConfig, AutoModel, AutoProcessor, pipeline
folder, images = sys.argv[1], sys.argv[2:]
config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
inputs = processor(images=[__import__("PIL.Image").Image.open(p) for p in images], text=json.loads(sys.stdin.read()),
                   return_tensors="pt")
with torch.no_grad():
    out = model(**inputs)
torch.save(out.logits, "fresh_logits.pt")  # in the working directory the test gives
pipe = pipeline("report-grounding", model=folder, trust_remote_code=True)
records = pipe([{"image": p, "report": r} for p, r in zip(images, json.loads(open(folder + "/reports.json").read()))],
               max_new_tokens=12)
print(json.dumps({
    "config_class": type(config).__name__,
    "model_module": type(model).__module__,
    "processor_module": type(processor).__module__,
    "image_processor_module": type(processor.image_processor).__module__,
    "medrg_loaded": any(name == "medrg" or name.startswith("medrg.") for name in sys.modules if sys.modules[name] is not None),
    "records": records,
}))
"""


@pytest.fixture(scope="module")
def saved_folder(tiny, tmp_path_factory):
    model, processor = tiny
    folder = tmp_path_factory.mktemp("medrg_hub")
    pipe = pipeline("report-grounding", model=model, processor=processor)
    pipe.save_pretrained(folder)  # one hub-folder layout: processor, code, custom_pipelines
    images = []
    for index in range(2):
        path = folder / f"cxr_{index}.png"
        Image.fromarray(xray_like(96 + 8 * index, 80, seed=index)).save(path)
        images.append(str(path))
    (folder / "reports.json").write_text(json.dumps(REPORTS))
    return folder, images


def test_saved_folder_holds_flat_hub_code_and_auto_map(saved_folder):
    folder, _ = saved_folder
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"]["AutoModel"].endswith("modeling_medrg.MedRGForReportGrounding")
    assert config["auto_map"]["AutoConfig"].endswith("configuration_medrg.MedRGConfig")
    assert config["custom_pipelines"]["report-grounding"]["impl"].endswith(
        "pipeline_medrg.ReportGroundingPipeline"
    )
    assert "default" not in config["custom_pipelines"]["report-grounding"]  # no local install path leaks
    processor_config = json.loads((folder / "processor_config.json").read_text())
    assert processor_config["auto_map"]["AutoProcessor"].endswith("processing_medrg.MedRGProcessor")
    image_processor_config = processor_config["image_processor"]
    assert image_processor_config["image_processor_type"] == "MedRGImageProcessor"
    assert image_processor_config["auto_map"]["AutoImageProcessor"].endswith(
        "image_processing_medrg.MedRGImageProcessor"
    )
    assert image_processor_config["image_size"] == 64
    entry_points = ["modeling_medrg.py", "configuration_medrg.py", "processing_medrg.py"]
    entry_points += ["image_processing_medrg.py", "pipeline_medrg.py"]
    needed = _sibling_closure(MODEL_HUB_DIR, entry_points[:2]) | _sibling_closure(
        PROCESSOR_HUB_DIR, entry_points[2:]
    )
    assert set(entry_points) <= needed
    for name in sorted(needed) + ["model.safetensors"]:
        assert (folder / name).is_file(), name
    assert not list(folder.glob("*.bin"))


def test_fresh_process_without_medrg_loads_and_matches(tiny, saved_folder):
    model, processor = tiny
    folder, images = saved_folder
    fresh = run_fresh_python(
        FRESH_PROCESS,
        str(folder),
        *images,
        modules_cache=folder.parent / "modules_cache",
        stdin=json.dumps(REPORTS),
    )
    assert fresh["medrg_loaded"] is False
    assert fresh["config_class"] == "MedRGConfig"
    assert "medrg" not in fresh["model_module"].split(".")[:1] and fresh["model_module"].endswith(
        "modeling_medrg"
    )
    assert fresh["processor_module"].endswith("processing_medrg")
    assert fresh["image_processor_module"].endswith("image_processing_medrg")
    inputs = processor(images=[Image.open(p) for p in images], text=REPORTS)
    with torch.no_grad():
        out = model(**inputs)
    # every logit, to float32 rounding: another process may sum in another order (thread count, kernels)
    fresh_logits = torch.load(folder.parent / "fresh_logits.pt")
    assert fresh_logits.shape == out.logits.shape
    torch.testing.assert_close(fresh_logits, out.logits, rtol=1e-5, atol=1e-5)
    here = pipeline("report-grounding", model=model, processor=processor)(
        [{"image": p, "report": r} for p, r in zip(images, REPORTS)], max_new_tokens=12
    )
    assert fresh["records"] == here


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(module, relative level, guarded) of every import; guarded = inside a function AND a try block, which
    transformers' remote-code import check skips (an optional dependency with a clear error when missing)."""
    tree = ast.parse(path.read_text())
    found = []

    def visit(node, in_function: bool, in_try: bool):
        if isinstance(node, ast.Import):
            found.extend((alias.name, 0, in_function and in_try) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.append((node.module or "", node.level, in_function and in_try))
        for child in ast.iter_child_nodes(node):
            visit(
                child,
                in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)),
                in_try or isinstance(node, ast.Try),
            )

    visit(tree, False, False)
    return found


def _sibling_closure(folder: Path, names: list[str]) -> set[str]:
    """The hub files `names` and every sibling file they import (`from .x import y`), transitively."""
    seen, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += [f"{module}.py" for module, level, _ in _imports(folder / name) if level == 1]
    return seen


def _module_level_calls(path: Path) -> list[str]:
    """Names of the functions called when the module is imported (outside function bodies)."""
    calls = []

    def visit(node):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            return
        if isinstance(node, ast.Call):
            func = node.func
            calls.append(func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", ""))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return calls


def _hub_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.py") if p.name != "__init__.py")


# numpy and Pillow are hard dependencies of transformers' image stack; the processor needs them to decode
# 16-bit radiographs. The model files stay on torch + transformers (and huggingface_hub, a hard dependency of
# transformers whose `strict` validates the config, as in transformers' own configs). pydicom is optional: only
# imported inside a function, in a try block that turns its absence into a clear error.
ALLOWED = {
    MODEL_HUB_DIR: {"torch", "transformers", "huggingface_hub"},
    PROCESSOR_HUB_DIR: {"torch", "transformers", "numpy", "PIL"},
}
OPTIONAL = {MODEL_HUB_DIR: set(), PROCESSOR_HUB_DIR: {"pydicom"}}
FILE_IO_CALLS = {"open", "read_text", "read_bytes", "write_text", "write_bytes", "urlopen", "dcmread", "load"}


@pytest.mark.parametrize("folder", [MODEL_HUB_DIR, PROCESSOR_HUB_DIR], ids=["model", "processor"])
def test_hub_files_import_only_allowed_modules(folder):
    siblings = {p.stem for p in _hub_files(folder)}
    for path in _hub_files(folder):
        for module, level, guarded in _imports(path):
            where = f"{path.name}: {'.' * level}{module}"
            if level:
                assert level == 1 and module in siblings, f"{where} is not a flat sibling import"
                continue
            top = module.split(".")[0]
            if top in sys.stdlib_module_names or module == "__future__":
                continue
            allowed = ALLOWED[folder] | (OPTIONAL[folder] if guarded else set())
            assert top in allowed, f"{where} imports a package hub code may not use (here)"
            assert not any(part.startswith("_") for part in module.split(".")), f"{where} is private API"
        source = path.read_text()
        assert ".cuda(" not in source, f"{path.name} calls .cuda()"
        io_at_import = FILE_IO_CALLS & set(_module_level_calls(path))
        assert not io_at_import, f"{path.name} does file I/O at import: {io_at_import}"


def test_pipeline_uses_no_private_transformers_attributes():
    tree = ast.parse((PROCESSOR_HUB_DIR / "pipeline_medrg.py").read_text())
    # the documented override points of a custom pipeline (class flags and the four steps)
    overrides = {"_load_processor", "_load_image_processor", "_load_feature_extractor", "_load_tokenizer"}
    overrides |= {"_sanitize_parameters", "_forward"}
    private = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
    }
    assigned = {
        target.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    assert private - overrides - assigned == set()


def test_processor_hub_code_does_not_import_model_code():
    for path in _hub_files(PROCESSOR_HUB_DIR):
        for module, _, _ in _imports(path):
            assert "modeling" not in module and "configuration" not in module, f"{path.name}: {module}"


def test_model_and_processor_hub_file_names_do_not_collide():
    model_names = {p.name for p in _hub_files(MODEL_HUB_DIR)}
    processor_names = {p.name for p in _hub_files(PROCESSOR_HUB_DIR)}
    assert not model_names & processor_names
