import contextlib

import numpy as np
import pytest

from tests.settings import FAST
from deepseg import DeepSegmentationClassifier
from deepseg.core._local import LocalBackend
from deepseg.core.loop import DeepSegConfig, fit_deep_segmentation
from deepseg.core.ovr import fit_ovr_tsvm
from deepseg.core.pseudo import PseudoLabeler, balancing_weights, ema_weights, weighted_hard_targets
from deepseg.core.train import TrainConfig, embed, predict_proba


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
    clf = DeepSegmentationClassifier(random_state=0, ema_decay=0.5, safeguard="none", calibration="none",
                                     **FAST).fit(X, y)
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
    result = fit_deep_segmentation(X[lab], y[lab], backend, 2, config, seed=0)
    assert len(backend.labelers) == 3  # the safeguard's fold fits run on their own backends
    prior = np.array(result.history[-1]["class_prior"])
    for labeler in backend.labelers:
        fresh = fit_ovr_tsvm(embed(labeler.net, X[lab]), y[lab], embed(labeler.net, X[~lab]), 2, config.tsvm,
                             class_prior=prior)
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


def test_unlabeled_data_helps_on_digits():
    """scikit-learn's digits, 5 labels per class (the benchmark's seed-0 draw): deepseg's
    defaults beat the same network trained on the labelled points alone."""
    from sklearn.datasets import load_digits
    from sklearn.preprocessing import StandardScaler

    X, y_true = load_digits(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    rng = np.random.default_rng(0)
    lab = np.zeros(len(y_true), bool)
    for k in range(10):
        lab[rng.choice(np.flatnonzero(y_true == k), 5, replace=False)] = True
    y = np.where(lab, y_true, -1)
    supervised = DeepSegmentationClassifier(random_state=0, n_iter=0).fit(X, y)
    deepseg = DeepSegmentationClassifier(random_state=0).fit(X, y)
    acc_sup = np.mean(supervised.transduction_[~lab] == y_true[~lab])
    acc = np.mean(deepseg.transduction_[~lab] == y_true[~lab])
    assert acc >= acc_sup + 0.01  # measured: 0.800 -> 0.821


def test_outputs_and_labels_kept(moons):
    X, y, _ = moons
    clf = DeepSegmentationClassifier(random_state=0, safeguard="none", **FAST).fit(X, y)
    P = clf.predict_proba(X)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=1e-5)
    assert clf.transform(X).shape == (len(X), 32)
    lab = y != -1
    np.testing.assert_array_equal(clf.transduction_[lab], y[lab])
    assert len(list(clf.staged_predict_proba(X))) == 2


@pytest.mark.parametrize(
    "params, match",
    [({"n_iter": -1}, "n_iter"), ({"dropout": 1.5}, "dropout"), ({"C": 0}, "'C'"), ({"l2": (1e-3,)}, "l2"),
     ({"unlabeled_loss": "ce"}, "unlabeled_loss"), ({"pseudo_labels": "net"}, "pseudo_labels"),
     ({"mixup_alpha": -1.0}, "mixup_alpha"), ({"input_noise": -0.1}, "input_noise"),
     ({"input_noise": "high"}, "input_noise"),
     ({"unlabeled_epochs": -1}, "unlabeled_epochs"), ({"unlabeled_epochs": "many"}, "unlabeled_epochs")],
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


def test_weighted_hard_targets_weigh_by_certainty_and_class_share():
    P = np.array([[1.0, 0.0, 0.0], [0.5, 0.25, 0.25], [1 / 3, 1 / 3, 1 / 3], [0.1, 0.8, 0.1]])
    zeta = balancing_weights(P)
    np.testing.assert_allclose(zeta, [4 / 3 / 3, 4 / 3 / 1, 4 / 3])  # argmax counts 3, 1, 0 (uniform row: class 0)
    T = weighted_hard_targets(P, zeta)
    assert (np.count_nonzero(T, axis=1) <= 1).all() and (T.argmax(axis=1) == [0, 0, 0, 1]).all()
    assert T[0, 0] == pytest.approx(zeta[0])  # one-hot: certainty 1
    assert T[2].sum() == pytest.approx(0.0, abs=1e-12)  # uniform: certainty 0
    entropy = -(0.5 * np.log(0.5) + 0.5 * np.log(0.25))
    assert T[1, 0] == pytest.approx((1 - entropy / np.log(3)) * zeta[0])
    # over many rows, ζ makes every class weigh the same in total
    Q = np.random.default_rng(0).dirichlet([5, 1, 1], size=1000)
    counts = np.bincount(Q.argmax(axis=1), minlength=3)
    np.testing.assert_allclose(counts * balancing_weights(Q), 1000 / 3)


def test_tsvm_and_net_pseudo_labels_are_the_renormalised_product(moons):
    X, y, _ = moons
    clf = DeepSegmentationClassifier(random_state=0, pseudo_labels="tsvm", safeguard="none", **FAST).fit(X, y)
    net, tsvm = clf.model_.ensemble.nets[-1], clf.model_.tsvm
    expected = tsvm.predict_proba(embed(net, X)) * predict_proba(net, X)
    expected /= expected.sum(axis=1, keepdims=True)
    both = PseudoLabeler(net, tsvm, with_net=True)
    np.testing.assert_allclose(both.probabilities(X), expected, rtol=1e-5)
    np.testing.assert_allclose(PseudoLabeler(net, tsvm)(X), tsvm.predict_proba(embed(net, X)), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("loss, pseudo_labels", [("mse", "tsvm"), ("weighted_ce", "tsvm_and_net")])
def test_the_loop_hands_the_backend_the_configured_targets(moons, loss, pseudo_labels):
    """The patent's path: TSVM probability vectors; deepseg's: class-weighted hard targets of the
    TSVM x g∘f product, class weights from every unlabelled point's argmax and the class prior."""
    X, y, _ = moons
    lab = y != -1
    backend = SpyBackend(X[~lab])
    config = DeepSegConfig(n_iter=2, pseudo_labels=pseudo_labels, train=TrainConfig(
        supervised_epochs=20, unlabeled_epochs=2, labeled_epochs=2, unlabeled_loss=loss))
    result = fit_deep_segmentation(X[lab], y[lab], backend, 2, config, seed=0)
    prior = np.array(result.history[-1]["class_prior"])
    for labeler in backend.labelers:
        assert labeler.with_net == (pseudo_labels == "tsvm_and_net")
        T = labeler(X[~lab])
        if loss == "mse":
            assert labeler.class_weights is None
            np.testing.assert_allclose(T.sum(axis=1), 1.0, rtol=1e-5)
        else:
            np.testing.assert_allclose(labeler.class_weights, balancing_weights(labeler.probabilities(X[~lab]), prior))
            assert (np.count_nonzero(T, axis=1) <= 1).all() and (T >= 0).all()


def test_patent_settings_still_run(moons):
    from deepseg import PATENT_PARAMS

    X, y, _ = moons
    clf = DeepSegmentationClassifier(random_state=0, **{**PATENT_PARAMS, **FAST}).fit(X, y)
    assert clf.to_config().train.unlabeled_loss == "mse" and clf.to_config().pseudo_labels == "tsvm"
    assert clf.to_config().train.retrain_lr_factor == pytest.approx(0.1)
    np.testing.assert_allclose(clf.predict_proba(X).sum(axis=1), 1.0, rtol=1e-5)


def test_mixup_mixes_inputs_and_targets_with_the_same_weight():
    import torch

    from deepseg.core.train import mixup

    x = torch.arange(12, dtype=torch.float32).reshape(6, 2)
    t = torch.eye(6)[:, :3] * 2.0
    xm, tm = mixup(x, t, 2.0, np.random.default_rng(0))
    rng = np.random.default_rng(0)  # mixup's draws: λ, then the order
    lam = rng.beta(2.0, 2.0)
    lam = max(lam, 1 - lam)
    order = rng.permutation(6)
    assert 0.5 <= lam < 1.0 and not np.array_equal(order, np.arange(6))
    torch.testing.assert_close(xm, lam * x + (1 - lam) * x[order])
    torch.testing.assert_close(tm, lam * t + (1 - lam) * t[order])
    other = mixup(x, t, 2.0, np.random.default_rng(1))[0]
    assert not torch.allclose(xm, other)


def test_mixup_alpha_is_a_seeded_classifier_parameter(moons):
    X, y, _ = moons
    mixed = DeepSegmentationClassifier(random_state=0, mixup_alpha=1.0, **FAST).fit(X, y)
    again = DeepSegmentationClassifier(random_state=0, mixup_alpha=1.0, **FAST).fit(X, y)
    plain = DeepSegmentationClassifier(random_state=0, mixup_alpha=0.0, **FAST).fit(X, y)
    assert mixed.to_config().train.mixup_alpha == 1.0
    assert DeepSegmentationClassifier().to_config().train.mixup_alpha == 2.0  # the default
    np.testing.assert_array_equal(mixed.predict_proba(X), again.predict_proba(X))
    assert not np.allclose(mixed.predict_proba(X), plain.predict_proba(X))
    # the supervised start is not mixed: only the unlabelled retraining differs
    for a, b in zip(mixed.model_.supervised.parameters(), plain.model_.supervised.parameters()):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_input_noise_is_a_seeded_classifier_parameter(moons):
    X, y, _ = moons
    params = dict(random_state=0, mixup_alpha=0.0, **FAST)
    noisy = DeepSegmentationClassifier(input_noise=0.3, **params).fit(X, y)
    again = DeepSegmentationClassifier(input_noise=0.3, **params).fit(X, y)
    plain = DeepSegmentationClassifier(input_noise=0.0, **params).fit(X, y)
    assert noisy.to_config().train.input_noise == 0.3
    np.testing.assert_array_equal(noisy.predict_proba(X), again.predict_proba(X))
    assert not np.allclose(noisy.predict_proba(X), plain.predict_proba(X))
    # only the unlabelled retraining sees noise: the supervised start is the same
    for a, b in zip(noisy.model_.supervised.parameters(), plain.model_.supervised.parameters()):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("n_labeled, n_classes, expected", [
    (20, 2, 0.2), (50, 10, 0.2), (15, 3, 0.2),  # up to 10 per class: the full 0.2
    (80, 2, 0.1), (1000, 5, 0.2 * (10 / 200) ** 0.5),  # above: 0.2·√(10/m)
])
def test_auto_input_noise_shrinks_with_the_labels_per_class(n_labeled, n_classes, expected):
    from deepseg.core.train import resolve_input_noise

    assert resolve_input_noise("auto", n_labeled, n_classes) == pytest.approx(expected)
    assert resolve_input_noise(0.3, n_labeled, n_classes) == 0.3  # a number is used as given


def test_auto_input_noise_is_the_default_and_recorded_per_iteration(moons):
    X, _, y_true = moons
    y = np.full_like(y_true, -1)
    for k in (0, 1):
        y[np.flatnonzero(y_true == k)[:40]] = k  # 40 labelled per class: std 0.2·√(10/40) = 0.1
    params = dict(random_state=0, mixup_alpha=0.0, **FAST)
    auto = DeepSegmentationClassifier(**params).fit(X, y)
    assert DeepSegmentationClassifier().input_noise == "auto"
    expected = 0.1
    assert [h["input_noise"] for h in auto.history_] == pytest.approx([expected] * len(auto.history_))
    same = DeepSegmentationClassifier(input_noise=expected, **params).fit(X, y)
    np.testing.assert_array_equal(auto.predict_proba(X), same.predict_proba(X))


@pytest.mark.parametrize("n_labeled, n_classes, expected", [
    (20, 2, 20), (50, 10, 20), (50, 5, 20),  # up to 10 per class: 20
    (22, 2, 30), (1000, 5, 30),  # above: 30
])
def test_auto_unlabeled_epochs_grow_with_the_labels_per_class(n_labeled, n_classes, expected):
    from deepseg.core.train import resolve_unlabeled_epochs

    assert resolve_unlabeled_epochs("auto", n_labeled, n_classes) == expected
    assert resolve_unlabeled_epochs(7, n_labeled, n_classes) == 7  # a number is used as given


@pytest.mark.parametrize("per_class, expected", [(4, 20), (40, 30)])
def test_auto_unlabeled_epochs_are_the_default_and_recorded_per_iteration(moons, per_class, expected):
    X, _, y_true = moons
    y = np.full_like(y_true, -1)
    for k in (0, 1):
        y[np.flatnonzero(y_true == k)[:per_class]] = k
    params = dict(random_state=0, supervised_epochs=20, n_iter=1, labeled_epochs=1, mixup_alpha=0.0)
    auto = DeepSegmentationClassifier(**params).fit(X, y)
    assert DeepSegmentationClassifier().unlabeled_epochs == "auto"
    assert [h["unlabeled_epochs"] for h in auto.history_] == [expected]
    same = DeepSegmentationClassifier(unlabeled_epochs=expected, **params).fit(X, y)
    np.testing.assert_array_equal(auto.predict_proba(X), same.predict_proba(X))


def test_patent_params_give_the_patents_settings():
    from deepseg import PATENT_PARAMS

    cfg = DeepSegmentationClassifier(**PATENT_PARAMS).to_config()
    t = cfg.train
    assert (t.retrain_lr_factor, t.unlabeled_loss, cfg.pseudo_labels) == (0.1, "mse", "tsvm")
    assert (t.unlabeled_epochs, t.labeled_epochs, t.unlabeled_weight) == (10, 10, 1.0)
    assert (t.mixup_alpha, t.input_noise) == (0.0, 0.0)
    assert (cfg.tsvm.C, cfg.tsvm.C_unlabeled, cfg.ema_decay, cfg.n_iter) == (1.0, 1.0, 0.8, 6)
    assert (t.learning_rate, cfg.label_smoothing) == (1e-3, 1e-3)
    assert (cfg.net.hidden_size, cfg.net.embedding_size) == (128, 32)
    assert (cfg.class_prior, cfg.safeguard) == ("labeled", "none")  # the labelled shares, no safeguard
