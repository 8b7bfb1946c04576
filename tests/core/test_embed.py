import numpy as np
import pytest
import torch

from deepseg.core.embed import Dropout, NetConfig, SegmentationNet, kl_loss, smooth_labels


def test_shapes_follow_the_patent():
    net = SegmentationNet(n_features=20, n_classes=5)
    assert net.f.dense1.weight.shape == (128, 20)
    assert net.f.dense2.weight.shape == (32, 128)
    assert net.g.dense.weight.shape == (5, 32)
    assert net.f.dropout.p == 0.5
    net.eval()
    z = net.f(torch.randn(7, 20))
    assert z.shape == (7, 32)
    assert torch.all(z.abs() <= 1)  # tanh
    assert net(torch.randn(7, 20)).shape == (7, 5)


@pytest.mark.parametrize("p", [0.5, 0.3, 0.9])
def test_dropout_zeroes_a_share_p_and_keeps_the_mean(p):
    torch.manual_seed(0)
    drop = Dropout(p).train()
    x = torch.ones(2000, 129, requires_grad=True)  # 258,000 elements: not a multiple of 8
    y = drop(x)
    assert abs(float((y == 0).float().mean()) - p) < 0.005
    assert abs(float(y.detach().mean()) - 1.0) < 0.02
    assert torch.unique(y.detach()).tolist() == pytest.approx([0.0, 1.0 / (1.0 - p)])
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # the gradient passes where the mask keeps, scaled alike
    assert torch.equal(drop.eval()(x), x)


def test_dropout_masks_follow_torch_seed():
    drop = Dropout(0.5).train()
    x = torch.ones(64, 128)
    torch.manual_seed(3)
    a = drop(x)
    torch.manual_seed(3)
    assert torch.equal(drop(x), a)
    assert not torch.equal(drop(x), a)
    assert torch.equal(Dropout(0.0).train()(x), x) and torch.equal(Dropout(1.0).train()(x), 0 * x)


def test_glorot_normal_init_and_zero_bias():
    torch.manual_seed(0)
    net = SegmentationNet(n_features=400, n_classes=5, config=NetConfig(hidden_size=600))
    w = net.f.dense1.weight.detach().numpy()
    assert abs(w.std() - np.sqrt(2.0 / (400 + 600))) < 0.002
    assert abs(w.mean()) < 0.002
    assert torch.count_nonzero(net.f.dense1.bias) == 0


def test_tikhonov_penalty_decreases_through_the_network():
    net = SegmentationNet(n_features=10, n_classes=3)
    l1, l2, l3 = net.config.l2
    assert l1 > l2 > l3 > 0
    expected = (
        l1 * net.f.dense1.weight.pow(2).sum()
        + l2 * net.f.dense2.weight.pow(2).sum()
        + l3 * net.g.dense.weight.pow(2).sum()
    )
    assert torch.isclose(net.penalty(), expected)


def test_label_smoothing_is_equation_3_normalised():
    h = smooth_labels(np.array([0, 2]), n_classes=4, eps=1e-3)
    np.testing.assert_allclose(h.sum(axis=1), 1.0, rtol=1e-6)
    assert h[0].argmax() == 0 and h[1].argmax() == 2
    # before normalisation: 1 - c·ε on the class, ε elsewhere
    np.testing.assert_allclose(h[0, 0] / h[0, 1], (1 - 4e-3) / 1e-3, rtol=1e-4)


def test_kl_loss_is_zero_at_the_target_and_positive_elsewhere():
    target = torch.tensor([[0.7, 0.2, 0.1]])
    assert kl_loss(torch.log(target), target).item() == pytest.approx(0.0, abs=1e-6)
    assert kl_loss(torch.zeros(1, 3), target).item() > 0.05


def test_optimizer_step_equals_adam_on_loss_plus_penalty():
    """optimizer_step (penalty gradient added in place, fused Adam) = plain Adam on loss + penalty()."""
    from deepseg.core.embed import mse_loss
    from deepseg.core.train import make_optimizer, optimizer_step

    torch.manual_seed(0)
    a = SegmentationNet(n_features=6, n_classes=3)
    b = SegmentationNet(n_features=6, n_classes=3)
    b.load_state_dict(a.state_dict())
    a.eval(), b.eval()  # no dropout: both nets see the same function
    opt_a = make_optimizer(a, 1e-2)
    opt_b = torch.optim.Adam(b.parameters(), lr=1e-2, foreach=False, fused=False)
    x, t = torch.randn(16, 6), torch.softmax(torch.randn(16, 3), 1)
    for _ in range(5):
        optimizer_step(a, opt_a, mse_loss(a(x), t))
        opt_b.zero_grad()
        (mse_loss(b(x), t) + b.penalty()).backward()
        opt_b.step()
    for pa_, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa_, pb, rtol=1e-5, atol=1e-6)
