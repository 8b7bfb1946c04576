import contextlib

import numpy as np
import pytest

from tests.settings import FAST
from deepseg import DeepSegmentationClassifier
from deepseg.core._local import LocalBackend
from deepseg.core.loop import DeepSegConfig, fit_deep_segmentation
from deepseg.core.ovr import fit_ovr_tsvm
from deepseg.core.pseudo import ema_weights
from deepseg.core.train import TrainConfig, embed


def test_ema_weights_match_the_recursion():
    rho, preds = 0.8, np.random.default_rng(0).random((4, 3))
    ema = preds[0]
    for p in preds[1:]:
        ema = rho * ema + (1 - rho) * p
    w = ema_weights(4, rho)
    assert w.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(w @ preds, ema)


def test_ema_ensemble_is_the_weighted_mean_of_iteration_predictions(moons):
    X, y, _ = moons
    clf = DeepSegmentationClassifier(random_state=0, ema_decay=0.5, **FAST).fit(X, y)
    from deepseg.core.train import predict_proba

    per_iteration = [predict_proba(net, X) for net in clf.model_.ensemble.nets]
    expected = 0.5 * per_iteration[0] + 0.5 * per_iteration[1]
    np.testing.assert_allclose(clf.predict_proba(X), expected, rtol=1e-5)


class SpyBackend(LocalBackend):
    """Records every pseudo-labeller the loop hands to the backend."""

    def __init__(self, X):
        super().__init__(X)
        self.labelers = []

    @contextlib.contextmanager
    def pseudo_label(self, labeler):
        self.labelers.append(labeler)
        with super().pseudo_label(labeler) as data:
            yield data


def test_pseudo_labels_are_recomputed_from_scratch_each_iteration(moons):
    """Iteration t's TSVMs depend only on iteration t's embedding: refitting them from scratch
    on that embedding reproduces them exactly, whatever earlier iterations produced."""
    X, y, _ = moons
    lab = y != -1
    backend = SpyBackend(X[~lab])
    config = DeepSegConfig(n_iter=3, train=TrainConfig(supervised_epochs=20, unlabeled_epochs=2, labeled_epochs=2))
    fit_deep_segmentation(X[lab], y[lab], backend, 2, config, seed=0)
    assert len(backend.labelers) == 3
    for labeler in backend.labelers:
        fresh = fit_ovr_tsvm(embed(labeler.net, X[lab]), y[lab], embed(labeler.net, X[~lab]), 2, config.tsvm)
        np.testing.assert_allclose(fresh.coef, labeler.tsvm.coef, rtol=1e-6, atol=1e-9)
    # and the embeddings did change between iterations, so this is not vacuous
    assert not np.allclose(backend.labelers[0].tsvm.coef, backend.labelers[-1].tsvm.coef)


def test_same_seed_same_result_different_seed_different(moons):
    X, y, _ = moons
    a = DeepSegmentationClassifier(random_state=3, **FAST).fit(X, y).predict_proba(X)
    b = DeepSegmentationClassifier(random_state=3, **FAST).fit(X, y).predict_proba(X)
    c = DeepSegmentationClassifier(random_state=4, **FAST).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_diagnostics_per_iteration(moons):
    X, y, _ = moons
    clf = DeepSegmentationClassifier(random_state=0, **FAST).fit(X, y)
    assert clf.n_iter_ == 2 and [h["iteration"] for h in clf.history_] == [1, 2]
    for h in clf.history_:
        assert 0.0 <= h["agreement"] <= 1.0
        assert sum(h["class_shares"]) == np.sum(y == -1)
        assert h["tsvm_objective"] > 0 and h["tsvm_s"] >= 0 and h["retrain_s"] > 0


def test_unlabelled_data_helps_on_two_moons(moons):
    X, y, y_true = moons
    unl = y == -1
    supervised = DeepSegmentationClassifier(random_state=0, n_iter=0).fit(X, y)
    # the unlabelled loss weighted up, as deepseg-uw100 in BENCHMARKS.md: with the patent's
    # weight 1 the gain on this toy is only +0.005
    deepseg = DeepSegmentationClassifier(random_state=0, unlabeled_weight=100.0).fit(X, y)
    acc_sup = np.mean(supervised.transduction_[unl] == y_true[unl])
    acc = np.mean(deepseg.transduction_[unl] == y_true[unl])
    assert acc >= acc_sup + 0.01  # measured: 0.855 -> 0.870 with seed 0


def test_outputs_and_labels_kept(moons):
    X, y, _ = moons
    clf = DeepSegmentationClassifier(random_state=0, **FAST).fit(X, y)
    P = clf.predict_proba(X)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=1e-5)
    assert clf.transform(X).shape == (len(X), 32)
    lab = y != -1
    np.testing.assert_array_equal(clf.transduction_[lab], y[lab])
    assert len(list(clf.staged_predict_proba(X))) == 2


@pytest.mark.parametrize(
    "params, match",
    [({"n_iter": -1}, "n_iter"), ({"dropout": 1.5}, "dropout"), ({"C": 0}, "'C'"), ({"l2": (1e-3,)}, "l2")],
)
def test_bad_parameters_are_named(moons, params, match):
    X, y, _ = moons
    with pytest.raises(ValueError, match=match):
        DeepSegmentationClassifier(**params).fit(X, y)


def test_stacked_scorer_equals_the_networks_one_by_one():
    """One pass over T stacked nets (batch-norm folded in) = the T eval-mode nets run one by one."""
    import torch

    from deepseg.core.embed import SegmentationNet
    from deepseg.core.pseudo import EMAEnsemble, frozen_copy
    from deepseg.core.train import predict_proba

    torch.manual_seed(0)
    nets = []
    for _ in range(3):
        net = SegmentationNet(7, 4)
        net.f.norm.running_mean.normal_()
        net.f.norm.running_var.uniform_(0.2, 3.0)
        net.f.norm.weight.data.normal_()
        net.f.norm.bias.data.normal_()
        nets.append(frozen_copy(net))
    ensemble = EMAEnsemble(nets, 0.6)
    X = np.random.default_rng(0).normal(size=(5000, 7)).astype(np.float32)
    expected = sum(w * predict_proba(net, X) for w, net in zip(ensemble.weights(), nets))
    P, Z = ensemble.predict_with_embedding(X)
    np.testing.assert_allclose(P, expected, atol=1e-6)
    np.testing.assert_allclose(ensemble(X), expected, atol=1e-6)
    np.testing.assert_allclose(Z, embed(nets[-1], X), atol=1e-5)
    assert ensemble(X[:0]).shape == (0, 4)


def test_unlabeled_rows_per_epoch_trains_each_epoch_on_a_fresh_subset():
    from deepseg.core._local import LocalPseudoLabeled

    X = np.arange(1000, dtype=np.float32)[:, None]
    data = LocalPseudoLabeled(X, X.copy())
    epoch = lambda seed, cap: np.concatenate([xb[:, 0] for xb, _ in data.batches(64, seed, cap)])  # noqa: E731
    a, b = epoch(0, 300), epoch(1, 300)
    assert len(a) == len(b) == 300 and len(np.unique(a)) == 300
    assert set(a.tolist()) != set(b.tolist())
    np.testing.assert_array_equal(a, epoch(0, 300))
    assert sorted(epoch(0, None).tolist()) == list(range(1000))


def test_unlabeled_rows_per_epoch_is_a_classifier_parameter(moons):
    X, y, _ = moons
    capped = DeepSegmentationClassifier(random_state=0, unlabeled_rows_per_epoch=40, **FAST).fit(X, y)
    full = DeepSegmentationClassifier(random_state=0, **FAST).fit(X, y)
    assert capped.to_config().train.unlabeled_rows_per_epoch == 40
    assert not np.allclose(capped.predict_proba(X), full.predict_proba(X))
    with pytest.raises(ValueError, match="unlabeled_rows_per_epoch"):
        DeepSegmentationClassifier(unlabeled_rows_per_epoch=0).fit(X, y)
