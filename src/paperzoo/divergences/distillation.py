"""BD-KD: balanced forward/reverse KL for online knowledge distillation, with DML as the KL-only special case.

References: BD-KD: Balancing the Divergences for Online Knowledge Distillation, 2022 (Amara, Sepahvand, Meyer,
Gross, Clark; arXiv:2212.12965).

Teacher and student are trained together on the same mini-batch (online KD). With temperature ``tau``,
``p_t = softmax(z_t / tau)`` and ``p_s = softmax(z_s / tau)`` per sample, forward KL ``KL(p_t || p_s)`` (mean-seeking,
what DML and vanilla KD use for the student) and reverse KL ``KL(p_s || p_t)`` (mode-seeking). BD-KD's student loss
weights the two per sample by the entropy gap between the two networks' predictions:

    L_S = CE(y, softmax(z_s)) + tau^2 * 1/B sum_i [ a_i KL(p_t,i || p_s,i) + b_i KL(p_s,i || p_t,i) ],

    (a_i, b_i) = (1, lambda)   if H(p_s,i) > H(p_t,i)   (student less confident: push it with the mode-seeking
                                                         reverse KL),
    (a_i, b_i) = (lambda, 1)   otherwise               (student at least as confident: the mean-seeking forward KL
                                                         spreads its mass as the teacher does),

and the teacher keeps the usual online regulariser, the KL from the (detached) student,

    L_T = CE(y, softmax(z_t)) + tau^2 * 1/B sum_i KL(p_s,i || p_t,i).

The DML baseline (Zhang et al., Deep Mutual Learning, 2018) is the same step with ``a_i = 1, b_i = 0`` for the
student (:func:`dml_student_loss`).

Symbols -> arguments: ``z_s`` student_logits (B, K), ``z_t`` teacher_logits (B, K), ``y`` targets (B,) int64,
``tau`` temperature, ``lambda`` balance. Gradients of each loss reach only its own network's logits (the other
network's logits are detached inside).

Deviations and uncertainty: we could not read the paper's method section through the tools available when this
was written (only the abstract and summaries, which state the ingredients: sample-wise forward/reverse KL weights
driven by the teacher-student entropy gap on the student side, reverse KL as the teacher's regulariser). The
direction of the rule above, the weight values ``(1, lambda)`` with ``lambda = 2`` by default, and ``tau = 1`` are
our reading, exposed as arguments; check them against the paper before relying on the exact constants.
Entropies are computed on the tempered distributions and carry no gradient (they only select weights).

Example:
    >>> import torch
    >>> zt, zs = torch.randn(8, 10), torch.randn(8, 10, requires_grad=True)
    >>> y = torch.randint(10, (8,))
    >>> loss = bdkd_student_loss(zs, zt, y)
    >>> loss.backward()
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F

from paperzoo.core.accepts import Choice, Function, Instance, Real, Tensor, accepts

__all__ = ["forward_kl", "reverse_kl", "bdkd_weights", "bdkd_student_loss", "dml_student_loss",
           "online_teacher_loss", "online_distillation_step", "OnlineKDLosses"]


_LOGITS = Tensor("B", "K", degenerate=("constant",))
_TARGETS = Tensor("B", dtype="int", low=0)


def _logits_example(ctx, targets: bool = False) -> dict:
    b, k = ctx.size("B"), ctx.size("K")
    out = {"student_logits": torch.randn(b, k, generator=ctx.generator, dtype=ctx.dtype),
           "teacher_logits": torch.randn(b, k, generator=ctx.generator, dtype=ctx.dtype)}
    if targets:
        out["targets"] = torch.randint(0, k, (b,), generator=ctx.generator)
    return out


def _step_example(ctx) -> dict:
    def linear():
        layer = torch.nn.Linear(3, 4, dtype=ctx.dtype)
        with torch.no_grad():
            layer.weight.copy_(torch.randn(4, 3, generator=ctx.generator, dtype=ctx.dtype))
            layer.bias.zero_()
        return layer

    teacher, student = linear(), linear()
    return {"teacher": teacher, "student": student,
            "x": torch.randn(5, 3, generator=ctx.generator, dtype=ctx.dtype),
            "targets": torch.randint(0, 4, (5,), generator=ctx.generator),
            "teacher_optimizer": torch.optim.SGD(teacher.parameters(), lr=0.01),
            "student_optimizer": torch.optim.SGD(student.parameters(), lr=0.01)}


def _check_logits(student_logits, teacher_logits, targets=None):
    """Relations between the logits and targets (types, dims and finiteness are the declarations' job)."""
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(f"teacher_logits must have shape {tuple(student_logits.shape)} (as student_logits), "
                         f"got {tuple(teacher_logits.shape)}")
    if targets is not None:
        if targets.shape != student_logits.shape[:1]:
            raise ValueError(f"targets must have {student_logits.shape[0]} entries, got shape {tuple(targets.shape)}")
        k = student_logits.shape[1]
        if bool(((targets < 0) | (targets >= k)).any()):
            raise ValueError(f"targets must be class indices in [0, {k}) (K = {k} logits), got values in "
                             f"[{int(targets.min())}, {int(targets.max())}]")


def _kl_rows(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Per-row KL(p || q) from log-probabilities: (B,)."""
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def _weights(student_logits, teacher_logits, tau: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        log_ps = F.log_softmax(student_logits / tau, -1)
        log_pt = F.log_softmax(teacher_logits / tau, -1)
        h_s = -(log_ps.exp() * log_ps).sum(-1)
        h_t = -(log_pt.exp() * log_pt).sum(-1)
        student_less_confident = h_s > h_t
        one = torch.ones_like(h_s)
        a = torch.where(student_less_confident, one, lam * one)
        b = torch.where(student_less_confident, lam * one, one)
    return a, b


def _bdkd_loss(student_logits, teacher_logits, targets, tau: float, lam: float) -> torch.Tensor:
    zt = teacher_logits.detach()
    a, b = _weights(student_logits, zt, tau, lam)
    log_ps, log_pt = F.log_softmax(student_logits / tau, -1), F.log_softmax(zt / tau, -1)
    kd = (a * _kl_rows(log_pt, log_ps) + b * _kl_rows(log_ps, log_pt)).mean()
    return F.cross_entropy(student_logits, targets.long()) + tau ** 2 * kd


def _dml_loss(student_logits, teacher_logits, targets, tau: float) -> torch.Tensor:
    kd = _kl_rows(F.log_softmax(teacher_logits.detach() / tau, -1), F.log_softmax(student_logits / tau, -1)).mean()
    return F.cross_entropy(student_logits, targets.long()) + tau ** 2 * kd


def _teacher_loss(teacher_logits, student_logits, targets, tau: float) -> torch.Tensor:
    kd = _kl_rows(F.log_softmax(student_logits.detach() / tau, -1), F.log_softmax(teacher_logits / tau, -1)).mean()
    return F.cross_entropy(teacher_logits, targets.long()) + tau ** 2 * kd


@accepts(student_logits=_LOGITS, teacher_logits=_LOGITS, temperature=Real(gt=0), reduction=Choice("none", "mean"),
         example=_logits_example)
def forward_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, temperature: float = 1.0,
               reduction: str = "none") -> torch.Tensor:
    """``KL(p_t || p_s)`` per sample (B,) or averaged (``reduction="mean"``), on tempered softmaxes.

    Differentiable in both arguments (detach the one that is a target).
    """
    _check_logits(student_logits, teacher_logits)
    tau = float(temperature)
    kl = _kl_rows(F.log_softmax(teacher_logits / tau, -1), F.log_softmax(student_logits / tau, -1))
    return kl.mean() if reduction == "mean" else kl


@accepts(student_logits=_LOGITS, teacher_logits=_LOGITS, temperature=Real(gt=0), reduction=Choice("none", "mean"),
         example=_logits_example)
def reverse_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, temperature: float = 1.0,
               reduction: str = "none") -> torch.Tensor:
    """``KL(p_s || p_t)`` per sample (B,) or averaged (``reduction="mean"``), on tempered softmaxes."""
    _check_logits(student_logits, teacher_logits)
    tau = float(temperature)
    kl = _kl_rows(F.log_softmax(student_logits / tau, -1), F.log_softmax(teacher_logits / tau, -1))
    return kl.mean() if reduction == "mean" else kl


@accepts(student_logits=_LOGITS, teacher_logits=_LOGITS, temperature=Real(gt=0), balance=Real(ge=0),
         example=_logits_example)
def bdkd_weights(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, temperature: float = 1.0,
                 balance: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample-wise ``(a, b)`` weights (each (B,)) of forward and reverse KL from the entropy gap (no gradient)."""
    _check_logits(student_logits, teacher_logits)
    return _weights(student_logits, teacher_logits, float(temperature), float(balance))


@accepts(student_logits=_LOGITS, teacher_logits=_LOGITS, targets=_TARGETS, temperature=Real(gt=0),
         balance=Real(ge=0), example=lambda ctx: _logits_example(ctx, targets=True))
def bdkd_student_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor, *,
                      temperature: float = 1.0, balance: float = 2.0) -> torch.Tensor:
    """BD-KD student loss ``CE + tau^2 mean_i [a_i KL(p_t||p_s) + b_i KL(p_s||p_t)]`` (teacher detached).

    Args:
        student_logits: (B, K), ``B >= 1``.
        teacher_logits: (B, K); detached here.
        targets: (B,) integer labels in ``[0, K)``.
        temperature: ``tau`` > 0.
        balance: ``lambda`` >= 0, the weight of the up-weighted divergence (the other gets 1).
    """
    _check_logits(student_logits, teacher_logits, targets)
    return _bdkd_loss(student_logits, teacher_logits, targets, float(temperature), float(balance))


@accepts(student_logits=_LOGITS, teacher_logits=_LOGITS, targets=_TARGETS, temperature=Real(gt=0),
         example=lambda ctx: _logits_example(ctx, targets=True))
def dml_student_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor, *,
                     temperature: float = 1.0) -> torch.Tensor:
    """DML student loss ``CE + tau^2 mean_i KL(p_t,i || p_s,i)`` (forward KL only, teacher detached)."""
    _check_logits(student_logits, teacher_logits, targets)
    return _dml_loss(student_logits, teacher_logits, targets, float(temperature))


@accepts(teacher_logits=_LOGITS, student_logits=_LOGITS, targets=_TARGETS, temperature=Real(gt=0),
         example=lambda ctx: _logits_example(ctx, targets=True))
def online_teacher_loss(teacher_logits: torch.Tensor, student_logits: torch.Tensor, targets: torch.Tensor, *,
                        temperature: float = 1.0) -> torch.Tensor:
    """Teacher loss ``CE + tau^2 mean_i KL(p_s,i || p_t,i)`` with the student detached (DML's and BD-KD's)."""
    _check_logits(student_logits, teacher_logits, targets)
    return _teacher_loss(teacher_logits, student_logits, targets, float(temperature))


class OnlineKDLosses(NamedTuple):
    """Losses of one online step (floats, before the update)."""

    teacher: float
    student: float


@accepts(teacher=Function(), student=Function(), x=Tensor(ndims=tuple(range(1, 9))),
         targets=Tensor(ndims=(1,), dtype="int", low=0),
         teacher_optimizer=Instance(torch.optim.Optimizer, what="torch.optim.Optimizer"),
         student_optimizer=Instance(torch.optim.Optimizer, what="torch.optim.Optimizer"),
         method=Choice("bdkd", "dml"), temperature=Real(gt=0), balance=Real(ge=0), example=_step_example)
def online_distillation_step(teacher: Callable[[torch.Tensor], torch.Tensor],
                             student: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, targets: torch.Tensor,
                             teacher_optimizer: torch.optim.Optimizer, student_optimizer: torch.optim.Optimizer, *,
                             method: str = "bdkd", temperature: float = 1.0, balance: float = 2.0) -> OnlineKDLosses:
    """One simultaneous online-KD update of a teacher/student pair on a mini-batch.

    Both networks see ``x`` once; each loss treats the other network's logits as fixed targets, and both
    optimizers step. ``method="bdkd"`` uses :func:`bdkd_student_loss`, ``method="dml"`` :func:`dml_student_loss`;
    the teacher always uses :func:`online_teacher_loss`.

    Args:
        teacher, student: modules mapping ``x`` (B, ...) to logits (B, K).
        x: input batch (B, ...); targets: (B,) integer labels in ``[0, K)``.
        teacher_optimizer, student_optimizer: optimizers over each network's parameters.
    """
    batch = targets.shape[0]
    if x.shape[0] != batch:
        raise ValueError(f"x must hold one row per target (B = {batch} from targets), got shape {tuple(x.shape)}")
    tau, lam = float(temperature), float(balance)
    zt, zs = teacher(x), student(x)
    for name, z in (("teacher", zt), ("student", zs)):
        if not isinstance(z, torch.Tensor) or not z.is_floating_point() or z.dim() != 2 or z.shape[0] != batch:
            got = f"shape {tuple(z.shape)}, dtype {z.dtype}" if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"{name} must map x to floating logits of shape ({batch}, K), got {got}")
    if zs.shape != zt.shape:
        raise ValueError(f"student must give logits of the teacher's shape {tuple(zt.shape)}, got {tuple(zs.shape)}")
    _check_logits(zs, zt, targets)
    if method == "bdkd":
        loss_s = _bdkd_loss(zs, zt, targets, tau, lam)
    else:
        loss_s = _dml_loss(zs, zt, targets, tau)
    loss_t = _teacher_loss(zt, zs, targets, tau)
    if not (torch.isfinite(loss_s) and torch.isfinite(loss_t)):
        raise FloatingPointError(f"online distillation loss is not finite (teacher {loss_t.item()}, "
                                 f"student {loss_s.item()}); lower the learning rate")
    teacher_optimizer.zero_grad()
    student_optimizer.zero_grad()
    (loss_t + loss_s).backward()  # the two losses touch disjoint parameters (the cross terms are detached)
    teacher_optimizer.step()
    student_optimizer.step()
    return OnlineKDLosses(float(loss_t.detach()), float(loss_s.detach()))
