"""Attention as a hard-margin SVM over token pairs: the Att-SVM solutions and gradient descent on one attention layer.

References: Transformers as Support Vector Machines (Tarzanagh, Li, Thrampoulidis, Oymak), 2023.

Model. ``n`` sequences :math:`X_i \\in \\mathbb R^{T\\times d}` (``X``, shape ``(n, T, d)``), one query token
:math:`z_i \\in \\mathbb R^d` each (``z``, shape ``(n, d)``; :math:`z_i = x_{i1}` for self-attention), a fixed linear
head :math:`v` (``v``, shape ``(d,)``) and labels :math:`Y_i \\in \\{\\pm1\\}` (``Y``). One softmax-attention layer
with combined key-query matrix :math:`W` (``(d, d)``) predicts

.. math:: f_W(X_i) = v^\\top X_i^\\top \\operatorname{softmax}(X_i W z_i),

trained on :math:`L(W) = \\frac1n\\sum_i \\ell(Y_i f_W(X_i))` with the logistic loss :math:`\\ell(u) = \\log(1+e^{-u})`
(decreasing). ``param="W"`` trains :math:`W` directly; ``param="KQ"`` trains :math:`W = KQ^\\top` with
:math:`K, Q \\in \\mathbb R^{d\\times m}`.

Token scores :math:`\\gamma_{it} = Y_i v^\\top x_{it}`; the optimal token of sequence ``i`` is
:math:`\\operatorname{opt}_i = \\arg\\max_t \\gamma_{it}` (:func:`optimal_tokens`). The Att-SVM for indices
``opt`` and a norm :math:`\\|\\cdot\\|_\\diamond` (:func:`att_svm`) is

.. math:: W^{mm}_\\diamond = \\arg\\min_W \\|W\\|_\\diamond \\quad\\text{s.t.}\\quad
          (x_{i,\\operatorname{opt}_i} - x_{it})^\\top W z_i \\ge 1 \\ \\ \\forall i,\\ t \\ne \\operatorname{opt}_i .

The paper's predictions: gradient descent on ``W`` diverges in norm and converges in direction to the
Frobenius-norm solution :math:`W^{mm}_F` (globally when the problem is over-parameterised, locally otherwise),
while the key-query parameterisation is biased towards the nuclear-norm solution :math:`W^{mm}_*` (proved for the
regularisation path; observed for gradient descent). The solvers here use only scipy: the Frobenius problem by its
dual (a bound-constrained quadratic, L-BFGS-B) polished on the support set; the nuclear problem by SLSQP on the
factorisation :math:`W = UV^\\top` with objective :math:`\\frac12(\\|U\\|_F^2+\\|V\\|_F^2)` (whose minimum over
factorisations is :math:`\\|W\\|_*`), certified by the duality gap of the multipliers. The gradient-descent kernel
uses the closed-form gradient (no autograd) so that tens of thousands of steps are cheap.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import numpy as np
import torch

from paperzoo.core.accepts import Choice, Flag, Generator, Int, Real, Tensor, accepts

__all__ = ["optimal_tokens", "AttSVMSolution", "att_svm", "AttentionGDRun", "attention_gd", "direction_cosine",
           "stable_rank", "random_attention_problem"]


def _example_problem(ctx):
    n, T, d = ctx.size("n"), ctx.size("T"), ctx.size("d")
    g = ctx.generator
    X = torch.randn(n, T, d, generator=g, dtype=ctx.dtype)
    Y = torch.where(torch.rand(n, generator=g, dtype=ctx.dtype) < 0.5, -1.0, 1.0).to(ctx.dtype)
    v = torch.randn(d, generator=g, dtype=ctx.dtype)
    return {"X": X, "Y": Y, "v": v}


def _check_labels(Y: torch.Tensor) -> None:
    if not bool(((Y == 1) | (Y == -1)).all()):
        raise ValueError("Y must contain only -1 and +1")


@accepts(X=Tensor("n", "T", "d"), Y=Tensor("n"), v=Tensor("d"), example=_example_problem)
def optimal_tokens(X: torch.Tensor, Y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Optimal token indices of attention: the token of largest score :math:`\\gamma_{it} = Y_i v^\\top x_{it}`.

    References: Transformers as Support Vector Machines, 2023.

    With a fixed head ``v`` and a decreasing loss, the training loss of one attention layer is lowest when sequence
    ``i`` attends only to :math:`\\operatorname{opt}_i = \\arg\\max_t Y_i v^\\top x_{it}`.

    Args:
        X: ``(n, T, d)`` token sequences.
        Y: ``(n,)`` labels in ``{-1, +1}``.
        v: ``(d,)`` value/prediction head.

    Returns:
        ``(n,)`` int64 indices in ``[0, T)``.

    Example:
        >>> import torch
        >>> X = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]); v = torch.tensor([0.0, 2.0])
        >>> optimal_tokens(X, torch.tensor([1.0]), v), optimal_tokens(X, torch.tensor([-1.0]), v)
        (tensor([1]), tensor([0]))
    """
    _check_labels(Y)
    return (Y[:, None] * (X @ v)).argmax(dim=1)


def _constraint_matrices(X: torch.Tensor, z: torch.Tensor, opt: torch.Tensor) -> np.ndarray:
    """Rows vec((x_opt - x_t) z^T) for every i and t != opt_i: shape (n (T-1), d * d), float64 numpy."""
    n, T, d = X.shape
    Xn = X.detach().to(torch.float64).cpu()
    zn = z.detach().to(torch.float64).cpu()
    xo = Xn[torch.arange(n), opt.cpu()]  # (n, d)
    diff = xo[:, None, :] - Xn  # (n, T, d)
    keep = torch.ones(n, T, dtype=torch.bool)
    keep[torch.arange(n), opt.cpu()] = False
    A = diff[:, :, :, None] * zn[:, None, None, :]  # (n, T, d, d)
    return A[keep].reshape(-1, d * d).numpy()


class AttSVMSolution(NamedTuple):
    """Result of :func:`att_svm`.

    Attributes:
        W: ``(d, d)`` the max-margin solution :math:`W^{mm}` (dtype of ``X``).
        norm_value: its norm (Frobenius or nuclear, as requested) = the inverse margin of the normalised direction.
        min_margin: :math:`\\min_{i,t\\ne\\operatorname{opt}_i} (x_{i,\\operatorname{opt}_i}-x_{it})^\\top W z_i`
            (``1`` up to solver accuracy at the optimum).
        duality_gap: primal value minus the dual lower bound built from the multipliers (``>= 0``, ``0`` at the
            optimum up to accuracy).
        n_support: active constraints (multiplier ``> 1e-9`` of the largest).
        n_iter: solver iterations.
        converged: solver success, feasibility (``min_margin >= 1 - 1e-6``) and relative gap ``<= 1e-5``.
    """

    W: torch.Tensor
    norm_value: float
    min_margin: float
    duality_gap: float
    n_support: int
    n_iter: int
    converged: bool


def _svm_fro(A: np.ndarray, tol: float, max_iter: int):
    from scipy.optimize import minimize

    G = A @ A.T
    k = G.shape[0]
    res = minimize(lambda a: (0.5 * a @ G @ a - a.sum(), G @ a - 1.0), np.zeros(k), jac=True, method="L-BFGS-B",
                   bounds=[(0.0, None)] * k, options={"maxiter": max_iter, "ftol": 1e-16, "gtol": tol * 1e-3})
    alpha = np.maximum(res.x, 0.0)
    # polish: on the support S, the optimum satisfies A_S w = 1 with w = A_S^T alpha_S.
    S = alpha > 1e-9 * max(alpha.max(), 1e-300)
    if S.any():
        aS, *_ = np.linalg.lstsq(G[np.ix_(S, S)], np.ones(int(S.sum())), rcond=None)
        if (aS >= 0).all():
            cand = np.zeros(k)
            cand[S] = aS
            if (G @ cand).min() >= 1.0 - 1e-9:
                alpha = cand
    w = A.T @ alpha
    primal = float(np.linalg.norm(w))
    # dual bound: for any alpha >= 0 with M = A^T alpha, ||W||_F >= sum(alpha) / ||M||_F on the feasible set.
    Mn = np.linalg.norm(w)
    dual = float(alpha.sum() / Mn) if Mn > 0 else 0.0
    return w, alpha, primal, dual, int(res.nit), bool(res.success or res.status == 0)


def _svm_nuc(A: np.ndarray, d: int, tol: float, max_iter: int, w0: np.ndarray):
    from scipy.optimize import minimize

    k = A.shape[0]
    Am = A.reshape(k, d, d)
    # start from the balanced factorisation of the Frobenius solution (feasible), W0 = U0 V0^T.
    Uw, sw, Vwt = np.linalg.svd(w0.reshape(d, d))
    U0, V0 = Uw * np.sqrt(sw), Vwt.T * np.sqrt(sw)

    def split(p):
        return p[: d * d].reshape(d, d), p[d * d:].reshape(d, d)

    def fun(p):
        return 0.5 * float(p @ p), p

    def cons(p):
        U, V = split(p)
        return np.einsum("kab,ab->k", Am, U @ V.T) - 1.0

    def cons_jac(p):
        U, V = split(p)
        return np.concatenate([np.einsum("kab,bc->kac", Am, V).reshape(k, -1),
                               np.einsum("kab,ac->kbc", Am, U).reshape(k, -1)], axis=1)

    res = minimize(fun, np.concatenate([U0.ravel(), V0.ravel()]), jac=True, method="SLSQP",
                   constraints=[{"type": "ineq", "fun": cons, "jac": cons_jac}],
                   options={"maxiter": max_iter, "ftol": tol * 1e-4})
    U, V = split(res.x)
    W = U @ V.T
    alpha = np.maximum(np.asarray(res.multipliers["ineq"] if isinstance(res.multipliers, dict)
                                  else res.multipliers, dtype=np.float64).ravel()[:k], 0.0)
    primal = float(np.linalg.svd(W, compute_uv=False).sum())
    M = np.einsum("k,kab->ab", alpha, Am)
    op = float(np.linalg.svd(M, compute_uv=False)[0]) if alpha.any() else 0.0
    # weak duality: for alpha >= 0, sum(alpha) <= <M, W> <= ||M||_op ||W||_* on the feasible set.
    dual = float(alpha.sum() / op) if op > 0 else 0.0
    return W.ravel(), alpha, primal, dual, int(res.nit), bool(res.success)


def _example_svm(ctx):
    n, T, d = ctx.size("n"), ctx.size("T"), ctx.size("d")
    g = ctx.generator
    X = torch.randn(n, T, d, generator=g, dtype=ctx.dtype)
    z = torch.randn(n, d, generator=g, dtype=ctx.dtype)
    return {"X": X, "z": z, "opt": torch.zeros(n, dtype=torch.int64)}


@accepts(X=Tensor("n", "T", "d"), z=Tensor("n", "d"), opt=Tensor("n", dtype="int"), norm=Choice("fro", "nuc"),
         tol=Real(gt=0), max_iter=Int(ge=1), output="any", example=_example_svm)
def att_svm(X: torch.Tensor, z: torch.Tensor, opt: torch.Tensor, norm: str = "fro", *, tol: float = 1e-8,
            max_iter: int = 2000) -> AttSVMSolution:
    """Att-SVM: the minimum-norm key-query matrix that separates each sequence's selected token by margin 1.

    References: Transformers as Support Vector Machines, 2023.

    :math:`\\min_W \\|W\\|` s.t. :math:`(x_{i,o_i} - x_{it})^\\top W z_i \\ge 1` for all ``i`` and ``t != o_i``,
    with :math:`x_{it}` = ``X[i, t]``, :math:`z_i` = ``z[i]``, :math:`o_i` = ``opt[i]`` and the Frobenius
    (``norm="fro"``: :math:`W^{mm}`, the limit direction of gradient descent on ``W``) or nuclear norm
    (``norm="nuc"``: :math:`W^{mm}_*`, the key-query parameterisation's bias). Solved with scipy (see the module
    docstring); the result carries the duality gap. Infeasible constraints (e.g. a token equal to the selected one)
    give ``converged=False`` and a warning.

    Args:
        X: ``(n, T, d)`` token sequences, ``T >= 2``.
        z: ``(n, d)`` query tokens.
        opt: ``(n,)`` integer indices in ``[0, T)`` of the tokens to select.
        norm: ``"fro"`` or ``"nuc"``.
        tol: solver tolerance.
        max_iter: solver iteration cap.

    Returns:
        An :class:`AttSVMSolution`.

    Example:
        >>> import torch
        >>> X = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]], dtype=torch.float64)   # one sequence, two tokens
        >>> z = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
        >>> sol = att_svm(X, z, torch.tensor([0]))      # (x_0 - x_1)^T W z = W[0, 0] >= 1
        >>> sol.W, round(sol.norm_value, 6), sol.converged
        (tensor([[1., 0.],
                [0., 0.]], dtype=torch.float64), 1.0, True)
    """
    n, T, d = X.shape
    if T < 2:
        raise ValueError(f"X must have at least 2 tokens per sequence (dimension 1), got {T}")
    if bool((opt < 0).any()) or bool((opt >= T).any()):
        raise ValueError(f"opt must contain indices in [0, {T}), got {opt.tolist()}")
    A = _constraint_matrices(X, z, opt.long())
    if (np.abs(A).max(axis=1) == 0).any():
        warnings.warn("att_svm: a constraint is identically zero (a token equals the selected one or z_i = 0); the "
                      "problem is infeasible", RuntimeWarning, stacklevel=2)
    w, alpha, primal, dual, nit, _ = _svm_fro(A, tol, max_iter)
    ok = True
    if norm == "nuc":
        w, alpha, primal, dual, nit2, _ = _svm_nuc(A, d, tol, max_iter, w)
        nit += nit2
    margins = A @ w
    min_margin = float(margins.min())
    gap = primal - dual
    if not np.isfinite(w).all():
        warnings.warn("att_svm: NaN or infinite solution", RuntimeWarning, stacklevel=2)
        ok = False
    converged = bool(ok and min_margin >= 1.0 - 1e-6 and gap <= 1e-5 * max(primal, 1e-300))
    if not converged:
        warnings.warn(f"att_svm({norm}) did not converge: min margin {min_margin:.3g}, duality gap {gap:.3g} "
                      f"(primal {primal:.6g})", RuntimeWarning, stacklevel=2)
    n_support = int((alpha > 1e-9 * max(alpha.max(), 1e-300)).sum())
    return AttSVMSolution(torch.as_tensor(w.reshape(d, d), dtype=X.dtype, device=X.device), primal, min_margin,
                          float(gap), n_support, nit, converged)


@accepts(A=Tensor("a", "b"), B=Tensor("a", "b"), example=lambda ctx: {
    "A": torch.randn(3, 4, generator=ctx.generator, dtype=ctx.dtype),
    "B": torch.randn(3, 4, generator=ctx.generator, dtype=ctx.dtype)})
def direction_cosine(A: torch.Tensor, B: torch.Tensor) -> float:
    """Directional alignment of two matrices: :math:`\\langle A, B\\rangle / (\\|A\\|_F \\|B\\|_F)`.

    References: Transformers as Support Vector Machines, 2023 (the correlation of :math:`W_t` with :math:`W^{mm}`).

    Args:
        A: ``(a, b)`` matrix.
        B: ``(a, b)`` matrix.

    Returns:
        The cosine in ``[-1, 1]``; ``0`` when either matrix is zero.

    Example:
        >>> import torch
        >>> direction_cosine(torch.eye(2), 3 * torch.eye(2)), direction_cosine(torch.eye(2), torch.zeros(2, 2))
        (1.0, 0.0)
    """
    A, B = A.double(), B.double()
    den = float(torch.linalg.norm(A) * torch.linalg.norm(B))
    return float((A * B).sum()) / den if den > 0 else 0.0


@accepts(W=Tensor("a", "b"), example=lambda ctx: {"W": torch.randn(3, 4, generator=ctx.generator,
                                                                   dtype=ctx.dtype)})
def stable_rank(W: torch.Tensor) -> float:
    """Stable rank :math:`\\|W\\|_F^2 / \\|W\\|_2^2` of a matrix (``1`` for rank one, ``0`` for the zero matrix).

    References: Transformers as Support Vector Machines, 2023 (the nuclear-norm bias lowers the rank of W = KQ^T).

    Args:
        W: ``(a, b)`` matrix.

    Returns:
        A float in ``[1, min(a, b)]`` (``0`` for ``W = 0``).

    Example:
        >>> import torch
        >>> stable_rank(torch.eye(3)), stable_rank(torch.ones(2, 2))
        (3.0, 1.0)
    """
    s = torch.linalg.svdvals(W)
    return float((s ** 2).sum() / s[0] ** 2) if float(s[0]) > 0 else 0.0


class AttentionGDRun(NamedTuple):
    """Result of :func:`attention_gd`.

    Attributes:
        W: ``(d, d)`` final combined matrix (``K Q^T`` for ``param="KQ"``).
        steps_logged: ``(L,)`` step indices of the snapshots.
        W_path: ``(L, d, d)`` snapshots of ``W``.
        loss: ``(L,)`` training loss at the snapshots.
        norm: ``(L,)`` Frobenius norm of ``W`` at the snapshots.
        attention: ``(n, T)`` final softmax weights.
        n_iter: steps run.
        converged: no NaN and the loss decreased overall (directional convergence is measured by the caller).
    """

    W: torch.Tensor
    steps_logged: torch.Tensor
    W_path: torch.Tensor
    loss: torch.Tensor
    norm: torch.Tensor
    attention: torch.Tensor
    n_iter: int
    converged: bool


def _forward_grad(X, Y, v, z, W):
    """Loss, dL/dW and softmax weights of f_W(X_i) = v^T X_i^T softmax(X_i W z_i) under the logistic loss."""
    a = (X @ (W @ z.T).T[:, :, None])[..., 0]  # a_it = x_it^T W z_i, (n, T)
    s = torch.softmax(a, dim=1)
    h = X @ v  # (n, T)
    f = (s * h).sum(1)
    u = Y * f
    loss = torch.nn.functional.softplus(-u).mean()
    c = -torch.sigmoid(-u) * Y / X.shape[0]  # d loss / d f_i
    # h_t - f = sum_u s_u (h_t - h_u), without the cancellation of h_t - f once the softmax saturates (s_opt -> 1)
    hf = ((h[:, :, None] - h[:, None, :]) * s[:, None, :]).sum(-1)
    r = c[:, None] * s * hf  # d loss / d a_it
    U = (r[:, None, :] @ X)[:, 0, :]  # (n, d): sum_t r_it x_it
    G = U.T @ z  # sum_i (sum_t r_it x_it) z_i^T
    return loss, G, s


def _example_gd(ctx):
    out = _example_problem(ctx)
    n, d = out["X"].shape[0], out["X"].shape[2]
    out["z"] = torch.randn(n, d, generator=ctx.generator, dtype=ctx.dtype)
    out["steps"] = 5
    return out


@accepts(X=Tensor("n", "T", "d"), Y=Tensor("n"), v=Tensor("d"), z=Tensor("n", "d"), steps=Int(ge=1),
         lr=Real(gt=0), param=Choice("W", "KQ"), normalized=Flag(), init_scale=Real(ge=0), m=Int(ge=1, optional=True),
         log_every=Int(ge=1), generator=Generator(), example=_example_gd)
def attention_gd(X: torch.Tensor, Y: torch.Tensor, v: torch.Tensor, z: torch.Tensor, steps: int, *, lr: float = 0.1,
                 param: str = "W", normalized: bool = True, init_scale: float = 0.01, m: int | None = None,
                 log_every: int = 100, generator: torch.Generator | None = None) -> AttentionGDRun:
    """Gradient descent on one softmax-attention layer with a fixed head: the iterates whose direction is compared
    with the Att-SVM solutions.

    References: Transformers as Support Vector Machines, 2023.

    Minimises :math:`L = \\frac1n\\sum_i \\log(1 + e^{-Y_i f(X_i)})`, :math:`f(X_i) = v^\\top X_i^\\top
    \\operatorname{softmax}(X_i W z_i)`, over ``W`` (``param="W"``) or over ``(K, Q)`` with :math:`W = KQ^\\top`,
    :math:`K, Q\\in\\mathbb R^{d\\times m}` (``param="KQ"``, ``m`` defaults to ``d``). ``normalized=True`` divides
    each gradient by its Frobenius norm (over ``(K, Q)`` jointly), as the paper's experiments do; otherwise plain GD.
    The start is :math:`\\text{init\\_scale}\\cdot\\mathcal N(0, 1)` entries from ``generator``. Gradients are in
    closed form: :math:`\\nabla_W L = \\sum_i c_i\\, X_i^\\top(s_i \\odot (h_i - f_i))\\, z_i^\\top` with
    :math:`s_i` the softmax, :math:`h_i = X_i v` and :math:`c_i = -Y_i\\sigma(-Y_if_i)/n`; for ``KQ``,
    :math:`\\nabla_K = \\nabla_W L\\, Q` and :math:`\\nabla_Q = \\nabla_W L^\\top K`.

    Args:
        X: ``(n, T, d)`` tokens.  Y: ``(n,)`` labels in ``{-1, +1}``.  v: ``(d,)`` head.  z: ``(n, d)`` queries.
        steps: number of steps.  lr: step size.  param: ``"W"`` or ``"KQ"``.  normalized: normalised GD.
        init_scale: scale of the random start.  m: inner dimension of ``K, Q``.  log_every: snapshot period.
        generator: random generator for the start.

    Returns:
        An :class:`AttentionGDRun` (snapshots at step 0, every ``log_every`` steps and the last step).

    Example:
        >>> import torch
        >>> X = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]], dtype=torch.float64)
        >>> run = attention_gd(X, torch.tensor([1.0], dtype=torch.float64), torch.tensor([0.0, 1.0],
        ...                    dtype=torch.float64), X[:, 0], 200, lr=0.5, init_scale=0.0)
        >>> bool(run.attention[0, 1] > 0.99), bool(run.loss[-1] < run.loss[0])   # attends to the higher-score token
        (True, True)
    """
    _check_labels(Y)
    n, T, d = X.shape
    m = d if m is None else m
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    kw = {"dtype": X.dtype, "device": X.device}
    if param == "W":
        W = init_scale * torch.randn(d, d, generator=g, dtype=X.dtype).to(X.device)
        K = Q = None
    else:
        K = init_scale * torch.randn(d, m, generator=g, dtype=X.dtype).to(X.device)
        Q = init_scale * torch.randn(d, m, generator=g, dtype=X.dtype).to(X.device)
        if init_scale == 0:  # (0, 0) is a stationary point of the factorisation
            raise ValueError("init_scale must be > 0 for param='KQ' (K = Q = 0 is a stationary point)")
        W = K @ Q.T
    logged, path, losses, norms = [], [], [], []
    ok = True
    s = None
    for k in range(steps + 1):
        loss, G, s = _forward_grad(X, Y, v, z, W)
        if k % log_every == 0 or k == steps:
            logged.append(k)
            path.append(W.clone())
            losses.append(float(loss))
            norms.append(float(torch.linalg.norm(W)))
            if not math.isfinite(losses[-1]):
                warnings.warn(f"attention_gd: NaN/inf loss at step {k}", RuntimeWarning, stacklevel=2)
                ok = False
                break
        if k == steps:
            break
        if param == "W":
            gn = float(torch.linalg.norm(G)) if normalized else 1.0
            if gn == 0:
                break
            W = W - (lr / gn) * G
        else:
            gK, gQ = G @ Q, G.T @ K
            gn = math.sqrt(float((gK ** 2).sum() + (gQ ** 2).sum())) if normalized else 1.0
            if gn == 0:
                break
            K, Q = K - (lr / gn) * gK, Q - (lr / gn) * gQ
            W = K @ Q.T
    ok = ok and losses[-1] <= losses[0]
    return AttentionGDRun(W, torch.tensor(logged), torch.stack(path), torch.tensor(losses, **kw),
                          torch.tensor(norms, **kw), s, len(logged) and logged[-1], ok)


@accepts(n=Int(ge=1), T=Int(ge=2), d=Int(ge=1), generator=Generator(),
         example=lambda ctx: {"n": 3, "T": 4, "d": 5})
def random_attention_problem(n: int, T: int, d: int, *, generator: torch.Generator | None = None) -> dict:
    """A random attention training set: Gaussian tokens, self-attention queries and a unit-norm head.

    References: Transformers as Support Vector Machines, 2023 (the synthetic setting of its experiments).

    Tokens :math:`x_{it}\\sim\\mathcal N(0, I_d/d)`, the query is the first token :math:`z_i = x_{i1}`, the head
    :math:`v` is uniform on the unit sphere and :math:`Y_i = \\pm1` uniformly. float64.

    Args:
        n: sequences.  T: tokens per sequence.  d: dimension.  generator: random generator.

    Returns:
        ``{"X": (n, T, d), "Y": (n,), "v": (d,), "z": (n, d)}``.

    Example:
        >>> import torch
        >>> p = random_attention_problem(2, 3, 4, generator=torch.Generator().manual_seed(0))
        >>> tuple(p["X"].shape), bool(torch.equal(p["z"], p["X"][:, 0]))
        ((2, 3, 4), True)
    """
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    X = torch.randn(n, T, d, generator=g, dtype=torch.float64) / math.sqrt(d)
    v = torch.randn(d, generator=g, dtype=torch.float64)
    v = v / torch.linalg.norm(v)
    Y = torch.where(torch.rand(n, generator=g, dtype=torch.float64) < 0.5, -1.0, 1.0).to(torch.float64)
    return {"X": X, "Y": Y, "v": v, "z": X[:, 0].clone()}
