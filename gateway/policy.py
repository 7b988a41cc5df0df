"""The access policy: which caller may call which method, for which purpose.

Everything not granted is denied. The file is TOML, one ``[[grant]]`` table per grant::

    [[grant]]
    caller = "spiffe://lienthong.local/moj/civil-registry"
    methods = ["lienthong.population.v1.CitizenService/IssuePersonalIdentificationNumber"]
    purposes = ["birth-registration"]

A caller is a SPIFFE ID, or a SPIFFE ID followed by ``/*`` for every caller exactly one
path segment below it: ``spiffe://lienthong.local/moj/officers/*`` grants each officer's own
certificate (``.../moj/officers/alice``), but neither ``.../moj/officers`` itself nor
``.../moj/officers/alice/x``. A ``*`` anywhere else is an error, not a pattern. Grants add up:
a caller may call a method for every purpose that its exact grants and its prefix grants give.

A method is ``package.Service/Method``, or ``package.Service/*`` for every method of it. A
purpose is a lower-case word with hyphens; every call must declare one in the
``lienthong-purpose`` metadata, and it must be granted for that caller and method.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import structlog

from lienthong.contracts import Method
from lienthong.identity import check_spiffe_id
from lienthong.watch import FileWatch

log = structlog.get_logger(__name__)

_PURPOSE = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")
_GRANT_KEYS = frozenset({"caller", "methods", "purposes"})
_PREFIX_WILDCARD = "/*"


class PolicyError(ValueError):
    """The policy file is malformed or names what does not exist."""


class Decision(StrEnum):
    """The outcome of a policy check; anything but ALLOWED is a refusal reason."""

    ALLOWED = "ALLOWED"
    NOT_GRANTED = "NOT_GRANTED"
    MISSING_PURPOSE = "MISSING_PURPOSE"
    PURPOSE_NOT_GRANTED = "PURPOSE_NOT_GRANTED"


@dataclass(frozen=True)
class Policy:
    """Granted purposes per (caller, method path) and per (caller prefix, method path).

    A prefix is kept without its ``/*``, so a caller's prefix grants are found with one
    lookup of its parent path: every call is decided by two dictionary lookups, whatever
    the number of grants.
    """

    grants: dict[tuple[str, str], frozenset[str]]
    prefix_grants: dict[tuple[str, str], frozenset[str]] = field(default_factory=dict)

    def decide(self, caller: str, method: str, purpose: str | None) -> Decision:
        """Whether ``caller`` may call ``method`` ("/pkg.Service/Method") for ``purpose``."""
        exact = self.grants.get((caller, method))
        parent, _, last = caller.rpartition("/")
        # An empty last segment is no caller one segment below the prefix.
        prefixed = self.prefix_grants.get((parent, method)) if last else None
        if exact is None and prefixed is None:
            return Decision.NOT_GRANTED
        if not purpose:
            return Decision.MISSING_PURPOSE
        if purpose in (exact or ()) or purpose in (prefixed or ()):
            return Decision.ALLOWED
        return Decision.PURPOSE_NOT_GRANTED

    def to_json(self) -> str:
        """The compiled policy as JSON, for the data plane (gateway/dataplane/src/policy.rs).

        The document, version 1::

            {"version": 1,
             "grants": [{"caller": ..., "method": ..., "purposes": [...]}, ...],
             "prefix_grants": [{"caller": ..., "method": ..., "purposes": [...]}, ...]}

        A grant's caller is a SPIFFE ID and its method a wire path ("/pkg.Service/Method"),
        one grant per (caller, method) with all its purposes. A prefix grant's caller is the
        prefix without its "/*": it grants every caller exactly one segment below it. Grants
        are sorted by caller then method, purposes and keys sorted, so that one policy always
        gives the same text. The data plane reads only this; the TOML is read here alone.
        """
        document: dict[str, object] = {"version": 1}
        for key, table in (("grants", self.grants), ("prefix_grants", self.prefix_grants)):
            document[key] = [
                {"caller": caller, "method": method, "purposes": sorted(table[caller, method])}
                for caller, method in sorted(table)
            ]
        return json.dumps(document, indent=2, sort_keys=True)


def load_policy(path: Path, methods: dict[str, Method]) -> Policy:
    """Read a policy file, checking identities, methods and purposes against the contracts."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise PolicyError(f"cannot read policy {path}: {error}") from None
    unknown = set(data) - {"grant"}
    if unknown:
        raise PolicyError(f"{path}: unknown top-level keys {sorted(unknown)}")
    grants: dict[tuple[str, str], set[str]] = {}
    prefix_grants: dict[tuple[str, str], set[str]] = {}
    for number, grant in enumerate(data.get("grant", []), start=1):
        where = f"{path}: grant {number}"
        if not isinstance(grant, dict) or set(grant) - _GRANT_KEYS:
            raise PolicyError(f"{where}: a grant has only caller, methods and purposes")
        caller, is_prefix = _caller(grant.get("caller", ""), where)
        purposes = _purposes(grant.get("purposes"), where)
        table = prefix_grants if is_prefix else grants
        for method in _expand(_strings(grant.get("methods"), "methods", where), methods, where):
            table.setdefault((caller, method), set()).update(purposes)
    return Policy(_frozen(grants), _frozen(prefix_grants))


def _caller(value: object, where: str) -> tuple[str, bool]:
    # The SPIFFE ID, or the prefix without its "/*", and whether it is a prefix. Only a
    # whole last segment may be a wildcard: "officers*" or "*/x" would grant by accident.
    text = str(value)
    caller = text.removesuffix(_PREFIX_WILDCARD)
    if "*" in caller:
        raise PolicyError(f"{where}: a caller may only end in /*, with no other *: {text!r}")
    try:
        check_spiffe_id(caller)
    except ValueError as error:
        raise PolicyError(f"{where}: {error}") from None
    return caller, caller != text


def _frozen(grants: dict[tuple[str, str], set[str]]) -> dict[tuple[str, str], frozenset[str]]:
    return {key: frozenset(value) for key, value in grants.items()}


def _strings(value: object, key: str, where: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise PolicyError(f"{where}: {key} must be a non-empty list of strings")
    return value


def _purposes(value: object, where: str) -> set[str]:
    purposes = set(_strings(value, "purposes", where))
    bad = sorted(purpose for purpose in purposes if not _PURPOSE.match(purpose))
    if bad:
        raise PolicyError(f"{where}: purposes must be lower-case words with hyphens: {bad}")
    return purposes


def _expand(names: Iterable[str], methods: dict[str, Method], where: str) -> set[str]:
    paths: set[str] = set()
    for name in names:
        text = f"/{name}"
        if text.endswith("/*"):
            service = text[1:-2]
            matched = {path for path, method in methods.items() if method.service == service}
            if not matched:
                raise PolicyError(f"{where}: no service {service} in the contracts")
            paths |= matched
        elif text in methods:
            paths.add(text)
        else:
            raise PolicyError(f"{where}: no method {name} in the contracts")
    return paths


class PolicyStore:
    """The policy in force, reloaded when its file changes, without restart.

    A file that fails to load is logged and ignored: the last good policy stays in force.
    """

    def __init__(self, path: Path, methods: dict[str, Method], *, interval: float = 0.25) -> None:
        """Load ``path`` now; a bad file here raises PolicyError (the gateway must not start)."""
        self._path = path
        self._methods = methods
        self._watch = FileWatch([path], interval=interval)
        self._policy = load_policy(path, methods)

    def current(self) -> Policy:
        """The policy in force, after reloading the file if it changed."""
        if self._watch.changed():
            try:
                self._policy = load_policy(self._path, self._methods)
            except PolicyError as error:
                log.error(  # noqa: TRY400 - an expected failure: the reason, not a traceback
                    "policy_reload_failed", path=str(self._path), error=str(error)
                )
            else:
                log.info(
                    "policy_reloaded",
                    path=str(self._path),
                    grants=len(self._policy.grants),
                    prefix_grants=len(self._policy.prefix_grants),
                )
        return self._policy
