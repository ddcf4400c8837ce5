r"""Minimum entropy coupling with bottleneck (MEC-B): greedy EBIM encoder + greedy minimum-entropy-coupling decoder.

References: Minimum Entropy Coupling with Bottleneck, 2024 (Ebrahimi, Chen and Khisti, NeurIPS 2024).

MEC-B compresses ``X ~ p_X`` into a code ``T`` with entropy budget ``H(T) <= R`` and outputs ``Y ~ q_Y`` (a
marginal that may differ from ``p_X``) through the Markov chain ``X -> T -> Y``, maximising ``I(X; Y)``. The paper
splits it into

* **EBIM** (encoder), :math:`\max_{p_{T|X}} I(X; T)\ \text{s.t.}\ H(T) \le R`: :func:`ebim_greedy`, the paper's
  greedy search over deterministic mappings, with the guarantee
  :math:`I^\star(R) - I_{\mathrm{greedy}}(R) \le h(p_2)` (binary entropy of the second-largest mass of ``p_X``);
* **MEC** (decoder), :math:`\min H(T, Y)` over couplings of ``p_T`` and ``q_Y``: :func:`greedy_mec`, the classical
  max-seeking greedy coupling (Kocaoglu et al., 2017), within ``log2(e)`` bits of the majorisation lower bound
  :math:`H(p \wedge q)` (Compton, 2022);
* :func:`mec_b` composes them: :math:`p(x, y) = \sum_t p(x, t)\, q(y \mid t)`.

Entropies are in bits by default (``base=2``), as in the paper.

Deviations and reconstruction notes:

* :func:`ebim_greedy` follows the paper's Algorithm 1 (deterministic EBIM solver, as in the authors' released
  code): from the identity code, merge the two least likely code symbols if that meets the budget (and stop),
  else merge the two most likely ones, until ``H(T) <= R``. Optional (``refine=True``, off by default, not part
  of Algorithm 1): spend the unused budget ``R - H(T)`` with the paper's Theorem 3 move towards higher rate,
  sending a fraction ``lambda`` of the smaller of the two last-merged code symbols back to a column of its own
  (the largest ``lambda`` with ``H(T) <= R``, by bisection; ``I(X;T)`` increases with ``lambda`` along this
  move). The paper applies Theorem 3 around every deterministic code of the search and keeps the best; we
  apply it to the final merge only.
* The greedy loops run ``O(n + m)`` sequential steps (each step depends on the previous residuals); every step
  is vectorised over the alphabet.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from paperzoo.core.accepts import Flag, Int, Real, Tensor, accepts
from paperzoo.core.checks import check_int, check_nonnegative, check_number, check_tensor

__all__ = ["entropy", "discrete_mutual_information", "greedy_mec", "majorization_meet", "ebim_greedy", "mec_b",
           "EBIMResult", "MECBResult"]


_MARGINAL = Tensor("n", positive_mass=True, degenerate=("zero_mass",))
_BASE = Real(gt=1)


def _probabilities(ctx, *shape):
    p = torch.rand(*shape, generator=ctx.generator, dtype=ctx.dtype) + 0.1
    return p / p.sum()


def _check_prob(name: str, p, *, ndim: int | None = 1, atol: float = 1e-6) -> torch.Tensor:
    """``p`` sums to 1 over all entries (the declarations check type, shape and signs)."""
    check_tensor(name, p, ndim=ndim, nonnegative=True)
    total = float(p.sum(dtype=torch.float64))
    if abs(total - 1.0) > atol:
        raise ValueError(f"{name} must sum to 1 (atol={atol:g}), got sum({name})={total!r}")
    return p


def _check_base(base) -> float:
    base = check_number("base", base, low=1.0, low_inclusive=False)
    return base


def _xlogx_sum(p: torch.Tensor, dim=None) -> torch.Tensor:
    # 0 log 0 = 0 without a NaN gradient: log is taken of 1 where p == 0
    safe = torch.where(p > 0, p, torch.ones_like(p))
    t = p * safe.log()
    return t.sum() if dim is None else t.sum(dim)


@accepts(p=Tensor(ndims=tuple(range(0, 9)), nonnegative=True, degenerate=("zero_mass",)), base=_BASE,
         example=lambda ctx: {"p": _probabilities(ctx, 4)})
def entropy(p: torch.Tensor, *, base: float = 2.0) -> torch.Tensor:
    r"""Shannon entropy :math:`H(p) = -\sum_i p_i \log p_i` of a probability tensor of any shape (0 log 0 = 0).

    Args:
        p: probabilities, nonnegative, summing to 1 over all entries.
        base: logarithm base (2: bits, ``math.e``: nats).

    Example:
        >>> entropy(torch.tensor([0.5, 0.25, 0.25]))
        tensor(1.5000)
    """
    _check_prob("p", p, ndim=None)
    return _entropy(p, _check_base(base))


def _entropy(p: torch.Tensor, base: float) -> torch.Tensor:
    return -_xlogx_sum(p) / math.log(base)


@accepts(joint=Tensor("n", "m", nonnegative=True), base=_BASE,
         example=lambda ctx: {"joint": _probabilities(ctx, ctx.size("n"), ctx.size("m"))})
def discrete_mutual_information(joint: torch.Tensor, *, base: float = 2.0) -> torch.Tensor:
    r""":math:`I(X; Y) = H(X) + H(Y) - H(X, Y)` of an (n, m) joint probability matrix ``joint[x, y]``.

    Example:
        >>> discrete_mutual_information(torch.eye(2) / 2)
        tensor(1.)
    """
    _check_prob("joint", joint, ndim=2)
    base = _check_base(base)
    return (-_xlogx_sum(joint.sum(1)) - _xlogx_sum(joint.sum(0)) + _xlogx_sum(joint)) / math.log(base)


@accepts(p=_MARGINAL, q=Tensor("m", positive_mass=True, degenerate=("zero_mass",)))
def majorization_meet(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    r"""The greatest lower bound :math:`p \wedge q` in the majorisation order (Cicalese and Vaccaro, 2002).

    Its cumulative sums (sorted decreasingly) are the pointwise minimum of those of ``p`` and ``q``;
    :math:`H(p \wedge q)` lower-bounds the entropy of every coupling of ``p`` and ``q``.

    Args:
        p: (n,) probability vector.
        q: (m,) probability vector.

    Returns:
        (max(n, m),) probability vector, sorted decreasingly.
    """
    _check_prob("p", p)
    _check_prob("q", q)
    L = max(p.numel(), q.numel())
    ps = torch.nn.functional.pad(p.sort(descending=True).values, (0, L - p.numel()))
    qs = torch.nn.functional.pad(q.sort(descending=True).values, (0, L - q.numel()))
    c = torch.minimum(ps.cumsum(0), qs.cumsum(0))
    return torch.diff(c, prepend=c.new_zeros(1)).clamp(min=0)


@accepts(p=_MARGINAL, q=Tensor("m", positive_mass=True, degenerate=("zero_mass",)), atol=Real(ge=0))
def greedy_mec(p: torch.Tensor, q: torch.Tensor, *, atol: float = 1e-12) -> torch.Tensor:
    r"""Greedy minimum-entropy coupling of two probability vectors (max-seeking greedy, Kocaoglu et al., 2017).

    References: Minimum Entropy Coupling with Bottleneck, 2024 (its MEC decoder); the greedy rule is from
    Entropic Causal Inference, 2017.

    Repeat: take the largest remaining masses :math:`p_i` and :math:`q_j`, put
    :math:`\min(p_i, q_j)` at ``(i, j)`` and subtract it from both, until no mass is left (at most
    ``n + m - 1`` steps). The result has marginals ``p`` and ``q`` and entropy at most
    :math:`H(p \wedge q) + \log_2 e` bits (Compton, 2022).

    Args:
        p: (n,) probability vector (row marginal).
        q: (m,) probability vector (column marginal).
        atol: residual mass treated as zero (absorbs rounding of ``sum(p) - sum(q)``).

    Returns:
        (n, m) coupling ``P`` with ``P.sum(1) = p`` and ``P.sum(0) = q``.

    Example:
        >>> P = greedy_mec(torch.tensor([0.5, 0.5], dtype=torch.float64), torch.tensor([0.25, 0.75], dtype=torch.float64))
        >>> P
        tensor([[0.0000, 0.5000],
                [0.2500, 0.2500]], dtype=torch.float64)
    """
    _check_prob("p", p)
    _check_prob("q", q)
    atol = check_nonnegative("atol", atol)
    n, m = p.numel(), q.numel()
    rp, rq = p.clone(), q.clone()
    P = p.new_zeros((n, m))
    for _ in range(n + m - 1):
        i, j = int(rp.argmax()), int(rq.argmax())
        mass = torch.minimum(rp[i], rq[j])
        if float(mass) <= atol:
            break
        P[i, j] += mass
        rp[i] -= mass
        rq[j] -= mass
    return P


class EBIMResult(NamedTuple):
    """Encoder of :func:`ebim_greedy`.

    Attributes:
        joint: (n, |T|) joint ``p(x, t)``, rows in the input order of ``p_x``, one column per code symbol.
        mutual_information: ``I(X; T)`` (0-dim tensor, in ``base`` units).
        rate: ``H(T)`` (0-dim tensor).
        guarantee: ``h(p_2)``, the paper's bound on ``I*(R) - I(X; T)``, as a float.
        n_merges: number of column merges.
        deterministic_mutual_information: ``I(X; T)`` of the deterministic code before the Theorem 3 move
            (equal to ``mutual_information`` when ``refine=False``).
    """

    joint: torch.Tensor
    mutual_information: torch.Tensor
    rate: torch.Tensor
    guarantee: float
    n_merges: int
    deterministic_mutual_information: torch.Tensor


def _binary_entropy(x: float, base: float) -> float:
    if x <= 0.0 or x >= 1.0:
        return 0.0
    return -(x * math.log(x) + (1 - x) * math.log(1 - x)) / math.log(base)


def _merge_loss(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Entropy lost (nats) by merging two code symbols of masses ``u``, ``v``: ``(u + v) h(u / (u + v))``."""
    return _xlogx_sum(torch.stack([u + v])) - _xlogx_sum(torch.stack([u, v]))


def _joint_of(p: torch.Tensor, labels: torch.Tensor, n_cols: int) -> torch.Tensor:
    J = p.new_zeros((p.numel(), n_cols))
    J[torch.arange(p.numel(), device=p.device), labels] = p
    return J


@accepts(p_x=_MARGINAL, R=Real(ge=0), refine=Flag(), base=_BASE, bisection_steps=Int(ge=1),
         example=lambda ctx: {"refine": True})
def ebim_greedy(p_x: torch.Tensor, R: float, *, refine: bool = False, base: float = 2.0,
                bisection_steps: int = 60) -> EBIMResult:
    r"""Greedy entropy-bounded information maximisation: an encoder :math:`p(t \mid x)` with :math:`H(T) \le R`.

    References: Minimum Entropy Coupling with Bottleneck, 2024 (EBIM; its Algorithm 1, the deterministic EBIM
    solver, and Theorem 3).

    Solves :math:`\max_{p_{T|X}} I(X; T)` s.t. :math:`H(T) \le R` approximately over deterministic codes
    (for which :math:`I(X;T) = H(T)`), Algorithm 1: start from the identity code ``T = X``; at each step, if
    merging the two *least* likely code symbols brings :math:`H(T) \le R`, do it and stop; otherwise merge the
    two *most* likely code symbols and stop if that brings :math:`H(T) \le R`. Each merge joins either two
    source symbols of mass ``<= p_2`` or one such symbol and the largest code symbol, so it loses at most
    :math:`h(p_2)` of :math:`H(T)`; as :math:`I^\star(R) \le R`, this gives the guarantee :math:`I^\star(R) - I(X; T) \le h(p_2)`. With ``refine=True`` the unused budget
    ``R - H(T)`` is spent by the Theorem 3 move towards higher rate (module docstring).

    Args:
        p_x: (n,) source distribution.
        R: entropy budget ``R >= 0`` in ``base`` units (``R >= H(X)``: the identity code is returned).
        refine: apply the Theorem 3 move to the final merge (not part of Algorithm 1).
        base: logarithm base of ``R`` and of the returned information quantities.
        bisection_steps: bisection steps for the Theorem 3 fraction.

    Example:
        >>> res = ebim_greedy(torch.tensor([0.7, 0.2, 0.1], dtype=torch.float64), R=0.9)
        >>> res.joint
        tensor([[0.7000, 0.0000],
                [0.0000, 0.2000],
                [0.0000, 0.1000]], dtype=torch.float64)
        >>> round(float(res.mutual_information), 3)
        0.881
    """
    _check_prob("p_x", p_x)
    R = check_nonnegative("R", R)
    base = _check_base(base)
    bisection_steps = check_int("bisection_steps", bisection_steps, low=1)
    n = p_x.numel()
    ln_base = math.log(base)
    h2 = _binary_entropy(float(p_x.sort(descending=True).values[1]), base) if n > 1 else 0.0
    # zero-mass symbols get no code symbol of their own (they ride along with the first positive one)
    pos = p_x > 0
    labels = torch.cumsum(pos.long(), 0) - 1
    labels = torch.where(pos, labels, torch.zeros_like(labels))
    masses = p_x[pos].clone()
    n_merges, last = 0, None
    if float(_entropy(masses, base)) > R:
        while masses.numel() > 1:
            H_t = float(-_xlogx_sum(masses)) / ln_base
            small = masses.topk(2, largest=False).indices
            large = masses.topk(2).indices
            stop_small = H_t - float(_merge_loss(masses[small[0]], masses[small[1]])) / ln_base <= R
            pair = small if stop_small else large
            keep, gone = (int(pair[0]), int(pair[1])) if masses[pair[0]] >= masses[pair[1]] else \
                (int(pair[1]), int(pair[0]))
            last = (labels.clone(), masses.clone(), keep, gone)
            masses[keep] += masses[gone]
            labels = torch.where(labels == gone, torch.full_like(labels, keep), labels)
            labels = labels - (labels > gone).long()
            masses = torch.cat([masses[:gone], masses[gone + 1:]])
            n_merges += 1
            if stop_small or float(-_xlogx_sum(masses)) / ln_base <= R:
                break
    det_joint = _joint_of(p_x, labels, masses.numel())
    joint = det_joint
    if refine and last is not None:
        # Theorem 3 (towards higher rate): send a fraction lam of the smaller merged code symbol back to its own
        # column; I(X;T) increases with lam, so take the largest lam with H(T) <= R.
        prev_labels, prev_masses, keep, gone = last
        prev = _joint_of(p_x, prev_labels, prev_masses.numel())

        def split(lam: float) -> torch.Tensor:
            J = prev.clone()
            J[:, keep] += (1 - lam) * prev[:, gone]
            J[:, gone] *= lam
            return J

        lo, hi = 0.0, 1.0
        for _ in range(bisection_steps):
            mid = 0.5 * (lo + hi)
            if float(_entropy(split(mid).sum(0), base)) <= R:
                lo = mid
            else:
                hi = mid
        joint = split(lo)
        joint = joint[:, joint.sum(0) > 0]
    return EBIMResult(joint=joint, mutual_information=discrete_mutual_information(joint, base=base),
                      rate=_entropy(joint.sum(0), base), guarantee=h2, n_merges=n_merges,
                      deterministic_mutual_information=discrete_mutual_information(det_joint, base=base))


class MECBResult(NamedTuple):
    """Output of :func:`mec_b`.

    Attributes:
        encoder: (n, |T|) joint ``p(x, t)`` (EBIM).
        decoder: (|T|, m) coupling ``p(t, y)`` of ``p_T`` and ``q_y`` (greedy MEC).
        joint: (n, m) end-to-end joint ``p(x, y) = sum_t p(x, t) p(y | t)``.
        mutual_information: ``I(X; Y)`` (0-dim tensor).
        rate: ``H(T)``.
    """

    encoder: torch.Tensor
    decoder: torch.Tensor
    joint: torch.Tensor
    mutual_information: torch.Tensor
    rate: torch.Tensor


@accepts(p_x=_MARGINAL, q_y=Tensor("m", positive_mass=True, degenerate=("zero_mass",)), R=Real(ge=0), refine=Flag(),
         base=_BASE, example=lambda ctx: {"refine": True})
def mec_b(p_x: torch.Tensor, q_y: torch.Tensor, R: float, *, refine: bool = False, base: float = 2.0) -> MECBResult:
    r"""Minimum entropy coupling with bottleneck: EBIM encoder ``X -> T`` then greedy MEC decoder ``T -> Y``.

    References: Minimum Entropy Coupling with Bottleneck, 2024 (the decomposition of its Section 3).

    Args:
        p_x: (n,) source distribution.
        q_y: (m,) output distribution.
        R: entropy budget of the code, ``H(T) <= R``.
        refine, base: as in :func:`ebim_greedy`.

    Returns:
        :class:`MECBResult`; ``joint`` has marginals ``p_x`` and ``q_y`` and ``I(X; Y) <= I(X; T) <= R``.

    Example:
        >>> p = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64)
        >>> out = mec_b(p, p.flip(0), R=1.0)
        >>> bool(out.mutual_information <= 1.0 + 1e-9)
        True
    """
    _check_prob("q_y", q_y)
    enc = ebim_greedy(p_x, R, refine=refine, base=base)
    p_t = enc.joint.sum(0)
    used = torch.nonzero(p_t > 0).squeeze(1)
    dec_used = greedy_mec(p_t[used] / p_t[used].sum(), q_y)
    decoder = p_t.new_zeros((p_t.numel(), q_y.numel()))
    decoder[used] = dec_used
    cond = decoder[used] / p_t[used, None]  # p(y | t) on the used code symbols
    joint = enc.joint[:, used] @ cond
    return MECBResult(encoder=enc.joint, decoder=decoder, joint=joint,
                      mutual_information=discrete_mutual_information(joint, base=base), rate=enc.rate)
