"""Stage code digests: derived from the import graph, blind to comments and docstrings."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from pretrain_knowledge import provenance
from pretrain_knowledge.cli import STAGES

STAGE_MODULES = sorted({module for module, _ in STAGES.values()})


_LOADER = """
import importlib, json, sys
sys.path.insert(0, sys.argv[1])
out = {}
for stage in sys.argv[2:]:
    for name in [m for m in sys.modules if m.startswith("pretrain_knowledge")]:
        del sys.modules[name]
    importlib.import_module("pretrain_knowledge.cli." + stage)
    out[stage] = sorted(m for m in sys.modules if m.startswith("pretrain_knowledge"))
print(json.dumps(out))
"""


LAZY = {"figure": {"selection_text", "selection", "game", "data", "data.annotations", "data.idx", "data.images", "data.text"}}
"""Modules a stage imports inside a function (the examples figure's selection, which needs torch)."""


def test_closure_is_what_python_loads() -> None:
    """The package modules Python actually loads for each stage (an independent reference): stage
    modules import at module level, apart from the function-level imports in ``LAZY``, which the
    closure must also cover. One process, with the package unloaded between stages (third-party
    modules stay cached)."""
    proc = subprocess.run(
        [sys.executable, "-c", _LOADER, str(REPO / "src"), *STAGE_MODULES], capture_output=True, text=True, check=True
    )
    for stage, loaded in json.loads(proc.stdout).items():
        names = {m.removeprefix("pretrain_knowledge").lstrip(".") for m in loaded}
        assert set(provenance.import_closure(f"cli.{stage}")) == names | LAZY.get(stage, set()), stage
        assert not names & LAZY.get(stage, set()), stage


def test_most_figures_do_not_import_torch() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "import sys, pretrain_knowledge.cli.figure; print('torch' in sys.modules)"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert proc.stdout.strip() == "False"


def test_stage_closures_are_tight() -> None:
    figure = provenance.stage_modules("figure")
    assert "plots" in figure and not any(m.startswith("interactions") for m in figure)
    sparsify = provenance.stage_modules("sparsify")
    assert "interactions.lp" in sparsify and "training" not in sparsify and "plots" not in sparsify
    assert not set(provenance.CONFIG_LAYER) & set(provenance.stage_modules("games"))


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    copy = tmp_path / "pretrain_knowledge"
    shutil.copytree(REPO / "src" / "pretrain_knowledge", copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(provenance, "ROOT", copy)
    provenance._imports.cache_clear()
    yield copy
    provenance._imports.cache_clear()


def test_comments_docstrings_and_formatting_keep_the_digest(package: Path) -> None:
    before = {s: provenance.code_digest(s) for s in ("figure", "sparsify")}
    plots = package / "plots.py"
    text = plots.read_text()
    plots.write_text(text.replace('"""', '"""Reworded. ', 1).replace("def save(", "# a comment\n\n\ndef save(") + "\n\n")
    assert {s: provenance.code_digest(s) for s in before} == before


def test_a_code_change_changes_exactly_the_stages_that_run_it(package: Path) -> None:
    stages = ("figure", "sparsify", "games", "train")
    before = {s: provenance.code_digest(s) for s in stages}
    (package / "plots.py").write_text((package / "plots.py").read_text() + "\n_X = 1\n")
    after = {s: provenance.code_digest(s) for s in stages}
    assert [s for s in stages if after[s] != before[s]] == ["figure"]
    lp = package / "interactions" / "lp.py"
    lp.write_text(lp.read_text() + "\n_X = 2\n")
    again = {s: provenance.code_digest(s) for s in stages}
    assert [s for s in stages if again[s] != after[s]] == ["sparsify"]


def test_config_layer_edits_do_not_rerun_stages(package: Path) -> None:
    before = provenance.code_digest("games")
    (package / "spec.py").write_text((package / "spec.py").read_text() + "\n_X = 1\n")
    assert provenance.code_digest("games") == before


def test_a_missing_stage_or_module_is_an_error() -> None:
    with pytest.raises(ValueError, match="no stage 'sparsfy'"):
        provenance.code_digest("sparsfy")
    with pytest.raises(ValueError, match="does not exist"):
        provenance.module_path("interactions.nowhere")
