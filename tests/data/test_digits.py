import pytest
import torch

from paperzoo.data.digits import digits_split, train_mlp


def test_three_way_split_is_disjoint_and_standardised_on_train():
    d = digits_split(0.2, val_fraction=0.2, generator=torch.Generator().manual_seed(0))
    assert d.train_x.shape[0] + d.val_x.shape[0] + d.test_x.shape[0] == 1797
    assert d.val_x.shape == d.test_x.shape == (359, 64)
    used = d.train_x.std(0) > 0
    assert torch.allclose(d.train_x[:, used].mean(0), torch.zeros(int(used.sum())), atol=1e-5)


def test_pixels_constant_on_train_are_zero_everywhere():
    # With a clamped std, a pixel that is constant on the training split turned its rare non-zero test values into
    # features of size 1e3-1e4: every digits claim trained on them.
    for seed in range(5):
        d = digits_split(0.3, val_fraction=0.2, generator=torch.Generator().manual_seed(seed))
        constant = d.train_x.std(0) == 0
        assert bool((d.test_x[:, constant] == 0).all()) and bool((d.val_x[:, constant] == 0).all())


def test_validation_metrics_and_errors():
    d = digits_split(0.2, val_fraction=0.2, generator=torch.Generator().manual_seed(1))
    r = train_mlp(d, lambda p: torch.optim.Adam(p, 1e-2), steps=20, batch_size=16)
    assert 0 < r.val_loss < 5 and 0 <= r.val_accuracy <= 1
    assert torch.isnan(torch.tensor(train_mlp(digits_split(0.3), lambda p: torch.optim.SGD(p, 0.1), steps=2,
                                              batch_size=4).val_loss))
    with pytest.raises(ValueError, match="test_fraction \\+ val_fraction must be < 1"):
        digits_split(0.6, val_fraction=0.5)
