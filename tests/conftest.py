"""Shared fixtures; transformers deprecation messages fail the test that triggers them."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from transformers import LogitsProcessor, LogitsProcessorList

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


class _DeprecationCollector(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "deprecat" in message.lower():
            self.messages.append(message)


@pytest.fixture(autouse=True)
def transformers_deprecations_are_errors():
    """transformers reports many deprecations through its logger (not the warnings module): fail on them too.
    Python-level DeprecationWarning/FutureWarning from transformers are errors through pyproject's filterwarnings."""
    collector = _DeprecationCollector()
    logger = logging.getLogger("transformers")
    logger.addHandler(collector)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", category=FutureWarning, module=r"transformers(\.|$)")
        warnings.filterwarnings("error", category=DeprecationWarning, module=r"transformers(\.|$)")
        yield
    logger.removeHandler(collector)
    if collector.messages:
        pytest.fail("transformers deprecation message(s): " + " | ".join(collector.messages))


@pytest.fixture(scope="session")
def tiny():
    """The tiny random model and processor (shared; tests that train build their own)."""
    import medrg

    model, processor = medrg.build_tiny_medrg(seed=0)
    model.eval()
    return model, processor


def bfloat16_attention_runs() -> bool:
    """Whether this torch runs bfloat16 scaled-dot-product attention on the CPU. torch 2.13's CPU kernel raises
    "pack_vnni2 is only supported when avx512 is supported" where `ATEN_CPU_CAPABILITY` forces a lower level than
    an AVX-512 CPU has (three lines of plain torch show it); a CPU without AVX-512 never takes that kernel."""
    import torch

    q = torch.zeros(1, 1, 300, 16, dtype=torch.bfloat16)
    try:
        torch.nn.functional.scaled_dot_product_attention(q, q, q)
    except RuntimeError as error:
        if "pack_vnni2" not in str(error):
            raise
        return False
    return True


def xray_like(height: int = 96, width: int = 80, seed: int = 0, boxes=()) -> np.ndarray:
    """A uint8 radiograph-like array with bright rectangles at the given xyxy boxes."""
    rng = np.random.RandomState(seed)
    image = (rng.rand(height, width) * 40 + 30).astype(np.uint8)
    for x0, y0, x1, y1 in boxes:
        image[int(y0) : int(y1), int(x0) : int(x1)] = 220
    return image


def tiny_train_config(output_dir, train_examples: int = 32, validation_examples: int = 4, **sections) -> dict:
    """A `medrg.training.train` config for the tiny model on a small SynthCXR; `sections` update its sections
    (e.g. `training={"max_steps": 8}`, `lora={...}`)."""
    config = {
        "model": {"source": "tiny", "image_size": 64, "seed": 0},
        "data": {
            "sources": [
                {
                    "name": "synthcxr",
                    "options": {
                        "examples_per_split": {"train": train_examples, "validation": validation_examples},
                        "image_size": 64,
                        "seed": 0,
                        "progress": False,
                    },
                }
            ]
        },
        "training": {
            "output_dir": str(output_dir),
            "max_steps": 4,
            "per_device_train_batch_size": 4,
            "learning_rate": 3e-3,
            "logging_steps": 2,
            "save_strategy": "no",
            "use_cpu": True,
            "torch_threads": 1,
            "seed": 0,
        },
        "export": {"evaluate_splits": [], "max_eval_samples": validation_examples},
    }
    for name, values in sections.items():
        config.setdefault(name, {}).update(values)
    return config


def published_text(dd) -> str:
    """Every published value except the pixels, as one string."""
    return repr([ds.remove_columns("image").to_list() for ds in dd.values()])


def pred(box, score=0.9, label="finding") -> dict:
    """A prediction record as the pipeline writes it: xyxy ``box`` in pixels, ``score`` in [0, 1]."""
    return {"label": label, "score": score, "box": dict(zip(("xmin", "ymin", "xmax", "ymax"), box))}


def finding(*boxes, phrase="finding", category="A") -> dict:
    """A reference finding as the datasets hold it: one or more xyxy pixel ``boxes``."""
    return {"phrase": phrase, "category": category, "boxes": [list(b) for b in boxes]}


@contextlib.contextmanager
def time_limit(seconds: float):
    """Fail with TimeoutError instead of hanging when the body runs longer than ``seconds``.

    The alarm handler runs between Python bytecodes, which is where a pure-Python loop that never ends spins.
    """

    def expire(signum, frame):
        raise TimeoutError(f"no answer within {seconds} s (hang)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


DICOM_IDENTIFYING_TAGS = ("Doe^Jane", "SECRET-PID-123", "19990101", "St Elsewhere")


def write_dicom(path, pixels, photometric="MONOCHROME2", *, slope=None, intercept=None, window=None):
    """A minimal secondary-capture DICOM (with identifying tags that must never reach an output).

    `pixels` `(H, W)` or `(F, H, W)` (frames): uint8 is written as 8-bit, anything else as 12-bit in uint16;
    `slope`/`intercept` are the rescale tags, `window` = (centre, width) the VOI tags. Returns the path.
    """
    from pathlib import Path

    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    path = Path(path)
    pixels = np.asarray(pixels)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.StudyDate, ds.InstitutionName = DICOM_IDENTIFYING_TAGS
    ds.Modality = "CR"
    ds.Rows, ds.Columns = pixels.shape[-2:]
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    if pixels.dtype == np.uint8:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    else:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        pixels = pixels.astype(np.uint16)
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = pixels.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


class ForceAnswers(LogitsProcessor):
    """A logits processor that forces a fixed continuation per row (then EOS forever)."""

    def __init__(self, answers, eos, prompt_length):
        self.answers, self.eos, self.prompt_length = answers, eos, prompt_length

    def __call__(self, input_ids, scores):
        import torch

        step = input_ids.shape[1] - self.prompt_length
        forced = torch.full_like(scores, float("-inf"))
        for row, answer in enumerate(self.answers):
            forced[row, answer[step] if step < len(answer) else self.eos] = 0
        return forced


def forced_generation(model, inputs, logits_processor: LogitsProcessor, **kwargs):
    """``model.generate_grounding`` on a processed batch under one logits processor (``kwargs``: the rest)."""
    return model.generate_grounding(
        inputs["input_ids"],
        inputs["pixel_values"],
        inputs["attention_mask"],
        logits_processor=LogitsProcessorList([logits_processor]),
        **kwargs,
    )


class CountForwards:
    """Counts the forwards of a module (a forward pre-hook) until ``remove()``."""

    def __init__(self, module):
        self.calls = 0
        self._handle = module.register_forward_pre_hook(self._count)

    def _count(self, module, args):
        self.calls += 1

    def remove(self):
        self._handle.remove()


def run_fresh_python(script: str, *args: str, modules_cache: Path, stdin: str | None = None) -> dict:
    """Run ``script`` with ``args`` in a fresh offline Python process whose remote code lands in
    ``modules_cache`` (working folder: its parent); returns the JSON object its last line of output prints."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(modules_cache)}
    result = subprocess.run(
        [sys.executable, "-c", script, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=str(modules_cache.parent),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def tiny_sharp():
    """The tiny random model with its box decoder's matrices re-drawn at unit gain (std 1/sqrt(fan_in)): with the
    model's small initialisation the boxes sit within ~1e-4 of 0.5 whatever the input, which would make a
    comparison at 1e-4 vacuous. (Much larger weights amplify float noise: the KV-cached and the full pass differ
    by ~5e-7 in the LM state, as any two LM passes do.)"""
    import torch

    import medrg

    model, processor = medrg.build_tiny_medrg(seed=0)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.box_decoder.parameters():
            if parameter.dim() > 1:
                parameter.copy_(
                    torch.randn(parameter.shape, generator=generator) / parameter.shape[-1] ** 0.5
                )
    return model.eval(), processor


@pytest.fixture(scope="module")
def default_model():
    """The embedded default model in eval mode, with its processor."""
    import medrg

    model, processor = medrg.load_medrg("default")
    return model.eval(), processor
