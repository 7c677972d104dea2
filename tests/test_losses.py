"""The regression loss against Eq. (loss) written out here (docs/design.md section 4)."""

import pytest
import torch
from reference import smooth_l1

from data2vec.losses import regression_loss


@pytest.mark.parametrize("beta", [0.0, 0.5, 2.0, 4.0])
def test_values_on_both_sides_of_beta_and_both_reductions(beta):
    g = torch.Generator().manual_seed(0)
    N, D = 6, 5
    target = torch.randn(N, D, generator=g)
    d = torch.randn(N, D, generator=g) * 4  # spans |d| < beta and |d| > beta
    pred = target + d
    elem = smooth_l1(d, beta)
    if beta > 0:
        assert (d.abs() <= beta).any() and (d.abs() > beta).any()
    mean = regression_loss(pred, target, beta=beta, reduction="mean")
    total = regression_loss(pred, target, beta=beta, reduction="sum")
    torch.testing.assert_close(mean, elem.sum() / (N * D), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(total, elem.sum() / N, atol=1e-6, rtol=1e-6)
    scaled = regression_loss(pred, target, beta=beta, reduction="sum", scale=0.25)
    torch.testing.assert_close(scaled, 0.25 * elem.sum() / N, atol=1e-6, rtol=1e-6)


def test_hand_computed_values():
    pred = torch.tensor([[0.5, 3.0]])
    target = torch.zeros(1, 2)
    # beta = 1: 0.5 * 0.25 / 1 = 0.125 inside, 3 - 0.5 = 2.5 outside
    assert regression_loss(pred, target, beta=1.0, reduction="sum").item() == pytest.approx(2.625)
    assert regression_loss(pred, target, beta=1.0, reduction="mean").item() == pytest.approx(1.3125)
    # beta = 0: squared error 0.25 + 9
    assert regression_loss(pred, target, beta=0.0, reduction="sum").item() == pytest.approx(9.25)


def test_continuous_at_beta_and_gradient_flows():
    pred = torch.tensor([[2.0 - 1e-4], [2.0 + 1e-4]], requires_grad=True)
    loss = regression_loss(pred, torch.zeros(2, 1), beta=2.0, reduction="mean")
    assert loss.item() == pytest.approx(1.0, abs=1e-3)  # 0.5 * 4 / 2 = 2 - 1 = 1 on both sides
    loss.backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all()


def test_bad_input():
    x = torch.zeros(3, 4)
    with pytest.raises(ValueError, match="N, D"):
        regression_loss(x, torch.zeros(3, 5), beta=1.0, reduction="mean")
    with pytest.raises(ValueError, match="reduction"):
        regression_loss(x, x, beta=1.0, reduction="max")
    with pytest.raises(ValueError, match="beta"):
        regression_loss(x, x, beta=-1.0, reduction="mean")
    with pytest.raises(ValueError, match="no masked"):
        regression_loss(torch.zeros(0, 4), torch.zeros(0, 4), beta=1.0, reduction="mean")
