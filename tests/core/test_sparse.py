"""Wide sparse input (scipy.sparse): accepted, never densified, and the same model as dense input.

Why sparse and dense input are not bit-identical: f's first product sums a row's non-zeros in
index order (torch.embedding_bag) where the dense product sums all d columns in BLAS's blocked
order, and mixup is applied after that product for sparse rows (W₁(λx + (1-λ)x') + b computed as
λ(W₁x + b) + (1-λ)(W₁x' + b)); f's first weights are stored transposed and their L2 penalty is
added inside Adam. Each is the same arithmetic up to float32 rounding (~1e-7 per step), which a
short fit keeps at that level; a long one can amplify it (a flipped argmax in a TSVM's CCCP, a
different pseudo-label), so the comparison fits a small problem with few epochs. Input noise is
the one intended difference (on the stored entries only: deepseg.core.sparse): it is set to 0 here.
"""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from deepseg import DeepSegmentationClassifier
from deepseg.core.embed import SegmentationNet, kl_loss
from deepseg.core.loop import fit_deep_segmentation
from deepseg.core._local import LocalBackend
from deepseg.core.lsa import SparseReduction
from deepseg.core.sparse import SparseRows, TransposedLinear
from deepseg.core.train import make_optimizer, mixup, optimizer_step, train_epochs
from tests.settings import FAST


@pytest.fixture(scope="module")
def wide():
    """600 rows x 300 columns, ~5% non-zero, 3 classes (a topic per class), 8 labels per class."""
    rng = np.random.default_rng(0)
    n, d, c = 600, 300, 3
    y_true = rng.integers(0, c, n)
    X = sp.random(n, d, density=0.03, random_state=1, format="lil", dtype=np.float32)
    for k in range(c):  # class k uses its own block of columns more often
        rows = np.flatnonzero(y_true == k)
        cols = rng.integers(k * 100, k * 100 + 100, size=(len(rows), 6))
        for r, cs in zip(rows, cols):
            X[r, cs] = rng.exponential(1.0, size=len(cs)) + 0.5
    X = X.tocsr().astype(np.float32)
    y = np.full(n, -1)
    for k in range(c):
        y[np.flatnonzero(y_true == k)[:8]] = k
    return X, y, y_true


RAW = dict(FAST, sparse_components=None)  # f's first layer on the sparse columns (no LSA reduction)
SMALL = dict(RAW, input_noise=0.0)


def test_sparse_and_dense_input_fit_the_same_model(wide):
    X, y, _ = wide
    dense = DeepSegmentationClassifier(random_state=0, **SMALL).fit(X.toarray(), y)
    sparse = DeepSegmentationClassifier(random_state=0, **SMALL).fit(X, y)
    assert isinstance(sparse.model_.supervised.f.dense1, TransposedLinear)
    np.testing.assert_allclose(sparse.predict_proba(X), dense.predict_proba(X.toarray()), atol=1e-4)
    np.testing.assert_allclose(sparse.transform(X), dense.transform(X.toarray()), atol=1e-4)
    np.testing.assert_array_equal(sparse.transduction_, dense.transduction_)
    for a, b in zip(sparse.history_, dense.history_):
        assert a["class_shares"] == b["class_shares"]
        assert a["tsvm_objective"] == pytest.approx(b["tsvm_objective"], rel=1e-4, abs=1e-6)


def test_one_training_step_on_sparse_rows_equals_the_dense_step():
    """Forward, backward (the transposed sparse product, mixup after it) and Adam with the L2
    penalty in its kernel: the same step as dense input, to float rounding."""
    rng = np.random.default_rng(0)
    X = sp.random(64, 50, density=0.1, random_state=0, format="csr", dtype=np.float32)
    T = torch.softmax(torch.as_tensor(rng.normal(size=(64, 4)), dtype=torch.float32), dim=1)
    nets = []
    for sparse_input, x in ((False, torch.as_tensor(X.toarray())), (True, SparseRows.of(X))):
        torch.manual_seed(0)
        net = SegmentationNet(50, 4, sparse_input=sparse_input)
        optimizer = make_optimizer(net, 0.01)
        for step in range(3):
            mix_rng = np.random.default_rng(step)
            xm, tm = mixup(x, T, 2.0, mix_rng)
            torch.manual_seed(step)  # the same dropout mask
            optimizer_step(net, optimizer, kl_loss(net(xm), tm))
        nets.append(net)
    assert isinstance(nets[1].f.dense1, TransposedLinear)
    # Adam divides by √v: where a weight's gradient is ~0 its rounding difference moves the step,
    # by well under 1% of the learning rate (0.01) here
    for (name, a), b in zip(nets[0].state_dict().items(), nets[1].state_dict().values()):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=2e-5, err_msg=name)


def test_csr_csc_and_coo_give_the_same_model(wide):
    X, y, _ = wide
    fits = [DeepSegmentationClassifier(random_state=0, **RAW).fit(fmt(X), y)
            for fmt in (sp.csr_matrix, sp.csc_matrix, sp.coo_matrix, sp.csr_array)]
    for other in fits[1:]:
        np.testing.assert_array_equal(other.predict_proba(X), fits[0].predict_proba(X))


@pytest.mark.parametrize("value, match", [(np.nan, "Input X contains NaN"), (np.inf, "Input X contains infinity"),
                                          (-np.inf, "Input X contains infinity")])
def test_sparse_non_finite_input_is_refused(wide, value, match):
    X, y, _ = wide
    X = X.copy()
    X.data[5] = value
    with pytest.raises(ValueError, match=match):
        DeepSegmentationClassifier(random_state=0, **FAST).fit(X, y)
    fitted = DeepSegmentationClassifier(random_state=0, **FAST).fit(wide[0], y)
    for method in (fitted.predict_proba, fitted.transform, fitted.predict):
        with pytest.raises(ValueError, match=match):
            method(X)


def test_predict_proba_and_transform_take_sparse_input(wide):
    X, y, _ = wide
    for fit_on in (X, X.toarray()):  # fitted on sparse (transposed first layer) or dense (nn.Linear)
        clf = DeepSegmentationClassifier(random_state=0, **RAW).fit(fit_on, y)
        for rows in (X, X.tocsc(), X.tocoo(), sp.csr_array(X)):
            np.testing.assert_allclose(clf.predict_proba(rows), clf.predict_proba(X.toarray()), atol=1e-5)
            np.testing.assert_allclose(clf.transform(rows), clf.transform(X.toarray()), atol=1e-5)
        staged = list(clf.staged_predict_proba(X))
        np.testing.assert_allclose(staged[-1], clf.predict_proba(X), atol=1e-6)
        assert clf.predict(X[:7]).shape == (7,)


@pytest.mark.parametrize("reduced", [False, True])
def test_fit_never_densifies_the_matrix(wide, monkeypatch, reduced):
    """Any toarray()/todense() of more rows than a mini-batch (or a scoring chunk of it) fails,
    on f's sparse first layer and through the LSA reduction alike."""
    X, y, _ = wide
    limit = 256  # the largest training batch (unlabeled_batch_size); scoring chunks use no toarray
    calls = []
    for cls in {type(X), sp.csr_matrix, sp.csr_array, sp.csc_matrix, sp.coo_matrix}:
        for name in ("toarray", "todense"):
            original = getattr(cls, name)

            def watched(self, *args, _original=original, **kwargs):
                calls.append(self.shape)
                assert self.shape[0] <= limit, f"densified {self.shape}"
                return _original(self, *args, **kwargs)

            monkeypatch.setattr(cls, name, watched)
    clf = DeepSegmentationClassifier(random_state=0, **dict(RAW, sparse_components=16 if reduced else None)).fit(X, y)
    assert (clf.reduction_ is not None) == reduced
    clf.predict_proba(X)
    clf.transform(X)
    assert all(shape[0] <= limit for shape in calls)
    with pytest.raises(AssertionError, match="densified"):  # the watch works
        X.toarray()


def test_wide_fit_stays_far_below_the_dense_matrix_in_memory():
    """10,000 x 30,000 at 0.05%: dense float32 would be 1.2 GB; the fit's numpy peak (tracemalloc:
    torch's own buffers are not counted; f's d x 128 weights are 15 MB) stays < 150 MB."""
    import tracemalloc

    rng = np.random.default_rng(0)
    n, d, per_row = 10_000, 30_000, 15
    X = sp.csr_matrix((rng.exponential(size=n * per_row).astype(np.float32), rng.integers(0, d, n * per_row),
                       np.arange(0, n * per_row + 1, per_row)), shape=(n, d))
    y = np.full(n, -1)
    y[:20] = rng.permutation(np.arange(20) % 2)
    tracemalloc.start()
    try:
        DeepSegmentationClassifier(random_state=0, supervised_epochs=2, n_iter=1, unlabeled_epochs=1,
                                   labeled_epochs=1, safeguard="none", sparse_components=None).fit(X, y)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 150e6, f"numpy peak {peak / 1e6:.0f} MB"


def test_input_noise_on_sparse_rows_touches_only_the_stored_entries():
    X = sp.random(10, 40, density=0.1, random_state=0, format="csr", dtype=np.float32)
    rows = SparseRows.of(X)
    noisy = rows.with_noise(0.5, np.random.default_rng(0))
    assert np.array_equal(noisy.indices, rows.indices) and np.array_equal(noisy.indptr, rows.indptr)
    assert not np.allclose(noisy.data, rows.data)
    assert np.array_equal(rows.data, X.data)  # the batch itself is not modified


def test_a_network_for_sparse_input_starts_from_the_same_weights():
    torch.manual_seed(3)
    dense = SegmentationNet(40, 3)
    torch.manual_seed(3)
    sparse = SegmentationNet(40, 3, sparse_input=True)
    assert sparse.f.dense1.weight_t.is_contiguous() and sparse.f.dense1.weight_t.shape == (40, 128)
    for (name, a), b in zip(dense.state_dict().items(), sparse.state_dict().values()):
        assert torch.equal(a, b), name


def test_transposed_first_layer_saves_and_loads_as_a_plain_linear_layer():
    torch.manual_seed(0)
    sparse_net = SegmentationNet(30, 3, sparse_input=True)
    state = sparse_net.state_dict()
    assert state["f.dense1.weight"].shape == (128, 30) and "f.dense1.weight_t" not in state
    plain = SegmentationNet(30, 3)
    plain.load_state_dict(state)
    back = SegmentationNet(30, 3, sparse_input=True)
    back.load_state_dict(plain.state_dict())
    x = torch.randn(5, 30)
    for net in (sparse_net, plain, back):
        net.eval()
    torch.testing.assert_close(plain(x), sparse_net(x))
    torch.testing.assert_close(back(x), sparse_net(x))


def test_a_sparse_fit_refuses_a_checkpoint(wide, tmp_path):
    X, y, _ = wide
    labeled = y >= 0
    with pytest.raises(ValueError, match="checkpoints need dense features"):
        fit_deep_segmentation(X[labeled], y[labeled], LocalBackend(X[~labeled]), 3, seed=0,
                              checkpoint=tmp_path / "ckpt")


def test_train_epochs_with_noise_and_mixup_runs_on_sparse_rows():
    X = sp.random(100, 20, density=0.2, random_state=0, format="csr", dtype=np.float32)
    T = np.eye(2, dtype=np.float32)[np.arange(100) % 2]
    net = SegmentationNet(20, 2, sparse_input=True)
    optimizer = make_optimizer(net, 1e-3)
    before = net.f.dense1.weight.detach().clone()
    losses = train_epochs(net, optimizer, lambda e: [(X[i:i + 32], T[i:i + 32]) for i in range(0, 100, 32)],
                          kl_loss, epochs=2, mixup_alpha=2.0, input_noise=0.2)
    assert len(losses) == 2 and np.all(np.isfinite(losses))
    assert not torch.equal(before, net.f.dense1.weight)


def test_wide_sparse_input_is_reduced_by_lsa(wide):
    """More columns (and rows) than `sparse_components`: f sees the reduction, fitted on every row."""
    X, y, y_true = wide
    clf = DeepSegmentationClassifier(random_state=0, **dict(FAST, sparse_components=16)).fit(X, y)
    red = clf.reduction_
    assert red.components.shape == (16, 300) and clf.n_features_in_ == 300
    assert clf.model_.supervised.f.dense1.in_features == 16
    assert not isinstance(clf.model_.supervised.f.dense1, TransposedLinear)
    Z = red.transform(X)
    np.testing.assert_allclose(Z.mean(axis=0), 0, atol=1e-5)  # centred on the fit's rows
    assert Z.var(axis=0).mean() == pytest.approx(1.0, rel=1e-4)  # one common scale
    np.testing.assert_allclose(np.linalg.norm(Z * red.scale + red.mean, axis=1), 1, atol=1e-5)  # rows L2-normalised
    for rows in (X.tocsc(), sp.csr_array(X), X.toarray()):
        np.testing.assert_allclose(clf.predict_proba(rows), clf.predict_proba(X), atol=1e-5)
        np.testing.assert_allclose(clf.transform(rows), clf.transform(X), atol=1e-5)
    unl = y == -1
    assert np.mean(clf.transduction_[unl] == y_true[unl]) > 0.9


def test_the_reduction_depends_on_rows_only_and_is_seeded(wide):
    X, _, _ = wide
    a, b = SparseReduction.fit(X, 8, seed=1), SparseReduction.fit(X, 8, seed=1)
    np.testing.assert_array_equal(a.components, b.components)
    assert a.scale == b.scale
    empty = sp.csr_matrix((1, 300), dtype=np.float32)
    np.testing.assert_allclose(a.transform(empty)[0], -a.mean / a.scale)  # an empty row: no NaN


def test_narrow_or_dense_input_is_not_reduced(wide):
    X, y, _ = wide
    narrow = DeepSegmentationClassifier(random_state=0, **dict(FAST, sparse_components=300)).fit(X, y)
    assert narrow.reduction_ is None and isinstance(narrow.model_.supervised.f.dense1, TransposedLinear)
    dense = DeepSegmentationClassifier(random_state=0, **dict(FAST, sparse_components=16)).fit(X.toarray(), y)
    assert dense.reduction_ is None


def test_sparse_components_is_validated(wide):
    X, y, _ = wide
    for bad in (0, -3, 2.5, "auto"):
        with pytest.raises(ValueError, match="'sparse_components' parameter"):
            DeepSegmentationClassifier(sparse_components=bad, **FAST).fit(X, y)
