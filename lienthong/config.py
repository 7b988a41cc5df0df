"""Typed configuration of the three services, read from one TOML file.

Relative paths in the file are taken relative to the file's directory. Every service section
is validated when it is loaded, with errors that name the key.

Environment variables override the file: ``LIENTHONG__JUSTICE__DATABASE_URL`` sets
``[justice] database_url``, ``LIENTHONG__GATEWAY__AUDIT__DATABASE_URL`` sets
``[gateway.audit] database_url`` (two underscores between the parts; the value is read as a
TOML value when it is one, as text otherwise). Containers and secrets managers can then
supply what differs between machines without another file.
"""

from __future__ import annotations

import ipaddress
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lienthong.identity import check_spiffe_id
from lienthong.tls import TlsFiles


class ConfigError(ValueError):
    """The configuration file is missing a key or has a bad value."""


@dataclass(frozen=True)
class GatewayLimits:
    """Per-caller limits of the gateway, and the size of one message."""

    rate_per_second: float = 200.0
    burst: int = 400
    max_concurrent: int = 64
    max_message_bytes: int = 4 * 1024 * 1024
    upstream_timeout: float = 30.0
    # The same for a call that streams (a reconciliation's digests, a bulk import).
    stream_timeout: float = 600.0


@dataclass(frozen=True)
class AuditConfig:
    """The gateway's audit log: its database, and the key that signs checkpoints and receipts."""

    database_url: str
    signing_key: Path
    origin: str = "lienthong.local/audit"
    # Seconds a group commit waits for more entries after one that held several (as
    # PostgreSQL's commit_delay): under load one sync serves more calls; a lone call never waits.
    commit_delay: float = 0.001


@dataclass(frozen=True)
class Route:
    """Where the gateway sends a service's calls, and the SPIFFE ID that upstream must present."""

    address: str
    identity: str


@dataclass(frozen=True)
class GatewayConfig:
    """The gateway: its listener, policy, upstream routes, both TLS legs and its limits."""

    listen: str
    tls: TlsFiles
    upstream_tls: TlsFiles
    policy: Path
    routes: dict[str, Route]
    audit: AuditConfig
    crls: tuple[Path, ...] = ()
    metrics_listen: str | None = None
    limits: GatewayLimits = GatewayLimits()


@dataclass(frozen=True)
class JusticeConfig:
    """The civil-status registry adapter."""

    listen: str
    tls: TlsFiles
    database_url: str
    gateway: str
    trusted_callers: frozenset[str]
    # Officers authenticate as this prefix + officer_id, the SPIFFE ID of their certificate.
    officer_identity_prefix: str = "spiffe://lienthong.local/moj/officers/"
    # Ministry administrators' accounts made at start when missing: the first accounts.
    administrators: tuple[str, ...] = ()
    # How long after entry the registering unit may amend without a formal correction.
    grace_window_hours: float = 24.0
    # Systems that may reconcile any locality (never repair): the population database's.
    reconcilers: frozenset[str] = frozenset()


@dataclass(frozen=True)
class PoliceConfig:
    """The population database adapter."""

    listen: str
    tls: TlsFiles
    database_url: str
    trusted_callers: frozenset[str]


@dataclass(frozen=True)
class StackConfig:
    """The whole stack as one file describes it."""

    source: Path
    pki_directory: Path
    log_directory: Path
    gateway: GatewayConfig
    justice: JusticeConfig
    police: PoliceConfig
    demo_tls: TlsFiles


class _Section:
    def __init__(self, data: dict[str, Any], name: str, base: Path) -> None:
        self.data, self.name, self.base = data, name, base

    def sub(self, key: str) -> _Section:
        value = self.data.get(key)
        if not isinstance(value, dict):
            raise ConfigError(f"[{self.name}.{key}] is missing")
        return _Section(value, f"{self.name}.{key}", self.base)

    def text(self, key: str) -> str:
        value = self.data.get(key)
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{self.name}.{key} must be a non-empty string")
        return value

    def path(self, key: str) -> Path:
        return (self.base / self.text(key)).resolve()

    def database_url(self, key: str) -> str:
        url = self.text(key)
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
            url = prefix + str((self.base / url.removeprefix(prefix)).resolve())
        return url

    def number(
        self, key: str, default: float, *, minimum: float, maximum: float = math.inf
    ) -> float:
        value = self.data.get(key, default)
        # TOML has nan and inf: neither is a limit, a rate or a duration.
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or not minimum <= value <= maximum
        ):
            bound = (
                f"of at least {minimum}" if maximum == math.inf else f"from {minimum} to {maximum}"
            )
            raise ConfigError(f"{self.name}.{key} must be a finite number {bound}")
        return float(value)

    def socket_address(self, key: str) -> str | None:
        """An optional ``IP:port`` (``[IPv6]:port``): what the gateway binds, so no host name."""
        value = self.data.get(key)
        if value is None or value == "":
            return None
        host, _, port = str(value).rpartition(":")
        try:
            if host.startswith("[") and host.endswith("]"):
                ipaddress.IPv6Address(host[1:-1])
            else:
                ipaddress.IPv4Address(host)
            bound = port.isascii() and port.isdigit() and int(port) <= 65535  # noqa: PLR2004
        except ValueError:
            bound = False
        if not isinstance(value, str) or not bound:
            raise ConfigError(f"{self.name}.{key} must be IP:port, such as 127.0.0.1:9464")
        return value

    def paths(self, key: str) -> tuple[Path, ...]:
        values = self.data.get(key, [])
        if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
            raise ConfigError(f"{self.name}.{key} must be a list of paths")
        return tuple((self.base / value).resolve() for value in values)

    def limits(self) -> GatewayLimits:
        section = _Section(self.data.get("limits", {}), f"{self.name}.limits", self.base)
        defaults = GatewayLimits()
        return GatewayLimits(
            rate_per_second=section.number("rate_per_second", defaults.rate_per_second, minimum=0),
            burst=int(section.number("burst", defaults.burst, minimum=1)),
            max_concurrent=int(
                section.number("max_concurrent", defaults.max_concurrent, minimum=1)
            ),
            max_message_bytes=int(
                section.number("max_message_bytes", defaults.max_message_bytes, minimum=1024)
            ),
            upstream_timeout=section.number(
                "upstream_timeout", defaults.upstream_timeout, minimum=0.001
            ),
            stream_timeout=section.number("stream_timeout", defaults.stream_timeout, minimum=0.001),
        )

    def identities(self, key: str, *, required: bool = True) -> frozenset[str]:
        values = self.data.get(key, None if required else [])
        if not isinstance(values, list) or (required and not values):
            raise ConfigError(f"{self.name}.{key} must be a non-empty list of SPIFFE IDs")
        try:
            return frozenset(check_spiffe_id(str(value)) for value in values)
        except ValueError as error:
            raise ConfigError(f"{self.name}.{key}: {error}") from None

    def identity_prefix(self, key: str) -> str:
        value = self.data.get(key, JusticeConfig.officer_identity_prefix)
        try:
            if not isinstance(value, str) or not value.endswith("/"):
                raise ValueError("must be a SPIFFE ID ending in /")  # noqa: TRY301
            check_spiffe_id(value.removesuffix("/"))
        except ValueError as error:
            raise ConfigError(f"{self.name}.{key}: {error}") from None
        return value

    def words(self, key: str) -> tuple[str, ...]:
        values = self.data.get(key, [])
        if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
            raise ConfigError(f"{self.name}.{key} must be a list of strings")
        return tuple(values)

    def tls(self, key: str) -> TlsFiles:
        section = self.sub(key)
        return TlsFiles(
            section.path("ca_certificate"), section.path("certificate"), section.path("private_key")
        )


ENVIRONMENT_PREFIX = "LIENTHONG__"


def apply_environment(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """``data`` with every ``LIENTHONG__SECTION__KEY`` variable of ``environ`` applied."""
    for name, text in sorted(environ.items()):
        if not name.startswith(ENVIRONMENT_PREFIX):
            continue
        path = [part.lower() for part in name.removeprefix(ENVIRONMENT_PREFIX).split("__")]
        if not all(path):
            raise ConfigError(f"{name}: empty part in the variable's name")
        table = data
        for part in path[:-1]:
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                raise ConfigError(f"{name}: {part} is not a table in the configuration")
        table[path[-1]] = _value(text)
    return data


def _value(text: str) -> object:
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def _routes(data: dict[str, Any]) -> dict[str, Route]:
    """Each route: ``{ address = "host:port", identity = "spiffe://..." }``.

    The identity is required: the gateway verifies that the upstream's certificate carries it.
    """
    routes: dict[str, Route] = {}
    for service, route in data.items():
        if not isinstance(route, dict) or set(route) != {"address", "identity"}:
            raise ConfigError(
                f"gateway.routes.{service} must be {{ address, identity }}:"
                " every upstream needs an identity"
            )
        if not isinstance(route["address"], str):
            raise ConfigError(f"gateway.routes.{service}.address must be host:port")
        try:
            identity = check_spiffe_id(str(route["identity"]))
        except ValueError as error:
            raise ConfigError(f"gateway.routes.{service}.identity: {error}") from None
        routes[service] = Route(route["address"], identity)
    return routes


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> StackConfig:
    """Read and validate the configuration file at ``path``, with environment overrides."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} not found") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: {error}") from None
    data = apply_environment(data, os.environ if environ is None else environ)
    root = _Section(data, "", path.resolve().parent)
    gateway, justice, police = root.sub("gateway"), root.sub("justice"), root.sub("police")
    return StackConfig(
        source=path,
        pki_directory=root.path("pki_directory"),
        log_directory=root.path("log_directory"),
        gateway=GatewayConfig(
            listen=gateway.text("listen"),
            tls=gateway.tls("tls"),
            upstream_tls=gateway.tls("upstream_tls"),
            policy=gateway.path("policy"),
            routes=_routes(gateway.sub("routes").data),
            audit=AuditConfig(
                database_url=gateway.sub("audit").database_url("database_url"),
                signing_key=gateway.sub("audit").path("signing_key"),
                origin=gateway.sub("audit").data.get("origin", AuditConfig.origin),
                commit_delay=gateway.sub("audit").number(
                    "commit_delay", AuditConfig.commit_delay, minimum=0, maximum=0.1
                ),
            ),
            crls=gateway.paths("crls"),
            metrics_listen=gateway.socket_address("metrics_listen"),
            limits=gateway.limits(),
        ),
        justice=JusticeConfig(
            listen=justice.text("listen"),
            tls=justice.tls("tls"),
            database_url=justice.database_url("database_url"),
            gateway=justice.text("gateway"),
            trusted_callers=justice.identities("trusted_callers"),
            officer_identity_prefix=justice.identity_prefix("officer_identity_prefix"),
            administrators=justice.words("administrators"),
            grace_window_hours=justice.number(
                "grace_window_hours", JusticeConfig.grace_window_hours, minimum=0
            ),
            reconcilers=justice.identities("reconcilers", required=False),
        ),
        police=PoliceConfig(
            listen=police.text("listen"),
            tls=police.tls("tls"),
            database_url=police.database_url("database_url"),
            trusted_callers=police.identities("trusted_callers"),
        ),
        demo_tls=root.sub("demo").tls("tls"),
    )
