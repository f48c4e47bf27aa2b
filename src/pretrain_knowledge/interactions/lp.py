"""Exact sparsification at the least-norm optimum: an interior-point method on a working set of
coalitions that grows during the iterations until no coalition is left out (method.md §3 and §8).

The problem. With x = (a, o), a_S the AND coefficient of every S and o_S the OR coefficient of
every |S| ≥ 2 (OR terms of order ≤ 1 are the same atoms as AND terms, so they are merged from the
start), the sparsity objective is the linear programme

    min ‖x‖₁   s.t.   |(A x)_T − v_T| ≤ b for every coalition T,      A x = Z a + W o,

with Z[T, S] = [S ⊆ T] and W[T, S] = [S ∩ T ≠ ∅]; q = A x − v is the noise correction. Its optimum
is a face, not a point (method.md §8). We return the optimum of least Euclidean norm, as the
unique solution of

    min ‖x‖₁ + (ε/2) ‖x‖²   (same constraints),

which equals the least-norm optimum of the LP for every ε below a problem-dependent threshold
(exact regularisation of linear programmes). The game is first divided by s = max_T |v_T|, so ε
is relative (``REGULARISATION``) and the returned point scales with the game.

Why a working set. At the optimum only the coalitions whose q sits on its bound matter (5–20 % of
them on real games at n = 10); every other row could be deleted without changing the solution. The interior-point
method therefore runs on a working set R of rows, with all atoms: its normal matrix is
|R| × |R| and its entries are gathers from subset sums of the atom weights

    (Z D Zᵀ)[T, T'] = ζD_a(T ∩ T'),
    (W D Wᵀ)[T, T'] = ΣD_o − ζD_o(N∖T) − ζD_o(N∖T') + ζD_o(N∖(T ∪ T')),

so no 2^n × 2^n matrix is formed unless every coalition is tight (qthres = 0 leaves q no room;
then R is all of them). R starts with the coalitions of largest |v_T|, and the iterate at the
game's exact AND interpolation (q = 0 everywhere, so no coalition is violated yet). After every
interior-point step one product with A (small dense products up to n = 15, a butterfly
above) checks every coalition, and the most violated join R at once,
at their current fit and with complementarity at the current μ; rows that sit well inside their
box leave R, each coalition at most once; the iterations go on from where they are rather than
restarting. Since a coalition can leave only once, the additions end, and a solution of the
restricted problem that violates no row is the solution of the full problem.

Exact to rounding. The interior point reaches the solution along the optimal face only at the
rate of ε, so a final polish reads the support and the tight coalitions off the last iterate and
solves the optimality conditions, which are linear once those sets are known, exactly (with a few
active-set corrections of the sets). It is kept only when every condition holds; when the sets
cannot be settled, a copy of the interior point runs on to a smaller residual and μ and the polish
tries once more (``SHARPEN``); if that fails too, the interior-point iterate stands, which can sit
far from the least-norm point along the face (method.md §8). Exactness is certified, not assumed:
the dual of the final solve, corrected for ε, gives a lower bound on the LP optimum;
``lower_bound`` is that bound and the relative gap to the returned L1 is reported per game.

Every game is solved on its own (the Python loop runs over games), so a game's result does not
depend on the batch it came in, and repeated solves give the same bits with the same thread
count. Coalition convention: every length-2^n vector is indexed by the bitmask T with bit i set
iff player i ∈ T (player 0 is the least significant bit).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .transforms import coalition_orders, moebius_transform, zeta_transform

REGULARISATION = 1e-4
"""ε of the least-norm selection, relative to the game's scale max_T |v_T|."""
TOL = 1e-10
"""Default complementarity target μ of the interior point (the residuals must reach ``RESIDUAL`` too)."""
RESIDUAL = 1e-11
"""Primal (relative) and dual residuals the interior point must reach before the polish."""
SHARPEN = 10.0
SHARPEN_MU = 1e9
SHARPEN_STEPS = 10
"""When the polish and its retries with missed coalitions have failed, a copy of the interior point
goes on to a residual ``SHARPEN`` times and a μ ``SHARPEN_MU`` times smaller, in at most this many
steps, and the polish tries once more from there; if that fails too, the first iterate stands.

Along the optimal face the ε-problem's curvature is only ε, so a residual left in the iterate
moves it along the face by that over ε, and the polish reads its sets from that iterate. Without
this retry 3 of 500 real games at n = 8–14 kept their iterate (1.5e-6, 2.5e-6 and 1.2e-4 of
|v(N) − v(∅)| from the polished point); with it none did. A smaller residual alone
(``SHARPEN_MU`` 1) left one of those 500 unsettled, as did 1e3 and 1e6. Tightening the residual
for every game instead (1e-12) settled them too, but on some small games rounding kept the primal
residual above it and the iterations ran to ``MAX_ITER`` (μ below 1e-50, NaN): only a copy is
sharpened, with a cap, and the first iterate stands if the copy fails."""
MAX_ITER = 300
"""Default cap on the interior-point iterations of one run (a polish retry with missed coalitions
runs again under it; the sharpened copy under ``SHARPEN_STEPS``)."""
MAX_ROUNDS = 300
"""Default cap on working-set enlargements (at most one per iteration)."""
INITIAL_ROWS = 64
"""Coalitions in the first working set of larger games: those with the largest |v_T|."""
START_SHIFT = 0.03
"""The interior point starts from the game's exact AND interpolation, with this added to both halves
of every split atom (the game is scaled to max |v| = 1), rather than from x = 2^-n everywhere.

Measured against that uniform start in one process, alternating, on real games (2 threads): 64 at
n = 10 1.13–1.14× faster (0.01: 1.13×, 0.1: 1.11×), 96 other n = 10 games 1.11×, 64 at n = 8
1.10×, 16 at n = 12 1.08×, 4 at n = 14 1.27×. The iterations hardly change (3,232 → 3,168 at
n = 10); the working set is smaller while it grows, since the uniform start violates most rows.
The result is the same optimum: identical bits on 243 of these 244 games; the polish of the other
did not settle its sets from this start, and does with the retry of ``SHARPEN``."""
GROWTH = 0.05
"""After each step at most this share of the working set (and at least ``GROWTH_MIN`` rows) joins it.

Measured on real Fashion-MNIST games at n = 10, 2 threads: with 5 % per step the working set ended
with 244–703 of 1,024 rows (median 368) after 33–76 iterations (median 52), 0.32 s a game over 64
games; 3 % or 10 % per step, or 128 or 256 first rows, changed the time by less than the noise
between runs (±20 %); adding every violated row at once took in nearly all rows (1.3 s a game),
since the first iterates violate most coalitions; restarting the interior point after each
enlargement (the previous scheme) took 7–9 restarts and 1.6–2.6 s a game, and every row from the
start 1.0 s a game (16 games)."""
GROWTH_MIN = 16
ENTRY_MARGIN = 0.2
"""A coalition joins the working set at its current q, moved inside its box by at least this share
of b (r = q + b clamped to [0.2 b, 1.8 b]), or by ``ENTRY_SCALE`` · √μ when that is less, so the
primal residual carries its violation and this distance.

Starting every new row at the box's centre (q = 0, the previous choice) left the residual at
1e-3–1e-2 while μ fell to 1e-13, and the iterations crawled; with entry at the fit, on 16 real
games at n = 12 a game took 0.30 s against 0.37 s, on 3 at n = 14 1.37 s against 1.57 s, and one
at n = 16 30 s against 80 s (2 threads; margins 0.1 and 0.3 were no better)."""
ENTRY_SCALE = 10.0
"""Late in the iterations a coalition joins ``ENTRY_SCALE`` · √μ inside its box rather than 0.2 b.

0.2 b is far more than the violation of a row that joins near the end (1e-6–1e-3 of the game's
scale), and that distance enters the primal residual of an iterate whose complementarity is
already tiny: its steps were short for about ten iterations after each such addition, a quarter
to two fifths of all iterations on real games at n = 10. At √μ scale the distance falls with μ,
and the row's dual starts at √μ / ``ENTRY_SCALE``. Measured with the polish's retry below against
the previous solver (0.2 b, no retry) in one process, alternating, on real games (2 threads): 64 at
n = 10 1.12× faster (3,168 → 2,759 iterations), 96 other n = 10 games 1.12×, 64 at n = 8 1.04×,
16 at n = 12 1.09×, 4 at n = 14 1.08×; same bits on every game whose polish settled before. Scales
10 and 30 took the same iterations within 2 %, 3 and 100 more. A fixed late margin (1e-3 b or
1e-2 b once μ < 1e-6) was fragile: 1e-3 made one game six times slower."""
DROP_MARGIN = 0.3
"""A working row whose q lies this share of b inside its box (|q| ≤ 0.7 b, in the iterate and in
the interior point's own slack) leaves the working set, at most once per coalition.

Most rows join the set while the iterates are still far from the optimum and are slack at the
end: on real games at n = 14, 477 of 2,645 rows were tight. Releasing them keeps the normal
matrix small; a row that is violated again rejoins for good, so additions and releases end, and
the final check still covers every coalition. Measured with this release against without it,
2 threads: 64 games at n = 10 0.12 s against 0.145 s a game, 16 at n = 12 0.37 s against 0.58 s,
3 at n = 14 1.85 s against 4.85 s (0.5 and 0.1 were no better)."""
ALL_ROWS_UP_TO = 256
"""Games with at most this many coalitions (n ≤ 8) start with every row in the working set: on 16
real games at n = 8 that took 0.071 s a game against 0.087 s for the growing set."""
POLISH_ROUNDS = 20
"""Exact solves the final polish may make (each after one correction of its sets) before it gives
up and the sharpened retry of ``SHARPEN`` takes over.

Every atom the exact point gives the wrong sign leaves the support in the same correction, while
the other changes go a few at a time. On 564 real games at n = 8–14 every polish that settled did
so within 5 solves, and the 5 first polishes that did not settle were still unsettled after 100
(their sharpened retries settled them). Leaving only the worst four wrong-signed atoms per
correction, as before, took up to 32 solves on games that settled (game 1 of the benchmark: its
iterate's support had 330 atoms, the solution 207) and 100 were allowed; a failing polish of 642
tight rows then spent 6–11 s in its SVDs (now 20 solves, 3.5 s for the whole game). The bolder
exchange can overshoot on a highly degenerate face: on 5 games at n = 6 given 40 extra atoms
whose |Aᵀy| is within ε of 1, it settled 2 and four at a time 3 (with 20 extra, 4 and 4)."""
POLISH_RETRIES = 2
"""Times the interior point goes on after a failed polish, with the coalitions the exact point
violates but the working set left out. On 64 real games at n = 10 one polish failed this way
(its sets did not settle); one more row and 4 iterations settled it. The
polish now hands back as soon as its first exact point violates such a row, which took the exact
solves (an SVD each) on those 64 games from 3.6 to 2.0 a game."""
SERIAL_UP_TO = 4096
"""Games with at most this many coalitions (n ≤ 12) are solved on one CPU thread (see
``_serial_when_small``)."""
DENSE_SUMS_UP_TO = 64
"""Games with at most this many coalitions (n ≤ 6) take their sums as one product with a dense
2^n × 2^n 0/1 matrix; larger ones as two products with the Kronecker factors below. Measured per
call of a pair of sums, one thread: 7 against 11 µs at n = 4, 9 against 14 µs at n = 6, 23 against
14 µs at n = 8."""
KRONECKER_SUMS_UP_TO = 32768
"""Up to this many coalitions (n ≤ 15) the sums are two small dense products per vector, one per
half of the players' bits (Z is the Kronecker product of its halves); above, the butterfly's n
passes. Measured per call of a pair of sums, 2 threads: 21 against 161 µs at n = 10, 36 against
208 µs at n = 12, 151 against 384 µs at n = 14, 393 against 846 µs at n = 15, 1,131 against
914 µs at n = 16."""


@dataclass(frozen=True)
class LeastNormSolution:
    """Per game of a batch: the coefficients, a certified lower bound and how the solve went."""

    a: Tensor
    """(B, 2^n) AND coefficient of every coalition."""
    o: Tensor
    """(B, 2^n) OR coefficient, zero at every |S| ≤ 1 (and everywhere for form "and")."""
    lower_bound: Tensor
    """(B,) float64: a lower bound on the LP optimum, from a dual-feasible point."""
    converged: Tensor
    """(B,) bool: the interior point met its tolerance and no coalition violates its bound."""
    iterations: Tensor
    """(B,) int64: interior-point iterations."""
    rows: Tensor
    """(B,) int64: coalitions in the final working set."""


def solve_least_norm(
    v: Tensor,
    bound: Tensor,
    form: str = "and-or",
    *,
    tol: float = TOL,
    max_iter: int = MAX_ITER,
    max_rounds: int = MAX_ROUNDS,
    progress: bool = False,
) -> LeastNormSolution:
    """Least-norm optimum of the sparsity LP for every game of ``v`` (B, 2^n), |q_T| ≤ ``bound``.

    ``tol`` is the complementarity target of the interior point, ``max_iter`` caps its iterations
    and ``max_rounds`` the number of working-set enlargements (at most one per iteration). Runs in
    float64 on v's device; the result is on that device too, apart from the CPU summaries.
    """
    v64, bound64 = v.double(), bound.double()
    parts = []
    games = range(v.shape[0])
    # Inference mode skips autograd's bookkeeping on each of the many small operations of an
    # iteration: 1.14x faster on real games at n = 10, same bits.
    with _serial_when_small(v.shape[-1], v.device), torch.inference_mode():
        for b in tqdm(games, desc="sparsify (LP)", disable=not progress, leave=False, mininterval=1.0):
            game = _Game(v64[b], float(bound64[b]), form)
            parts.append(game.solve(tol=tol, max_iter=max_iter, max_rounds=max_rounds))
    if not parts:
        empty = v64.new_zeros((0, v.shape[-1]))
        none = torch.zeros(0, dtype=torch.float64)
        return LeastNormSolution(empty, empty, none, none.bool(), none.long(), none.long())
    a, o, lower, converged, iterations, rows = zip(*parts)
    return LeastNormSolution(
        a=torch.stack(a),
        o=torch.stack(o),
        lower_bound=torch.tensor(lower, dtype=torch.float64),
        converged=torch.tensor(converged, dtype=torch.bool),
        iterations=torch.tensor(iterations, dtype=torch.int64),
        rows=torch.tensor(rows, dtype=torch.int64),
    )


@contextmanager
def _serial_when_small(size: int, device: torch.device) -> Iterator[None]:
    """One CPU thread for small games, the caller's thread count restored afterwards.

    Up to n = 12 the iteration's products and factorisations are too small to share between
    threads. Measured on real games, alternating the two: at n = 8 with another process on the
    second core, two threads took 2.4 s a game against 0.14 s for one (OpenMP threads wait for
    each other); alone, 64 games at n = 10 took 8.4–8.9 s on one thread and 8.5–9.1 s on two, 16
    at n = 12 6.5–7.1 s and 6.8–7.2 s, while 3 at n = 14 took 7.4–8.1 s on one and 5.1–5.6 s on
    two. One thread leaves the other cores to the workflow's other jobs and keeps the bits
    independent of the caller's thread count."""
    threads = torch.get_num_threads()
    serial = device.type == "cpu" and size <= SERIAL_UP_TO and threads > 1
    if serial:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if serial:
            torch.set_num_threads(threads)


@lru_cache(maxsize=16)
def _subset_matrix(size: int, dtype: torch.dtype, device: str) -> Tensor:
    """Zᵀ as a dense matrix, so that x @ Zᵀ is the subset sum of x: Z[T, S] = [S ⊆ T]."""
    index = torch.arange(size, device=device)
    return ((index[:, None] & index[None, :]) == index[:, None]).to(dtype)


SUBSET, SUPERSET, COMPLEMENT = "subset", "superset", "complement"
"""The three sums an operator of the problem is made of: ζx(T) = Σ_{S ⊆ T} x_S, Zᵀx(T) =
Σ_{S ⊇ T} x_S, and ζx(N∖T), the subset sums read at the complement."""


class _PairTransform:
    """Two of the sums above, one per row of a (2, 2^n) input, in one call.

    Every operator of the interior point (A, Aᵀ, the normal matrix's subset sums) is one such
    pair, so a pair costs two batched products instead of two transforms and the flips between
    them: an iteration is dominated by per-call overhead, not arithmetic. Z is the Kronecker
    product of its halves, so on the (2^high × 2^low) grid of a vector each sum is L X R with
    small factors (high = 0, one dense product, up to ``DENSE_SUMS_UP_TO`` coalitions); reading at
    the complement reverses both grid axes, which is folded into the factors. Games above
    ``KRONECKER_SUMS_UP_TO`` coalitions use the butterfly."""

    def __init__(self, n: int, kinds: tuple[str, str], dtype: torch.dtype, device: str) -> None:
        self.size, self.kinds = 1 << n, kinds
        self.left: Tensor | None = None
        self.right: Tensor | None = None
        if self.size > KRONECKER_SUMS_UP_TO:
            return
        low = n if self.size <= DENSE_SUMS_UP_TO else n // 2
        high = n - low
        factors = [_grid_factors(kind, high, low, dtype, device) for kind in kinds]
        self.grid = (1 << high, 1 << low)
        self.right = torch.stack([right for _, right in factors])
        if high:
            self.left = torch.stack([left for left, _ in factors])

    def __call__(self, x: Tensor) -> Tensor:
        """(2, 2^n) → (2, 2^n), row k summed by ``kinds[k]``; a (2^n,) input feeds both rows."""
        if self.right is None:
            return self._butterfly(x)
        if x.dim() == 1:  # one grid against both right factors
            sums = torch.matmul(x.view(*self.grid), self.right)
        else:
            sums = torch.bmm(x.reshape(2, *self.grid), self.right)
        if self.left is not None:
            sums = torch.bmm(self.left, sums)
        return sums.view(2, self.size)

    def _butterfly(self, x: Tensor) -> Tensor:
        rows = x.expand(2, self.size)
        ahead = torch.stack([row.flip(-1) if kind == SUPERSET else row for row, kind in zip(rows, self.kinds)])
        sums = zeta_transform(ahead)
        return torch.stack([row if kind == SUBSET else row.flip(-1) for row, kind in zip(sums, self.kinds)])


def _grid_factors(kind: str, high: int, low: int, dtype: torch.dtype, device: str) -> tuple[Tensor, Tensor]:
    """L and R with sums(x) = L X R on the grid X[h, l] = x[h · 2^low + l]."""
    upper = _subset_matrix(1 << high, dtype, device)  # [i ⊆ j], i.e. Zᵀ of the high players
    lower = _subset_matrix(1 << low, dtype, device)
    if kind == SUBSET:
        return upper.T, lower
    if kind == SUPERSET:
        return upper, lower.T
    return upper.T.flip(0), lower.flip(1)


@lru_cache(maxsize=16)
def _pair_transform(n: int, kinds: tuple[str, str], dtype: torch.dtype, device: str) -> _PairTransform:
    return _PairTransform(n, kinds, dtype, device)


class _Game:
    """One game, scaled to max |v| = 1, with its atoms and the operators A and Aᵀ."""

    def __init__(self, v: Tensor, bound: float, form: str) -> None:
        self.size = v.shape[-1]
        self.n = self.size.bit_length() - 1
        self.full = self.size - 1
        self.scale = float(v.abs().max())
        if self.scale == 0.0:
            self.scale = 1.0
        self.v = v / self.scale
        self.b = bound / self.scale
        self.boxed = self.b > 1e-14
        self.eps = REGULARISATION
        ones = torch.ones_like(self.v)
        or_atoms = (coalition_orders(self.n, v.device) >= 2).to(v.dtype)
        if form == "and":
            or_atoms = torch.zeros_like(or_atoms)
        self.or_atoms = or_atoms
        self.atoms = torch.stack((ones, or_atoms))
        # Split variables [a⁺, o⁺, a⁻, o⁻]; the mask removes the OR atoms that do not exist.
        self.valid = self.atoms.repeat(2, 1)
        self.index = torch.arange(self.size, device=v.device)
        dtype, device = v.dtype, str(v.device)
        self._synthesis_sums = _pair_transform(self.n, (SUBSET, COMPLEMENT), dtype, device)
        self._analysis_sums = _pair_transform(self.n, (SUPERSET, COMPLEMENT), dtype, device)
        self.subset_sums = _pair_transform(self.n, (SUBSET, SUBSET), dtype, device)

    def apply(self, x: Tensor) -> Tensor:
        """A x for split variables x of shape (4, 2^n)."""
        return self._synthesis(self.coefficients(x))

    def coefficients(self, x: Tensor) -> Tensor:
        """Split variables (4, 2^n) [a⁺, o⁺, a⁻, o⁻] as coefficients (2, 2^n) [a, o].

        The positive parts come first and the negative ones second, so that this and the other
        conversions between the two are operations on contiguous halves."""
        return x[:2] - x[2:]

    def _synthesis(self, coefficients: Tensor) -> Tensor:
        """Z a + W o for (2, 2^n) coefficients (a, o): out[T] = ζa(T) + Σ o − ζo(N∖T)."""
        sums = self._synthesis_sums(coefficients * self.atoms)
        return sums[0] + sums[1, 0] - sums[1]

    def adjoint(self, y: Tensor) -> Tensor:
        """(Zᵀy, Wᵀy) as (2, 2^n), zero on OR atoms that do not exist.

        Zᵀy is the superset sum of y, and Wᵀy = Wy = Σy − ζy(N∖T), with Σy its superset sum at ∅."""
        sums = self._analysis_sums(y)
        return torch.stack((sums[0], (sums[0, 0] - sums[1]) * self.or_atoms))

    def split(self, gradient: Tensor) -> Tensor:
        """(2, 2^n) atom gradients as split-variable gradients (4, 2^n): [g_a, g_o, −g_a, −g_o]."""
        return torch.cat((gradient, -gradient))

    def solve(self, *, tol: float, max_iter: int, max_rounds: int) -> tuple:
        """One interior point whose working set grows until no coalition is violated, then polish and bound.

        When the polish cannot settle the sets because the exact point violates coalitions the
        working set left out, those join it and the interior point goes on before the next try;
        when it still fails, a sharpened copy of the interior point gets one more (``SHARPEN``).
        The iterations count every step taken, the copy's included."""
        ipm = _RestrictedIPM(self, self._initial_rows())
        iterations = ipm.run(tol=tol, max_iter=max_iter, max_rounds=max_rounds)
        polished, iterations = self._polish_or_go_on(ipm, iterations, tol=tol, max_iter=max_iter, max_rounds=max_rounds)
        if polished is None and ipm.converged and ipm.support().numel() and ipm.tight_rows().numel():
            sharp = ipm.fork()
            steps = sharp.run(tol=tol / SHARPEN_MU, max_iter=SHARPEN_STEPS, max_rounds=max_rounds, residual=RESIDUAL / SHARPEN)
            iterations += steps
            if sharp.converged:
                x, _, support, tight = sharp.iterate()
                polished, _ = self._polish(x, support, tight)
                if polished is not None:
                    ipm = sharp
        x, y, support, tight = polished if polished is not None else ipm.iterate()
        lower = self._lower_bound(x, y, support, tight) * self.scale
        return x[0] * self.scale, x[1] * self.scale, lower, ipm.converged, iterations, ipm.rows.numel()

    def _polish_or_go_on(
        self, ipm: _RestrictedIPM, iterations: int, *, tol: float, max_iter: int, max_rounds: int
    ) -> tuple[tuple[Tensor, Tensor, Tensor, Tensor] | None, int]:
        """The polished solution (or None) and the iterations, after up to ``POLISH_RETRIES``
        runs of the interior point with the coalitions the exact point violated outside its set."""
        for attempt in range(POLISH_RETRIES + 1):
            if not ipm.converged:
                break
            x, _, support, tight = ipm.iterate()
            outside = torch.ones_like(self.v, dtype=torch.bool)
            outside[ipm.rows] = False
            polished, missed = self._polish(x, support, tight, outside if attempt < POLISH_RETRIES else None)
            if polished is not None:
                return polished, iterations
            missed = missed[outside[missed]]
            if missed.numel() == 0 or attempt == POLISH_RETRIES:
                break
            ipm.add(missed, far=True)
            iterations += ipm.run(tol=tol, max_iter=max_iter, max_rounds=max_rounds)
        return None, iterations

    def _polish(
        self, x: Tensor, support: Tensor, tight: Tensor, outside: Tensor | None = None
    ) -> tuple[tuple[Tensor, Tensor, Tensor, Tensor] | None, Tensor]:
        """The exact solution of the ε-problem, from the support and tight rows the solve found.

        The interior point approaches the solution along the optimal face only at the rate of ε,
        so its last iterate is off by about μ/ε there. With the support J (signs s) and the tight
        rows P (sides σ) fixed, the optimality conditions are linear (see :meth:`_solve_sets`)
        and one small solve gives the solution to rounding. Near-degenerate rows and atoms can be
        misread from the iterate, so the sets are corrected a few times, as in a primal-dual
        active-set method, until every condition they assume holds. Returns x, y and the final
        sets, or None when that does not happen, and with either the coalitions the first exact
        point violated beyond the tight set (the caller adds those the working set lacks). Given
        ``outside`` (the coalitions outside the working set), it stops at once when the first
        exact point violates one of them: the interior point has not seen that row, and a few more
        of its iterations settle such a game faster than up to ``POLISH_ROUNDS`` corrections.
        """
        flat = x.flatten()
        signs = torch.sign(flat)
        sides = torch.sign(self.apply_flat(flat) - self.v)
        atoms = torch.zeros_like(flat, dtype=torch.bool)
        atoms[support] = True
        rows = torch.zeros_like(self.v, dtype=torch.bool)
        rows[tight] = True
        exists = self.atoms.flatten() > 0
        tolerance = 1e-12
        missed = tight[:0]
        first_point = True
        for _ in range(POLISH_ROUNDS):
            if not bool(atoms.any()) or not bool(rows.any()):
                return None, missed
            tight_now = rows.nonzero().flatten()
            solved = self._solve_sets(atoms.nonzero().flatten(), tight_now, signs, sides)
            if isinstance(solved, int):
                rows[tight_now[solved]] = False  # a misread row the support cannot hold: release it
                continue
            polished, y = solved
            reach = self.adjoint(y).flatten()
            excess = (self.apply_flat(polished) - self.v).abs() - self.b
            wrong_sign = atoms & (polished * signs <= 0)
            wrong_side = rows & (y * sides > 1e-12)
            entering = ~atoms & exists & (reach.abs() > 1.0 + tolerance)
            violated = ~rows & (excess > tolerance)
            if first_point:  # the first exact point: the solve before it may have released a row
                first_point = False
                missed = violated.nonzero().flatten()
                if outside is not None and bool(outside[missed].any()):
                    return None, missed
            if not bool((wrong_sign | entering).any() or (wrong_side | violated).any()):
                return (polished.view_as(x), y, atoms.nonzero().flatten(), rows.nonzero().flatten()), missed
            # Every wrong-signed atom leaves (see POLISH_ROUNDS); the other changes go a few at
            # a time, the worst first: those sets are nearly right and a bold exchange overshoots.
            wrong_side = _worst(wrong_side, y * sides)
            entering = _worst(entering, reach.abs())
            violated = _worst(violated, excess)
            atoms = (atoms & ~wrong_sign) | entering
            signs = torch.where(entering, torch.sign(reach), signs)
            rows = (rows & ~wrong_side) | violated
            sides = torch.where(violated, torch.sign(self.apply_flat(polished) - self.v), sides)
        return None, missed

    def _solve_sets(self, support: Tensor, tight: Tensor, signs: Tensor, sides: Tensor) -> tuple[Tensor, Tensor] | int:
        """x and y of the ε-problem when the support J and the tight rows P are known.

        ε x_J = A_{PJ}ᵀ y_P − s_J and A_{PJ} x_J = v_P + σ_P b have the unique solution
        x_J = A⁺(v_P + σ_P b) − (I − A⁺A) s_J / ε even when tight rows are redundant (the usual
        case on a face), with A⁺ from one SVD; y_P is the least-norm multiplier. When the
        equations cannot all hold on this support, returns the position in ``tight`` of the row
        the least-squares solution misses most.
        """
        columns = self._columns(support, tight)  # A_{PJ}, |P| × |J|
        left, values, right_t = torch.linalg.svd(columns, full_matrices=False)
        rank = int((values > values[0] * 1e-12 * max(columns.shape)).sum())
        left, values, right = left[:, :rank], values[:rank], right_t[:rank].T
        s_j = signs[support]
        target = self.v[tight] + sides[tight] * self.b
        solution = right @ ((left.T @ target) / values) - (s_j - right @ (right.T @ s_j)) / self.eps
        # The 1/ε null-space term carries rounding into A x; one refinement step removes it.
        solution = solution + right @ ((left.T @ (target - columns @ solution)) / values)
        dual_target = s_j + self.eps * solution
        multipliers = left @ ((right.T @ dual_target) / values)
        miss = (columns @ solution - target).abs()
        if float(miss.max()) > 1e-9 * (1.0 + float(target.abs().max())):
            return int(miss.argmax())
        polished = torch.zeros_like(signs)
        polished[support] = solution
        y = torch.zeros_like(self.v)
        y[tight] = multipliers
        return polished, y

    def apply_flat(self, flat: Tensor) -> Tensor:
        """A x for x given as (AND, OR) coefficients, flattened to 2 · 2^n."""
        return self._synthesis(flat.view(2, self.size))

    def _initial_rows(self) -> Tensor:
        """The coalitions with the largest |v_T|: those a sparse x violates first."""
        if not self.boxed or self.size <= max(INITIAL_ROWS, ALL_ROWS_UP_TO):
            return self.index.clone()
        count = min(INITIAL_ROWS, self.size)
        return torch.topk(self.v.abs(), count).indices.sort().values

    def _violated_rows(self, fit: Tensor, rows: Tensor) -> Tensor:
        """Coalitions outside the working set whose |q_T| exceeds b (q = ``fit`` − v, ``fit`` = A x),
        in index order."""
        excess = (fit - self.v).abs_().sub_(self.b).index_fill_(0, rows, -math.inf)
        tolerance = 1e-12
        return (excess > tolerance).nonzero().view(-1)

    def _lower_bound(self, x: Tensor, y: Tensor, support: Tensor, tight: Tensor) -> float:
        """A lower bound on the LP optimum (scaled game), the better of two dual-feasible points.

        The ε-problem's multipliers y satisfy |Aᵀy| = 1 + ε|x| on the support, so scaling them
        into |Aᵀy| ≤ 1 loses a relative ε‖x‖∞. Subtracting ε w, where w solves A_{PJ}ᵀ w = x_J
        on the tight rows P and support J, removes that term when the least-norm optimum is
        exactly reached, and the bound becomes tight to rounding.
        """
        best = self._dual_value(y)
        if support.numel() and tight.numel():
            columns = self._columns(support, tight)  # |P| × |J|
            gram = columns @ columns.T
            gram.diagonal().add_(1e-12 * float(gram.diagonal().max()))
            w, info = torch.linalg.solve_ex(gram, columns @ x.flatten()[support])
            if int(info) == 0 and bool(torch.isfinite(w).all()):
                corrected = y.clone()
                corrected[tight] -= self.eps * w
                best = max(best, self._dual_value(corrected))
        return best

    def _dual_value(self, y: Tensor) -> float:
        """vᵀy − b‖y‖₁ after scaling y so that |Aᵀy| ≤ 1 on every atom (LP dual feasibility)."""
        reach = float(self.adjoint(y).abs().max())
        y = y / max(1.0, reach)
        return float(self.v @ y - self.b * y.abs().sum())

    def _columns(self, atoms: Tensor, rows: Tensor) -> Tensor:
        """Dense A[rows, atoms] for flat atom indices into (AND, OR) × 2^n."""
        kind, sets = atoms // self.size, atoms % self.size
        meet = rows[:, None] & sets[None, :]
        inside = meet == sets[None, :]
        touches = meet != 0
        return torch.where(kind[None, :] == 0, inside, touches).to(self.v.dtype)


class _RestrictedIPM:
    """Mehrotra predictor-corrector for the ε-problem with only the rows ``rows`` constrained.

    Variables: split atoms x = [a⁺, o⁺, a⁻, o⁻] ≥ 0 (all atoms), and per working row the shifted
    noise r = q + b ∈ [0, 2b] with its slack s = 2b − r. Equalities: (A x)_R − r = v_R − b.
    Cost: Σ x + (ε/2) Σ x². Games with b = 0 have equality rows and no r.

    The primal variables live in one vector p = [x, r, s] and their dual slacks in d = [z, zr, ws],
    so that the complementarity products, step lengths and updates are one operation each: an
    iteration costs more in per-call overhead than in arithmetic. x is held at 1 (and z at 0) on
    the OR atoms that do not exist, which keeps every division finite; their Θ is 0, so they never
    move.
    """

    def __init__(self, game: _Game, rows: Tensor) -> None:
        self.game = game
        self.converged = False
        count = rows.numel()
        filled = lambda value: torch.full((count,), value, dtype=game.v.dtype, device=game.v.device)  # noqa: E731
        b = game.b
        self.y = filled(0.0)
        x = self._interpolating_start()
        self._assemble(rows, x, game.valid.clone(), filled(b), filled(b), filled(1e-2), filled(1e-2))
        self.fit = game.apply(self.x)  # A x, kept with x: the checks of every row read it
        self.aty = torch.zeros_like(game.atoms)  # Aᵀy (as atom gradients), kept with y
        self.enlargements = 0
        self.released = torch.zeros_like(game.v, dtype=torch.bool)

    def _interpolating_start(self) -> Tensor:
        """Split atoms (4, 2^n) that reproduce the game exactly: the AND coefficients are its
        Möbius transform (OR ones 0), both halves of every split pair shifted by ``START_SHIFT``.

        q = 0 at every coalition, so no row is violated at the start and the working set grows
        only as the iterate leaves the interpolation (see ``START_SHIFT``). Missing OR atoms hold
        x = 1, as everywhere."""
        game = self.game
        a = moebius_transform(game.v)
        x = torch.stack((a.clamp(min=0.0), torch.zeros_like(a), (-a).clamp(min=0.0), torch.zeros_like(a)))
        return torch.where(game.valid > 0, x + START_SHIFT, torch.ones_like(x))

    def _assemble(self, rows: Tensor, x: Tensor, z: Tensor, r: Tensor, s: Tensor, zr: Tensor, ws: Tensor) -> None:
        """Set the working rows and the variables, with the gather indices for those rows."""
        game = self.game
        if not game.boxed:
            r = s = zr = ws = r[:0]
        self.p = torch.cat((x.flatten(), r, s))
        self.d = torch.cat((z.flatten(), zr, ws))
        self.rows = rows
        self.boxes = r.numel()
        self.rhs = game.v.index_select(0, rows) - (game.b if game.boxed else 0.0)
        narrow = rows.to(torch.int32)  # half the index traffic of the |R|² gathers, same values
        self.meet = (narrow[:, None] & narrow[None, :]).flatten()
        self.outside = game.full ^ narrow
        self.join_outside = (game.full ^ (narrow[:, None] | narrow[None, :])).flatten()
        self.pairs = float(game.valid.sum()) + 2 * self.boxes
        ones = torch.ones(2 * self.boxes, dtype=game.v.dtype, device=game.v.device)
        self.paired = torch.cat((game.valid.flatten(), ones))  # 1 where p·d is a complementarity pair
        self.unpaired = 1.0 - self.paired

    @property
    def x(self) -> Tensor:
        return self.p[: 4 * self.game.size].view(4, self.game.size)

    @property
    def z(self) -> Tensor:
        return self.d[: 4 * self.game.size].view(4, self.game.size)

    def _boxes(self, vector: Tensor) -> tuple[Tensor, Tensor]:
        """The row parts (r, s) of p or (zr, ws) of d."""
        start = 4 * self.game.size
        return vector[start : start + self.boxes], vector[start + self.boxes :]

    def run(self, *, tol: float, max_iter: int, max_rounds: int, residual: float = RESIDUAL) -> int:
        """Iterate until μ ≤ tol with residuals at rounding level and no coalition violated,
        enlarging the working set on the way; returns the iterations used."""
        self.converged = False
        for iteration in range(max_iter):
            violated = self._enlarge(max_rounds)
            if not self._step(tol, residual):
                if violated == 0 and self._enlarge(max_rounds) == 0:
                    self.converged = True
                    return iteration
                if self.enlargements >= max_rounds:
                    return iteration
            else:
                self._release()
        return max_iter

    def _release(self) -> None:
        """Drop the working rows that sit well inside their box (``DROP_MARGIN``), each at most once.

        Done only when enough of them can go to be worth re-indexing the normal matrix; at least
        ``INITIAL_ROWS`` rows stay (with a large budget every row can be inside its box)."""
        game = self.game
        count = self.rows.numel()
        if not game.boxed or count <= INITIAL_ROWS:
            return
        r, s = self._boxes(self.p)
        q = self._noise(self.rows)
        inside = (q.abs() <= (1 - DROP_MARGIN) * game.b) & (torch.minimum(r, s) >= DROP_MARGIN * game.b)
        drop = inside & ~self.released[self.rows]
        candidates = int(drop.sum())
        stay = max(0, INITIAL_ROWS - (count - candidates))  # candidates that must stay after all
        if candidates - stay < max(GROWTH_MIN, int(GROWTH * count)):
            return
        if stay:
            nearest_bound = torch.topk(torch.where(drop, q.abs(), torch.full_like(q, -1.0)), stay).indices
            drop[nearest_bound] = False
        self.released[self.rows[drop]] = True
        keep = ~drop
        zr, ws = self._boxes(self.d)
        self.y = self.y[keep]
        self._assemble(self.rows[keep], self.x, self.z, r[keep], s[keep], zr[keep], ws[keep])
        self.aty = game.adjoint(self._on_all(self.y))

    def _enlarge(self, max_rounds: int) -> int:
        """Add the most violated coalitions to the working set; returns how many were violated."""
        game = self.game
        if not game.boxed or self.rows.numel() == game.size:
            return 0
        violated = game._violated_rows(self.fit, self.rows)
        count = violated.numel()
        if count == 0 or self.enlargements >= max_rounds:
            return count
        limit = max(GROWTH_MIN, int(GROWTH * self.rows.numel()))
        if count > limit:  # the most violated; their order does not matter, add() sorts
            violated = violated[torch.topk(self._noise(violated).abs(), limit).indices]
        self.add(violated)
        self.enlargements += 1
        return count

    def add(self, new: Tensor, *, far: bool = False) -> None:
        """Coalitions ``new`` (not in the working set) join it, at their current q.

        Their shifted noise r starts at q + b moved min(``ENTRY_MARGIN`` · b, ``ENTRY_SCALE`` · √μ)
        inside the box (``far``: ``ENTRY_MARGIN`` · b whatever μ), their duals at μ/r and μ/s, so
        that their complementarity products equal the current μ, and their multipliers at 0 (Aᵀy
        does not change); what q exceeds the box by enters the primal residual, which the next
        steps reduce. Rows the polish's exact point violated join ``far``: at the iterate they can
        sit just inside their bound, and entering √μ-close there left the interior point nothing to
        do (0 steps on one real game, whose polish then failed again).
        The distance is at least 1e-12 b, so that 2b − r stays positive in floating point."""
        game = self.game
        mu = max(self._mu(), 1e-300)
        b = game.b
        q = self._noise(new)
        inside = ENTRY_MARGIN * b if far else max(min(ENTRY_MARGIN * b, ENTRY_SCALE * math.sqrt(mu)), 1e-12 * b)
        r0 = (q + b).clamp(inside, 2.0 * b - inside)
        s0 = 2.0 * b - r0
        rows = torch.cat((self.rows, new))
        order = torch.argsort(rows)

        def extend(values: Tensor, fill: Tensor) -> Tensor:
            return torch.cat((values, fill))[order]

        (r, s), (zr, ws) = self._boxes(self.p), self._boxes(self.d)
        self.y = extend(self.y, torch.zeros_like(r0))
        self._assemble(rows[order], self.x, self.z, extend(r, r0), extend(s, s0), extend(zr, mu / r0), extend(ws, mu / s0))

    def iterate(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The iterate as the polish reads it: (a, o) coefficients, y over every coalition, the
        support and the tight rows."""
        game = self.game
        return game.coefficients(self.x) * game.atoms, self._on_all(self.y), self.support(), self.tight_rows()

    def fork(self) -> _RestrictedIPM:
        """An independent copy: every update replaces the tensors it changes, except this mask."""
        twin = copy.copy(self)
        twin.released = self.released.clone()
        return twin

    def support(self) -> Tensor:
        """Flat (AND, OR) atom indices whose split variable dominates its dual: the support."""
        active = (self.x > self.z) & (self.game.valid > 0)
        either = (active[:2] | active[2:]).flatten()
        return either.nonzero().flatten()

    def tight_rows(self) -> Tensor:
        """Working rows whose q sits on a bound (a slack below its dual), as coalition indices."""
        if not self.game.boxed:
            return self.rows
        (r, s), (zr, ws) = self._boxes(self.p), self._boxes(self.d)
        return self.rows[(r < zr) | (s < ws)]

    def _noise(self, coalitions: Tensor) -> Tensor:
        """q = A x − v of the current iterate at ``coalitions``."""
        return self.fit.index_select(0, coalitions) - self.game.v.index_select(0, coalitions)

    def _on_all(self, values: Tensor) -> Tensor:
        """Working-row values as a vector over every coalition, zero off the working set."""
        return torch.zeros_like(self.game.v).index_copy_(0, self.rows, values)

    def _mu(self) -> float:
        return float(torch.dot(self.p, self.d)) / self.pairs

    def _step(self, tol: float, residual: float) -> bool:
        """One predictor-corrector step; False when already converged."""
        game, p, d = self.game, self.p, self.d
        x, z = self.x, self.z
        primal = self.rhs - self.fit.index_select(0, self.rows)
        dual = torch.addcmul(game.valid, game.valid, x, value=game.eps) - z - game.split(self.aty)
        dual_r = None
        if game.boxed:
            r, _ = self._boxes(p)
            zr, ws = self._boxes(d)
            primal = primal + r
            dual_r = self.y - zr + ws
        mu = self._mu()
        if mu <= tol and _largest(primal) <= residual * (1.0 + _largest(self.rhs)):
            if _largest(dual) <= residual and (dual_r is None or _largest(dual_r) <= residual):
                return False
        rates = d / p
        theta = game.valid / (rates[: 4 * game.size].view(4, game.size) + game.eps)
        theta_r = None
        if game.boxed:
            rate_r, rate_s = self._boxes(rates)
            theta_r = (rate_r + rate_s).reciprocal_()
        chol = self._factor(theta, theta_r)

        def direction(pairing: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
            """Newton direction (dp, dd, dy, Aᵀdy) for complementarity residual ``pairing``."""
            w = pairing / p
            rho = dual - w[: 4 * game.size].view(4, game.size)
            rhs = primal + game.apply(theta * rho).index_select(0, self.rows)
            if theta_r is not None:
                w_r, w_s = self._boxes(w)
                rho_r = dual_r - w_r + w_s
                rhs = rhs - theta_r * rho_r
            dy = torch.linalg.solve_triangular(chol, torch.linalg.solve_triangular(chol.mT, rhs[:, None], upper=False), upper=True).view(-1)
            reach = game.adjoint(self._on_all(dy))
            dx = theta * (game.split(reach) - rho)
            if theta_r is None:
                dp = dx.view(-1)
            else:
                dr = (theta_r * (dy + rho_r)).neg_()
                dp = torch.cat((dx.view(-1), dr, -dr))
            dd = torch.addcmul(pairing, d, dp, value=-1.0).div_(p)
            return dp, dd, dy, reach

        products = p * d
        dp, dd, _, _ = direction(-products)
        alpha_p, alpha_d = _step_length(p, dp), _step_length(d + self.unpaired, dd)
        affine = float(torch.dot(torch.add(p, dp, alpha=alpha_p), torch.add(d, dd, alpha=alpha_d)))
        sigma = min(max(affine / self.pairs / mu, 0.0), 1.0) ** 3
        pairing = (sigma * mu) * self.paired - products
        dp, dd, dy, reach = direction(pairing.addcmul_(dp, dd, value=-1.0))
        alpha_p, alpha_d = 0.99 * _step_length(p, dp), 0.99 * _step_length(d + self.unpaired, dd)
        self.p = torch.add(p, dp, alpha=alpha_p)
        self.d = torch.add(d, dd, alpha=alpha_d)
        self.y = torch.add(self.y, dy, alpha=alpha_d)
        self.aty = torch.add(self.aty, reach, alpha=alpha_d)
        self.fit = game.apply(self.x)
        return True

    def _factor(self, theta: Tensor, theta_r: Tensor | None) -> Tensor:
        """Upper Cholesky factor U (UᵀU = M) of the working-row normal matrix M = A_R Θ A_Rᵀ + Θ_r,
        built by gathers. The triangular solves take U and Uᵀ as they are, without the copy of the
        factor that ``cholesky_solve`` makes on every call (measured at 200 rows: 26 against 43 µs
        a solve).

        The OR part is formed with cancellation; when rounding costs it definiteness, a
        diagonal shift of growing size restores it (the step direction stays a descent one).
        """
        game = self.game
        # Θ is 0 on the OR atoms that do not exist, so these are the atom weights as they are.
        z_and, z_or = game.subset_sums(theta[:2] + theta[2:])
        count = self.rows.numel()
        matrix = torch.index_select(z_and, 0, self.meet)
        matrix += torch.index_select(z_or, 0, self.join_outside)
        matrix = matrix.view(count, count)
        total = z_or[game.full]
        edge = total - torch.index_select(z_or, 0, self.outside)
        matrix += edge[:, None]
        matrix += edge[None, :]
        matrix -= total
        if theta_r is not None:
            matrix.diagonal().add_(theta_r)
        chol, info = torch.linalg.cholesky_ex(matrix, upper=True)
        shift = 1e-14
        while int(info) != 0 and shift < 1.0:
            jitter = shift * float(matrix.diagonal().abs().max())
            eye = torch.eye(matrix.shape[0], dtype=matrix.dtype, device=matrix.device)
            chol, info = torch.linalg.cholesky_ex(matrix + jitter * eye, upper=True)
            shift *= 100.0
        return chol


def _largest(values: Tensor) -> float:
    return float(torch.linalg.vector_norm(values, math.inf)) if values.numel() else 0.0


def _step_length(value: Tensor, change: Tensor) -> float:
    """Largest α ≤ 1 with value + α·change ≥ 0, for value > 0 (entries with change ≥ 0 never block)."""
    worst = float((change / value).min())
    return 1.0 if worst >= -1.0 else -1.0 / worst


def _worst(mask: Tensor, badness: Tensor, count: int = 4) -> Tensor:
    """The ``count`` entries of ``mask`` with the largest ``badness`` (ties by index)."""
    if int(mask.sum()) <= count:
        return mask
    scores = torch.where(mask, badness, torch.full_like(badness, -math.inf))
    chosen = torch.zeros_like(mask)
    chosen[torch.topk(scores, count).indices] = True
    return chosen
