"""The compiled policy that the Rust data plane reads, and the decisions it must reproduce.

tests/vectors/policy_decisions.json is written by tools/policy_vectors.py and read by the
Rust unit tests of gateway/dataplane/src/policy.rs; here it must be what Python writes now.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from gateway.policy import Decision, Policy, load_policy
from lienthong.contracts import Method, methods

ROOT = Path(__file__).resolve().parents[1]
VECTORS = ROOT / "tests" / "vectors" / "policy_decisions.json"
DEV_POLICY = ROOT / "config" / "policy.toml"
OFFICERS = "spiffe://lienthong.local/moj/officers"
REGISTRY = "spiffe://lienthong.local/moj/civil-registry"
REGISTER = "/test.v1.BirthService/Register"
READ = "/test.v1.BirthService/Read"


def _method(path: str) -> Method:
    return Method(path, path[1:].partition("/")[0], client_streaming=False, server_streaming=False)


def _text(document: object) -> str:
    return json.dumps(document, indent=2, sort_keys=True)


def test_the_committed_vectors_are_what_python_decides_now(tmp_path: Path) -> None:
    """Regenerate with `python tools/policy_vectors.py` after changing the policy or decide."""
    fresh = tmp_path / "policy_decisions.json"
    subprocess.run(
        [sys.executable, str(ROOT / "tools" / "policy_vectors.py"), "--out", str(fresh)],
        check=True,
        capture_output=True,
    )
    assert fresh.read_bytes() == VECTORS.read_bytes(), "regenerate: tools/policy_vectors.py"


def test_the_vectors_hold_the_compiled_policy_and_every_kind_of_decision() -> None:
    vectors = json.loads(VECTORS.read_text(encoding="utf-8"))
    contracts = methods()
    policy = load_policy(DEV_POLICY, contracts)
    assert vectors["policy"] == json.loads(policy.to_json())
    cases = vectors["cases"]
    assert {case["decision"] for case in cases} == {decision.value for decision in Decision}
    keys = [(case["caller"], case["method"], case["purpose"]) for case in cases]
    assert len(keys) == len(set(keys))
    for case in cases:
        decided = policy.decide(case["caller"], case["method"], case["purpose"])
        assert decided.value == case["decision"], case
    granted = {(case["caller"], case["method"]) for case in cases}
    assert set(policy.grants) <= granted
    assert {(f"{prefix}/alice", method) for prefix, method in policy.prefix_grants} <= granted
    whys = {case["why"] for case in cases}
    for why in (
        "prefix grant, the prefix itself",
        "prefix grant, an empty last segment",
        "prefix grant, two segments down",
        "prefix grant, one segment down, a granted purpose",
        "grant, no purpose",
        "grant, an unknown purpose",
        "grant, an unknown method",
    ):
        assert why in whys


def test_to_json_is_the_documented_sorted_version_1_document() -> None:
    policy = Policy(
        grants={
            (REGISTRY, READ): frozenset({"b", "a"}),
            (f"{OFFICERS}/alice", REGISTER): frozenset({"c"}),
        },
        prefix_grants={(OFFICERS, REGISTER): frozenset({"registration"})},
    )
    document = json.loads(policy.to_json())
    assert document == {
        "version": 1,
        "grants": [
            {"caller": REGISTRY, "method": READ, "purposes": ["a", "b"]},
            {"caller": f"{OFFICERS}/alice", "method": REGISTER, "purposes": ["c"]},
        ],
        "prefix_grants": [{"caller": OFFICERS, "method": REGISTER, "purposes": ["registration"]}],
    }
    reordered = Policy(dict(reversed(policy.grants.items())), dict(policy.prefix_grants))
    assert reordered.to_json() == policy.to_json()
    assert Policy({}).to_json() == _text({"version": 1, "grants": [], "prefix_grants": []})


def test_to_json_keeps_everything_decide_needs(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(
        f'[[grant]]\ncaller = "{OFFICERS}/*"\nmethods = ["test.v1.BirthService/*"]\n'
        'purposes = ["registration", "supervision"]\n\n'
        f'[[grant]]\ncaller = "{REGISTRY}"\nmethods = ["test.v1.BirthService/Read"]\n'
        'purposes = ["audit"]\n',
        encoding="utf-8",
    )
    policy = load_policy(path, {method: _method(method) for method in (REGISTER, READ)})
    document = json.loads(policy.to_json())

    def table(name: str) -> dict[tuple[str, str], frozenset[str]]:
        return {(g["caller"], g["method"]): frozenset(g["purposes"]) for g in document[name]}

    assert Policy(table("grants"), table("prefix_grants")) == policy
