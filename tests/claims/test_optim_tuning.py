"""The optimizer claims' shared tuning recipe (paperzoo.claims.optim._tuning) and the controls written for them."""

import torch

from paperzoo.claims.optim._tuning import digits_data, split_heldout, tune_over_seeds, values
from paperzoo.claims.optim.diffgrad import _PlaceboFrictionDiffGrad
from paperzoo.optim import DiffGrad


def test_digits_data_clips_heldout_features_to_the_training_range():
    data = digits_data(1)
    lo, hi = data.train_x.min(0).values, data.train_x.max(0).values
    for x in (data.val_x, data.test_x):
        assert bool(((x >= lo) & (x <= hi)).all())
    assert data.train_x.shape[0] + data.val_x.shape[0] + data.test_x.shape[0] == 1797


def test_tune_over_seeds_equal_grids_extension_and_verdict_seeds():
    calls = []

    def run(name, lr, seed):
        calls.append((name, lr, seed))
        return {"val": (lr - 0.01) ** 2, "test": lr + seed}

    sel = tune_over_seeds(run, {"A": (0.1, 1.0), "B": (1.0, 10.0)}, [0, 1], verdict_seeds=[5, 6],
                          bounds=(1e-4, 100.0), max_extensions=2)
    assert abs(sel["A"].best - 0.01) < 1e-12 and not sel["A"].at_edge
    assert sel["B"].at_edge  # two extensions from 1.0 reach 0.01, still the edge
    assert values(sel["A"], "test") == [sel["A"].best + 5, sel["A"].best + 6]  # the fresh verdict seeds
    assert ("A", sel["A"].best, 5) in calls


def test_split_heldout_halves_every_class():
    y = torch.arange(10).repeat_interleave(6)
    x = torch.arange(60.0)[:, None]
    vx, vy, tx, ty = split_heldout(x, y, torch.Generator().manual_seed(0))
    assert torch.equal(torch.bincount(vy), torch.full((10,), 3))
    assert torch.equal(torch.bincount(ty), torch.full((10,), 3))
    assert sorted(vx.flatten().tolist() + tx.flatten().tolist()) == x.flatten().tolist()


def test_placebo_friction_without_shuffle_is_diffgrad():
    torch.manual_seed(0)
    W, X = torch.randn(5, 7), torch.randn(20, 7)
    a, b = torch.nn.Parameter(W.clone()), torch.nn.Parameter(W.clone())
    opts = (DiffGrad([a], lr=0.01), _PlaceboFrictionDiffGrad([b], lr=0.01, generator=torch.Generator(), shuffle=False))
    for _ in range(30):
        for p, opt in zip((a, b), opts):
            opt.zero_grad()
            (X @ p.T).sin().sum().backward()
            opt.step()
    assert torch.allclose(a, b, atol=1e-7, rtol=0)
