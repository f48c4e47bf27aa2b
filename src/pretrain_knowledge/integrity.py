"""Integrity of what earlier stages wrote: checkpoint manifests, checked before any job runs.

Snakemake sees a training job's checkpoints only as one directory, so a checkpoint that is later
deleted, truncated or replaced would go unnoticed until a job reads it, and deleting it would not
make Snakemake rerun the training. Each training job therefore writes a manifest beside its folder
(``results/<experiment>/checkpoints/<mode>.json``) with the size and SHA-256 of every checkpoint:

* when the workflow is loaded, :func:`check_checkpoints` compares every existing manifest with the
  files (existence and size: cheap enough for hundreds of checkpoints) and stops with the file and
  the command that restores it, before any job runs;
* every stage that reads a checkpoint verifies its SHA-256 (:func:`verify_file`), which also
  catches a same-size corruption.

The restoring command deletes the manifest and runs the workflow again: the manifest is an output
of the training job that owns the folder, so exactly that job reruns, and everything built from it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from . import layout
from .io import write_json

MANIFEST_FORMAT = "pretrain_knowledge.manifest/1"


class IntegrityError(RuntimeError):
    """A file that a manifest lists is missing or differs from what was written."""


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(files: Iterable[str | os.PathLike[str]], path: str | os.PathLike[str]) -> None:
    """List ``files`` (all in one folder) with their sizes and SHA-256, atomically."""
    entries = {}
    for file in files:
        p = Path(file)
        entries[p.name] = {"bytes": p.stat().st_size, "sha256": file_digest(p)}
    folder = {Path(f).parent for f in files}
    write_json({"format": MANIFEST_FORMAT, "folder": str(folder.pop()) if folder else "", "files": entries}, path)


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise IntegrityError(f"{path}: unreadable manifest ({err}); {rerun_hint(path)}") from err
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise IntegrityError(f"{path} is not a manifest of this project; {rerun_hint(path)}")
    return data


def rerun_hint(manifest: str | os.PathLike[str]) -> str:
    return f"restore it by rerunning the job that wrote it: rm {manifest} && snakemake (with your usual options)"


def manifest_of(checkpoint: str | os.PathLike[str]) -> Path:
    """The manifest beside a checkpoint's folder (see :func:`pretrain_knowledge.layout.checkpoint_manifest`)."""
    folder = Path(checkpoint).parent
    return folder.with_name(folder.name + ".json")


def problems(manifest: str | os.PathLike[str]) -> list[str]:
    """What no longer matches a manifest, by existence and size (cheap, no hashing)."""
    data = read_manifest(manifest)
    folder = Path(manifest).with_suffix("")
    out = []
    for name, entry in sorted(data["files"].items()):
        path = folder / name
        if not path.is_file():
            out.append(f"{path} is missing")
        elif path.stat().st_size != entry["bytes"]:
            out.append(f"{path} has {path.stat().st_size} bytes, {entry['bytes']} were written (truncated or replaced)")
    return out


def verify_file(path: str | os.PathLike[str]) -> None:
    """Check a checkpoint against its manifest's SHA-256, when it has a manifest."""
    manifest = manifest_of(path)
    if not manifest.is_file():
        return
    entry = read_manifest(manifest)["files"].get(Path(path).name)
    if entry is None:
        raise IntegrityError(f"{path} is not listed in {manifest}; {rerun_hint(manifest)}")
    if not Path(path).is_file() or file_digest(path) != entry["sha256"]:
        raise IntegrityError(
            f"{path} differs from what its training job wrote (SHA-256 in {manifest}); {rerun_hint(manifest)}"
        )


def check_checkpoints(experiments: Mapping[str, Any]) -> None:
    """Stop before any job runs when a checkpoint listed in a manifest is missing or truncated."""
    found = []
    for name in experiments:
        for mode in layout.MODES:
            manifest = Path(layout.checkpoint_manifest(name, mode))
            if manifest.is_file():
                issues = problems(manifest)
                if issues:
                    found.append((manifest, issues))
    if found:
        lines = [f"  {issue}" for _, issues in found for issue in issues]
        manifests = " ".join(str(m) for m, _ in found)
        raise IntegrityError(
            "checkpoints differ from their manifests:\n"
            + "\n".join(lines)
            + f"\nRestore them by rerunning their training jobs: rm {manifests} && snakemake "
            "(with your usual options, e.g. --cores 2)"
        )
