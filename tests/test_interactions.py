"""The interaction engine against independent references: brute-force definitions, shapiq,
HiGHS (scipy) for the LP optimum, SLSQP for the least-norm optimum of tiny games, the previous
dense interior-point solver, dense-matrix re-implementations of the reference recipe, and
analytic games with known answers.

Coalition convention: index T of a game vector has bit i set iff player i ∈ T.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pretrain_knowledge.interactions import (
    FORMS,
    METHODS,
    SPARSIFY_OPTIONS,
    SparsifyDiagnostics,
    and_transform,
    inverse_and_transform,
    inverse_or_transform,
    max_players,
    or_transform,
    reconstruct,
    sparsify,
)
from references import (
    brute_and,
    brute_or,
    brute_reconstruct,
    dense_lp_l1,
    dense_reference_and_recipe,
    dense_reference_recipe,
    highs_optimum,
    highs_solution,
    least_norm_optimum,
    mlp_games,
    popcount,
    random_games,
    relabel,
    salient,
    subset,
)


# ---------------------------------------------------------------------------------------------
# Transforms
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", range(3, 11))
def test_and_transform_equals_shapiq_moebius(n: int) -> None:
    from shapiq import ExactComputer

    values = random_games(1, n, seed=n)[0].numpy()
    weights = 1 << np.arange(n)

    def game(coalitions: np.ndarray) -> np.ndarray:
        return values[(coalitions.astype(np.int64) * weights).sum(axis=1)]

    moebius = ExactComputer(game, n_players=n)("Moebius")
    ours = and_transform(torch.from_numpy(values)).numpy()
    expected = np.zeros(1 << n)
    for players, position in moebius.interaction_lookup.items():
        expected[sum(1 << p for p in players)] = moebius.values[position]
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize("n", range(1, 9))
def test_transforms_equal_brute_force_definitions(n: int) -> None:
    v = random_games(2, n, seed=100 + n)
    np.testing.assert_allclose(and_transform(v).numpy(), brute_and(v.numpy()), atol=1e-10)
    np.testing.assert_allclose(or_transform(v).numpy(), brute_or(v.numpy()), atol=1e-10)


@pytest.mark.parametrize("n", [1, 4, 7])
def test_reconstruction_equals_brute_force_universal_matching(n: int) -> None:
    i_and, i_or = random_games(2, n, seed=7 + n)
    ours = reconstruct(i_and, i_or).numpy()
    np.testing.assert_allclose(ours, brute_reconstruct(i_and.numpy(), i_or.numpy()), atol=1e-10)


@pytest.mark.parametrize("n", [1, 5, 8, 11])
def test_inverses_reconstruct_integer_games_exactly(n: int) -> None:
    # Integer-valued games keep every partial sum exact in float64, so equality is bitwise.
    v = torch.randint(-1000, 1000, (3, 1 << n), generator=torch.Generator().manual_seed(n)).double()
    assert torch.equal(inverse_and_transform(and_transform(v)), v)
    assert torch.equal(inverse_or_transform(or_transform(v)), v)
    assert torch.equal(and_transform(inverse_and_transform(v)), v)
    assert torch.equal(or_transform(inverse_or_transform(v)), v)


def test_transforms_batch_over_leading_dims_and_keep_dtype() -> None:
    v = random_games(6, 5, seed=1).reshape(2, 3, 32)
    flat = and_transform(v.reshape(6, 32)).reshape(2, 3, 32)
    assert torch.equal(and_transform(v), flat)
    assert or_transform(v.float()).dtype == torch.float32
    np.testing.assert_allclose(or_transform(v.float()).numpy(), or_transform(v).numpy(), atol=1e-4)


def test_transforms_are_differentiable() -> None:
    v = random_games(2, 4, seed=3).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: (and_transform(x), or_transform(x)), (v,))
    assert torch.autograd.gradcheck(lambda x: (inverse_and_transform(x), inverse_or_transform(x)), (v,))


def test_transform_rejects_length_that_is_not_a_power_of_two() -> None:
    with pytest.raises(ValueError, match="2\\^n"):
        and_transform(torch.zeros(3, 12))


def test_planted_and_game_is_recovered_exactly() -> None:
    n = 6
    planted = {0b000011: 2.5, 0b101100: -1.25, 0b010000: 0.75, 0b111111: 3.0, 0: -0.5}
    v = torch.zeros(1 << n, dtype=torch.float64)
    for t in range(1 << n):
        v[t] = sum(w for s, w in planted.items() if subset(s, t))
    expected = torch.zeros(1 << n, dtype=torch.float64)
    for s, w in planted.items():
        expected[s] = w
    assert torch.equal(and_transform(v), expected)


# ---------------------------------------------------------------------------------------------
# Sparsification: the exact least-norm optimum (method="lp")
# ---------------------------------------------------------------------------------------------

REFERENCE = {"lr": 1e-3, "niter": 300}
"""Options that make the reference recipe move in a few hundred steps (tests only)."""


@pytest.fixture(scope="module")
def smooth_games() -> torch.Tensor:
    return mlp_games(5, 6, seed=11)


@pytest.fixture(scope="module")
def default_result(smooth_games: torch.Tensor):
    return sparsify(smooth_games, qthres=0.04)


def test_lp_reaches_the_highs_optimum(smooth_games: torch.Tensor, default_result) -> None:
    diagnostics = default_result.diagnostics
    for b in range(smooth_games.shape[0]):
        optimum = highs_optimum(smooth_games[b].numpy(), 0.04)
        assert diagnostics.l1_final[b].item() == pytest.approx(optimum, rel=1e-9)
    assert bool(diagnostics.converged.all())
    assert bool((diagnostics.gap <= 1e-9).all() and (diagnostics.gap >= -1e-12).all()), diagnostics.gap


def test_lp_reaches_the_optimum_of_the_previous_dense_solver(smooth_games: torch.Tensor, default_result) -> None:
    torch.testing.assert_close(default_result.diagnostics.l1_final, dense_lp_l1(smooth_games, 0.04), rtol=1e-7, atol=0)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_lp_returns_the_least_norm_optimum_of_tiny_games(seed: int) -> None:
    v = mlp_games(1, 3, seed=seed)[0]
    i_and, i_or = least_norm_optimum(v.numpy(), 0.04)
    result = sparsify(v[None], qthres=0.04)
    np.testing.assert_allclose(result.I_and[0].numpy(), i_and, atol=1e-5)
    np.testing.assert_allclose(result.I_or[0].numpy(), i_or, atol=1e-5)


def test_least_norm_point_of_a_pure_or_game_with_a_budget() -> None:
    # v = w·[T ∩ s ≠ ∅]. With |q| ≤ 0.04 w the optimum is 0.96 w, reached on a face: beside
    # 0.92 w on s, 0.04 w may be carried by the constant and by the OR terms of the 7 proper
    # supersets of s in any mix. The least-norm point spreads it evenly: 0.005 w each.
    n, s, w = 6, 0b011010, 2.0
    v = torch.tensor([[w * bool(t & s) for t in range(1 << n)]], dtype=torch.float64)
    result = sparsify(v, qthres=0.04)
    expected_and = torch.zeros(1 << n, dtype=torch.float64)
    expected_or = torch.zeros(1 << n, dtype=torch.float64)
    expected_and[0] = 0.005 * w
    supersets = [u for u in range(1 << n) if u & s == s and u != s]
    expected_or[supersets] = 0.005 * w
    expected_or[s] = 0.92 * w
    torch.testing.assert_close(result.I_and[0], expected_and, atol=1e-9, rtol=0)
    torch.testing.assert_close(result.I_or[0], expected_or, atol=1e-9, rtol=0)
    # A vertex of the same face (HiGHS) is a different optimum: the test tells them apart.
    value, a, o, _ = highs_solution(v[0].numpy(), 0.04)
    assert value == pytest.approx(0.96 * w, rel=1e-9)
    assert np.abs(np.r_[a, o] - np.r_[expected_and.numpy(), expected_or.numpy()]).max() > 1e-3


def test_pure_or_game_without_budget_is_a_single_or_term() -> None:
    n, s, w = 6, 0b011010, 2.0
    v = torch.tensor([[w * bool(t & s) for t in range(1 << n)]], dtype=torch.float64)
    exact = sparsify(v, qthres=0.0)
    expected_or = torch.zeros(1 << n, dtype=torch.float64)
    expected_or[s] = w
    torch.testing.assert_close(exact.I_or[0], expected_or, atol=1e-9, rtol=0)
    torch.testing.assert_close(exact.I_and[0], torch.zeros(1 << n, dtype=torch.float64), atol=1e-9, rtol=0)


def assert_relabelling_permutes(games: torch.Tensor, result, method: str) -> None:
    """Solving the games with relabelled players gives ``result`` relabelled: within 1e-5 of each
    game's |v(N) − v(∅)|, with identical salient sets."""
    permutation = [3, 0, 5, 1, 4, 2]
    moved = sparsify(relabel(games, permutation), qthres=0.04, method=method)
    for b in range(games.shape[0]):
        scale = abs(float(games[b, -1] - games[b, 0]))
        back_and = relabel(result.I_and[b], permutation)
        back_or = relabel(result.I_or[b], permutation)
        assert float((moved.I_and[b] - back_and).abs().max()) <= 1e-5 * scale
        assert float((moved.I_or[b] - back_or).abs().max()) <= 1e-5 * scale
        assert salient(moved.I_and[b], moved.I_or[b]) == salient(back_and, back_or)


def test_relabelling_players_permutes_the_result(smooth_games: torch.Tensor, default_result) -> None:
    assert_relabelling_permutes(smooth_games, default_result, "lp")


def test_a_game_gives_the_same_bits_alone_in_any_batch_and_on_repeat(smooth_games: torch.Tensor, default_result) -> None:
    again = sparsify(smooth_games, qthres=0.04)
    assert torch.equal(again.I_and, default_result.I_and) and torch.equal(again.I_or, default_result.I_or)
    order = [3, 1, 4, 0, 2]
    shuffled = sparsify(torch.cat((smooth_games[order], mlp_games(2, 6, seed=99))), qthres=0.04)
    for position, b in enumerate(order):
        alone = sparsify(smooth_games[b : b + 1], qthres=0.04)
        for name in ("I_and", "I_or", "gamma", "q"):
            assert torch.equal(getattr(alone, name)[0], getattr(default_result, name)[b]), name
            assert torch.equal(getattr(shuffled, name)[position], getattr(default_result, name)[b]), name


def test_and_form_reaches_the_highs_optimum_with_no_or_terms(smooth_games: torch.Tensor) -> None:
    result = sparsify(smooth_games, qthres=0.04, form="and")
    assert torch.equal(result.I_or, torch.zeros_like(result.I_or))
    for b in range(smooth_games.shape[0]):
        optimum = highs_optimum(smooth_games[b].numpy(), 0.04, form="and")
        assert result.diagnostics.l1_final[b].item() == pytest.approx(optimum, rel=1e-9)
    target = smooth_games + result.q
    assert float((reconstruct(result.I_and, result.I_or) - target).abs().max()) <= 1e-12
    torch.testing.assert_close(result.I_and, and_transform(target), atol=1e-12, rtol=0)
    assert result.diagnostics.form == "and" and bool(result.diagnostics.converged.all())
    assert bool((result.diagnostics.gap <= 1e-9).all())
    # The AND-only optimum is never below the AND-OR one: fewer atoms to choose from.
    assert bool((result.diagnostics.l1_final >= sparsify(smooth_games).diagnostics.l1_final * (1 - 1e-9)).all())


def test_and_form_least_norm_optimum_of_a_tiny_game() -> None:
    v = mlp_games(1, 3, seed=5)[0]
    i_and, _ = least_norm_optimum(v.numpy(), 0.04, form="and")
    result = sparsify(v[None], qthres=0.04, form="and")
    np.testing.assert_allclose(result.I_and[0].numpy(), i_and, atol=1e-5)


def test_reference_recipe_in_the_and_form_matches_its_dense_definition() -> None:
    v = mlp_games(2, 5, seed=4) * 3
    result = sparsify(v, qthres=0.04, method="reference", form="and", lr=1e-2, niter=120)
    assert torch.equal(result.I_or, torch.zeros_like(result.I_or))
    for b in range(2):
        bound = 0.04 * abs(v[b, -1] - v[b, 0]).item()
        q = dense_reference_and_recipe(v[b], bound, lr=1e-2, niter=120)
        torch.testing.assert_close(result.q[b], q, atol=1e-10, rtol=1e-9)
        torch.testing.assert_close(result.I_and[b], and_transform(v[b] + q), atol=1e-9, rtol=0)
        assert bool((result.q[b].abs() <= bound * (1 + 1e-12)).all())


def test_dense_solver_refuses_the_and_form_and_says_which_methods_support_it() -> None:
    with pytest.raises(ValueError, match="form='and'.*'lp'.*'reference'"):
        sparsify(mlp_games(1, 4, seed=1), method="lp-dense", form="and")
    with pytest.raises(ValueError, match="unknown sparsification form"):
        sparsify(mlp_games(1, 4, seed=1), form="or")


def test_diagnostics_report_convergence_gap_and_iterations(smooth_games: torch.Tensor, default_result) -> None:
    d = default_result.diagnostics
    assert d.converged.dtype == torch.bool and d.gap.dtype == torch.float64 and d.iterations.dtype == torch.int64
    assert d.converged.shape == d.gap.shape == d.iterations.shape == (smooth_games.shape[0],)
    assert bool((d.iterations > 0).all()) and d.form == "and-or" and d.method == "lp"
    reference = sparsify(smooth_games, method="reference", **REFERENCE).diagnostics
    assert not bool(reference.converged.any()) and bool(reference.gap.isnan().all())
    assert bool((reference.iterations == REFERENCE["niter"]).all())
    dense = sparsify(smooth_games, method="lp-dense").diagnostics
    assert bool(dense.converged.all()) and bool(dense.gap.isnan().all())


def test_diagnostics_read_unknown_when_a_table_predates_the_new_fields() -> None:
    zeros = torch.zeros(3, dtype=torch.float64)
    d = SparsifyDiagnostics(l1_even=zeros, l1_final=zeros, q_bound=zeros, matching_error=zeros)
    assert not bool(d.converged.any()) and bool(d.gap.isnan().all()) and bool((d.iterations == -1).all())
    assert d.form == "and-or"


def test_options_are_validated_against_the_method() -> None:
    assert set(SPARSIFY_OPTIONS) == set(METHODS) and FORMS == ("and-or", "and")
    v = mlp_games(1, 4, seed=3)
    with pytest.raises(ValueError, match="unknown option 'niter' for sparsification method 'lp'.*'tol'"):
        sparsify(v, method="lp", niter=10)
    with pytest.raises(ValueError, match="unknown option 'tol' for sparsification method 'reference'.*'lr'"):
        sparsify(v, method="reference", tol=1e-3)
    sparsify(v, method="lp", tol=1e-9, max_iter=60, max_rounds=20)
    sparsify(v, method="lp-dense", tol=1e-8, max_iter=60, chunk_size=1)
    sparsify(v, method="reference", lr=1e-3, niter=5)


def test_max_players_is_exported_and_enforced() -> None:
    assert max_players("lp") == 16 and max_players("lp-dense") == 13 and max_players("reference") == 20
    with pytest.raises(ValueError, match="unknown sparsification method"):
        max_players("simplex")
    with pytest.raises(ValueError, match="at most 13 players, got n = 14"):
        sparsify(torch.zeros(1, 1 << 14, dtype=torch.float64), method="lp-dense")


# ---------------------------------------------------------------------------------------------
# Sparsification: properties every method shares
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method, options", [("lp", {}), ("reference", REFERENCE)])
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-9), (torch.float32, 1e-4)])
def test_universal_matching_after_sparsification(method: str, options: dict, dtype: torch.dtype, tol: float) -> None:
    v = (mlp_games(3, 7, seed=5) * 10).to(dtype)
    result = sparsify(v, method=method, **options)
    scale = v.abs().amax(-1).double() if dtype == torch.float32 else torch.ones(3, dtype=torch.float64)
    target = (v + result.q).double()
    err = (reconstruct(result.I_and, result.I_or).double() - target).abs().amax(-1)
    assert bool((err <= tol * scale).all()), err
    assert bool((result.diagnostics.matching_error <= tol * scale).all())
    # Independent check in float64 with the brute-force synthesis.
    brute = brute_reconstruct(result.I_and[0].double().numpy(), result.I_or[0].double().numpy())
    np.testing.assert_allclose(brute, target[0].numpy(), atol=float(tol * scale[0]) * 10)
    assert result.I_and.dtype == dtype


@pytest.mark.parametrize("method, options", [("lp", {}), ("reference", {"lr": 1e-2, "niter": 300})])
def test_q_stays_within_its_bound(method: str, options: dict) -> None:
    v = mlp_games(4, 6, seed=9) * 5
    result = sparsify(v, qthres=0.1, method=method, **options)
    bound = 0.1 * (v[:, -1] - v[:, 0]).abs()
    assert bool((result.q.abs() <= bound[:, None] * (1 + 1e-12)).all())
    torch.testing.assert_close(result.diagnostics.q_bound, bound)
    if method == "reference":  # the recipe's steps push q to its bound; clipping must hold it
        assert bool((result.q.abs().amax(-1) > 0.5 * bound).all())


def test_low_order_or_terms_are_merged_into_and() -> None:
    result = sparsify(mlp_games(2, 5, seed=2))
    low = torch.tensor([popcount(t) <= 1 for t in range(32)])
    assert bool((result.I_or[:, low] == 0).all())


def test_reference_recipe_is_batch_invariant(smooth_games: torch.Tensor) -> None:
    together = sparsify(smooth_games, method="reference", **REFERENCE)
    for b in range(smooth_games.shape[0]):
        alone = sparsify(smooth_games[b : b + 1], method="reference", **REFERENCE)
        assert torch.equal(together.gamma[b], alone.gamma[0])
        assert torch.equal(together.q[b], alone.q[0])


def test_reference_recipe_matches_its_dense_definition() -> None:
    v = mlp_games(2, 5, seed=4) * 3
    result = sparsify(v, qthres=0.04, method="reference", lr=1e-2, niter=120)
    for b in range(2):
        bound = 0.04 * abs(v[b, -1] - v[b, 0]).item()
        p, q, _ = dense_reference_recipe(v[b], bound, lr=1e-2, niter=120)
        torch.testing.assert_close(result.gamma[b], p, atol=1e-10, rtol=1e-9)
        torch.testing.assert_close(result.q[b], q, atol=1e-10, rtol=1e-9)


def test_even_split_l1_is_the_l1_at_gamma_zero() -> None:
    v = mlp_games(2, 5, seed=8)
    result = sparsify(v)
    i_and, i_or = brute_and(0.5 * v.numpy()), brute_or(0.5 * v.numpy())
    low = np.array([popcount(t) <= 1 for t in range(32)])
    merged_and = i_and + np.where(low, i_or, 0)
    merged_or = np.where(low, 0, i_or)
    expected = np.abs(merged_and).sum(-1) + np.abs(merged_or).sum(-1)
    np.testing.assert_allclose(result.diagnostics.l1_even.numpy(), expected, rtol=1e-12)
    and_only = sparsify(v, form="and").diagnostics.l1_even
    np.testing.assert_allclose(and_only.numpy(), np.abs(brute_and(v.numpy())).sum(-1), rtol=1e-12)


def test_sparsify_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="shape \\(B, 2\\^n\\)"):
        sparsify(torch.zeros(8))
    with pytest.raises(ValueError, match="non-finite values in games \\[1, 2\\]"):
        sparsify(torch.tensor([[0.0, 1.0, 1.0, 2.0], [0.0, float("nan"), 1.0, 2.0], [float("inf"), 0, 0, 0]]))
    with pytest.raises(ValueError, match="unknown sparsification method"):
        sparsify(torch.zeros(1, 4), method="adam")
    with pytest.raises(ValueError, match="qthres"):
        sparsify(torch.zeros(1, 4), qthres=-1)


def test_near_constant_games_converge_in_a_batch_with_ordinary_ones() -> None:
    # An untrained model's games: a large constant log-odds and a tiny, noisy variation. Its q
    # bound is minute; the solver must neither stall nor let it spoil the other games.
    g = torch.Generator().manual_seed(3)
    flat = -1.4 + 1e-3 * torch.randn(2, 64, generator=g, dtype=torch.float64)
    games = torch.cat((flat, mlp_games(2, 6, seed=12)))
    result = sparsify(games, qthres=0.04)
    assert bool(result.diagnostics.converged.all())
    for b in range(4):
        optimum = highs_optimum(games[b].numpy(), 0.04)
        assert result.diagnostics.l1_final[b].item() == pytest.approx(optimum, rel=1e-8)


def test_constant_game_has_only_the_constant_term() -> None:
    v = torch.full((1, 32), 0.7, dtype=torch.float64)
    result = sparsify(v)
    expected = torch.zeros(32, dtype=torch.float64)
    expected[0] = 0.7
    torch.testing.assert_close(result.I_and[0], expected, atol=1e-12, rtol=0)
    assert bool((result.I_or == 0).all())


def test_dense_reference_matrices_equal_the_brute_force_definitions() -> None:
    from references import dense_and_matrix, dense_or_matrix

    v = random_games(1, 6, seed=21)[0]
    np.testing.assert_allclose((dense_and_matrix(6) @ v).numpy(), brute_and(v.numpy()), atol=1e-12)
    np.testing.assert_allclose((dense_or_matrix(6) @ v).numpy(), brute_or(v.numpy()), atol=1e-12)


@pytest.mark.slow
def test_eleven_players_certified_without_a_dense_matrix() -> None:
    v = mlp_games(1, 11, seed=7)
    result = sparsify(v, qthres=0.04)
    d = result.diagnostics
    assert bool(d.converged.all()) and float(d.gap.max()) <= 1e-9
    assert float(d.matching_error.max()) <= 1e-9


def test_working_set_rounds_reach_the_point_of_one_solve_with_every_row(
    smooth_games: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small games start with every coalition; the working set that grows during the iterations,
    as larger games use it, must end at the same least-norm point (forced here on the same n = 6
    games), and a cap on its enlargements that leaves coalitions violated is reported as such."""
    from pretrain_knowledge.interactions import lp

    bound = 0.04 * (smooth_games[:, -1] - smooth_games[:, 0]).abs()
    every_row = lp.solve_least_norm(smooth_games, bound)
    _force_working_set(lp, monkeypatch)
    rounds = lp.solve_least_norm(smooth_games, bound)
    assert bool((every_row.rows == 64).all()) and bool((rounds.rows < 64).any()), rounds.rows
    _assert_same_point(rounds, every_row, smooth_games)
    capped = lp.solve_least_norm(smooth_games, bound, max_rounds=0)
    assert not bool(capped.converged.any()) and bool((capped.rows == 8).all())


def _force_working_set(lp, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make n = 6 games use the growing working set of larger games, from 8 rows."""
    monkeypatch.setattr(lp, "ALL_ROWS_UP_TO", 0)
    monkeypatch.setattr(lp, "INITIAL_ROWS", 8)
    monkeypatch.setattr(lp, "GROWTH_MIN", 2)


def _assert_same_point(result, reference, games: torch.Tensor) -> None:
    scale = games.abs().amax(-1, keepdim=True)
    assert float(((result.a - reference.a).abs() / scale).max()) <= 1e-8
    assert float(((result.o - reference.o).abs() / scale).max()) <= 1e-8
    assert bool(result.converged.all())


def _count_row_changes(lp, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts, as the interior point runs, the rows released, the released rows that rejoin and
    the additions."""
    counts = {"released": 0, "rejoined": 0, "additions": 0}
    release, add = lp._RestrictedIPM._release, lp._RestrictedIPM.add

    def counting_release(self) -> None:
        before = self.rows.numel()
        release(self)
        counts["released"] += before - self.rows.numel()

    def counting_add(self, new: torch.Tensor, **kwargs) -> None:
        counts["rejoined"] += int(self.released[new].sum())
        counts["additions"] += 1
        add(self, new, **kwargs)

    monkeypatch.setattr(lp._RestrictedIPM, "_release", counting_release)
    monkeypatch.setattr(lp._RestrictedIPM, "add", counting_add)
    return counts


def test_released_rows_rejoin_when_violated_and_the_point_does_not_move(
    smooth_games: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows well inside their box leave the working set, once each. With the margin at 0 every
    row that is not violated leaves, tight ones included, so some must be violated again and
    rejoin; the point must still be the one of a solve with every row."""
    from pretrain_knowledge.interactions import lp

    bound = 0.04 * (smooth_games[:, -1] - smooth_games[:, 0]).abs()
    every_row = lp.solve_least_norm(smooth_games, bound)
    _force_working_set(lp, monkeypatch)
    monkeypatch.setattr(lp, "DROP_MARGIN", 0.0)
    counts = _count_row_changes(lp, monkeypatch)
    result = lp.solve_least_norm(smooth_games, bound)
    assert counts["released"] > 0 and counts["rejoined"] > 0, counts
    _assert_same_point(result, every_row, smooth_games)
    # Every row first, then a budget that leaves them all inside their box: 8 rows must stay.
    wide = 5.0 * (smooth_games[:, -1] - smooth_games[:, 0]).abs()
    monkeypatch.setattr(lp, "ALL_ROWS_UP_TO", 64)
    monkeypatch.setattr(lp, "INITIAL_ROWS", 64)  # no row leaves a set of 64
    every_row = lp.solve_least_norm(smooth_games, wide)
    monkeypatch.setattr(lp, "INITIAL_ROWS", 8)
    counts["released"] = 0
    result = lp.solve_least_norm(smooth_games, wide)
    assert counts["released"] > 0 and bool((result.rows >= 8).all()), (counts, result.rows)
    _assert_same_point(result, every_row, smooth_games)


@pytest.mark.parametrize("misread_first", [False, True])
def test_failed_polish_grows_the_working_set_and_reaches_the_optimum(
    smooth_games: torch.Tensor, monkeypatch: pytest.MonkeyPatch, misread_first: bool
) -> None:
    """A polish that fails because the exact point violates a coalition the working set left out
    must bring that coalition in and go on. Here one coalition that is tight at the optimum is
    hidden from the enlargements, and the polish is made to fail while the interior point has not
    made it tight: the result must be the optimum anyway, and without the retry it must not be.
    With ``misread_first`` the polish's first solve reports a misread row, so its first exact
    point comes from its second solve, which must be the one read for the missed rows."""
    from pretrain_knowledge.interactions import lp

    v = smooth_games[:1]
    bound = 0.04 * (v[:, -1] - v[:, 0]).abs()
    every_row = lp.solve_least_norm(v, bound)
    q = lp._Game(v[0].double(), float(bound[0]), "and-or").apply_flat(
        torch.cat((every_row.a[0], every_row.o[0])) / v[0].abs().max()
    ) - v[0] / v[0].abs().max()
    tight = ((q.abs() - float(bound[0] / v[0].abs().max())).abs() < 1e-9).nonzero().flatten()
    initial = set(torch.topk(v[0].abs(), 8).indices.tolist())
    hidden = next(int(t) for t in tight if int(t) not in initial)
    _force_working_set(lp, monkeypatch)
    violated_rows, polish = lp._Game._violated_rows, lp._Game._polish
    monkeypatch.setattr(lp._Game, "_violated_rows", lambda self, fit, rows: (lambda bad: bad[bad != hidden])(violated_rows(self, fit, rows)))
    missed_rows: list[list[int]] = []

    exact_solves: list[int] = []
    solve_sets = lp._Game._solve_sets

    def counting_solve_sets(self, *args):
        exact_solves[-1] += 1
        if misread_first and len(exact_solves) == 1 and exact_solves[0] == 1:
            return 0
        return solve_sets(self, *args)

    def failing_without_hidden(self, x, support, tight, outside=None):
        exact_solves.append(0)
        polished, missed = polish(self, x, support, tight, outside)
        missed_rows.append(missed.tolist())
        return (polished if hidden in tight.tolist() else None), missed

    monkeypatch.setattr(lp._Game, "_solve_sets", counting_solve_sets)
    monkeypatch.setattr(lp._Game, "_polish", failing_without_hidden)
    result = lp.solve_least_norm(v, bound)
    assert hidden in missed_rows[0] and len(missed_rows) >= 2, (hidden, missed_rows)
    # The first polish hands back at its first exact point instead of correcting the sets.
    assert exact_solves[0] == 1 + misread_first, exact_solves
    _assert_same_point(result, every_row, v)
    missed_rows.clear()
    monkeypatch.setattr(lp, "POLISH_RETRIES", 0)
    alone = lp.solve_least_norm(v, bound)
    scale = v.abs().amax(-1, keepdim=True)
    assert float(((alone.a - every_row.a).abs() / scale).max()) > 1e-6


def test_polish_that_misreads_its_sets_retries_once_from_a_sharpened_copy(
    smooth_games: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A polish that fails with no coalition missing from the working set gets one more try from a
    copy of the interior point run on to a smaller residual; if that fails too, the first iterate
    stands (the copy's steps change nothing in it, though they are counted)."""
    from pretrain_knowledge.interactions import lp

    _force_working_set(lp, monkeypatch)  # the copy grows and releases rows of its own
    v = smooth_games[:1]
    bound = 0.04 * (v[:, -1] - v[:, 0]).abs()
    reference = lp.solve_least_norm(v, bound)
    polish, seen = lp._Game._polish, []

    def failing(times: int):
        def attempt(self, x, support, tight, outside=None):
            seen.append((outside is None, x.clone()))
            if len(seen) <= times:
                return None, tight[:0]
            return polish(self, x, support, tight, outside)

        return attempt

    monkeypatch.setattr(lp._Game, "_polish", failing(1))
    retried = lp.solve_least_norm(v, bound)
    assert [every_row for every_row, _ in seen] == [False, True]  # the regular polish, then the copy's
    _assert_same_point(retried, reference, v)
    assert bool(retried.converged[0]) and int(retried.iterations[0]) > int(reference.iterations[0])

    seen.clear()
    monkeypatch.setattr(lp._Game, "_polish", failing(2))
    stood = lp.solve_least_norm(v, bound)
    assert [every_row for every_row, _ in seen] == [False, True]
    first, sharpened = seen[0][1], seen[1][1]
    assert not torch.equal(first, sharpened)
    scale = float(v[0].double().abs().max())
    assert torch.equal(stood.a[0], first[0] * scale) and torch.equal(stood.o[0], first[1] * scale)
    assert bool(stood.converged[0]) and int(stood.iterations[0]) > int(reference.iterations[0])


@pytest.mark.parametrize("game", [0, 2])
def test_polish_drops_every_atom_of_the_wrong_sign_in_one_correction(
    smooth_games: torch.Tensor, monkeypatch: pytest.MonkeyPatch, game: int
) -> None:
    """An iterate can read far more atoms as support than the solution has (330 against 207 on a
    real game at n = 10): the atoms the optimum leaves at zero although their |Aᵀy| is within ε of
    1. Given 20 of them as support, each with the sign of its Aᵀy, the polish must reach the solve's
    point, and every atom its first exact point gives the wrong sign must be gone from the next
    solve's support, not only the worst four."""
    from pretrain_knowledge.interactions import lp

    v = smooth_games[game : game + 1]
    bound = 0.04 * (v[:, -1] - v[:, 0]).abs()
    reference = lp.solve_least_norm(v, bound)
    problem = lp._Game(v[0].double(), float(bound[0]), "and-or")
    exact = (torch.cat((reference.a[0], reference.o[0])) / problem.scale).double()
    tight = ((problem.apply_flat(exact) - problem.v).abs() - problem.b).abs().lt(1e-9).nonzero().flatten()
    (_, y, _, _), _ = problem._polish(exact.view(2, -1), exact.nonzero().flatten(), tight)
    reach = problem.adjoint(y).flatten()
    zero = (problem.atoms.flatten() > 0) & (exact == 0)
    extra = torch.topk(torch.where(zero, reach.abs(), -1.0), 20).indices
    assert bool((reach[extra].abs() > 1.0 - lp.REGULARISATION).all())  # zero, yet |Aᵀy| ≈ 1
    x = exact.clone()
    x[extra] = 1e-6 * torch.sign(reach[extra])
    solve_sets, solves = lp._Game._solve_sets, []

    def recording(self, support, tight_rows, signs, sides):
        solved = solve_sets(self, support, tight_rows, signs, sides)
        solves.append((support.clone(), signs.clone(), solved))
        return solved

    monkeypatch.setattr(lp._Game, "_solve_sets", recording)
    polished, _ = problem._polish(x.view(2, -1), x.nonzero().flatten(), tight)
    assert polished is not None, len(solves)
    assert float((polished[0].flatten() - exact).abs().max()) <= 1e-12
    support, signs, (values, _) = solves[0]
    wrong = support[values[support] * signs[support] <= 0]
    assert wrong.numel() > 4, wrong.numel()  # more than a correction of four would drop
    assert not set(wrong.tolist()) & set(solves[1][0].tolist())


@pytest.mark.parametrize("far", [False, True])
def test_a_violated_row_joins_sqrt_mu_close_to_its_bound_late_and_far_when_asked(
    smooth_games: torch.Tensor, monkeypatch: pytest.MonkeyPatch, far: bool
) -> None:
    """Late (small μ) a violated row enters ``ENTRY_SCALE``·√μ inside its bound, early or with
    ``far`` ``ENTRY_MARGIN``·b, its slack and dual at complementarity μ; nothing else moves."""
    from pretrain_knowledge.interactions import lp

    _force_working_set(lp, monkeypatch)
    v = smooth_games[2].double()
    game = lp._Game(v, float(0.04 * (v[-1] - v[0]).abs()), "and-or")
    ipm = lp._RestrictedIPM(game, game._initial_rows())
    row = int(next(t for t in range(game.size) if t not in set(ipm.rows.tolist())))
    for late in (False, True):
        twin = ipm.fork()
        if late:
            twin.d = twin.d * 1e-14
        twin.fit = twin.fit.clone()
        twin.fit[row] = game.v[row] + 3.0 * game.b  # q = 3b: violated above
        mu = twin._mu()
        before = dict(zip(twin.rows.tolist(), twin._boxes(twin.p)[1].tolist()))
        twin.add(torch.tensor([row]), far=far)
        (r, s), (zr, ws) = twin._boxes(twin.p), twin._boxes(twin.d)
        at = int((twin.rows == row).nonzero())
        inside = lp.ENTRY_MARGIN * game.b if far or not late else lp.ENTRY_SCALE * math.sqrt(mu)
        if late and not far:
            assert inside < 0.01 * game.b
        assert float(s[at]) == pytest.approx(inside, rel=1e-12)
        assert float(r[at]) == pytest.approx(2.0 * game.b - inside, rel=1e-12)
        assert float(s[at] * ws[at]) == pytest.approx(mu, rel=1e-9) and float(r[at] * zr[at]) == pytest.approx(mu, rel=1e-9)
        after = dict(zip(twin.rows.tolist(), s.tolist()))
        assert all(after[t] == value for t, value in before.items())


def _sums_by_definition(x: torch.Tensor, kind: str) -> torch.Tensor:
    """ζx(T) = Σ_{S ⊆ T} x_S, Zᵀx(T) = Σ_{S ⊇ T} x_S or ζx(N∖T), from the 0/1 matrix of S ⊆ T."""
    size = x.shape[-1]
    index = torch.arange(size)
    contains = ((index[:, None] & index[None, :]) == index[None, :]).to(x.dtype)  # [T, S] = [S ⊆ T]
    if kind == "superset":
        return x @ contains
    sums = x @ contains.T
    return sums.flip(-1) if kind == "complement" else sums


def _all_pairs(lp, n: int, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every pair of kinds applied to x (2, 2^n) and to its first row alone (fed to both rows)."""
    kinds = (lp.SUBSET, lp.SUPERSET, lp.COMPLEMENT)
    pairs = [lp._PairTransform(n, (first, second), x.dtype, "cpu") for first in kinds for second in kinds]
    return [(pair(x), pair(x[0])) for pair in pairs]


@pytest.mark.parametrize("butterfly", [False, True])
@pytest.mark.parametrize("n", [1, 5, 6, 7, 8, 9, 10])
def test_least_norm_solver_pair_sums_equal_their_definitions(
    n: int, butterfly: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each pair of sums (one dense product up to n = 6, then two Kronecker products; or, forced,
    the butterfly) against the sums written out with the 0/1 matrix of S ⊆ T."""
    from pretrain_knowledge.interactions import lp

    if butterfly:
        monkeypatch.setattr(lp, "KRONECKER_SUMS_UP_TO", 0)
    x = random_games(2, n, seed=n)
    kinds = (lp.SUBSET, lp.SUPERSET, lp.COMPLEMENT)
    expected = [(first, second) for first in kinds for second in kinds]
    for (sums, alone), (first, second) in zip(_all_pairs(lp, n, x), expected):
        want = torch.stack((_sums_by_definition(x[0], first), _sums_by_definition(x[1], second)))
        torch.testing.assert_close(sums, want, rtol=0, atol=1e-11)
        want = torch.stack((_sums_by_definition(x[0], first), _sums_by_definition(x[0], second)))
        torch.testing.assert_close(alone, want, rtol=0, atol=1e-11)


@pytest.mark.parametrize("n", [12, 15])
def test_least_norm_solver_kronecker_sums_equal_the_butterfly_on_large_games(
    n: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the 0/1 matrix is too large, the Kronecker factors against the butterfly (which the
    test above checks against the definition)."""
    from pretrain_knowledge.interactions import lp

    x = random_games(2, n, seed=n)
    kronecker = _all_pairs(lp, n, x)
    monkeypatch.setattr(lp, "KRONECKER_SUMS_UP_TO", 0)
    for (sums, alone), (want, want_alone) in zip(kronecker, _all_pairs(lp, n, x)):
        torch.testing.assert_close(sums, want, rtol=0, atol=1e-9)
        torch.testing.assert_close(alone, want_alone, rtol=0, atol=1e-9)


def test_interior_point_invariants_hold_through_releases_and_additions(
    smooth_games: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The interior point carries Aᵀy with y and holds the OR atoms that do not exist at x = 1,
    z = 0; rows leave and join here (margin 0), so every path that changes y is crossed."""
    from pretrain_knowledge.interactions import lp

    _force_working_set(lp, monkeypatch)
    monkeypatch.setattr(lp, "DROP_MARGIN", 0.0)
    v = smooth_games[0].double()
    game = lp._Game(v, float(0.04 * (v[-1] - v[0]).abs()), "and-or")
    ipm = lp._RestrictedIPM(game, game._initial_rows())
    changes = _count_row_changes(lp, monkeypatch)
    ipm.run(tol=lp.TOL, max_iter=lp.MAX_ITER, max_rounds=lp.MAX_ROUNDS)
    assert ipm.converged and changes["released"] > 0 and changes["additions"] > 0, changes
    torch.testing.assert_close(ipm.aty, game.adjoint(ipm._on_all(ipm.y)), rtol=0, atol=1e-12)
    missing = game.valid == 0
    assert bool(missing.any())
    assert bool((ipm.x[missing] == 1).all()) and bool((ipm.z[missing] == 0).all())


@pytest.mark.parametrize("form", ["and-or", "and"])
def test_interior_point_starts_at_the_games_interpolation_with_no_row_violated(
    smooth_games: torch.Tensor, form: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The start reproduces the game at every coalition (q = 0, brute-force Möbius coefficients),
    every split pair is positive, the missing OR atoms sit at x = 1, and no coalition outside the
    working set (8 of 64 rows here) is violated."""
    from pretrain_knowledge.interactions import lp

    _force_working_set(lp, monkeypatch)
    v = smooth_games[1].double()
    game = lp._Game(v, float(0.04 * (v[-1] - v[0]).abs()), form)
    ipm = lp._RestrictedIPM(game, game._initial_rows())
    assert ipm.rows.numel() == 8
    a = torch.from_numpy(brute_and(game.v.numpy()))  # the AND interactions of v are its Möbius transform
    coefficients = game.coefficients(ipm.x) * game.atoms
    torch.testing.assert_close(coefficients[0], a, rtol=0, atol=1e-12)
    assert float(coefficients[1].abs().max()) == 0.0
    torch.testing.assert_close(ipm.fit, game.v, rtol=0, atol=1e-12)
    assert game._violated_rows(ipm.fit, ipm.rows).numel() == 0
    assert bool((ipm.x[game.valid > 0] >= lp.START_SHIFT).all())
    assert bool((ipm.x[game.valid == 0] == 1).all())


def test_small_games_are_solved_on_one_thread_and_the_callers_count_is_restored(
    smooth_games: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pretrain_knowledge.interactions import lp

    seen: list[int] = []
    solve = lp._Game.solve

    def recording(self, **kwargs):
        seen.append(torch.get_num_threads())
        return solve(self, **kwargs)

    monkeypatch.setattr(lp._Game, "solve", recording)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        two = sparsify(smooth_games, qthres=0.04)
        assert seen and set(seen) == {1}, seen  # the guard; the equality below guards repeatability
        assert torch.get_num_threads() == 2
        torch.set_num_threads(1)
        one = sparsify(smooth_games, qthres=0.04)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one.I_and, two.I_and) and torch.equal(one.I_or, two.I_or)
    # The limit: up to n = 12 one thread, larger games keep the caller's count.
    torch.set_num_threads(2)
    try:
        for n, expected in ((12, 1), (13, 2)):
            with lp._serial_when_small(1 << n, torch.device("cpu")):
                assert torch.get_num_threads() == expected, n
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------
# The dense reference solver (method="lp-dense"): label-free and repeatable, not canonical
# ---------------------------------------------------------------------------------------------


def test_dense_solver_is_label_free_and_repeatable(smooth_games: torch.Tensor, default_result) -> None:
    """lp-dense returns a point near the centre of the optimal face (method.md §8): relabelling
    the players permutes it, two solves are bit-identical, and its L1 is the least-norm solver's."""
    base = sparsify(smooth_games, qthres=0.04, method="lp-dense")
    again = sparsify(smooth_games, qthres=0.04, method="lp-dense")
    assert torch.equal(base.I_and, again.I_and) and torch.equal(base.I_or, again.I_or)
    assert torch.allclose(base.diagnostics.l1_final, default_result.diagnostics.l1_final, rtol=1e-6)
    assert_relabelling_permutes(smooth_games, base, "lp-dense")
