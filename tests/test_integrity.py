"""Checkpoint manifests: what was written is what is read, or an error says how to restore it."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from pretrain_knowledge import integrity, layout


def _checkpoints(root: Path, mode: str = "finetune", n: int = 3) -> tuple[Path, list[Path]]:
    folder = root / layout.checkpoint_dir("exp", mode)
    folder.mkdir(parents=True)
    files = []
    for epoch in range(n):
        path = folder / layout.checkpoint_name(epoch)
        path.write_bytes(os.urandom(1000 + epoch))
        files.append(path)
    manifest = root / layout.checkpoint_manifest("exp", mode)
    integrity.write_manifest(files, manifest)
    return manifest, files


def test_manifest_records_size_and_sha256(tmp_path: Path) -> None:
    manifest, files = _checkpoints(tmp_path)
    data = json.loads(manifest.read_text())
    assert manifest == integrity.manifest_of(files[0])
    for path in files:
        entry = data["files"][path.name]
        assert entry == {"bytes": path.stat().st_size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    assert integrity.problems(manifest) == []
    for path in files:
        integrity.verify_file(path)


def test_missing_truncated_and_overwritten_files_are_found(tmp_path: Path) -> None:
    manifest, files = _checkpoints(tmp_path)
    files[0].unlink()
    files[1].write_bytes(files[1].read_bytes()[:10])
    found = integrity.problems(manifest)
    assert any("epoch-000.pt is missing" in p for p in found)
    assert any("epoch-001.pt has 10 bytes, 1001 were written" in p for p in found)
    files[2].write_bytes(bytes(files[2].stat().st_size))  # same size: only the checksum tells
    assert not any("epoch-002" in p for p in integrity.problems(manifest))
    with pytest.raises(integrity.IntegrityError, match=f"differs.*rm {manifest} && snakemake"):
        integrity.verify_file(files[2])


def test_workflow_check_stops_with_the_restoring_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    manifest, files = _checkpoints(Path("."))
    integrity.check_checkpoints({"exp": None})  # intact: nothing to say
    files[1].write_bytes(b"x")
    with pytest.raises(integrity.IntegrityError) as err:
        integrity.check_checkpoints({"exp": None})
    message = str(err.value)
    assert "epoch-001.pt has 1 bytes" in message
    assert f"rm {Path(layout.checkpoint_manifest('exp', 'finetune'))} && snakemake" in message


def test_a_checkpoint_without_manifest_is_read_unchecked(tmp_path: Path) -> None:
    path = tmp_path / "loose" / "epoch-000.pt"
    path.parent.mkdir()
    path.write_bytes(b"anything")
    integrity.verify_file(path)  # e.g. files made by hand with the library


def test_a_foreign_manifest_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "x.json"
    bad.write_text('{"files": {}}')
    with pytest.raises(integrity.IntegrityError, match="not a manifest"):
        integrity.problems(bad)
