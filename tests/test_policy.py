"""The gateway's access policy on its own: exact and prefix callers, and the real policy file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.policy import Decision, Policy, PolicyError, load_policy
from lienthong.contracts import Method, methods

PROJECT = Path(__file__).resolve().parents[1]
DEV_POLICY = PROJECT / "config" / "policy.toml"

REGISTER = "/test.v1.BirthService/Register"
READ = "/test.v1.BirthService/Read"
ISSUE = "/test.v1.PinService/Issue"
METHODS = {
    path: Method(path, path[1:].split("/")[0], client_streaming=False, server_streaming=False)
    for path in (REGISTER, READ, ISSUE)
}

OFFICERS = "spiffe://lienthong.local/moj/officers"
ALICE = f"{OFFICERS}/alice"


def grant(caller: str, methods: str, purposes: str) -> str:
    return f'[[grant]]\ncaller = "{caller}"\nmethods = [{methods}]\npurposes = [{purposes}]\n'


def load(tmp_path: Path, *grants: str) -> Policy:
    path = tmp_path / "policy.toml"
    path.write_text("\n".join(grants), encoding="utf-8")
    return load_policy(path, METHODS)


@pytest.fixture
def officers(tmp_path: Path) -> Policy:
    return load(tmp_path, grant(f"{OFFICERS}/*", '"test.v1.BirthService/*"', '"registration"'))


def test_a_prefix_grant_allows_every_caller_one_segment_below_it(officers: Policy):
    for caller in (ALICE, f"{OFFICERS}/bob-2"):
        assert officers.decide(caller, REGISTER, "registration") is Decision.ALLOWED
        assert officers.decide(caller, READ, "registration") is Decision.ALLOWED
    assert officers.decide(ALICE, REGISTER, "statistics") is Decision.PURPOSE_NOT_GRANTED
    assert officers.decide(ALICE, REGISTER, None) is Decision.MISSING_PURPOSE
    assert officers.decide(ALICE, ISSUE, "registration") is Decision.NOT_GRANTED


@pytest.mark.parametrize(
    "caller",
    [
        OFFICERS,  # the prefix itself
        f"{OFFICERS}/",  # an empty last segment
        f"{OFFICERS}/alice/laptop",  # two segments below
        "spiffe://lienthong.local/moj/officer-portal",  # a sibling sharing the prefix's text
        "spiffe://lienthong.local/moj/officersx/alice",
        "spiffe://lienthong.local/mps/officers/alice",  # the same last segments elsewhere
        "spiffe://lienthong.local/moj/alice",
    ],
)
def test_a_prefix_grant_allows_neither_the_prefix_nor_deeper_nor_other_paths(
    officers: Policy, caller: str
):
    assert officers.decide(caller, REGISTER, "registration") is Decision.NOT_GRANTED


def test_a_prefix_grant_is_kept_apart_from_exact_grants(officers: Policy):
    assert officers.grants == {}
    assert officers.prefix_grants == {
        (OFFICERS, REGISTER): frozenset({"registration"}),
        (OFFICERS, READ): frozenset({"registration"}),
    }


def test_exact_and_prefix_grants_for_one_caller_add_up(tmp_path: Path):
    policy = load(
        tmp_path,
        grant(f"{OFFICERS}/*", '"test.v1.BirthService/Register"', '"registration"'),
        grant(ALICE, '"test.v1.BirthService/Register"', '"supervision"'),
        grant(ALICE, '"test.v1.PinService/Issue"', '"registration"'),
    )
    assert policy.decide(ALICE, REGISTER, "registration") is Decision.ALLOWED
    assert policy.decide(ALICE, REGISTER, "supervision") is Decision.ALLOWED
    assert policy.decide(ALICE, ISSUE, "registration") is Decision.ALLOWED
    bob = f"{OFFICERS}/bob"
    assert policy.decide(bob, REGISTER, "registration") is Decision.ALLOWED
    assert policy.decide(bob, REGISTER, "supervision") is Decision.PURPOSE_NOT_GRANTED
    assert policy.decide(bob, ISSUE, "registration") is Decision.NOT_GRANTED


def test_two_prefix_grants_for_one_prefix_add_up(tmp_path: Path):
    policy = load(
        tmp_path,
        grant(f"{OFFICERS}/*", '"test.v1.BirthService/Register"', '"registration"'),
        grant(f"{OFFICERS}/*", '"test.v1.BirthService/*"', '"supervision"'),
    )
    assert policy.prefix_grants[OFFICERS, REGISTER] == {"registration", "supervision"}
    assert policy.prefix_grants[OFFICERS, READ] == {"supervision"}


@pytest.mark.parametrize(
    ("caller", "message"),
    [
        ("spiffe://lienthong.local/moj/*/alice", "only end in /*"),
        ("spiffe://lienthong.local/moj/officers*", "only end in /*"),
        ("spiffe://lienthong.local/moj/officers/a*", "only end in /*"),
        ("spiffe://lienthong.local/moj/officers/**", "only end in /*"),
        ("spiffe://lienthong.local/moj/officers/*/*", "only end in /*"),
        ("spiffe://lienthong.local/*", "not a SPIFFE ID"),
        ("spiffe://*/moj/officers", "only end in /*"),
        ("spiffe://elsewhere.org/moj/officers/*", "not a SPIFFE ID"),
        ("spiffe://lienthong.local/moj//*", "path segments"),
        ("*", "only end in /*"),
    ],
)
def test_a_wildcard_anywhere_but_a_whole_last_segment_is_refused(
    tmp_path: Path, caller: str, message: str
):
    with pytest.raises(PolicyError, match=re.escape(message)) as raised:
        load(tmp_path, grant(caller, '"test.v1.BirthService/*"', '"registration"'))
    assert "grant 1" in str(raised.value)


def test_the_development_policy_grants_officers_and_no_longer_the_portal_births():
    """config/policy.toml loads against the real contracts; births are the officers' own."""
    contracts = methods()
    policy = load_policy(DEV_POLICY, contracts)
    admin = f"{OFFICERS}/admin"
    portal = "spiffe://lienthong.local/moj/officer-portal"
    births = [p for p, m in contracts.items() if m.service.endswith(".BirthRegistrationService")]
    accounts = [p for p, m in contracts.items() if m.service.endswith(".OfficerService")]
    assert births
    assert accounts
    for method in births:
        for purpose in (
            "birth-registration",
            "civil-status-correction",
            "civil-status-supervision",
        ):
            assert policy.decide(admin, method, purpose) is Decision.ALLOWED
        assert policy.decide(admin, method, "account-management") is Decision.PURPOSE_NOT_GRANTED
        assert policy.decide(portal, method, "birth-registration") is Decision.NOT_GRANTED
    for method in accounts:
        assert policy.decide(admin, method, "account-management") is Decision.ALLOWED
        assert policy.decide(portal, method, "account-management") is Decision.NOT_GRANTED
    audit = next(p for p, m in contracts.items() if m.service.endswith(".AuditService"))
    assert policy.decide(portal, audit, "audit") is Decision.ALLOWED
    assert policy.decide(admin, audit, "audit") is Decision.ALLOWED  # their own evidence
    assert policy.decide(admin, audit, "birth-registration") is Decision.PURPOSE_NOT_GRANTED
    assert policy.decide(f"{OFFICERS}/admin/x", births[0], "birth-registration") is (
        Decision.NOT_GRANTED
    )
