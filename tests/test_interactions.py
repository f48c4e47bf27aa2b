"""The interaction engine against independent references: brute-force definitions, shapiq,
HiGHS (scipy) for the LP optimum, a dense-matrix re-implementation of the reference recipe, and
analytic games with known answers.

Coalition convention: index T of a game vector has bit i set iff player i ∈ T.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pretrain_knowledge.interactions import (
    and_transform,
    inverse_and_transform,
    inverse_or_transform,
    or_transform,
    reconstruct,
    sparsify,
)
from references import (
    brute_and,
    brute_or,
    brute_reconstruct,
    dense_reference_recipe,
    highs_optimum,
    mlp_games,
    popcount,
    random_games,
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
# Sparsification
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smooth_games() -> torch.Tensor:
    return mlp_games(5, 6, seed=11)


def test_lp_reaches_the_highs_optimum(smooth_games: torch.Tensor) -> None:
    result = sparsify(smooth_games, qthres=0.04)
    for b in range(smooth_games.shape[0]):
        optimum = highs_optimum(smooth_games[b].numpy(), 0.04)
        assert result.diagnostics.l1_final[b].item() == pytest.approx(optimum, rel=1e-6)


@pytest.mark.parametrize("method", ["lp", "reference"])
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-9), (torch.float32, 1e-4)])
def test_universal_matching_after_sparsification(method: str, dtype: torch.dtype, tol: float) -> None:
    v = (mlp_games(3, 7, seed=5) * 10).to(dtype)
    result = sparsify(v, method=method, niter=200, lr=1e-3)
    scale = v.abs().amax(-1).double() if dtype == torch.float32 else torch.ones(3, dtype=torch.float64)
    target = (v + result.q).double()
    err = (reconstruct(result.I_and, result.I_or).double() - target).abs().amax(-1)
    assert bool((err <= tol * scale).all()), err
    assert bool((result.diagnostics.matching_error <= tol * scale).all())
    # Independent check in float64 with the brute-force synthesis.
    brute = brute_reconstruct(result.I_and[0].double().numpy(), result.I_or[0].double().numpy())
    np.testing.assert_allclose(brute, target[0].numpy(), atol=float(tol * scale[0]) * 10)
    assert result.I_and.dtype == dtype


@pytest.mark.parametrize("method", ["lp", "reference"])
def test_q_stays_within_its_bound(method: str) -> None:
    v = mlp_games(4, 6, seed=9) * 5
    result = sparsify(v, qthres=0.1, method=method, niter=300, lr=1e-2)
    bound = 0.1 * (v[:, -1] - v[:, 0]).abs()
    assert bool((result.q.abs() <= bound[:, None] * (1 + 1e-12)).all())
    torch.testing.assert_close(result.diagnostics.q_bound, bound)
    if method == "reference":  # the recipe's steps push q to its bound; clipping must hold it
        assert bool((result.q.abs().amax(-1) > 0.5 * bound).all())


def test_low_order_or_terms_are_merged_into_and() -> None:
    result = sparsify(mlp_games(2, 5, seed=2))
    low = torch.tensor([popcount(t) <= 1 for t in range(32)])
    assert bool((result.I_or[:, low] == 0).all())


def test_pure_or_game_ends_as_a_single_or_term() -> None:
    n, s, w = 6, 0b011010, 2.0
    v = torch.tensor([[w * bool(t & s) for t in range(1 << n)]], dtype=torch.float64)
    exact = sparsify(v, qthres=0.0)
    expected_or = torch.zeros(1 << n, dtype=torch.float64)
    expected_or[s] = w
    torch.testing.assert_close(exact.I_or[0], expected_or, atol=1e-7, rtol=0)
    torch.testing.assert_close(exact.I_and[0], torch.zeros(1 << n, dtype=torch.float64), atol=1e-7, rtol=0)
    # With a q budget the optimum is w·(1 − 0.04) = 0.96 w, but it is no longer unique: q can
    # trade the OR term against the constant I(∅) = q_∅ ∈ [0, 0.04 w] at equal L1 (the LP's
    # optimal face is an edge). The OR term must still carry all but that budget.
    shrunk = sparsify(v, qthres=0.04)
    assert shrunk.diagnostics.l1_final.item() == pytest.approx(0.96 * w, rel=1e-7)
    assert shrunk.I_or[0, s].item() >= 0.92 * w - 1e-7
    others = torch.cat((shrunk.I_and[0, 1:], shrunk.I_or[0, :s], shrunk.I_or[0, s + 1 :])).abs()
    assert others.sum().item() <= 0.04 * w + 1e-7


def test_batched_sparsification_equals_games_alone(smooth_games: torch.Tensor) -> None:
    together = sparsify(smooth_games)
    reference = sparsify(smooth_games, method="reference", niter=300, lr=1e-3)
    for b in range(smooth_games.shape[0]):
        alone = sparsify(smooth_games[b : b + 1])
        torch.testing.assert_close(together.I_and[b], alone.I_and[0], atol=1e-9, rtol=0)
        torch.testing.assert_close(together.I_or[b], alone.I_or[0], atol=1e-9, rtol=0)
        alone_ref = sparsify(smooth_games[b : b + 1], method="reference", niter=300, lr=1e-3)
        assert torch.equal(reference.gamma[b], alone_ref.gamma[0])
        assert torch.equal(reference.q[b], alone_ref.q[0])
    chunked = sparsify(smooth_games, chunk_size=2)
    torch.testing.assert_close(chunked.I_and, together.I_and, atol=1e-9, rtol=0)


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


def test_sparsify_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="shape \\(B, 2\\^n\\)"):
        sparsify(torch.zeros(8))
    with pytest.raises(ValueError, match="non-finite"):
        sparsify(torch.tensor([[0.0, float("nan"), 1.0, 2.0]]))
    with pytest.raises(ValueError, match="unknown sparsification method"):
        sparsify(torch.zeros(1, 4), method="adam")
    with pytest.raises(ValueError, match="qthres"):
        sparsify(torch.zeros(1, 4), qthres=-1)


def test_near_constant_games_converge_in_a_batch_with_ordinary_ones() -> None:
    # An untrained model's games: a large constant log-odds and a tiny, noisy variation. Its q
    # bound is minute; the solver must neither stall nor let it spoil the other games.
    from pretrain_knowledge.interactions.lp import solve_sparsity_lp

    g = torch.Generator().manual_seed(3)
    flat = -1.4 + 1e-3 * torch.randn(2, 64, generator=g, dtype=torch.float64)
    games = torch.cat((flat, mlp_games(2, 6, seed=12)))
    bound = 0.04 * (games[:, -1] - games[:, 0]).abs()
    solution = solve_sparsity_lp(games, bound)
    assert solution.iterations < 60
    for b in range(4):
        assert solution.l1[b].item() == pytest.approx(highs_optimum(games[b].numpy(), 0.04), rel=1e-6)


def test_dense_reference_matrices_equal_the_brute_force_definitions() -> None:
    from references import dense_and_matrix, dense_or_matrix

    v = random_games(1, 6, seed=21)[0]
    np.testing.assert_allclose((dense_and_matrix(6) @ v).numpy(), brute_and(v.numpy()), atol=1e-12)
    np.testing.assert_allclose((dense_or_matrix(6) @ v).numpy(), brute_or(v.numpy()), atol=1e-12)
