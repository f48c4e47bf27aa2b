"""The whole workflow on the tiny test config, then its outputs, rerun semantics and faults.

One module-scoped run of `snakemake --cores 2 --configfile config/test.yaml` in a temporary copy
of the repository (so nothing lands in the real results/) feeds every test. The knowledge numbers
are recomputed here from the interaction shards with plain pandas/numpy, independently of
pretrain_knowledge.knowledge, and must agree with the workflow's tables.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import knowledge_reference as reference
from conftest import CONFIG, EXPERIMENT, REPO, overlay, planned_jobs, snakemake, tiny_config

pytestmark = pytest.mark.slow

MODELS = ("pretrain", "finetune", "scratch")
SALIENCE = 0.05

TRAINING = {"pretrain", "probe", "finetune", "scratch", "scratch_b", "random_probe"}
FIGURE_RULES = {
    "figure_claims",
    "figure_knowledge",
    "figure_learnability",
    "figure_similarity",
    "figure_training",
    "figure_examples",
}


@pytest.fixture(scope="module")
def run(tiny_run: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """This module's copy of the shared tiny run: its tests edit code and write overlays there."""
    workdir = tmp_path_factory.mktemp("workflow") / "run"
    shutil.copytree(tiny_run["dir"], workdir, symlinks=True)
    return {**tiny_run, "dir": workdir}


@pytest.fixture(scope="module")
def results(run: dict) -> Path:
    return run["dir"] / "results" / EXPERIMENT


@pytest.fixture(scope="module")
def shards(results: Path) -> pd.DataFrame:
    frame = pd.read_parquet(results / "interactions")
    return frame.assign(
        model=frame["model"].astype(str),
        epoch=frame["epoch"].astype(int),
        type=frame["type"].astype(str),
    )


# ----------------------------------------------------------------------------------------------
# The run and its files
# ----------------------------------------------------------------------------------------------


def test_no_rule_writes_outside_its_declared_outputs(run: dict) -> None:
    proc = snakemake(run["dir"], "--cores", "1", *CONFIG, "--summary")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line.split("\t") for line in proc.stdout.strip().splitlines()]
    header = lines[0]
    declared = {Path(row[header.index("output_file")]) for row in lines[1:]}
    for directory in [d for d in declared if (run["dir"] / d).is_dir()]:
        declared |= {p.relative_to(run["dir"]) for p in (run["dir"] / directory).rglob("*")}
    written = {
        p.relative_to(run["dir"]) for p in (run["dir"] / "results").rglob("*") if p.is_file()
    }
    # Logs and benchmarks are declared per rule too, but --summary lists only outputs.
    undeclared = {
        p for p in written - declared if not {"logs", "benchmarks"} & set(p.parts)
    }
    assert not undeclared, f"files no rule declares: {sorted(map(str, undeclared))}"
    leftovers = [p for p in written if p.name.endswith(".tmp")]
    assert not leftovers, f"temporary files left behind: {leftovers}"


def test_every_rule_logged(results: Path, run: dict) -> None:
    logs = list((results / "logs").rglob("*.log")) + list(
        (run["dir"] / "results" / "logs").rglob("*.log")
    )
    names = {p.relative_to(p.parents[1]).as_posix() for p in logs}
    assert {"logs/select.log", "logs/knowledge.log", "logs/metrics.log"} <= names
    train_log = (results / "logs" / "train" / "finetune.log").read_text()
    assert "[finetune] epoch 2/2" in train_log
    assert "%|" in (results / "logs" / "games" / "finetune-2-0.log").read_text()  # tqdm


# ----------------------------------------------------------------------------------------------
# Parquet schemas
# ----------------------------------------------------------------------------------------------

EXPECTED_DTYPES = {
    "metrics.parquet": {
        "model": "category",
        "epoch": "int64",
        "split": "category",
        "loss": "float64",
        "accuracy": "float64",
        "seconds": "float64",
    },
    "selection/samples.parquet": {
        "sample_id": "int64",
        "dataset_index": "int64",
        "source_index": "int64",
        "label": "int64",
        "class_name": "str",
        "patch_ids": "object",
        "player_rows": "object",
        "player_cols": "object",
        "patch_size": "int64",
    },
    "knowledge/decomposition.parquet": {
        "experiment": "string",
        "sample_id": "int64",
        "kind": "category",
        "type": "category",
        "order": "int16",
        "count": "int64",
        "strength": "float64",
    },
    "knowledge/decomposition_summary.parquet": {
        "experiment": "string",
        "kind": "category",
        "type": "category",
        "order": "Int16",
        "n_samples": "int64",
        "count_mean": "float64",
        "count_std": "float64",
        "count_sem": "float64",
        "strength_mean": "float64",
        "strength_std": "float64",
        "strength_sem": "float64",
    },
    "knowledge/members.parquet": {
        "experiment": "string",
        "sample_id": "int64",
        "kind": "category",
        "type": "category",
        "coalition": "int64",
        "order": "int16",
        "sign": "int8",
        "strength": "float64",
    },
    "knowledge/learnability.parquet": {
        "experiment": "string",
        "sample_id": "int64",
        "preserved": "int64",
        "learned": "int64",
        "ratio": "float64",
    },
    "knowledge/learnability_summary.parquet": {
        "experiment": "string",
        "n_samples": "int64",
        "n_with_preserved": "int64",
        "ratio_mean": "float64",
        "ratio_std": "float64",
        "ratio_sem": "float64",
        "ratio_median": "float64",
        "ratio_pooled": "float64",
        "preserved_mean": "float64",
        "learned_mean": "float64",
    },
    "knowledge/similarity.parquet": {
        "experiment": "string",
        "model": "category",
        "epoch": "int64",
        "sample_id": "int64",
        "weighted_jaccard": "float64",
        "scale_free_jaccard": "float64",
        "salient_iou": "float64",
    },
    "knowledge/similarity_summary.parquet": {
        "experiment": "string",
        "model": "category",
        "epoch": "int64",
        "n_samples": "int64",
        "weighted_jaccard_mean": "float64",
        "weighted_jaccard_std": "float64",
        "weighted_jaccard_sem": "float64",
        "scale_free_jaccard_mean": "float64",
        "scale_free_jaccard_std": "float64",
        "scale_free_jaccard_sem": "float64",
        "salient_iou_mean": "float64",
        "salient_iou_std": "float64",
        "salient_iou_sem": "float64",
    },
}
for _mode in TRAINING:
    EXPECTED_DTYPES[f"training/{_mode}.parquet"] = {
        "model": "str",
        "epoch": "int64",
        "split": "str",
        "loss": "float64",
        "accuracy": "float64",
        "seconds": "float64",
    }
    EXPECTED_DTYPES[f"training/{_mode}.predictions.parquet"] = {"epoch": "int64", "index": "int64", "correct": "bool"}
    if _mode != "pretrain":
        EXPECTED_DTYPES["selection/samples.parquet"][f"correct_{_mode}"] = "bool"

EXPECTED_DTYPES["knowledge/measures.parquet"] = {
    "experiment": "string",
    "sample_id": "int64",
    "quantity": "string",
    "value": "float64",
}

EXPECTED_DTYPES["knowledge/sensitivity.parquet"] = {
    "experiment": "string",
    "variant": "string",
    "factor": "string",
    "value": "string",
    "quantity": "string",
    "label": "string",
    "estimate": "float64",
    "ci_low": "float64",
    "ci_high": "float64",
    "n_samples": "int64",
}

FAITHFULNESS = ("v_span", "n_salient_and", "n_salient_or", "salient_max_error", "salient_r2", "q_at_bound")
EXPECTED_DTYPES["knowledge/faithfulness.parquet"] = {
    "experiment": "string",
    "model": "category",
    "epoch": "int64",
    "sample_id": "int64",
    **{c: "int64" if c.startswith("n_") else "float64" for c in FAITHFULNESS},
}
EXPECTED_DTYPES["knowledge/faithfulness_summary.parquet"] = {
    "experiment": "string",
    "model": "category",
    "epoch": "int64",
    "n_samples": "int64",
    **{f"{c}_{s}": "float64" for c in FAITHFULNESS for s in ("mean", "std", "sem")},
}

INTERACTION_DTYPES = {
    "sample_id": "int64",
    "type": "category",
    "coalition": "int64",
    "order": "int16",
    "value": "float64",
    "v": "float64",
    "gamma": "float64",
    "q": "float64",
    "label": "int64",
    "l1_even": "float64",
    "l1_final": "float64",
    "q_bound": "float64",
    "matching_error": "float64",
    "method": "string",
    "form": "string",
    "converged": "bool",
    "gap": "float64",
    "iterations": "int64",
    "players": "object",
    "image_height": "int32",
    "image_width": "int32",
    "patch_size": "int32",
    "model": "category",
    "epoch": "category",
}


GAME_DTYPES = {
    "sample_id": "int64",
    "coalition": "int64",
    "order": "int16",
    "v": "float64",
    "label": "int64",
    "players": "object",
    "image_height": "int32",
    "image_width": "int32",
    "patch_size": "int32",
}


def test_every_parquet_file_has_its_schema(results: Path) -> None:
    found = {
        p.relative_to(results).as_posix()
        for p in results.rglob("*.parquet")
        if not {"interactions", "games", "sensitivity"} & set(p.parts)
    }
    assert found == set(EXPECTED_DTYPES)
    variants = sorted((results / "sensitivity").glob("*/measures.parquet"))
    assert [p.parent.name for p in variants] == ["form=and", "qthres=0.02", "salience=0.1"]
    for path in variants:  # a variant's measures have the default's schema
        assert dict(pd.read_parquet(path).dtypes.astype(str)) == EXPECTED_DTYPES["knowledge/measures.parquet"], path
    for name, dtypes in EXPECTED_DTYPES.items():
        frame = pd.read_parquet(results / name)
        assert dict(frame.dtypes.astype(str)) == dtypes, name
        assert len(frame) > 0, name
    for shard in (results / "interactions").rglob("*.parquet"):
        frame = pd.read_parquet(shard)
        expected = {k: v for k, v in INTERACTION_DTYPES.items() if k not in ("model", "epoch")}
        assert dict(frame.dtypes.astype(str)) == expected, shard
    for shard in (results / "games").rglob("*.parquet"):
        assert dict(pd.read_parquet(shard).dtypes.astype(str)) == GAME_DTYPES, shard


def test_results_readme_documents_every_column() -> None:
    readme = (REPO / "results" / "README.md").read_text()
    columns = set(INTERACTION_DTYPES)
    for dtypes in EXPECTED_DTYPES.values():
        columns |= set(dtypes)
    missing = sorted(c for c in columns if f"`{c}`" not in readme and f"`{c.rsplit('_', 1)[0]}_mean`" not in readme)
    assert not missing, f"results/README.md does not document {missing}"


def test_metrics_one_row_per_model_epoch_split(results: Path) -> None:
    metrics = pd.read_parquet(results / "metrics.parquet")
    config = tiny_config()["training"]
    recipe = {"scratch_b": "scratch", "random_probe": "probe"}  # controls train with these recipes
    expected = {
        (mode, epoch, split)
        for mode in TRAINING
        for epoch in range(config[recipe.get(mode, mode)]["epochs"] + 1)
        for split in ("train", "test")
    }
    got = set(zip(metrics["model"].astype(str), metrics["epoch"], metrics["split"].astype(str)))
    assert got == expected and len(metrics) == len(expected)
    assert metrics["accuracy"].between(0, 1).all()


def test_interactions_read_as_one_typed_table(results: Path, shards: pd.DataFrame) -> None:
    frame = pd.read_parquet(results / "interactions")
    assert dict(frame.dtypes.astype(str)) == INTERACTION_DTYPES
    config = tiny_config()
    n = config["selection"]["players"]["n"]
    samples = 5 * config["selection"]["per_class"]
    last = config["training"]["finetune"]["epochs"]
    explained = {
        "pretrain": {config["training"]["probe"]["epochs"]},
        "finetune": {0, 1, last},
        "scratch": {0, 1, last},
    }
    got = {m: set(shards[shards.model == m].epoch) for m in MODELS}
    assert got == explained
    per_checkpoint = shards.groupby(["model", "epoch"]).size()
    assert (per_checkpoint == samples * 2 * 2**n).all()
    keys = shards[["model", "epoch", "sample_id", "type", "coalition"]]
    assert not keys.duplicated().any()
    assert (shards["order"] == shards["coalition"].map(lambda c: bin(c).count("1"))).all()
    shard_files = sorted((results / "interactions" / "model=finetune" / f"epoch={last}").glob("*.parquet"))
    assert [p.name for p in shard_files] == ["shard-0.parquet", "shard-1.parquet"]


def test_universal_matching_holds_on_every_stored_game(shards: pd.DataFrame) -> None:
    assert shards["matching_error"].max() < 1e-6
    n = int(np.log2(shards["coalition"].max() + 1))
    idx = np.arange(1 << n)
    subset = (idx[None, :] & ~idx[:, None]) == 0  # [T, S]: S ⊆ T
    meets = (idx[None, :] & idx[:, None]) != 0  # [T, S]: S ∩ T ≠ ∅
    worst = 0.0
    for _, game in shards.groupby(["model", "epoch", "sample_id"]):
        game = game.sort_values(["type", "coalition"])
        i_and = game[game.type == "and"]["value"].to_numpy()
        i_or = game[game.type == "or"]["value"].to_numpy()
        target = game[game.type == "and"][["v", "q"]].sum(axis=1).to_numpy()
        rebuilt = subset @ i_and + meets @ i_or + i_or[0]
        worst = max(worst, float(np.abs(rebuilt - target).max() / max(1.0, np.abs(target).max())))
        orders = np.array([bin(c).count("1") for c in idx])
        assert np.all(i_or[orders == 1] == 0), "OR terms of order 1 must be merged into AND"
        bound = game["q_bound"].iloc[0]
        assert np.all(np.abs(game["q"].to_numpy()) <= bound * (1 + 1e-9) + 1e-12)
    assert worst < 1e-9


def test_selection_has_k_correct_samples_per_class_and_central_players(results: Path) -> None:
    from pretrain_knowledge.selection import Selection
    from pretrain_knowledge.training import load_classifier

    config = tiny_config()["selection"]
    table = pd.read_parquet(results / "selection" / "samples.parquet")
    assert table.groupby("label").size().tolist() == [config["per_class"]] * 5
    assert table["dataset_index"].is_unique
    selection = Selection.load(results / "selection" / "selection.pt")
    grid = selection.players.grid
    for ids in table["patch_ids"]:
        assert len(set(ids)) == config["players"]["n"]
        rows, cols = np.divmod(np.asarray(ids), grid.n_cols)
        assert rows.min() >= 1 and rows.max() <= grid.n_rows - 2  # region 0.6 of a 5×5 grid
        assert cols.min() >= 1 and cols.max() <= grid.n_cols - 2
    epochs = tiny_config()["training"]
    for mode in ("probe", "finetune", "scratch"):
        model = load_classifier(results / "checkpoints" / mode / f"epoch-{epochs[mode]['epochs']:03d}.pt")
        with torch.no_grad():
            predicted = model(selection.inputs()).argmax(1)
        assert torch.equal(predicted, selection.labels), mode


# ----------------------------------------------------------------------------------------------
# Knowledge, recomputed independently from the shards
# ----------------------------------------------------------------------------------------------


def test_decomposition_matches_an_independent_recomputation(results: Path, shards: pd.DataFrame) -> None:
    table = pd.read_parquet(results / "knowledge" / "decomposition.parquet")
    assert reference.check_decomposition(table, shards, SALIENCE) > 0


def test_decomposition_summary_averages_the_per_sample_table(results: Path, shards: pd.DataFrame) -> None:
    summary = pd.read_parquet(results / "knowledge" / "decomposition_summary.parquet")
    reference.check_decomposition_summary(summary, shards, SALIENCE)


def test_learnability_matches_an_independent_recomputation(results: Path, shards: pd.DataFrame) -> None:
    table = pd.read_parquet(results / "knowledge" / "learnability.parquet")
    summary = pd.read_parquet(results / "knowledge" / "learnability_summary.parquet")
    reference.check_learnability(table, summary, shards, SALIENCE)


def test_similarity_matches_an_independent_recomputation(results: Path, shards: pd.DataFrame) -> None:
    table = pd.read_parquet(results / "knowledge" / "similarity.parquet")
    reference.check_similarity(table, shards, SALIENCE)


def test_claims_table_estimates_are_the_means_of_the_measures(run: dict, results: Path) -> None:
    from pretrain_knowledge.claims import CLAIMS, COLUMNS

    table = pd.read_parquet(run["dir"] / "results" / "claims.parquet")
    assert list(table.columns) == [*COLUMNS, "robust"]  # robust: the config has a sensitivity grid
    assert set(table["verdict"]) <= {"supported", "contradicted", "inconclusive", "n/a", "missing control"}
    measures = pd.read_parquet(results / "knowledge" / "measures.parquet")
    for claim in CLAIMS:
        if claim.claim == "C0":
            continue
        rows = table[(table["measure"] == claim.measure) & (table["scope"] == EXPERIMENT)]
        values = measures[measures["quantity"] == claim.quantity]["value"]
        assert rows["estimate"].iloc[0] == pytest.approx(values.mean())  # pandas skips NaN, as the claims do
        assert rows["n_samples"].iloc[0] == values.notna().sum() or claim.controls
    report = (run["dir"] / "results" / "claims.md").read_text()
    assert f"## {EXPERIMENT} (1 seed)" in report and "epochs to reach scratch's final accuracy" in report


# ----------------------------------------------------------------------------------------------
# Figures and report
# ----------------------------------------------------------------------------------------------


def _figures(run: dict) -> list[Path]:
    root = run["dir"] / "results"
    names = ["knowledge", "similarity", "training", "examples"]
    return [root / EXPERIMENT / "figures" / f"{n}.{e}" for n in names for e in ("png", "pdf")] + [
        root / "figures" / f"learnability.{e}" for e in ("png", "pdf")
    ]


def test_every_figure_is_a_non_empty_image(run: dict) -> None:
    for path in _figures(run):
        assert path.stat().st_size > 1000, path
        if path.suffix == ".pdf":
            assert path.read_bytes()[:5] == b"%PDF-", path
            continue
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("L"))
        assert min(pixels.shape) > 200, path
        assert pixels.std() > 5, f"{path} is blank"


def test_report_renders_every_figure(run: dict) -> None:
    proc = snakemake(run["dir"], "--cores", "1", *CONFIG, "--report", "report.html", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    html = (run["dir"] / "report.html").read_text(errors="replace")
    for name in ("knowledge.png", "similarity.png", "training.png", "examples.png", "learnability.png"):
        assert name in html


# ----------------------------------------------------------------------------------------------
# Rerun only what changed (dry runs after the full run)
# ----------------------------------------------------------------------------------------------


N_EXTRACT = 2 * (1 + 3 + 3 + 1 + 1)  # shards × (pretrain, finetune 0-2, scratch 0-2, scratch_b, random_probe)
EXTRACT = {"games": N_EXTRACT, "sparsify": N_EXTRACT}



def test_up_to_date_after_the_run(run: dict) -> None:
    assert planned_jobs(run["dir"], *CONFIG) == {}


GLOBAL = {"claims", "figure_claims", "figure_learnability", "figure_convergence", "figure_sensitivity"}
RESOLVED = 2
"""config/test.yaml's sensitivity variants re-solved from the games: qthres=0.02 and form=and."""
AFTER_KNOWLEDGE = {
    "knowledge": 1,
    "sensitivity_measures": RESOLVED + 1,  # and salience=0.1, which re-solves nothing
    "sensitivity": 1,
    **{rule: 1 for rule in GLOBAL | (FIGURE_RULES - {"figure_training"})},
    "all": 1,
}
"""What reruns once the interactions change: knowledge, every variant's measures (config/test.yaml
has three variants), the claims and every figure drawn from them."""


def test_salience_change_reruns_only_knowledge_and_figures(run: dict) -> None:
    # 0.1 is a sensitivity variant of the test config: as the default it swaps with 0.05.
    args = overlay(run["dir"], "salience.yaml", {"knowledge": {"salience": 0.1}})
    assert planned_jobs(run["dir"], *args) == AFTER_KNOWLEDGE


def test_sparsification_change_reruns_sparsify_onward_and_no_games(run: dict) -> None:
    # 0.02 is the test config's qthres variant: it becomes the default, 0.04 a variant to solve.
    args = overlay(run["dir"], "qthres.yaml", {"extraction": {"sparsify": {"qthres": 0.02}}})
    assert planned_jobs(run["dir"], *args) == {"sparsify": N_EXTRACT, "sensitivity_sparsify": RESOLVED, **AFTER_KNOWLEDGE}


def test_finetune_epochs_change_does_not_retrain_pretraining(run: dict) -> None:
    args = overlay(run["dir"], "epochs.yaml", {"training": {"finetune": {"epochs": 3}}})
    jobs = planned_jobs(run["dir"], *args)
    assert jobs == {
        "finetune": 1, "metrics": 1, "select": 1, **EXTRACT, "sensitivity_sparsify": RESOLVED, **AFTER_KNOWLEDGE,
        "figure_training": 1, "figure_benefit": 1,
    }  # fmt: skip


def test_more_seeds_add_experiments_without_touching_the_first(run: dict) -> None:
    grid = {"datasets": ["synthetic"], "architectures": ["small_cnn"], "seeds": [0, 1]}
    args = overlay(run["dir"], "seeds.yaml", {"experiments": [grid]})
    jobs = planned_jobs(run["dir"], *args)
    one_experiment = {
        "prepare_data": 2,
        **{mode: 1 for mode in TRAINING},
        "metrics": 1,
        "select": 1,
        **EXTRACT,
        "sensitivity_sparsify": RESOLVED,
        **AFTER_KNOWLEDGE,
        "figure_training": 1,
        "figure_benefit": 1,
    }
    assert jobs == one_experiment  # s1 in full; of s0 only the cross-experiment claims and figures
    proc = snakemake(run["dir"], "-n", "--cores", "1", *args)
    assert "experiment=synthetic-small_cnn-s1" in proc.stdout
    assert f"experiment={EXPERIMENT}" not in proc.stdout


def _edited(run: dict, module: str, edit: str) -> dict[str, int]:
    """Jobs planned after appending ``edit`` to a library module (restored afterwards)."""
    path = run["dir"] / "src" / "pretrain_knowledge" / module
    text = path.read_text()
    path.write_text(text + edit)
    try:
        return planned_jobs(run["dir"], *CONFIG)
    finally:
        path.write_text(text)


@pytest.mark.parametrize("module", ["plots.py", "extraction.py", "io.py"])
def test_comment_and_docstring_edits_rerun_nothing(run: dict, module: str) -> None:
    path = run["dir"] / "src" / "pretrain_knowledge" / module
    text = path.read_text()
    path.write_text(text.replace('"""', '"""Reworded. ', 1) + "\n# a comment\n")
    try:
        assert planned_jobs(run["dir"], *CONFIG) == {}
    finally:
        path.write_text(text)


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        ("plots.py", {**{rule: 1 for rule in FIGURE_RULES | GLOBAL - {"claims"}}, "figure_benefit": 1, "all": 1}),
        ("extraction.py", {**EXTRACT, "sensitivity_sparsify": RESOLVED, **AFTER_KNOWLEDGE}),
        ("interactions/sparsity.py", None),
        ("training.py", None),
    ],
)
def test_library_code_change_reruns_the_stages_that_run_it(run: dict, module: str, expected: dict | None) -> None:
    jobs = _edited(run, module, "\n_EDIT = 1\n")
    if module == "training.py":  # every model retrains, data preparation does not
        assert TRAINING | {"select", "games"} <= set(jobs)
        assert "prepare_data" not in jobs
    elif module.startswith("interactions"):  # the solver: sparsify onward, no forward pass
        assert jobs.get("sparsify") == N_EXTRACT and "games" not in jobs and "pretrain" not in jobs
    else:
        assert jobs == expected


# ----------------------------------------------------------------------------------------------
# Faults
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"knowledge": {"salience": "high"}}, "salience"),
        ({"extraction": {"shard": 2}}, "shard"),
        ({"selection": {"players": {"n": 0}}}, "selection.players.n"),
        ({"experiments": [{"datasets": ["nowhere"], "architectures": ["small_cnn"]}]}, "nowhere"),
        ({"architectures": {"small_cnn": {"overrides": {"knowledge": {"tau_scope": "all"}}}}}, "tau_scope"),
    ],
)
def test_bad_config_fails_validation_naming_the_key(run: dict, settings: dict, key: str) -> None:
    args = overlay(run["dir"], "bad.yaml", settings)
    proc = snakemake(run["dir"], "-n", "--cores", "1", *args)
    assert proc.returncode != 0
    assert key in proc.stdout + proc.stderr


def test_interrupted_run_resumes_with_rerun_incomplete(run: dict, tmp_path: Path) -> None:
    workdir = tmp_path / "copy"
    shutil.copytree(run["dir"], workdir, symlinks=True)
    args = overlay(workdir, "slow.yaml", {"training": {"scratch": {"epochs": 12}}})
    target = f"results/{EXPERIMENT}/checkpoints/scratch"
    proc = subprocess.Popen(
        [sys.executable, "-m", "snakemake", target, "--cores", "1", *args],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    started = workdir / target / "epoch-003.pt"  # the finished run stopped at epoch 2
    deadline = time.time() + 120
    while not started.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert started.exists(), "scratch training never started"
    assert not (workdir / target / "epoch-012.pt").exists(), "training finished before the kill"

    stuck = snakemake(workdir, target, "-n", "--cores", "1", *args)
    assert stuck.returncode != 0 and "incomplete" in (stuck.stdout + stuck.stderr).lower()
    assert planned_jobs(workdir, target, "--rerun-incomplete", *args) == {"scratch": 1}
    # A killed Snakemake (unlike one stopped with Ctrl-C) leaves its lock behind.
    assert snakemake(workdir, "--unlock", *args).returncode == 0
    done = snakemake(workdir, target, "--cores", "1", "--rerun-incomplete", *args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (workdir / target / "epoch-012.pt").exists()


# ----------------------------------------------------------------------------------------------
# Style
# ----------------------------------------------------------------------------------------------


def test_snakemake_lint_is_clean(run: dict) -> None:
    proc = snakemake(run["dir"], "--lint", timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Congratulations" in proc.stdout + proc.stderr


def test_snakefmt_is_clean() -> None:
    snakefmt = Path(sys.executable).parent / "snakefmt"
    proc = subprocess.run(
        [str(snakefmt), "--check", "Snakefile", "workflow"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
