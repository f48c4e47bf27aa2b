"""Games and their interactions as typed objects and as long, lossless tables for Parquet.

:class:`Games` holds what a model checkpoint played (v of every coalition; :data:`GAME_COLUMNS`),
:class:`GameBatchResult` the interactions solved from them (:data:`COLUMNS`);
:func:`read_interactions` and :func:`batch_of` read the stored shards back.

Coalition convention: a coalition S is the integer with bit i set iff player i ∈ S (player 0 is the
least significant bit); player i is the patch ``players[i]`` of the sample's grid.

Long format, one row per (sample, type ∈ {and, or}, coalition S), 2 · 2^n rows per sample, sorted
by sample (batch order), type, coalition. Rows are identified by (sample_id, type, coalition),
never by position. The per-coalition game columns (v, gamma, q) and the per-sample columns repeat
on the rows they describe; Parquet's dictionary/run-length encoding stores them cheaply.

Columns and dtypes (stable, so that hive-partitioned shards concatenate into one typed table):

- ``sample_id`` int64 — id of the test image in the experiment's sample selection.
- ``type`` category ['and', 'or'] — interaction type.
- ``coalition`` int64 — coalition S as a bitmask (bit i set iff player i ∈ S).
- ``order`` int16 — |S|, the popcount of ``coalition``.
- ``value`` float64 — I_type(S), after the order-≤1 OR terms are merged into AND (method.md §3).
- ``v`` float64 — game value v(x_S): log-odds of the true label on the masked image (same on both
  type rows).
- ``gamma`` float64 — γ_S of the AND/OR split (same on both type rows).
- ``q`` float64 — q_S, the learned correction of v(x_S) (same on both type rows).
- ``label`` int64 — true class of the sample.
- ``l1_even`` float64 — Σ|I_and| + Σ|I_or| of the even split γ = q = 0 (per sample).
- ``l1_final`` float64 — Σ|I_and| + Σ|I_or| of the returned interactions (per sample).
- ``q_bound`` float64 — the bound on every |q_S|: qthres · |v(N) − v(∅)| (per sample).
- ``matching_error`` float64 — max_S of the universal-matching error (per sample).
- ``method`` string — the sparsification method that produced the batch.
- ``players`` list<int64> — patch ids of players 0 … n−1 in the patch grid (per sample), numbered
  row-major as in :class:`pretrain_knowledge.game.PatchGrid` (id = row · n_cols + col); a list
  column keeps the schema the same whatever n is.
- ``image_height``, ``image_width``, ``patch_size`` int32 — the patch grid (image size in pixels
  and side of a square patch), so patch ids can be drawn back onto the image.

Floats are written as float64, so float32 or float64 interactions survive a Parquet round trip bit
for bit; :meth:`GameBatchResult.from_frame` returns float64 CPU tensors.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from .game import coalition_orders
from .interactions.values import Interactions, SparsifyDiagnostics
from .layout import INTERACTION_TYPES as TYPES
from .layout import MODELS, partition_keys
from .players import PatchGrid

TYPE_DTYPE = pd.CategoricalDtype(list(TYPES))
MODEL_DTYPE = pd.CategoricalDtype(list(MODELS))

COLUMNS: dict[str, str] = {
    "sample_id": "int64. Id of the test image in the experiment's sample selection.",
    "type": "category 'and'/'or'. Interaction type.",
    "coalition": (
        "int64. Coalition S as a bitmask: bit i set iff player i is in S "
        "(player 0 = least significant bit)."
    ),
    "order": "int16. |S|, the number of players in the coalition (popcount).",
    "value": (
        "float64. Interaction I_type(S), after merging order-<=1 OR terms into AND "
        "(method.md section 3)."
    ),
    "v": (
        "float64. Game value v(x_S): log-odds of the true label on the image masked to S "
        "(repeated on both type rows)."
    ),
    "gamma": (
        "float64. gamma_S of the AND/OR split v_and = 0.5 (v + q) + gamma "
        "(repeated on both type rows)."
    ),
    "q": (
        "float64. q_S, learned correction of v(x_S), |q_S| <= q_bound "
        "(repeated on both type rows)."
    ),
    "label": "int64. True class of the sample.",
    "l1_even": "float64. Sum |I_and| + sum |I_or| of the even split gamma = q = 0 (per sample).",
    "l1_final": "float64. Sum |I_and| + sum |I_or| of the stored interactions (per sample).",
    "q_bound": "float64. Bound on every |q_S|: qthres * |v(N) - v(empty)| (per sample).",
    "matching_error": "float64. Max over S of the universal-matching error (per sample).",
    "method": "string. Sparsification method that produced the batch.",
    "players": (
        "list<int64>. Patch id of player i at position i (per sample); "
        "patch id = row * (image_width / patch_size) + col, row-major."
    ),
    "image_height": "int32. Image height in pixels.",
    "image_width": "int32. Image width in pixels.",
    "patch_size": "int32. Side of a square patch in pixels; patch ids index this grid.",
}
"""Column → description of :meth:`GameBatchResult.to_frame`, in column order (results/README.md)."""

_FLOAT_GAME = ("v", "gamma", "q")
_DIAGNOSTICS = ("l1_even", "l1_final", "q_bound", "matching_error")
# Parquet column → field of :class:`pretrain_knowledge.game.PatchGrid`.
_GRID = {"image_height": "height", "image_width": "width", "patch_size": "patch_size"}


@dataclass(frozen=True)
class GameBatchResult:
    """Everything one batch of games produced: who played, on which grid, and the interactions.

    ``players[b, i]`` is the patch id of player i of sample b, i.e. of bit i of every coalition
    index in ``interactions`` (bit i set iff player i ∈ S, player 0 least significant).
    """

    sample_ids: Tensor
    """int64 (B,), unique within the batch."""
    labels: Tensor
    """int64 (B,) true classes."""
    players: Tensor
    """int64 (B, n) patch ids of the players."""
    grid: PatchGrid
    interactions: Interactions

    def __post_init__(self) -> None:
        b, n = self.interactions.batch_size, self.interactions.n_players
        for name, shape in (("sample_ids", (b,)), ("labels", (b,)), ("players", (b, n))):
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise ValueError(
                    f"GameBatchResult.{name} must have shape {shape} for B={b}, n={n}, got {got}"
                )
        if len(torch.unique(self.sample_ids)) != b:
            raise ValueError("GameBatchResult.sample_ids must be unique within a batch")

    @property
    def batch_size(self) -> int:
        return self.interactions.batch_size

    @property
    def n_players(self) -> int:
        return self.interactions.n_players

    def to_frame(self) -> pd.DataFrame:
        """The long table described in the module docstring (columns and dtypes of COLUMNS)."""
        b, n = self.batch_size, self.n_players
        size = 1 << n
        rows_per_sample = 2 * size
        inter, diag = self.interactions, self.interactions.diagnostics

        def per_coalition(x: Tensor) -> np.ndarray:
            x = _f64(x)
            return np.broadcast_to(x[:, None, :], (b, 2, size)).ravel()

        def per_sample(x: Tensor) -> np.ndarray:
            return np.repeat(np.asarray(x.detach().cpu()), rows_per_sample)

        columns = {
            "sample_id": per_sample(self.sample_ids).astype(np.int64),
            "type": pd.Categorical.from_codes(
                np.tile(np.repeat([0, 1], size), b), dtype=TYPE_DTYPE
            ),
            "coalition": np.tile(np.arange(size, dtype=np.int64), 2 * b),
            "order": np.tile(coalition_orders(n).numpy().astype(np.int16), 2 * b),
            "value": np.stack((_f64(inter.I_and), _f64(inter.I_or)), axis=1).ravel(),
            **{name: per_coalition(getattr(inter, name)) for name in _FLOAT_GAME},
            "label": per_sample(self.labels).astype(np.int64),
            **{name: per_sample(getattr(diag, name)).astype(np.float64) for name in _DIAGNOSTICS},
            "method": pd.array([diag.method] * (b * rows_per_sample), dtype="string"),
            "players": _players_column(self.players, rows_per_sample),
            **_grid_columns(self.grid, b * rows_per_sample),
        }
        return pd.DataFrame(columns)[list(COLUMNS)]

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> GameBatchResult:
        """Rebuild the batch from :meth:`to_frame`'s table (e.g. read back from Parquet).

        Rows may come in any order; coalitions are placed by their bitmask and samples keep the
        order in which they first appear. Extra columns (e.g. hive partitions) are ignored, but the
        frame must hold exactly one model and checkpoint.
        """
        missing = [c for c in COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(
                f"frame lacks the result columns {missing}; expected those of results.COLUMNS"
            )
        if frame.empty:
            raise ValueError(
                "frame has no rows: no games to rebuild (check the model/epoch filter)"
            )
        codes, uniques = pd.factorize(frame["sample_id"], sort=False)
        b = len(uniques)
        first = _first_rows(codes, b)
        players = _players_of(frame["players"].to_numpy()[first])
        n = players.shape[1]
        cell = _cell_index(frame, codes, b, n)
        grid_fields = {field: _batch_constant(frame, column) for column, field in _GRID.items()}
        return cls(
            sample_ids=torch.as_tensor(np.asarray(uniques, dtype=np.int64)),
            labels=torch.as_tensor(_per_sample(frame, "label", codes, first).astype(np.int64)),
            players=torch.as_tensor(players),
            grid=PatchGrid(**grid_fields),
            interactions=_interactions_of(frame, codes, first, cell, b, n),
        )


GAME_COLUMNS: dict[str, str] = {
    "sample_id": COLUMNS["sample_id"],
    "coalition": COLUMNS["coalition"],
    "order": COLUMNS["order"],
    "v": "float64. Game value v(x_S): log-odds of the true label on the image masked to S.",
    "label": COLUMNS["label"],
    "players": COLUMNS["players"],
    **{column: COLUMNS[column] for column in ("image_height", "image_width", "patch_size")},
}
"""Column → description of :meth:`Games.to_frame`: one row per (sample, coalition)."""


@dataclass(frozen=True)
class Games:
    """The games one model checkpoint played on a batch of samples: who played, where, and v(x_T).

    Stored so that interactions can be re-solved under other settings without the model (every
    forward pass of a game is here). ``players[b, i]`` is the patch id of player i of sample b,
    bit i of every coalition index (player 0 least significant).
    """

    sample_ids: Tensor
    """int64 (B,), unique within the batch."""
    labels: Tensor
    """int64 (B,) true classes."""
    players: Tensor
    """int64 (B, n) patch ids of the players."""
    grid: PatchGrid
    v: Tensor
    """float64 (B, 2^n): v(x_T) of every coalition T."""

    def __post_init__(self) -> None:
        b, size = self.v.shape
        n = size.bit_length() - 1
        for name, shape in (("sample_ids", (b,)), ("labels", (b,)), ("players", (b, n))):
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise ValueError(f"Games.{name} must have shape {shape} for B={b}, n={n}, got {got}")
        if len(torch.unique(self.sample_ids)) != b:
            raise ValueError("Games.sample_ids must be unique within a batch")

    @property
    def n_players(self) -> int:
        return int(self.players.shape[1])

    def to_frame(self) -> pd.DataFrame:
        """One row per (sample, coalition), columns and dtypes of :data:`GAME_COLUMNS`."""
        b, n = int(self.v.shape[0]), self.n_players
        size = 1 << n
        columns = {
            "sample_id": np.repeat(_i64(self.sample_ids), size),
            "coalition": np.tile(np.arange(size, dtype=np.int64), b),
            "order": np.tile(coalition_orders(n).numpy().astype(np.int16), b),
            "v": _f64(self.v).ravel(),
            "label": np.repeat(_i64(self.labels), size),
            "players": _players_column(self.players, size),
            **_grid_columns(self.grid, b * size),
        }
        return pd.DataFrame(columns)[list(GAME_COLUMNS)]

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> Games:
        """Rebuild from :meth:`to_frame`'s table; rows in any order, samples in first-seen order."""
        missing = [c for c in GAME_COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(f"frame lacks the game columns {missing}; expected those of results.GAME_COLUMNS")
        if frame.empty:
            raise ValueError("frame has no rows: no games to rebuild")
        codes, uniques = pd.factorize(frame["sample_id"], sort=False)
        b = len(uniques)
        first = _first_rows(codes, b)
        players = _players_of(frame["players"].to_numpy()[first])
        n = players.shape[1]
        cell = _cell_index(frame, codes, b, n, typed=False)
        v = np.empty(b * (1 << n), dtype=np.float64)
        v[cell] = frame["v"].to_numpy(dtype=np.float64)
        return cls(
            sample_ids=torch.as_tensor(np.asarray(uniques, dtype=np.int64)),
            labels=torch.as_tensor(_per_sample(frame, "label", codes, first).astype(np.int64)),
            players=torch.as_tensor(players),
            grid=PatchGrid(**{field: _batch_constant(frame, column) for column, field in _GRID.items()}),
            v=torch.from_numpy(v.reshape(b, 1 << n)),
        )


def _players_column(players: Tensor, repeat: int) -> np.ndarray:
    """Each sample's player list, repeated on its rows (a list column keeps one schema for every n)."""
    lists = np.empty(len(players), dtype=object)
    for i, row in enumerate(_i64(players)):
        lists[i] = row
    return np.repeat(lists, repeat)


def _grid_columns(grid: PatchGrid, rows: int) -> dict[str, np.ndarray]:
    return {column: np.full(rows, getattr(grid, field), dtype=np.int32) for column, field in _GRID.items()}


def _f64(x: Tensor) -> np.ndarray:
    return x.detach().to("cpu", torch.float64).numpy()


def _i64(x: Tensor) -> np.ndarray:
    return x.detach().to("cpu", torch.int64).numpy()


def _first_rows(codes: np.ndarray, b: int) -> np.ndarray:
    """Row position of the first row of each sample code 0 … b−1."""
    first = np.full(b, len(codes), dtype=np.int64)
    np.minimum.at(first, codes, np.arange(len(codes)))
    return first


def _players_of(lists: np.ndarray) -> np.ndarray:
    lengths = {len(p) for p in lists}
    if len(lengths) != 1:
        raise ValueError(
            f"all samples of a batch must have the same number of players, got {sorted(lengths)}"
        )
    return np.stack([np.asarray(p, dtype=np.int64) for p in lists]).reshape(
        len(lists), lengths.pop()
    )


def _cell_index(frame: pd.DataFrame, codes: np.ndarray, b: int, n: int, typed: bool = True) -> np.ndarray:
    """Flat index (sample, [type,] coalition) of every row; checks the rows tile the batch exactly."""
    size = 1 << n
    n_types = len(TYPES) if typed else 1
    coalition = frame["coalition"].to_numpy(dtype=np.int64)
    if typed:
        types = pd.Categorical(frame["type"].astype(str), categories=list(TYPES)).codes.astype(np.int64)
    else:
        types = np.zeros(len(frame), dtype=np.int64)
    if (types < 0).any() or (coalition < 0).any() or (coalition >= size).any():
        raise ValueError(
            f"frame has rows with a type outside {TYPES} or a coalition outside [0, 2^{n})"
        )
    if not np.array_equal(
        frame["order"].to_numpy(dtype=np.int64), coalition_orders(n).numpy()[coalition]
    ):
        raise ValueError("frame column 'order' disagrees with the popcount of 'coalition'")
    cell = (codes * n_types + types) * size + coalition
    hits = np.bincount(cell, minlength=b * n_types * size)
    key = "(sample_id, type, coalition)" if typed else "(sample_id, coalition)"
    if len(cell) != b * n_types * size or hits.max() != 1:
        raise ValueError(
            f"frame must hold exactly one row per {key}, {b}·{n_types}·2^{n} rows; "
            f"got {len(cell)} rows with up to {hits.max()} per key; filter it to one model and "
            "checkpoint first (e.g. df[(df.model == m) & (df.epoch == e)])"
        )
    return cell


def _per_sample(frame: pd.DataFrame, name: str, codes: np.ndarray, first: np.ndarray) -> np.ndarray:
    """A per-sample column as (B,), checking that it is constant within each sample."""
    values = frame[name].to_numpy()
    out = values[first]
    if not _same(values, out[codes]):
        raise ValueError(f"frame column {name!r} must be constant within each sample_id")
    return out


def _batch_constant(frame: pd.DataFrame, name: str) -> int:
    values = frame[name].unique()
    if len(values) != 1:
        raise ValueError(
            f"frame column {name!r} must be the same on every row of a batch, got {list(values)}"
        )
    return int(values[0])


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype.kind == "f":
        return bool(np.all((a == b) | (np.isnan(a) & np.isnan(b))))
    return bool(np.all(a == b))


def _interactions_of(
    frame: pd.DataFrame, codes: np.ndarray, first: np.ndarray, cell: np.ndarray, b: int, n: int
) -> Interactions:
    """Scatter the value and game columns back into (B, 2^n) tensors placed by coalition."""

    def grid_of(name: str) -> np.ndarray:
        out = np.empty(b * 2 * (1 << n), dtype=np.float64)
        out[cell] = frame[name].to_numpy(dtype=np.float64)
        return out.reshape(b, 2, 1 << n)

    value = grid_of("value")
    game = {}
    for name in _FLOAT_GAME:
        both = grid_of(name)
        if not _same(both[:, 0], both[:, 1]):
            raise ValueError(
                f"frame column {name!r} must be equal on the 'and' and 'or' rows of a coalition"
            )
        game[name] = torch.from_numpy(both[:, 0].copy())
    methods = frame["method"].astype(str).unique()
    if len(methods) != 1:
        raise ValueError(f"a batch has one sparsification method, the frame has {list(methods)}")
    diag = {
        name: torch.from_numpy(_per_sample(frame, name, codes, first).astype(np.float64))
        for name in _DIAGNOSTICS
    }
    return Interactions(
        I_and=torch.from_numpy(value[:, 0].copy()),
        I_or=torch.from_numpy(value[:, 1].copy()),
        diagnostics=SparsifyDiagnostics(method=str(methods[0]), **diag),
        **game,
    )


def read_interactions(paths: Sequence[str | os.PathLike[str]]) -> pd.DataFrame:
    """Concatenate the given shards, with ``model`` (categorical, MODELS order) and ``epoch`` (int64)."""
    frames = []
    for path in paths:
        keys = partition_keys(path)
        if keys["model"] not in MODELS:
            raise ValueError(f"{path}: unknown model {keys['model']!r}, expected one of {MODELS}")
        frame = pd.read_parquet(path)
        frame.insert(0, "epoch", int(keys["epoch"]))
        frame.insert(0, "model", pd.Categorical([keys["model"]] * len(frame), dtype=MODEL_DTYPE))
        frames.append(frame)
    if not frames:
        raise ValueError("no interaction shards given")
    out = pd.concat(frames, ignore_index=True)
    out["model"] = out["model"].astype(MODEL_DTYPE)
    out["epoch"] = out["epoch"].astype("int64")
    return out


def batch_of(frame: pd.DataFrame, model: str, epoch: int) -> GameBatchResult:
    """The games of one model and checkpoint over all shards, samples in ascending id order."""
    rows = frame[(frame["model"] == model) & (frame["epoch"] == epoch)]
    if rows.empty:
        raise ValueError(f"no interactions for model={model} epoch={epoch}")
    rows = rows.sort_values(["sample_id", "type", "coalition"], kind="stable")
    return GameBatchResult.from_frame(rows)


def to_shapiq(frame: pd.DataFrame, sample_id: int | None = None):  # -> shapiq.InteractionValues
    """One sample's stored AND interactions as a shapiq ``InteractionValues`` (index ``Moebius``).

    ``frame``: interaction rows of one model and checkpoint (a shard, or ``read_interactions``
    filtered to one model and epoch); ``sample_id`` picks the sample when the frame holds several.
    Interactions are keyed by the tuple of player indices in S (player i is bit i of the stored
    coalition), so shapiq's plots and tools apply to them; I_and(∅) is the baseline value. OR terms
    have no counterpart in shapiq's Möbius index and are left out: for the AND-only form
    (``extraction.sparsify.form: and``) the object is the whole decomposition of v + q.
    Needs shapiq (a test dependency of this project: ``pip install shapiq``).
    """
    from shapiq import InteractionValues

    rows = frame[frame["type"].astype(str) == "and"]
    ids = rows["sample_id"].unique()
    if sample_id is None:
        if len(ids) != 1:
            raise ValueError(f"the frame holds samples {sorted(ids.tolist())}; pass sample_id")
        sample_id = int(ids[0])
    rows = rows[rows["sample_id"] == sample_id].sort_values("coalition")
    if rows.empty:
        raise ValueError(f"no AND interactions of sample {sample_id} in the frame")
    n = len(rows["players"].iloc[0])
    coalitions = rows["coalition"].to_numpy(dtype=np.int64)
    keys = [tuple(i for i in range(n) if c >> i & 1) for c in coalitions]
    values = rows["value"].to_numpy(dtype=np.float64)
    return InteractionValues(
        values=values,
        index="Moebius",
        max_order=n,
        min_order=0,
        n_players=n,
        interaction_lookup={key: k for k, key in enumerate(keys)},
        estimated=False,
        baseline_value=float(values[coalitions == 0][0]) if (coalitions == 0).any() else 0.0,
    )
