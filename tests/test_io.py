"""Atomic writers: a failed write leaves the previous output intact and no temp file behind."""

from __future__ import annotations

import os
import stat

import pandas as pd
import pytest
import torch

from pretrain_knowledge.io import atomic_path, save_torch, write_json, write_parquet


def test_failed_write_keeps_previous_output(tmp_path) -> None:
    dest = tmp_path / "out.json"
    write_json({"done": 1}, dest)
    with pytest.raises(RuntimeError):
        with atomic_path(dest) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert dest.read_text() == '{\n  "done": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_outputs_get_the_umask_mode_not_mkstemps_0600(tmp_path) -> None:
    old = os.umask(0o022)
    try:
        save_torch({"w": torch.ones(2)}, tmp_path / "c.pt")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "c.pt").stat().st_mode) == 0o644


def test_parquet_and_torch_round_trip(tmp_path) -> None:
    frame = pd.DataFrame({"a": [1, 2], "b": [0.5, -1.0]})
    write_parquet(frame, tmp_path / "sub" / "f.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "sub" / "f.parquet"), frame)
    save_torch({"x": torch.arange(3)}, tmp_path / "t.pt")
    assert torch.equal(torch.load(tmp_path / "t.pt", weights_only=True)["x"], torch.arange(3))
