import json
from pathlib import Path

import pytest

from paperzoo.core import PACKAGES, CatalogError, catalog, load_catalog, registered_claims

SEEDS = Path(__file__).resolve().parents[3] / "shared" / "papers" / "catalog.json"


def test_packaged_catalog_is_valid_and_complete():
    cat = catalog()  # validates slugs, packages, importable api, claims for known slugs
    assert len(cat) == 318
    assert [p.id for p in cat] == list(range(318))
    assert {p.package for p in cat} <= set(PACKAGES)
    for slug in ("adopt", "amsgrad", "sinkhorn-newton-sparse", "monge-gap"):
        assert slug in cat
    for claim_entry in registered_claims().values():
        assert claim_entry.slug in cat


@pytest.mark.skipif(not SEEDS.is_file(), reason="shared/papers/catalog.json not beside the checkout")
def test_titles_match_the_seed_catalog():
    seeds = json.loads(SEEDS.read_text())
    assert [p.title for p in catalog()] == [s["title"] for s in seeds]


def test_implemented_papers_have_api_and_claims():
    cat = catalog()
    claimed = {c.slug for c in registered_claims().values() if c.module.startswith("paperzoo.claims.")}
    for slug in claimed:
        assert cat[slug].api, f"{slug} has a claim but an empty api"


ENTRY = """
[[paper]]
id = {id}
slug = "{slug}"
title = "T"
package = "{package}"
kind = "method"
summary = "s"
api = {api}
"""


def test_validation_collects_every_problem():
    text = (ENTRY.format(id=0, slug="a-b", package="optim", api="[]")
            + ENTRY.format(id=1, slug="a-b", package="nowhere", api='["paperzoo.optim.NoSuchThing"]')
            + ENTRY.format(id=2, slug="Bad", package="optim", api="[]")
            + ENTRY.format(id=3, slug="c-d", package="optim", api='["paperzoo.transport.sinkhorn"]'))
    with pytest.raises(CatalogError) as info:
        load_catalog(text, check_claims=False)
    message = str(info.value)
    assert "duplicate slug" in message
    assert "package must be one of" in message
    assert "'paperzoo.optim.NoSuchThing' is not importable" in message
    assert "slug must be kebab-case" in message
    assert "'paperzoo.transport.sinkhorn' is a module" in message


def test_claim_for_unknown_slug_is_rejected():
    text = ENTRY.format(id=0, slug="only-one", package="optim", api="[]")
    import tests.core.fake_claims  # noqa: F401 - registers claims under "cs-ib"

    with pytest.raises(CatalogError, match="is not in the catalog"):
        load_catalog(text)


# Implemented papers whose fidelity label has not been written yet (issue 8). This set only shrinks: a paper
# implemented from now on must have its [paper.fidelity] table from its first commit.
FIDELITY_TODO: set[str] = set()


def test_every_implemented_paper_has_a_fidelity_label():
    implemented = {p.slug for p in catalog() if p.api}
    missing = {s for s in implemented if catalog()[s].fidelity is None}
    assert missing <= FIDELITY_TODO, f"implemented without a fidelity label: {sorted(missing - FIDELITY_TODO)}"
    assert not (FIDELITY_TODO - missing), f"labelled now, remove from FIDELITY_TODO: {sorted(FIDELITY_TODO - missing)}"


FIDELITY = """
[paper.fidelity]
checked_against = "{kind}"
source = "{source}"
reference = "closed form"
deviations = {deviations}
"""


def test_fidelity_table_is_validated():
    good = ENTRY.format(id=0, slug="a", package="optim", api="[]") + FIDELITY.format(
        kind="official-code", source="github.com/o/n @ 1a2b3c4", deviations='["eps 1e-8 instead of 1e-6"]')
    paper = load_catalog(good, check_api=False, check_claims=False)["a"]
    assert paper.fidelity.checked_against == "official-code"
    assert paper.fidelity.deviations == ("eps 1e-8 instead of 1e-6",)
    bad = (ENTRY.format(id=0, slug="a", package="optim", api="[]")
           + FIDELITY.format(kind="official-code", source="github.com/o/n", deviations="[]")
           + ENTRY.format(id=1, slug="b", package="optim", api="[]")
           + FIDELITY.format(kind="vibes", source="x", deviations='[""]'))
    with pytest.raises(CatalogError) as info:
        load_catalog(bad, check_api=False, check_claims=False)
    text = str(info.value)
    assert "must name the official repository and commit" in text
    assert "checked_against must be one of ['paper', 'official-code', 'summary'], got 'vibes'" in text
    assert "deviations must be a list of non-empty strings" in text
