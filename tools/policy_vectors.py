"""Write the policy decisions the data plane must reproduce: tests/vectors/policy_decisions.json.

Run with the project's virtual environment: ``python tools/policy_vectors.py``; ``--out PATH``
writes elsewhere, which tests/test_policy_vectors.py uses to compare with what is committed.

The file holds config/policy.toml compiled by ``load_policy`` against the contracts, exactly
as ``Policy.to_json()`` writes it, and a list of cases (caller, method, purpose or null) with
the decision of ``Policy.decide``: every grant with each of its purposes, none, an empty one
and every other purpose; each prefix grant one and two segments down, the prefix itself, an
empty last segment and a sibling; every caller against every method, and unknown methods.
The Rust data plane (gateway/dataplane/src/policy.rs) reads the policy and must decide every
case the same.
"""

from __future__ import annotations

import argparse
import json
import textwrap
from collections.abc import Collection, Iterable
from pathlib import Path

from gateway.policy import Policy, load_policy
from lienthong.contracts import methods

ROOT = Path(__file__).resolve().parent.parent
POLICY = ROOT / "config" / "policy.toml"
VECTORS = ROOT / "tests" / "vectors" / "policy_decisions.json"
ABOUT = (
    "Written by tools/policy_vectors.py from config/policy.toml: do not edit. Each case is"
    " decided by gateway/policy.py and must be decided the same by gateway/dataplane."
)
UNKNOWN_METHOD = "/lienthong.unknown.v1.NoService/NoMethod"
UNKNOWN_PURPOSE = "no-such-purpose"
UNKNOWN_CALLER = "spiffe://lienthong.local/moj/unknown"
Case = tuple[str, str, str, str | None]  # why, caller, method, purpose


def grant_cases(
    kind: str, caller: str, method: str, purposes: Collection[str], known: Collection[str]
) -> list[Case]:
    """A granted (caller, method): each purpose, every other ``known`` one, none, unknown..."""
    granted = sorted(purposes)
    return [
        *((f"{kind}, a granted purpose", caller, method, purpose) for purpose in granted),
        *(
            (f"{kind}, a purpose granted elsewhere", caller, method, purpose)
            for purpose in sorted(known)
            if purpose not in granted
        ),
        (f"{kind}, no purpose", caller, method, None),
        (f"{kind}, an empty purpose", caller, method, ""),
        (f"{kind}, an unknown purpose", caller, method, UNKNOWN_PURPOSE),
        (f"{kind}, an unknown method", caller, UNKNOWN_METHOD, granted[0]),
    ]


def prefix_cases(
    prefix: str, method: str, purposes: Collection[str], known: Collection[str]
) -> list[Case]:
    """A prefix grant: one segment below it, and the callers it must not grant."""
    purpose = min(purposes)
    parent = prefix.rpartition("/")[0]
    others = [
        ("prefix grant, the prefix itself", prefix),
        ("prefix grant, an empty last segment", f"{prefix}/"),
        ("prefix grant, two segments down", f"{prefix}/alice/laptop"),
        ("prefix grant, a sibling sharing its text", f"{prefix}x/alice"),
        ("prefix grant, one segment below its parent", f"{parent}/alice"),
    ]
    return [
        *grant_cases("prefix grant, one segment down", f"{prefix}/alice", method, purposes, known),
        *((why, caller, method, purpose) for why, caller in others),
    ]


def cases(policy: Policy, paths: Iterable[str]) -> list[Case]:
    """Every case, each (caller, method, purpose) once, in a stable order."""
    tables = (policy.grants, policy.prefix_grants)
    known = sorted(
        {purpose for table in tables for granted in table.values() for purpose in granted}
    )
    found: list[Case] = []
    for caller, method in sorted(policy.grants):
        found += grant_cases("grant", caller, method, policy.grants[caller, method], known)
    for prefix, method in sorted(policy.prefix_grants):
        found += prefix_cases(prefix, method, policy.prefix_grants[prefix, method], known)
    callers = sorted(
        {caller for caller, _ in policy.grants}
        | {f"{prefix}/alice" for prefix, _ in policy.prefix_grants}
        | {UNKNOWN_CALLER}
    )
    methods_tried = [*sorted(paths), UNKNOWN_METHOD, "/lienthong.gateway.v1.AuditService/*", ""]
    for caller in callers:
        for method in methods_tried:
            found += [
                ("every caller and method", caller, method, purpose)
                for purpose in (None, "audit", "birth-registration")
            ]
    unique: dict[tuple[str, str, str | None], Case] = {}
    for case in found:
        unique.setdefault(case[1:], case)
    return list(unique.values())


def render(policy: Policy, paths: Iterable[str]) -> str:
    """The vectors file: the compiled policy as to_json() writes it, then one case a line."""
    rows = ",\n".join(
        "    "
        + json.dumps(
            {
                "why": why,
                "caller": caller,
                "method": method,
                "purpose": purpose,
                "decision": policy.decide(caller, method, purpose).value,
            }
        )
        for why, caller, method, purpose in cases(policy, paths)
    )
    compiled = textwrap.indent(policy.to_json(), "  ").lstrip()
    return (
        f'{{\n  "about": {json.dumps(ABOUT)},\n  "policy": {compiled},\n'
        f'  "cases": [\n{rows}\n  ]\n}}\n'
    )


def main() -> None:
    """Parse the command line and write the vectors."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=VECTORS, help=f"default: {VECTORS}")
    out: Path = parser.parse_args().out
    contracts = methods()
    text = render(load_policy(POLICY, contracts), contracts)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
