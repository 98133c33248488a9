"""Complete checkpoints only: `Trainer` writes `checkpoint-N/` file by file, so a run killed mid-save leaves a
folder with some files. MedRG writes a marker file into the folder after everything else (atomically, by
`os.replace`); resume takes the newest folder that has it and sets incomplete folders aside."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

COMPLETE_MARKER = "medrg_checkpoint_complete.json"
INCOMPLETE_PREFIX = "incomplete-"
_CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")

logger = logging.getLogger("medrg.training")


def mark_complete(folder: str | os.PathLike, global_step: int) -> None:
    """Write the completeness marker into `folder` (last, atomically: a temporary file then `os.replace`); it
    records every file's size, so that a file truncated later (a partial copy, a full disk) is noticed."""
    folder = Path(folder)
    files = sorted(p.name for p in folder.iterdir() if p.name != COMPLETE_MARKER)
    sizes = {name: (folder / name).stat().st_size for name in files if (folder / name).is_file()}
    temporary = folder / f".{COMPLETE_MARKER}.tmp"
    with open(temporary, "w") as handle:
        json.dump({"global_step": int(global_step), "files": files, "sizes": sizes}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, folder / COMPLETE_MARKER)


def checkpoint_problem(folder: str | os.PathLike) -> str | None:
    """Why `folder` cannot be resumed from (naming the file at fault), or None when it is complete: it has a
    readable marker, every file the marker lists is there with the size it recorded, and every safetensors file
    is as long as its header says."""
    from medrg.loading import ModelLoadError, check_safetensors

    folder = Path(folder)
    marker = folder / COMPLETE_MARKER
    try:
        record = json.loads(marker.read_text())
    except (OSError, ValueError, RecursionError):
        return f"no readable {COMPLETE_MARKER} (written by a run that was killed while saving)"
    if not isinstance(record, dict):
        return f"{marker} is not a MedRG completeness marker"
    for name in record.get("files", []):
        if not (folder / name).exists():
            return f"{folder / name} is missing"
    sizes = record.get("sizes")
    for name, size in sizes.items() if isinstance(sizes, dict) else ():
        file = folder / name
        if file.is_file() and file.stat().st_size != size:
            return f"{file} is {file.stat().st_size} bytes, {size} when the checkpoint was saved (truncated?)"
    for file in sorted(folder.glob("*.safetensors")):
        try:
            check_safetensors(file)
        except ModelLoadError as error:
            return str(error)
    return None


def is_complete(folder: str | os.PathLike) -> bool:
    """True when `folder` is a complete checkpoint (see `checkpoint_problem`)."""
    return checkpoint_problem(folder) is None


def checkpoint_folders(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """`(step, folder)` of every `checkpoint-N` folder in `output_dir`, by step."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = [
        (int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := _CHECKPOINT_NAME.match(p.name))
    ]
    return sorted(found)


def last_complete_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The complete `checkpoint-N` folder with the highest N, or None."""
    complete = [folder for _, folder in checkpoint_folders(output_dir) if is_complete(folder)]
    return complete[-1] if complete else None


def set_aside_incomplete(output_dir: str | os.PathLike) -> list[Path]:
    """Rename every incomplete `checkpoint-N` to `incomplete-checkpoint-N` (kept for inspection, invisible to
    `Trainer`'s checkpoint rotation and to resume); returns the new paths."""
    moved = []
    for _, folder in checkpoint_folders(output_dir):
        problem = checkpoint_problem(folder)
        if problem is None:
            continue
        target = folder.with_name(INCOMPLETE_PREFIX + folder.name)
        suffix = 1
        while target.exists():
            target = folder.with_name(f"{INCOMPLETE_PREFIX}{folder.name}.{suffix}")
            suffix += 1
        os.replace(folder, target)
        logger.warning("set aside the incomplete checkpoint %s as %s: %s", folder.name, target.name, problem)
        moved.append(target)
    return moved


def resolve_resume_checkpoint(
    request: str | bool | None, output_dir: str | os.PathLike, set_aside: bool = True
) -> Path | None:
    """The folder to resume from: `True`/"true"/"last" -> the last complete checkpoint of `output_dir` (with
    `set_aside`, incomplete ones are renamed first); a path -> that folder if it is complete. Raises ValueError
    naming `training.resume_from_checkpoint` otherwise."""
    if request in (None, False, "", "False", "false"):
        return None
    if request is True or str(request).lower() in ("true", "last"):
        if set_aside and int(os.environ.get("RANK", "0")) == 0:
            set_aside_incomplete(output_dir)
        checkpoint = last_complete_checkpoint(output_dir)
        if checkpoint is None:
            raise ValueError(
                f"training.resume_from_checkpoint: no complete checkpoint-N folder in {str(output_dir)!r} to resume "
                "from (checkpoints are written by training.save_strategy / save_steps; start without --resume)"
            )
        if set_aside:
            logger.warning(
                "resuming from %s, the last complete checkpoint in %s", checkpoint.name, output_dir
            )
        return checkpoint
    checkpoint = Path(request)
    problem = checkpoint_problem(checkpoint)
    if problem is not None:
        raise ValueError(
            f"training.resume_from_checkpoint {str(checkpoint)!r} is not a complete MedRG checkpoint: {problem}"
        )
    return checkpoint


__all__ = [
    "COMPLETE_MARKER",
    "checkpoint_problem",
    "checkpoint_folders",
    "is_complete",
    "last_complete_checkpoint",
    "mark_complete",
    "resolve_resume_checkpoint",
    "set_aside_incomplete",
]
