"""The access policy: which caller may call which method, for which purpose.

Everything not granted is denied. The file is TOML, one ``[[grant]]`` table per grant::

    [[grant]]
    caller = "spiffe://lienthong.local/moj/civil-registry"
    methods = ["lienthong.population.v1.CitizenService/IssuePersonalIdentificationNumber"]
    purposes = ["birth-registration"]

A method is ``package.Service/Method``, or ``package.Service/*`` for every method of it. A
purpose is a lower-case word with hyphens; every call must declare one in the
``lienthong-purpose`` metadata, and it must be granted for that caller and method.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import structlog

from lienthong.contracts import Method
from lienthong.identity import check_spiffe_id
from lienthong.watch import FileWatch

log = structlog.get_logger(__name__)

_PURPOSE = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")
_GRANT_KEYS = frozenset({"caller", "methods", "purposes"})


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
    """Granted purposes per (caller, method path)."""

    grants: dict[tuple[str, str], frozenset[str]]

    def decide(self, caller: str, method: str, purpose: str | None) -> Decision:
        """Whether ``caller`` may call ``method`` ("/pkg.Service/Method") for ``purpose``."""
        purposes = self.grants.get((caller, method))
        if purposes is None:
            return Decision.NOT_GRANTED
        if not purpose:
            return Decision.MISSING_PURPOSE
        if purpose not in purposes:
            return Decision.PURPOSE_NOT_GRANTED
        return Decision.ALLOWED


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
    for number, grant in enumerate(data.get("grant", []), start=1):
        where = f"{path}: grant {number}"
        if not isinstance(grant, dict) or set(grant) - _GRANT_KEYS:
            raise PolicyError(f"{where}: a grant has only caller, methods and purposes")
        try:
            caller = check_spiffe_id(str(grant.get("caller", "")))
        except ValueError as error:
            raise PolicyError(f"{where}: {error}") from None
        purposes = _purposes(grant.get("purposes"), where)
        for method in _expand(_strings(grant.get("methods"), "methods", where), methods, where):
            grants.setdefault((caller, method), set()).update(purposes)
    return Policy({key: frozenset(value) for key, value in grants.items()})


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
                log.info("policy_reloaded", path=str(self._path), grants=len(self._policy.grants))
        return self._policy
