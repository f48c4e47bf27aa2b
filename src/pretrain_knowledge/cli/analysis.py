"""Analysis stages: ``metrics``, ``select``, ``extract``, ``knowledge`` and ``figure``.

The workflow's rules call these; each reads only the files named on its command line and writes
only the outputs named there (atomically), so Snakemake's view of a job is the whole truth.
Settings arrive as one JSON object (``--settings``), the same object the rule records as a
param, so a changed setting reruns exactly the jobs that read it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from pretrain_knowledge.io import write_parquet

KNOWLEDGE_TABLES = (
    "decomposition",
    "decomposition_summary",
    "members",
    "learnability",
    "learnability_summary",
    "similarity",
    "similarity_summary",
)
"""Tables of the ``knowledge`` stage; results/README.md documents their columns."""
FIGURES = ("knowledge", "learnability", "similarity", "training", "examples")
METRIC_MODELS = ("pretrain", "probe", "finetune", "scratch")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _settings(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise SystemExit(f"--settings is not valid JSON ({err}): {text!r}") from None
    if not isinstance(value, dict):
        raise SystemExit(f"--settings must be a JSON object, got {text!r}")
    return value


def _threads(n: int | None) -> None:
    if n:
        torch.set_num_threads(n)


# ----------------------------------------------------------------------------------------------
# metrics
# ----------------------------------------------------------------------------------------------


def combine_metrics(paths: Sequence[str]) -> pd.DataFrame:
    """One row per (model, epoch, split), models in pipeline order."""
    frame = pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
    unknown = sorted(set(frame["model"].astype(str)) - set(METRIC_MODELS))
    if unknown:
        raise ValueError(f"metrics of unknown models {unknown}; expected {METRIC_MODELS}")
    frame["model"] = pd.Categorical(frame["model"].astype(str), categories=list(METRIC_MODELS))
    frame["split"] = pd.Categorical(frame["split"].astype(str), categories=["train", "test"])
    frame = frame.sort_values(["model", "epoch", "split"], kind="stable").reset_index(drop=True)
    if frame.duplicated(["model", "epoch", "split"]).any():
        raise ValueError("metrics have duplicate (model, epoch, split) rows")
    return frame


def _run_metrics(args: argparse.Namespace) -> int:
    write_parquet(combine_metrics(args.inputs), args.out)
    return 0


# ----------------------------------------------------------------------------------------------
# select
# ----------------------------------------------------------------------------------------------


def _run_select(args: argparse.Namespace) -> int:
    from pretrain_knowledge.data import load_task
    from pretrain_knowledge.selection import make_selection
    from pretrain_knowledge.training import load_classifier

    _threads(args.threads)
    settings = _settings(args.settings)
    players = settings["players"]
    test = load_task(args.data).test
    models = {name: load_classifier(path) for name, path in args.model}
    selection = make_selection(
        models,
        test,
        per_class=int(settings["per_class"]),
        seed=int(args.seed),
        n_players=int(players["n"]),
        patch_size=int(players["patch_size"]),
        rule=str(players["rule"]),
        rule_options=players.get("options", {}),
        batch_size=int(settings.get("batch_size", 512)),
    )
    selection.write(args.out, args.table)
    _log(
        f"selected {selection.n_samples} samples ({settings['per_class']} per class) with "
        f"{players['n']} players each on a {selection.players.grid.n_rows}×"
        f"{selection.players.grid.n_cols} patch grid"
    )
    return 0


# ----------------------------------------------------------------------------------------------
# extract
# ----------------------------------------------------------------------------------------------


def _run_extract(args: argparse.Namespace) -> int:
    from pretrain_knowledge.extraction import check_matching, extract, pick_device, write_shard
    from pretrain_knowledge.selection import Selection
    from pretrain_knowledge.training import load_classifier

    _threads(args.threads)
    settings = _settings(args.settings)
    sparse = settings.get("sparsify", {})
    selection = Selection.load(args.selection)
    if args.shards > selection.n_samples:
        raise SystemExit(
            f"extraction.shards={args.shards} exceeds the {selection.n_samples} selected samples; "
            "lower extraction.shards (or raise selection.per_class)"
        )
    ids = selection.shard_ids(args.shard, args.shards)
    device = pick_device(settings.get("device", "auto"))
    model = load_classifier(args.checkpoint, device=device)
    start = time.perf_counter()
    result = extract(
        model,
        selection,
        ids,
        qthres=float(sparse.get("qthres", 0.04)),
        method=str(sparse.get("method", "lp")),
        options=sparse.get("options", {}),
        baseline=float(settings.get("baseline", 0.0)),
        batch_size=int(settings.get("batch_size", 1024)),
        device=device,
    )
    check_matching(result, float(settings.get("matching_tolerance", 1e-6)))
    write_shard(result, args.out)
    diag = result.interactions.diagnostics
    _log(
        f"{args.checkpoint}: {len(ids)} samples, n={result.n_players}, "
        f"{time.perf_counter() - start:.1f}s; L1 even {diag.l1_even.mean():.3f} → final "
        f"{diag.l1_final.mean():.3f} ({diag.method}); max matching error "
        f"{diag.matching_error.max():.2e}"
    )
    return 0


# ----------------------------------------------------------------------------------------------
# knowledge
# ----------------------------------------------------------------------------------------------


def _describe(frame: pd.DataFrame, keys: list[str], columns: Sequence[str]) -> pd.DataFrame:
    """Mean, sample sd and sem of ``columns`` per group, plus the number of samples."""
    grouped = frame.groupby(keys, observed=True, sort=True)
    out = grouped.size().rename("n_samples").reset_index()
    for column in columns:
        stats = grouped[column].agg(["mean", "std", "sem"])
        stats.columns = [f"{column}_{s}" for s in stats.columns]
        out = out.merge(stats.reset_index(), on=keys)
    return out


def decomposition_summary(decomposition: pd.DataFrame) -> pd.DataFrame:
    """Per (kind, type, order), per (kind, type) over all orders, and per kind over both types."""
    from pretrain_knowledge.knowledge import KIND_DTYPE

    values = ["count", "strength"]
    per_order = _describe(decomposition, ["kind", "type", "order"], values)
    per_type = decomposition.groupby(["sample_id", "kind", "type"], observed=True)[values].sum()
    per_kind = decomposition.groupby(["sample_id", "kind"], observed=True)[values].sum()
    by_type = _describe(per_type.reset_index(), ["kind", "type"], values)
    by_kind = _describe(per_kind.reset_index(), ["kind"], values).assign(type="all")
    parts = []
    for part in (per_order, by_type, by_kind):
        part = part.assign(type=part["type"].astype(str))
        if "order" not in part:
            part = part.assign(order=pd.NA)
        parts.append(part)
    out = pd.concat(parts, ignore_index=True)
    out["kind"] = out["kind"].astype(str).astype(KIND_DTYPE)
    out["type"] = pd.Categorical(out["type"], categories=["and", "or", "all"])
    out["order"] = out["order"].astype("Int16")
    out["count_mean"] = out["count_mean"].astype("float64")
    columns = ["kind", "type", "order", "n_samples"]
    columns += [f"{v}_{s}" for v in values for s in ("mean", "std", "sem")]
    return out[columns].sort_values(["kind", "type", "order"], na_position="last", ignore_index=True)


def learnability_summary(learnability: pd.DataFrame) -> pd.DataFrame:
    """Mean ± sd of the per-sample ratio over samples that have preserved knowledge, and pooled."""
    valid = learnability.dropna(subset=["ratio"])
    preserved, learned = int(learnability["preserved"].sum()), int(learnability["learned"].sum())
    return pd.DataFrame(
        {
            "n_samples": [len(learnability)],
            "n_with_preserved": [len(valid)],
            "ratio_mean": [valid["ratio"].mean()],
            "ratio_std": [valid["ratio"].std()],
            "ratio_sem": [valid["ratio"].sem()],
            "ratio_median": [valid["ratio"].median()],
            "ratio_pooled": [learned / preserved if preserved else np.nan],
            "preserved_mean": [learnability["preserved"].mean()],
            "learned_mean": [learnability["learned"].mean()],
        }
    ).astype({"n_samples": "int64", "n_with_preserved": "int64"})


def knowledge_tables(
    interactions: pd.DataFrame,
    *,
    salience: float = 0.05,
    tau_scope: str = "sample",
    match_sign: bool = True,
) -> dict[str, pd.DataFrame]:
    """All knowledge tables of one experiment from its interaction table (method.md §4).

    ``interactions`` holds every explained checkpoint (columns of results.COLUMNS plus model and
    epoch). Ω of a model is taken at its last explained epoch; similarity compares every explained
    checkpoint of finetune and scratch with that final one.
    """
    from pretrain_knowledge.extraction import MODELS, batch_of
    from pretrain_knowledge.knowledge import (
        decompose,
        decomposition_frame,
        learnability_frame,
        members_frame,
        preserved_learnability,
        salient_iou,
        salient_sets,
        similarity_frame,
        weighted_jaccard,
    )

    pairs = interactions[["model", "epoch"]].drop_duplicates()
    missing = [m for m in MODELS if m not in set(pairs["model"].astype(str))]
    if missing:
        raise ValueError(f"no interactions of models {missing}; every model of {MODELS} is needed")
    epochs = {m: sorted(int(e) for e in pairs[pairs["model"] == m]["epoch"]) for m in MODELS}
    batches = {(m, e): batch_of(interactions, m, e) for m in MODELS for e in epochs[m]}
    ids = batches["pretrain", epochs["pretrain"][-1]].sample_ids
    for key, batch in batches.items():
        if not torch.equal(batch.sample_ids, ids):
            raise ValueError(f"model={key[0]} epoch={key[1]} covers other samples than pretrain")
    sets = {
        key: salient_sets(b.interactions, ratio=salience, scope=tau_scope)  # type: ignore[arg-type]
        for key, b in batches.items()
    }
    final = {m: (m, epochs[m][-1]) for m in MODELS}
    decomposition = decompose(sets[final["pretrain"]], sets[final["finetune"]], match_sign)
    learn = preserved_learnability(decomposition, sets[final["scratch"]])
    similarity = []
    for model in ("finetune", "scratch"):
        last = batches[final[model]]
        for epoch in epochs[model]:
            batch = batches[model, epoch]
            frame = similarity_frame(
                weighted_jaccard(batch.interactions, last.interactions),
                salient_iou(sets[model, epoch], sets[final[model]], match_sign),
                ids,
            )
            frame.insert(0, "epoch", epoch)
            frame.insert(0, "model", model)
            similarity.append(frame)
    similarity_table = pd.concat(similarity, ignore_index=True)
    similarity_table["model"] = pd.Categorical(
        similarity_table["model"], categories=["finetune", "scratch"]
    )
    similarity_table["epoch"] = similarity_table["epoch"].astype("int64")
    decomposition_table = decomposition_frame(decomposition, ids)
    learnability_table = learnability_frame(learn, ids)
    return {
        "decomposition": decomposition_table,
        "decomposition_summary": decomposition_summary(decomposition_table),
        "members": members_frame(decomposition, ids),
        "learnability": learnability_table,
        "learnability_summary": learnability_summary(learnability_table),
        "similarity": similarity_table,
        "similarity_summary": _describe(
            similarity_table, ["model", "epoch"], ["weighted_jaccard", "salient_iou"]
        ),
    }


def _with_experiment(frame: pd.DataFrame, experiment: str) -> pd.DataFrame:
    frame = frame.copy()
    frame.insert(0, "experiment", pd.array([experiment] * len(frame), dtype="string"))
    return frame


def _outputs(pairs: Sequence[str], expected: Sequence[str]) -> dict[str, Path]:
    out = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or name not in expected:
            raise SystemExit(f"--out takes NAME=PATH with NAME one of {list(expected)}, got {pair!r}")
        out[name] = Path(path)
    absent = [n for n in expected if n not in out]
    if absent:
        raise SystemExit(f"--out is missing the tables {absent}")
    return out


def _run_knowledge(args: argparse.Namespace) -> int:
    from pretrain_knowledge.extraction import read_interactions

    settings = _settings(args.settings)
    outputs = _outputs(args.out, KNOWLEDGE_TABLES)
    interactions = read_interactions(args.shards)
    tables = knowledge_tables(
        interactions,
        salience=float(settings.get("salience", 0.05)),
        tau_scope=str(settings.get("tau_scope", "sample")),
        match_sign=bool(settings.get("match_sign", True)),
    )
    for name, frame in tables.items():
        write_parquet(_with_experiment(frame, args.experiment), outputs[name])
    summary = tables["decomposition_summary"]
    totals = summary[summary["type"] == "all"].set_index("kind")["count_mean"]
    ratio = tables["learnability_summary"]["ratio_mean"].iloc[0]
    _log(
        f"{args.experiment}: mean counts per sample "
        + ", ".join(f"{k} {totals.get(k, float('nan')):.1f}" for k in totals.index)
        + f"; learnability ratio {ratio:.3f}"
    )
    return 0


# ----------------------------------------------------------------------------------------------
# figure
# ----------------------------------------------------------------------------------------------


def _run_figure(args: argparse.Namespace) -> int:
    from pretrain_knowledge import plots
    from pretrain_knowledge.selection import Selection

    title = args.title or ""
    pairs = [p.partition("=")[::2] for p in args.input]
    inputs: Mapping[str, str] = dict(pairs)
    if args.name == "knowledge":
        fig = plots.knowledge_figure(pd.read_parquet(inputs["decomposition"]), title)
    elif args.name == "similarity":
        fig = plots.similarity_figure(pd.read_parquet(inputs["similarity"]), title)
    elif args.name == "training":
        fig = plots.training_figure(pd.read_parquet(inputs["metrics"]), title)
    elif args.name == "examples":
        fig = plots.examples_figure(
            Selection.load(inputs["selection"]),
            pd.read_parquet(inputs["members"]),
            n_examples=args.examples,
            title=title,
        )
    else:
        paths = [path for name, path in pairs if name == "learnability"]
        fig = plots.learnability_figure(plots.concat_tables(paths))
    plots.save(fig, args.png, args.pdf, dpi=args.dpi)
    return 0


# ----------------------------------------------------------------------------------------------
# registration
# ----------------------------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the analysis stages to ``python -m pretrain_knowledge``."""
    p = subparsers.add_parser(
        "metrics",
        help="combine per-mode training metrics into one table",
        description="Concatenate the metrics Parquet files of pretrain/probe/finetune/scratch "
        "into one table with one row per (model, epoch, split).",
    )
    p.add_argument("inputs", nargs="+", help="per-mode metrics Parquet files")
    p.add_argument("--out", required=True, help="combined metrics Parquet file")
    p.set_defaults(func=_run_metrics)

    p = subparsers.add_parser(
        "select",
        help="choose the explained samples and their players",
        description="Draw k test images per class that all final models classify correctly, "
        "and n players per image (method.md §2, §5); write the selection artefact and table.",
    )
    p.add_argument("--data", required=True, help="prepared downstream task file (prepare-data)")
    p.add_argument(
        "--model",
        nargs=2,
        action="append",
        metavar=("NAME", "CHECKPOINT"),
        required=True,
        help="a final model that must classify the samples correctly (repeat per model)",
    )
    p.add_argument("--seed", type=int, default=0, help="experiment seed")
    p.add_argument(
        "--settings",
        required=True,
        help='JSON: {"per_class": k, "batch_size": b, "players": {"n", "patch_size", "rule", "options"}}',
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out", required=True, help="selection artefact (.pt)")
    p.add_argument("--table", required=True, help="selection table (.parquet)")
    p.set_defaults(func=_run_select)

    p = subparsers.add_parser(
        "extract",
        help="interactions of one checkpoint on one shard of samples",
        description="Evaluate all 2^n masked images of each sample of one shard, sparsify the "
        "AND-OR interactions and write one Parquet shard (results/README.md).",
    )
    p.add_argument("--checkpoint", required=True, help="model checkpoint (epoch-NNN.pt)")
    p.add_argument("--selection", required=True, help="selection artefact (select stage)")
    p.add_argument("--shard", type=int, default=0, help="shard index k (0-based)")
    p.add_argument("--shards", type=int, default=1, help="number of shards")
    p.add_argument(
        "--settings",
        default="{}",
        help='JSON: {"baseline", "batch_size", "device", "matching_tolerance", '
        '"sparsify": {"qthres", "method", "options"}}',
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out", required=True, help="shard Parquet file")
    p.set_defaults(func=_run_extract)

    p = subparsers.add_parser(
        "knowledge",
        help="preserved/discarded/new knowledge, learnability and convergence tables",
        description="Read the interaction shards of one experiment and write the knowledge "
        "tables of method.md §4 (per sample and aggregated).",
    )
    p.add_argument("shards", nargs="+", help="interaction shards (hive paths model=…/epoch=…)")
    p.add_argument("--experiment", required=True, help="experiment name stored in every table")
    p.add_argument(
        "--settings", default="{}", help='JSON: {"salience", "tau_scope", "match_sign"}'
    )
    p.add_argument(
        "--out",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help=f"output table, one per name of {list(KNOWLEDGE_TABLES)}",
    )
    p.set_defaults(func=_run_knowledge)

    p = subparsers.add_parser(
        "figure",
        help="draw one of the figures of method.md §6 (PNG and PDF)",
        description="Draw a figure from the workflow's tables. Inputs by name: knowledge: "
        "decomposition=; similarity: similarity=; training: metrics=; examples: selection= "
        "members=; learnability: learnability= (repeat, one per experiment).",
    )
    p.add_argument("name", choices=FIGURES)
    p.add_argument("--input", action="append", default=[], metavar="NAME=PATH")
    p.add_argument("--title", default="", help="title line (e.g. the experiment)")
    p.add_argument("--examples", type=int, default=5, help="samples in the examples figure")
    p.add_argument("--dpi", type=int, default=150)
    p.add_argument("--png", required=True)
    p.add_argument("--pdf", required=True)
    p.set_defaults(func=_run_figure)
