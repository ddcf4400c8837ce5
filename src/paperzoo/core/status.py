"""A paper's status, derived from the registered claims and the stored results (never typed by hand).

For each claim the *current* rows are chosen from everything stored (the local SQLite store and the committed
``RESULTS.jsonl``):

1. the ``full`` budget when the claim has any full-budget row, else ``smoke``;
2. only rows run with the claim's current text (the hash of its statement, criterion and baseline as registered
   now; the newest row's when the current text is not known): a result of an earlier criterion never counts for
   the present one. A claim whose current text has no row yet is ``stale``: its old rows are kept for display and
   it counts as not run;
3. the newest row per run seed.

The claim's verdict is the verdict its seeds agree on; when they disagree it is ``unstable`` (evidence rule 5),
never ``reproduced``. A paper's status is then

* ``planned``: no registered claim;
* ``not_run``: claims, but no stored row for any of them;
* otherwise the worst verdict of its claims: ``error`` > ``not_reproduced`` > ``unstable`` > ``inconclusive`` >
  ``reproduced``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from paperzoo.core.results import ResultRow

__all__ = ["STATUSES", "ClaimEvidence", "claim_evidence", "paper_status", "combine"]

STATUSES = ("planned", "not_run", "reproduced", "inconclusive", "unstable", "not_reproduced", "error")
_SEVERITY = {"reproduced": 0, "inconclusive": 1, "unstable": 2, "not_reproduced": 3, "error": 4}


@dataclasses.dataclass(frozen=True)
class ClaimEvidence:
    """The current result rows of one claim (one per run seed) and what they add up to.

    Attributes:
        claim_id: ``slug:name``.
        rows: the current rows, by ascending seed.
        history: every stored row of this claim, oldest first (for the pre-registration record).
    """

    claim_id: str
    rows: tuple[ResultRow, ...]
    history: tuple[ResultRow, ...] = ()
    stale: bool = False

    @property
    def verdict(self) -> str:
        verdicts = {r.verdict for r in self.rows}
        if "error" in verdicts:
            return "error"
        return verdicts.pop() if len(verdicts) == 1 else "unstable"

    @property
    def per_seed(self) -> dict[int, str]:
        return {r.seed: r.verdict for r in self.rows}

    @property
    def row(self) -> ResultRow:
        """The row shown in detail (the lowest run seed)."""
        return self.rows[0]

    @property
    def budget(self) -> str:
        return self.row.budget

    @property
    def first_full(self) -> ResultRow | None:
        """The first full-budget row ever stored for this claim (any criterion text)."""
        return next((r for r in self.history if r.budget == "full"), None)

    @property
    def criterion_changed_after_full(self) -> bool:
        """The claim's text changed after its first full-budget result (evidence rule 6)."""
        first = self.first_full
        return bool(first is not None and first.claim_hash and self.row.claim_hash
                    and first.claim_hash != self.row.claim_hash)

    def summary(self) -> str:
        """``reproduced (seeds 0, 1, 2)`` or ``unstable (0: reproduced, 1: not_reproduced, ...)``."""
        seeds = self.per_seed
        if self.verdict == "unstable":
            return "unstable (" + ", ".join(f"seed {s}: {v}" for s, v in seeds.items()) + ")"
        label = "seed" if len(seeds) == 1 else "seeds"
        return f"{self.verdict} ({self.budget}, {label} {', '.join(str(s) for s in seeds)})"


def claim_evidence(rows: Iterable[ResultRow], current: Mapping[str, str] | None = None) -> dict[str, ClaimEvidence]:
    """The current evidence of every claim that has rows (rules in the module docstring).

    ``current`` maps claim ids to the hash of their text as registered now (:func:`paperzoo.core.sources.scan_claims`
    or :attr:`paperzoo.core.Claim.text_hash`).
    """
    current = current or {}
    by_claim: dict[str, list[ResultRow]] = {}
    for row in sorted(rows, key=lambda r: (r.finished_at, r.run_id)):
        by_claim.setdefault(row.claim_id, []).append(row)
    out = {}
    for claim_id, history in sorted(by_claim.items()):
        wanted = current.get(claim_id)
        stale = bool(wanted) and not any(r.claim_hash == wanted for r in history)
        if not wanted or stale:
            wanted = history[-1].claim_hash
        pool = [r for r in history if r.claim_hash == wanted] if wanted else list(history)
        budget = "full" if any(r.budget == "full" for r in pool) else "smoke"
        pool = [r for r in pool if r.budget == budget]
        per_seed: dict[int, ResultRow] = {}
        for r in pool:
            per_seed[r.seed] = r
        out[claim_id] = ClaimEvidence(claim_id, tuple(per_seed[s] for s in sorted(per_seed)), tuple(history), stale)
    return out


def combine(verdicts: Iterable[str]) -> str:
    """The worst of several claim verdicts."""
    return max(verdicts, key=lambda v: _SEVERITY.get(v, 4))


def paper_status(slug: str, claim_ids: Iterable[str], evidence: Mapping[str, ClaimEvidence]) -> str:
    """Status of paper ``slug`` given its registered claim ids and :func:`claim_evidence`."""
    ids = [cid for cid in claim_ids if cid.split(":")[0] == slug]
    if not ids:
        return "planned"
    verdicts = [evidence[cid].verdict for cid in ids if cid in evidence and not evidence[cid].stale]
    if not verdicts:
        return "not_run"
    return combine(verdicts)
