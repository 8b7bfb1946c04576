"""Active survey waves in numpy: uncertain users first, spread over the embedding, reproducible."""

import numpy as np
import pytest

from deepseg.core.active import select_active, uncertainty_scores


def test_uncertainty_margin_and_entropy():
    P = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.6, 0.3, 0.1], [1 / 3, 1 / 3, 1 / 3]])
    np.testing.assert_allclose(uncertainty_scores(P, "margin"), [0.0, 1.0, 0.7, 1.0])
    np.testing.assert_allclose(uncertainty_scores(P, "entropy"),
                               [0.0, np.log(2) / np.log(3), -(0.6 * np.log(0.6) + 0.3 * np.log(0.3)
                                                             + 0.1 * np.log(0.1)) / np.log(3), 1.0])
    with pytest.raises(ValueError, match="uncertainty must be one of .* got 'gap'"):
        uncertainty_scores(P, "gap")
    with pytest.raises(ValueError, match=r"c >= 2, got shape \(3,\)"):
        uncertainty_scores(np.ones(3), "margin")


def _confused_corner(n_corner=200, n_rest=800, seed=0):
    """A tight cluster of equally, very uncertain users, and users spread widely that are a bit
    less uncertain."""
    rng = np.random.default_rng(seed)
    Z = np.vstack([rng.normal(0, 0.01, (n_corner, 2)), rng.uniform(-10, 10, (n_rest, 2))])
    P = np.vstack([np.tile([0.5, 0.5], (n_corner, 1)), np.tile([0.6, 0.4], (n_rest, 1))])
    return P, Z, n_corner


def test_deterministic_for_a_seed():
    P, Z, _ = _confused_corner()
    a, sa = select_active(P, Z, 50, seed=3)
    b, sb = select_active(P, Z, 50, seed=3)
    c, _ = select_active(P, Z, 50, seed=4)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(sa, sb)
    assert not np.array_equal(a, c)
    assert len(set(a.tolist())) == 50  # nobody twice


def test_picks_uncertain_users_over_confident_ones():
    rng = np.random.default_rng(1)
    Z = rng.normal(size=(1000, 4))
    confident = rng.random(1000) < 0.8
    P = np.where(confident[:, None], [0.995, 0.005], [0.5, 0.5])  # uncertainty 0.01 vs 1
    picked, scores = select_active(P, Z, 100, seed=0)
    assert (~confident[picked]).mean() >= 0.85  # 20% of the users, most of the wave
    np.testing.assert_allclose(scores, uncertainty_scores(P)[picked])
    top, _ = select_active(P, Z, 100, seed=0, diversity=False)
    assert not confident[top].any()


def test_a_wave_is_spread_not_spent_on_one_confused_corner():
    P, Z, n_corner = _confused_corner()
    picked, _ = select_active(P, Z, 40, seed=0)
    in_corner = (picked < n_corner).sum()
    assert 1 <= in_corner <= 3  # the corner is one point of view, not 40
    top, _ = select_active(P, Z, 40, seed=0, diversity=False)
    assert (top < n_corner).all()  # pure uncertainty spends the wave there


def test_size_at_least_n_returns_everyone_most_uncertain_first():
    P = np.array([[0.9, 0.1], [0.5, 0.5], [0.7, 0.3]])
    Z = np.zeros((3, 2))
    for size in (3, 10):
        picked, scores = select_active(P, Z, size, seed=0)
        assert picked.tolist() == [1, 2, 0]
        np.testing.assert_allclose(scores, [1.0, 0.6, 0.2])
    assert select_active(P, Z, 0, seed=0)[0].tolist() == []
    # identical embeddings and certain users: the draw still fills the wave
    picked, _ = select_active(np.tile([1.0, 0.0], (5, 1)), np.zeros((5, 2)), 4, seed=0)
    assert sorted(set(picked.tolist())) == sorted(picked.tolist()) and len(picked) == 4


def test_bad_inputs_name_the_parameter():
    P, Z = np.full((4, 2), 0.5), np.zeros((4, 2))
    with pytest.raises(ValueError, match=r"embedding must be .* n = 4 rows, got shape \(3, 2\)"):
        select_active(P, Z[:3], 2)
    with pytest.raises(ValueError, match="size must be a non-negative integer, got -1"):
        select_active(P, Z, -1)
