"""The five figures of method.md §6, drawn with seaborn from the workflow's Parquet tables.

Every figure shows the spread over samples (error bars are ± one standard deviation across
samples, and per-sample points where they are few), so that a difference between models can be
told apart from sample noise. Each function takes tidy tables and returns a matplotlib Figure;
:func:`save` writes it as PNG and PDF atomically.

Coalition convention (examples figure): a coalition S is the integer with bit i set iff player
i ∈ S (player 0 is the least significant bit); player i of a sample is patch ``patch_ids[i]``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from .claims import CLAIMS
from .io import atomic_path
from .layout import SIMILARITIES
from .layout import group_of as layout_group

if TYPE_CHECKING:  # annotations only: most figures must not pay for importing torch
    from .selection import Selection

KIND_ORDER = ["preserved", "discarded", "new"]
KIND_PALETTE = {"preserved": "#1b9e77", "discarded": "#d95f02", "new": "#7570b3"}
MODEL_PALETTE = {
    "pretrain": "#666666",
    "probe": "#e7298a",
    "finetune": "#1b9e77",
    "scratch": "#d95f02",
}
TYPE_COLORS = {"and": "#e41a1c", "or": "#377eb8"}
PAPER_LEARNABILITY = (0.13, 0.45)
"""Range of the preserved-learnability ratio reported by the paper (method.md §4)."""


def _themed(draw: Callable[..., Figure]) -> Callable[..., Figure]:
    """Draw in seaborn's paper style without touching the caller's global matplotlib settings.

    Figures are built with matplotlib's object API (no pyplot), so importing this module selects
    no backend and drawing needs no display.
    """

    @functools.wraps(draw)
    def wrapper(*args: Any, **kwargs: Any) -> Figure:
        with sns.axes_style("whitegrid"), sns.plotting_context("paper", font_scale=1.1):
            return draw(*args, **kwargs)

    return wrapper


def _subplots(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float], **kwargs: Any) -> tuple[Figure, Any]:
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def save(fig: Figure, png: str | os.PathLike[str], pdf: str | os.PathLike[str], dpi: int = 150) -> None:
    """Write the figure as PNG and PDF, each atomically."""
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    with atomic_path(pdf) as tmp:
        fig.savefig(tmp, format="pdf", bbox_inches="tight")


def _n_samples(frame: pd.DataFrame) -> int:
    return int(frame["sample_id"].nunique())


@_themed
def knowledge_figure(decomposition: pd.DataFrame, title: str = "") -> Figure:
    """Figure 1 (paper's Fig. 2): counts and strengths of preserved/discarded/new per order.

    ``decomposition`` is the per-sample table (sample_id, kind, type, order, count, strength).
    """
    data = decomposition.assign(
        kind=decomposition["kind"].astype(str), type=decomposition["type"].astype(str)
    )
    orders = sorted(int(o) for o in data["order"].unique())
    fig, axes = _subplots(2, 2, figsize=(11, 7), sharex=True, squeeze=False)
    for col, kind_type in enumerate(["and", "or"]):
        part = data[data["type"] == kind_type]
        for row, (measure, label) in enumerate(
            [("count", "number of interactions"), ("strength", "strength Σ|I|")]
        ):
            ax = axes[row, col]
            sns.barplot(
                data=part,
                x="order",
                y=measure,
                hue="kind",
                order=orders,
                hue_order=KIND_ORDER,
                palette=KIND_PALETTE,
                errorbar="sd",
                capsize=0.1,
                err_kws={"linewidth": 1},
                ax=ax,
            )
            ax.set_ylim(bottom=0)
            ax.set_title(f"{kind_type.upper()} interactions — {measure}")
            ax.set_xlabel("order |S|")
            ax.set_ylabel(f"{label} per sample")
            if (row, col) != (0, 1) and ax.get_legend() is not None:
                ax.get_legend().remove()
    axes[0, 1].legend(title="knowledge", loc="upper right")
    n = _n_samples(data)
    fig.suptitle(
        f"{title}\npreserved / discarded / new knowledge (mean ± sd over {n} samples)".strip()
    )
    fig.tight_layout()
    return fig


@_themed
def learnability_figure(learnability: pd.DataFrame) -> Figure:
    """Figure 2 (paper's Fig. 3): preserved-learnability ratio per experiment.

    ``learnability`` is the per-sample table of all experiments (experiment, sample_id, ratio, …);
    samples without preserved knowledge (ratio NaN) are left out.
    """
    data = learnability.dropna(subset=["ratio"]).assign(
        experiment=lambda f: f["experiment"].astype(str)
    )
    experiments = sorted(learnability["experiment"].astype(str).unique())
    fig, ax = _subplots(figsize=(max(5, 1.8 * len(experiments) + 2), 4.5))
    ax.axhspan(*PAPER_LEARNABILITY, color="#bbbbbb", alpha=0.35, label="paper: 13–45 %")
    if not data.empty:
        sns.barplot(
            data=data,
            x="experiment",
            y="ratio",
            order=experiments,
            errorbar="sd",
            capsize=0.15,
            color="#1b9e77",
            alpha=0.6,
            ax=ax,
            label="mean ± sd",
        )
        sns.stripplot(
            data=data,
            x="experiment",
            y="ratio",
            order=experiments,
            color="black",
            size=3,
            alpha=0.6,
            jitter=0.2,
            ax=ax,
            label="per sample",
        )
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("|K_preserve ∩ Ω_scratch| / |K_preserve|")
    ax.set_xlabel("experiment")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    ax.legend(unique.values(), unique.keys(), loc="upper right", fontsize="small")
    counts = data.groupby("experiment")["ratio"].size().reindex(experiments, fill_value=0)
    ax.set_title(
        "Preserved-learnability ratio (n = "
        + ", ".join(str(int(c)) for c in counts)
        + " samples with preserved knowledge)"
    )
    fig.tight_layout()
    return fig


@_themed
def similarity_figure(similarity: pd.DataFrame, title: str = "") -> Figure:
    """Figure 3 (paper's Fig. 4): similarity to the final model's interactions versus epoch."""
    data = similarity.assign(model=similarity["model"].astype(str))
    fig, axes = _subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, (measure, label) in zip(
        axes,
        [("weighted_jaccard", "weighted Jaccard"), ("salient_iou", "IoU of salient sets")],
        strict=True,
    ):
        sns.lineplot(
            data=data,
            x="epoch",
            y=measure,
            hue="model",
            hue_order=["finetune", "scratch"],
            palette=MODEL_PALETTE,
            errorbar="sd",
            marker="o",
            ax=ax,
        )
        ax.set_ylim(0, 1.02)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(f"{label} to final model")
        ax.set_title(label)
    n = _n_samples(data)
    fig.suptitle(f"{title}\nconvergence to the final knowledge (mean ± sd over {n} samples)".strip())
    fig.tight_layout()
    return fig


@_themed
def training_figure(metrics: pd.DataFrame, title: str = "") -> Figure:
    """Figure 4: downstream accuracy and loss per epoch of the probe, fine-tuning and scratch."""
    data = metrics[metrics["model"].astype(str).isin(["probe", "finetune", "scratch"])]
    data = data.assign(model=data["model"].astype(str), split=data["split"].astype(str))
    fig, axes = _subplots(1, 2, figsize=(11, 4.2))
    for ax, measure in zip(axes, ["accuracy", "loss"], strict=True):
        sns.lineplot(
            data=data,
            x="epoch",
            y=measure,
            hue="model",
            hue_order=["probe", "finetune", "scratch"],
            palette=MODEL_PALETTE,
            style="split",
            style_order=["test", "train"],
            marker="o",
            ax=ax,
        )
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"downstream {measure}")
    axes[0].set_ylim(0, 1.02)
    axes[0].get_legend().remove()
    axes[1].legend(loc="upper right", fontsize="small")
    fig.suptitle(f"{title}\nthe benefit being explained: training curves (one run each)".strip())
    fig.tight_layout()
    return fig


def _example_samples(selection: Selection, n: int) -> list[int]:
    """One sample per class first (in class order), then the rest, up to ``n``."""
    labels = selection.labels.tolist()
    first = [labels.index(c) for c in sorted(set(labels))]
    rest = [i for i in range(len(labels)) if i not in first]
    return (first + rest)[:n]


def _draw_image(ax: Axes, image: np.ndarray) -> None:
    if image.shape[0] == 1:
        ax.imshow(image[0], cmap="gray", vmin=0, vmax=255)
    else:
        ax.imshow(np.transpose(image, (1, 2, 0)))
    ax.set_xticks([])
    ax.set_yticks([])


def _patch_box(selection: Selection, patch_id: int, **style) -> Rectangle:
    grid = selection.players.grid
    row, col = grid.row_col(patch_id)
    p = grid.patch_size
    return Rectangle((col * p - 0.5, row * p - 0.5), p, p, **style)


def _players_of(selection: Selection, sample: int, coalition: int) -> list[int]:
    """Patch ids of the players in ``coalition`` (bit i set iff player i ∈ S)."""
    ids = selection.players.patch_ids[sample].tolist()
    return [pid for i, pid in enumerate(ids) if coalition >> i & 1]


@_themed
def examples_figure(
    selection: Selection, members: pd.DataFrame, n_examples: int = 5, title: str = ""
) -> Figure:
    """Figure 5: images with their strongest preserved, discarded and new interaction.

    Column 1 outlines the players (numbered by player index); the others fill the patches of the
    strongest element of each kind, red for AND and blue for OR, with its order and |I| above.
    """
    samples = _example_samples(selection, n_examples)
    fig, axes = _subplots(len(samples), 4, figsize=(9, 2.4 * len(samples)), squeeze=False)
    images = selection.images.numpy()
    for row, sample in enumerate(samples):
        image = images[sample]
        ax = axes[row, 0]
        _draw_image(ax, image)
        for i, pid in enumerate(selection.players.patch_ids[sample].tolist()):
            ax.add_patch(_patch_box(selection, pid, fill=False, edgecolor="yellow", linewidth=1))
            box = _patch_box(selection, pid)
            ax.text(box.get_x() + 0.5, box.get_y() + 1.5, str(i), color="yellow", fontsize=6)
        name = selection.class_names[int(selection.labels[sample])]
        ax.set_title(f"sample {sample}: {name}", fontsize=9)
        rows = members[members["sample_id"] == sample]
        for col, kind in enumerate(KIND_ORDER, start=1):
            ax = axes[row, col]
            _draw_image(ax, image)
            part = rows[rows["kind"].astype(str) == kind]
            if part.empty:
                ax.set_title(f"{kind}: none", fontsize=9)
                continue
            best = part.loc[part["strength"].idxmax()]
            kind_type = str(best["type"])
            for pid in _players_of(selection, sample, int(best["coalition"])):
                ax.add_patch(
                    _patch_box(
                        selection,
                        pid,
                        facecolor=TYPE_COLORS[kind_type],
                        alpha=0.55,
                        edgecolor="white",
                        linewidth=0.8,
                    )
                )
            sign = "+" if int(best["sign"]) > 0 else "−"
            ax.set_title(
                f"{kind}: {kind_type.upper()} |S|={int(best['order'])}\n"
                f"{sign}{float(best['strength']):.2f} ({len(part)} in all)",
                fontsize=8,
            )
    for col, label in enumerate(["players", *KIND_ORDER]):
        axes[0, col].annotate(
            label, (0.5, 1.35), xycoords="axes fraction", ha="center", fontweight="bold"
        )
    fig.suptitle(
        f"{title}\nstrongest interaction of each kind (red AND, blue OR)".strip(), y=1.0
    )
    fig.tight_layout()
    return fig


def _wrap(words: Sequence[str], width: int) -> list[list[int]]:
    """Word indices per line, breaking before a word that would pass ``width`` characters."""
    lines: list[list[int]] = [[]]
    used = 0
    for i, word in enumerate(words):
        if lines[-1] and used + 1 + len(word) > width:
            lines.append([])
            used = 0
        used += len(word) + (1 if lines[-1] else 0)
        lines[-1].append(i)
    return lines


def _draw_sentence(
    ax: Axes, words: Sequence[str], lines: list[list[int]], styles: dict[int, dict[str, Any]], width: int
) -> None:
    """Words in a monospace grid of ``width`` characters per line; ``styles[i]`` boxes word i."""
    ax.set_axis_off()
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    step = 1.0 / (width + 1)
    height = 1.0 / (len(lines) + 1)
    for row, line in enumerate(lines):
        x = step / 2
        for i in line:
            ax.text(
                x, 1 - (row + 1) * height, words[i], family="monospace", fontsize=7, va="center", ha="left",
                bbox=styles.get(i),
            )
            x += (len(words[i]) + 1) * step


@_themed
def text_examples_figure(selection: Any, members: pd.DataFrame, n_examples: int = 5, title: str = "") -> Figure:
    """Figure 5 for text: sentences with their strongest preserved, discarded and new interaction.

    ``selection`` is a :class:`pretrain_knowledge.selection_text.TextSelection`. Column 1 boxes the
    player words (numbered by player index); the others fill the words of the strongest element of
    each kind, red for AND and blue for OR, with its order and |I| above.
    """
    width = 44
    samples = _example_samples(selection, n_examples)
    wrapped = {k: _wrap(selection.words[k], width) for k in samples}
    heights = [0.35 + 0.2 * len(wrapped[k]) for k in samples]
    fig = Figure(figsize=(14, sum(heights) + 0.8))
    axes = fig.subplots(len(samples), 4, squeeze=False, gridspec_kw={"height_ratios": heights})
    for row, sample in enumerate(samples):
        words = selection.words[sample]
        ids = selection.players.patch_ids[sample].tolist()
        players = {
            w: {"facecolor": "none", "edgecolor": "#b8860b", "boxstyle": "round,pad=0.15", "linewidth": 0.8}
            for w in ids
        }
        numbered = [f"{w}" if i not in ids else f"{w}·{ids.index(i)}" for i, w in enumerate(words)]
        _draw_sentence(axes[row, 0], numbered, _wrap(numbered, width), players, width)
        name = selection.class_names[int(selection.labels[sample])]
        axes[row, 0].set_title(f"sample {sample}: {name}", fontsize=8, loc="left")
        rows = members[members["sample_id"] == sample]
        for col, kind in enumerate(KIND_ORDER, start=1):
            ax = axes[row, col]
            part = rows[rows["kind"].astype(str) == kind]
            if part.empty:
                _draw_sentence(ax, words, wrapped[sample], {}, width)
                ax.set_title(f"{kind}: none", fontsize=8, loc="left")
                continue
            best = part.loc[part["strength"].idxmax()]
            kind_type = str(best["type"])
            coalition = int(best["coalition"])
            style = {"facecolor": TYPE_COLORS[kind_type], "alpha": 0.45, "edgecolor": "none", "boxstyle": "round,pad=0.15"}
            chosen = {w: style for i, w in enumerate(ids) if coalition >> i & 1}
            _draw_sentence(ax, words, wrapped[sample], chosen, width)
            sign = "+" if int(best["sign"]) > 0 else "−"
            ax.set_title(
                f"{kind}: {kind_type.upper()} |S|={int(best['order'])}  {sign}{float(best['strength']):.2f} "
                f"({len(part)} in all)",
                fontsize=8,
                loc="left",
            )
    for col, label in enumerate(["players (·i = player i)", *KIND_ORDER]):
        axes[0, col].annotate(label, (0.5, 1.6), xycoords="axes fraction", ha="center", fontweight="bold")
    fig.suptitle(f"{title}\nstrongest interaction of each kind (red AND, blue OR)".strip(), y=1.0)
    fig.tight_layout()
    return fig


def concat_tables(paths: Sequence[str | os.PathLike[str]]) -> pd.DataFrame:
    """Concatenate Parquet tables that share a schema (e.g. one per experiment)."""
    return pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)


VERDICT_COLORS = {"supported": "#1b9e77", "contradicted": "#d95f02", "inconclusive": "#7f7f7f"}


@_themed
def claims_figure(table: pd.DataFrame) -> Figure:
    """The claims as a forest plot: each claim's difference to each control with its 95 % interval.

    One panel per pooled scope (or per experiment when nothing is pooled); colour is the verdict,
    so the figure reads as the claims report at a glance. The paper's direction is marked on every
    row (→ above the control, ← below).
    """
    tested = table[table["diff"].notna()]
    scopes = [s for s in tested["scope"].unique() if str(s).startswith("pooled")] or list(tested["scope"].unique())
    heights = [max(2.5, 0.32 * int((tested["scope"] == s).sum()) + 1) for s in scopes]
    fig, axes = _subplots(len(scopes), 1, figsize=(10, sum(heights)), squeeze=False, height_ratios=heights)
    directions = {f"{c.claim}|{c.measure}": c.direction for c in CLAIMS}
    for ax, scope in zip(axes[:, 0], scopes, strict=True):
        rows = tested[tested["scope"] == scope].reset_index(drop=True)
        y = np.arange(len(rows))[::-1]
        for yi, row in zip(y, rows.itertuples(index=False), strict=True):
            colour = VERDICT_COLORS.get(str(row.verdict), "#7f7f7f")
            ax.plot([row.diff_ci_low, row.diff_ci_high], [yi, yi], color=colour, linewidth=2)
            ax.plot(row.diff, yi, "o", color=colour)
            arrow = "→" if directions.get(f"{row.claim}|{row.measure}", 0) > 0 else "←"
            ax.text(1.01, yi, f"{arrow} {row.verdict}", transform=ax.get_yaxis_transform(), va="center",
                    fontsize=7, color=colour)  # fmt: skip
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(y)
        ax.set_yticklabels([f"{r.claim} {r.measure}\nvs {r.control}" for r in rows.itertuples(index=False)], fontsize=7)
        seeds = int(rows["n_seeds"].max()) if len(rows) else 0
        ax.set_title(f"{scope}: difference to control, 95 % interval ({seeds} seed{'s' if seeds != 1 else ''})")
        ax.set_xlabel("real − control (arrow: the paper's direction)")
    fig.tight_layout()
    return fig


def _seed_lines(ax: Axes, data: pd.DataFrame, x: str, y: str, hue: str, palette: dict[str, str]) -> None:
    """One thin line per experiment (seed) and the mean over seeds, thick, with ± one sd band."""
    for (name, experiment), part in data.groupby([hue, "experiment"], observed=True):
        curve = part.groupby(x)[y].mean()
        ax.plot(curve.index, curve.to_numpy(), color=palette[str(name)], linewidth=0.8, alpha=0.45)
    per_seed = data.groupby([hue, "experiment", x], observed=True)[y].mean().reset_index()
    for name, part in per_seed.groupby(hue, observed=True):
        stats_ = part.groupby(x)[y].agg(["mean", "std"]).fillna(0.0)
        ax.plot(stats_.index, stats_["mean"], color=palette[str(name)], linewidth=2.2, label=f"{name} (mean over seeds)")
        ax.fill_between(stats_.index, stats_["mean"] - stats_["std"], stats_["mean"] + stats_["std"],
                        color=palette[str(name)], alpha=0.15)  # fmt: skip
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


@_themed
def convergence_figure(similarity: pd.DataFrame, measures: pd.DataFrame) -> Figure:
    """Similarity to the final knowledge versus epoch over every seed (paper's Figure 4, C3).

    ``similarity``: the similarity tables of all experiments (with ``experiment``); thin lines are
    the seeds, thick lines their mean with ± one sd band; the dashed line is the noise floor, the
    similarity of two scratch runs at their ends (``noise_floor_*`` of ``measures``).
    """
    data = similarity.assign(model=similarity["model"].astype(str), experiment=similarity["experiment"].astype(str))
    data = data.assign(group=data["experiment"].map(layout_group))
    groups = sorted(data["group"].unique())
    fig, axes = _subplots(len(groups), len(SIMILARITIES), figsize=(4.2 * len(SIMILARITIES), 3.6 * len(groups)),
                          squeeze=False, sharey=True)  # fmt: skip
    floors = measures.assign(group=measures["experiment"].astype(str).map(layout_group))
    for row, group in enumerate(groups):
        part = data[data["group"] == group]
        for col, name in enumerate(SIMILARITIES):
            ax = axes[row, col]
            _seed_lines(ax, part, "epoch", name, "model", MODEL_PALETTE)
            floor = floors[(floors["group"] == group) & (floors["quantity"] == f"noise_floor_{name}")]["value"]
            if floor.notna().any():
                ax.axhline(float(floor.mean()), color="#444444", linestyle="--", linewidth=1, label="noise floor (scratch_b vs scratch)")
            ax.set_ylim(0, 1.02)
            ax.set_title(f"{group}: {name.replace('_', ' ')}", fontsize=9)
            ax.set_xlabel("epoch")
            ax.set_ylabel("similarity to the final model")
    axes[0, -1].legend(loc="lower right", fontsize="x-small")
    n = data["experiment"].nunique()
    fig.suptitle(f"convergence to the final knowledge over {n} experiment{'s' if n != 1 else ''} (thin: one seed)")
    fig.tight_layout()
    return fig


@_themed
def benefit_figure(metrics: pd.DataFrame) -> Figure:
    """Downstream test accuracy per epoch over every seed: the benefit being explained (C0)."""
    data = metrics[(metrics["split"].astype(str) == "test") & metrics["model"].astype(str).isin(["probe", "finetune", "scratch"])]
    data = data.assign(model=data["model"].astype(str), experiment=data["experiment"].astype(str))
    data = data.assign(group=data["experiment"].map(layout_group))
    groups = sorted(data["group"].unique())
    fig, axes = _subplots(1, len(groups), figsize=(5.5 * len(groups), 4.2), squeeze=False)
    for ax, group in zip(axes[0], groups, strict=True):
        _seed_lines(ax, data[data["group"] == group], "epoch", "accuracy", "model", MODEL_PALETTE)
        ax.set_ylim(0, 1.02)
        ax.set_title(group)
        ax.set_ylabel("downstream test accuracy")
    axes[0, -1].legend(loc="lower right", fontsize="x-small")
    fig.suptitle("the benefit being explained: test accuracy per epoch (thin: one seed)")
    fig.tight_layout()
    return fig


@_themed
def sensitivity_figure(table: pd.DataFrame) -> Figure:
    """The headline measures under every sensitivity variant (method.md §8), one panel per measure.

    ``table``: the sensitivity tables of all experiments. A point per experiment (seed) with its 95 %
    interval; the default is the first column, so a variant that moves a measure stands out.
    """
    data = table.assign(variant=table["variant"].astype(str), experiment=table["experiment"].astype(str))
    variants = list(dict.fromkeys(data["variant"]))
    labels = list(dict.fromkeys(data["label"].astype(str)))
    experiments = sorted(data["experiment"].unique())
    fig, axes = _subplots(1, len(labels), figsize=(4.2 * len(labels), 4.6), squeeze=False, sharey=True)
    colours = sns.color_palette("colorblind", len(experiments))
    for ax, label in zip(axes[0], labels, strict=True):
        part = data[data["label"].astype(str) == label]
        for k, (experiment, colour) in enumerate(zip(experiments, colours, strict=True)):
            rows = part[part["experiment"] == experiment].set_index("variant").reindex(variants)
            x = np.arange(len(variants)) + (k - (len(experiments) - 1) / 2) * 0.12
            err = np.vstack([rows["estimate"] - rows["ci_low"], rows["ci_high"] - rows["estimate"]])
            ax.errorbar(x, rows["estimate"], yerr=np.nan_to_num(err), fmt="o", color=colour, capsize=2,
                        markersize=4, label=experiment)  # fmt: skip
        ax.set_xticks(np.arange(len(variants)))
        ax.set_xticklabels(variants, rotation=45, ha="right", fontsize=7)
        ax.set_title(label, fontsize=9)
        ax.set_ylim(0, 1.02)
    axes[0, 0].set_ylabel("mean over samples (95 % interval)")
    axes[0, -1].legend(fontsize="x-small", loc="upper right")
    fig.suptitle("how much the knowledge depends on each analysis choice (one factor at a time)")
    fig.tight_layout()
    return fig
