import numpy as np
import ot
import pytest
import torch

from paperzoo.data.shapes import make_blob, make_shape_pair
from paperzoo.transport import sliced_wasserstein
from paperzoo.transport.functional_maps import (SpectralBasis, adaptive_refinement, cotangent_laplacian,
                                                entropic_pointmap, functional_map_from_pointmap,
                                                functional_map_losses, heat_kernel_signature,
                                                laplacian_eigenbasis, pointmap_from_features,
                                                pointmap_from_functional_map, resolvent_mask, soft_pointmap,
                                                solve_functional_map, sw_alignment_loss,
                                                unsupervised_matching_loss, wave_kernel_signature)
from paperzoo.transport.sliced import random_projections


@pytest.fixture(scope="module")
def blob():
    mesh = make_blob(150)
    return mesh, laplacian_eigenbasis(mesh.vertices, mesh.faces, k=12)


def _truncate(basis, k):
    return SpectralBasis(basis.evals[:k], basis.evecs[:, :k], basis.mass)


def test_eigenbasis_is_mass_orthonormal_and_solves_the_eigenproblem(blob):
    mesh, basis = blob
    gram = basis.evecs.T @ (basis.mass[:, None] * basis.evecs)
    assert torch.allclose(gram, torch.eye(12, dtype=gram.dtype), atol=1e-10)
    assert abs(float(basis.evals[0])) < 1e-8 and torch.all(basis.evals[1:] > 0)
    assert torch.all(basis.evals[1:] >= basis.evals[:-1])
    L, mass = cotangent_laplacian(mesh.vertices, mesh.faces)
    resid = L @ basis.evecs.numpy() - mass[:, None] * basis.evecs.numpy() * basis.evals.numpy()[None]
    assert np.abs(resid).max() < 1e-8
    # The constant function is in the kernel: cotangent rows sum to zero; masses sum to the area.
    assert np.abs(L.sum(axis=1)).max() < 1e-10
    sparse = laplacian_eigenbasis(mesh.vertices, mesh.faces, k=12, dense_below=0)
    assert torch.allclose(sparse.evals, basis.evals, rtol=1e-8, atol=1e-10)


def test_point_cloud_basis_float32():
    pts = make_blob(120).vertices.float()
    basis = laplacian_eigenbasis(pts, k=8)
    assert basis.evecs.dtype == torch.float32 and basis.evecs.shape == (120, 8)
    gram = basis.evecs.T @ (basis.mass[:, None] * basis.evecs)
    assert torch.allclose(gram, torch.eye(8), atol=1e-4)


def test_identity_shape_gives_identity_maps(blob):
    _, basis = blob
    n = basis.evecs.shape[0]
    C = functional_map_from_pointmap(torch.arange(n), basis, basis)
    assert torch.allclose(C, torch.eye(12, dtype=C.dtype), atol=1e-10)
    assert torch.equal(pointmap_from_functional_map(C, basis, basis), torch.arange(n))
    desc = wave_kernel_signature(basis, 16)
    small = _truncate(basis, 8)
    C_solved = solve_functional_map(desc, desc, small, small)
    assert torch.allclose(C_solved, torch.eye(8, dtype=C_solved.dtype), atol=1e-8)
    losses = functional_map_losses(C_solved, C_solved, small.evals, small.evals, w_lap=1.0)
    assert all(float(v) < 1e-12 for v in losses.values())


def test_known_permutation_is_recovered():
    pair = make_shape_pair(150, curvature=0.0, noise=0.0, generator=torch.Generator().manual_seed(3))
    bx = laplacian_eigenbasis(pair.x.vertices, pair.x.faces, k=10)
    by = laplacian_eigenbasis(pair.y.vertices, pair.y.faces, k=10)
    assert torch.allclose(bx.evals, by.evals, atol=1e-9)
    C = functional_map_from_pointmap(pair.gt, bx, by)
    assert torch.allclose(C.T @ C, torch.eye(10, dtype=C.dtype), atol=1e-8)  # an isometry: orthogonal C
    assert torch.equal(pointmap_from_functional_map(C, bx, by), pair.gt)
    # Intrinsic descriptors are permuted with the vertices, so features -> map recovers the permutation.
    hx, hy = heat_kernel_signature(bx, 8), heat_kernel_signature(by, 8)
    assert torch.allclose(hy, hx[pair.gt], atol=1e-9)
    # Eigenvectors (signs fixed by their largest entry) are permuted too: as features they recover the map.
    assert torch.allclose(by.evecs, bx.evecs[pair.gt], atol=1e-8)
    assert torch.equal(pointmap_from_features(bx.evecs[:, 1:], by.evecs[:, 1:], bx, by), pair.gt)


def test_fmap_solve_matches_per_row_least_squares():
    gen = torch.Generator().manual_seed(0)
    kx, ky, n, d, lam = 6, 5, 40, 9, 3.0
    Phi_x = torch.linalg.qr(torch.randn(n, kx, dtype=torch.float64, generator=gen))[0]
    Phi_y = torch.linalg.qr(torch.randn(n, ky, dtype=torch.float64, generator=gen))[0]
    ones = torch.ones(n, dtype=torch.float64)
    bx = SpectralBasis(torch.linspace(0, 5, kx, dtype=torch.float64), Phi_x, ones)
    by = SpectralBasis(torch.linspace(0, 4, ky, dtype=torch.float64), Phi_y, ones)
    fx = torch.randn(n, d, dtype=torch.float64, generator=gen)
    fy = torch.randn(n, d, dtype=torch.float64, generator=gen)
    C = solve_functional_map(fx, fy, bx, by, lam=lam)
    A, B = (Phi_x.T @ fx).numpy(), (Phi_y.T @ fy).numpy()
    D = resolvent_mask(bx.evals, by.evals).numpy()
    for i in range(ky):  # reference: each row as an augmented ordinary least-squares problem
        lhs = np.vstack([A.T, np.sqrt(lam) * np.diag(np.sqrt(D[i]))])
        rhs = np.concatenate([B[i], np.zeros(kx)])
        ref = np.linalg.lstsq(lhs, rhs, rcond=None)[0]
        np.testing.assert_allclose(C[i].numpy(), ref, rtol=1e-9, atol=1e-10)
    ref0 = np.linalg.lstsq(A.T, B.T, rcond=None)[0].T
    np.testing.assert_allclose(solve_functional_map(fx, fy, bx, by, lam=0.0).numpy(), ref0, atol=1e-10)
    M = resolvent_mask(bx.evals, bx.evals)
    assert torch.allclose(M.diagonal(), torch.zeros(kx, dtype=M.dtype)) and torch.allclose(M, M.T)


def test_soft_pointmap_and_entropic_pointmap_against_pot():
    gen = torch.Generator().manual_seed(1)
    fx = torch.randn(30, 4, dtype=torch.float64, generator=gen)
    fy = fx[torch.randperm(30, generator=gen)] + 0.01 * torch.randn(30, 4, dtype=torch.float64, generator=gen)
    P = soft_pointmap(fx, fy, tau=0.07)
    assert torch.allclose(P.sum(1), torch.ones(30, dtype=P.dtype))
    assert (P.sum(0) - 1).abs().max() < 0.05
    pxy, pyx = entropic_pointmap(fx, fy, sigma=0.3, tol=1e-10)
    M = torch.cdist(fx, fy).square()
    M = (M / M.mean()).numpy()
    u = np.full(30, 1 / 30)
    ref = ot.sinkhorn(u, u, M, 2 * 0.3**2, method="sinkhorn_log", numItermax=10_000, stopThr=1e-12)
    np.testing.assert_allclose(pxy.numpy() / 30, ref, atol=1e-9)
    assert torch.allclose(pyx, pxy.T)


def test_sw_alignment_loss_matches_pot_and_reaches_both_features():
    gen = torch.Generator().manual_seed(2)
    fx = torch.randn(25, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    fy = torch.randn(20, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    plan = torch.rand(25, 20, dtype=torch.float64, generator=gen)
    plan = plan / plan.sum(1, keepdim=True)
    loss = sw_alignment_loss(fx, fy, plan, n_projections=50, generator=torch.Generator().manual_seed(5))
    theta = random_projections(50, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    ref = ot.sliced_wasserstein_distance(fx.detach().numpy(), (plan @ fy).detach().numpy(),
                                         projections=theta.numpy().T, p=2)
    assert abs(float(loss.detach()) - float(ref)) < 1e-10
    assert torch.allclose(loss, sliced_wasserstein(fx, plan @ fy, projections=theta).sqrt())
    loss.backward()
    assert fx.grad.abs().sum() > 0 and fy.grad.abs().sum() > 0
    both = sw_alignment_loss(fx, fy, plan, plan.T / plan.T.sum(1, keepdim=True), n_projections=50)
    assert both > loss.detach() * 0.5


def test_losses_and_refinement_run_and_do_not_touch_the_model():
    torch.manual_seed(0)
    pair = make_shape_pair(80, curvature=0.3, generator=torch.Generator().manual_seed(0), dtype=torch.float32)
    bases = [laplacian_eigenbasis(m.vertices, m.faces, k=16) for m in (pair.x, pair.y)]
    descs = [wave_kernel_signature(b, 8) for b in bases]
    small = [_truncate(b, 6) for b in bases]
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8))
    terms = unsupervised_matching_loss(model(descs[0]), model(descs[1]), *small, n_projections=20,
                                       generator=torch.Generator().manual_seed(0))
    assert set(terms) == {"bij", "orth", "lap", "couple", "sw", "total"} and torch.isfinite(terms["total"])
    terms["total"].backward()
    before = [p.detach().clone() for p in model.parameters()]
    res = adaptive_refinement(model, descs[0], descs[1], *small, n_iter=3, n_projections=20)
    assert res.n_iter == 3 and res.loss_history.shape == (3,)
    assert res.p2p.shape == (80,) and int(res.p2p.max()) < 80 and res.fmap.shape == (6, 6)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(before, res.model.parameters()))


def test_bad_inputs(blob):
    mesh, basis = blob
    with pytest.raises(ValueError, match="k must be <= 149, got 150"):
        laplacian_eigenbasis(mesh.vertices, mesh.faces, k=150)
    with pytest.raises(ValueError, match=r"faces must index vertices in \[0, 149\]"):
        laplacian_eigenbasis(mesh.vertices, mesh.faces + 1, k=5)
    with pytest.raises(ValueError, match="vertices must be finite"):
        laplacian_eigenbasis(mesh.vertices * float("nan"), mesh.faces, k=5)
    with pytest.raises(ValueError, match=r"p2p must have n_y = 150 \(from basis_y.evecs\) in its shape \(n_y,\), got shape \(10,\)"):
        functional_map_from_pointmap(torch.arange(10), basis, basis)
    with pytest.raises(ValueError, match=r"p2p must index the vertices of basis_x in \[0, 149\]"):
        functional_map_from_pointmap(torch.arange(150) + 1, basis, basis)
    with pytest.raises(ValueError, match=r"C_xy must have k_y = 12 \(from basis_y.evals\) in its shape \(k_y, k_x\), got shape \(5, 5\)"):
        pointmap_from_functional_map(torch.eye(5, dtype=torch.float64), basis, basis)
    feats = torch.randn(150, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"feat_x must have n_x = 150 \(from basis_x.evecs\) in its shape \(n_x, d\), got shape \(10, 4\)"):
        solve_functional_map(feats[:10], feats, basis, basis)
    with pytest.raises(ValueError, match="lam must be >= 0.0, got -1.0"):
        solve_functional_map(feats, feats, basis, basis, lam=-1.0)
    with pytest.raises(ValueError, match="tau must be > 0.0, got 0.0"):
        soft_pointmap(feats, feats, tau=0.0)
    with pytest.raises(ValueError, match=r"plan_xy must have n_x = 150 \(from feat_x\) in its shape \(n_x, n_y\), got shape \(3, 3\)"):
        sw_alignment_loss(feats, feats, torch.ones(3, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match="basis_x must be a SpectralBasis"):
        solve_functional_map(feats, feats, (1, 2), basis)
    with pytest.raises(ValueError, match="w_sw must be >= 0.0, got -1.0"):
        unsupervised_matching_loss(feats, feats, basis, basis, w_sw=-1.0)
