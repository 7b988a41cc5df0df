"""The access policy: which caller may call which method. Everything else is denied.

The file is TOML, one ``[[grant]]`` table per caller::

    [[grant]]
    caller = "spiffe://lienthong.local/moj/civil-registry"
    methods = ["lienthong.population.v1.CitizenService/IssuePersonalIdentificationNumber"]

A method is ``package.Service/Method``, or ``package.Service/*`` for every method of it.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from lienthong.contracts import Method
from lienthong.identity import check_spiffe_id


class PolicyError(ValueError):
    """The policy file is malformed or names what does not exist."""


@dataclass(frozen=True)
class Policy:
    """Granted (caller, method path) pairs."""

    grants: frozenset[tuple[str, str]]

    def allows(self, caller: str | None, method: str) -> bool:
        """Whether ``caller`` may call ``method`` (a wire path "/pkg.Service/Method")."""
        return caller is not None and (caller, method) in self.grants


def load_policy(path: Path, methods: dict[str, Method]) -> Policy:
    """Read a policy file, checking every identity and every method against the contracts."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise PolicyError(f"cannot read policy {path}: {error}") from None
    grants: set[tuple[str, str]] = set()
    for number, grant in enumerate(data.get("grant", []), start=1):
        where = f"{path}: grant {number}"
        try:
            caller = check_spiffe_id(str(grant.get("caller", "")))
        except ValueError as error:
            raise PolicyError(f"{where}: {error}") from None
        names = grant.get("methods")
        if not isinstance(names, list) or not names:
            raise PolicyError(f"{where}: methods must be a non-empty list")
        grants.update((caller, method) for method in _expand(names, methods, where))
    return Policy(frozenset(grants))


def _expand(names: Iterable[object], methods: dict[str, Method], where: str) -> set[str]:
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
