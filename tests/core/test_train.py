import threading

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from deepseg.core.embed import SegmentationNet, weighted_cross_entropy
from deepseg.core.sparse import SparseRows
from deepseg.core.train import ahead, make_optimizer, optimizer_step, prepared_batches, shuffled_batches, train_epochs


def _data(rows=300, d=12, c=3, sparse=False):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((rows, d)).astype(np.float32)
    if sparse:
        X = sp.csr_matrix(np.where(rng.random((rows, d)) < 0.2, X, 0).astype(np.float32))
    return X, rng.dirichlet(np.ones(c), rows).astype(np.float32)


def _as_lists(item):
    epoch, x, t, rows = item
    x = x.data if isinstance(x, SparseRows) else x.numpy()
    return epoch, x.tolist(), t.numpy().tolist(), rows


@pytest.mark.parametrize("sparse", [False, True])
def test_prefetched_batches_are_the_batches_of_the_callers_thread(sparse):
    """Noise and mixup come from their own seeded generators: preparing the batches ahead on a
    second thread changes none of them."""
    X, P = _data(sparse=sparse)
    make = lambda: prepared_batches(lambda e: shuffled_batches(X, P, 64, e), 3, mixup_alpha=2.0, seed=5,
                                    input_noise=0.3)
    direct = [_as_lists(item) for item in make()]
    with ahead(make()) as items:
        prefetched = [_as_lists(item) for item in items]
    assert len(direct) == 3 * 5 and prefetched == direct


def _train(X, P, through_ahead: bool):
    torch.manual_seed(0)
    net = SegmentationNet(X.shape[1], P.shape[1])
    opt = make_optimizer(net, 1e-2)
    if through_ahead:
        means = train_epochs(net, opt, lambda e: shuffled_batches(X, P, 64, e), weighted_cross_entropy, 3,
                             mixup_alpha=2.0, seed=1, input_noise=0.2)
    else:  # the loop as it was, every batch prepared between two steps
        net.train()
        means = []
        batches = list(prepared_batches(lambda e: shuffled_batches(X, P, 64, e), 3, 2.0, 1, 0.2))
        for epoch in range(3):
            total = count = 0
            for _, x, t, rows in (b for b in batches if b[0] == epoch):
                value = weighted_cross_entropy(net(x), t)
                optimizer_step(net, opt, value)
                total, count = total + float(value.detach()) * rows, count + rows
            means.append(total / count)
    return means, [p.detach().clone() for p in net.parameters()]


def test_training_on_prefetched_batches_matches_the_sequential_loop_bit_for_bit():
    X, P = _data()
    (m1, w1), (m2, w2) = _train(X, P, True), _train(X, P, False)
    assert m1 == m2 and all(torch.equal(a, b) for a, b in zip(w1, w2))


def test_ahead_raises_the_producers_error_in_the_consumer():
    def items():
        yield 1
        raise ValueError("bad batch 2")

    with pytest.raises(ValueError, match="bad batch 2"), ahead(items()) as it:
        list(it)


def test_leaving_ahead_early_closes_the_generator_and_its_thread():
    closed = threading.Event()

    def items():
        try:
            for i in range(1000):
                yield i
        finally:
            closed.set()

    with ahead(items(), depth=3) as it:
        assert next(it) == 0
    assert closed.is_set()
    assert not [t for t in threading.enumerate() if t.name.startswith("deepseg-batches")]


def test_an_epoch_without_usable_batches_reports_zero():
    X, P = _data(rows=1)
    net = SegmentationNet(X.shape[1], P.shape[1])
    assert train_epochs(net, make_optimizer(net, 1e-3), lambda e: shuffled_batches(X, P, 64, e),
                        weighted_cross_entropy, 2) == [0.0, 0.0]
