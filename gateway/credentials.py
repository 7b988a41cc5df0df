"""TLS material that can be replaced on disk while the gateway runs.

The server leg uses grpc.dynamic_ssl_server_credentials: each new connection asks for the
certificate configuration, and gets a fresh one when the files changed. The upstream leg
builds new channels when its files change; calls already running finish on the old ones.
"""

from __future__ import annotations

import threading

import grpc
import structlog

from lienthong.tls import TlsFiles, TlsMaterial, secure_channel
from lienthong.watch import FileWatch

log = structlog.get_logger(__name__)


def _configuration(material: TlsMaterial) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(material.private_key, material.certificate)], root_certificates=material.ca_certificate
    )


def rotating_server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """Server credentials that require client certificates and follow ``files`` on disk."""
    watch = FileWatch([files.ca_certificate, files.certificate, files.private_key])

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        if not watch.changed():
            return None  # keep the configuration in force
        try:
            configuration = _configuration(files.read())
        except OSError as error:
            log.error(  # noqa: TRY400 - an expected failure: the reason, not a traceback
                "server_credentials_reload_failed", error=str(error)
            )
            return None
        log.info("server_credentials_reloaded", certificate=str(files.certificate))
        return configuration

    return grpc.dynamic_ssl_server_credentials(
        _configuration(files.read()),
        fetch,  # type: ignore[arg-type]  # grpc documents None as "unchanged"; grpc-stubs omits it
        require_client_authentication=True,
    )


class Upstreams:
    """One mTLS channel per upstream address, rebuilt when the client credentials change."""

    def __init__(
        self,
        routes: dict[str, str],
        files: TlsFiles,
        options: list[tuple[str, str | int]] | None = None,
    ) -> None:
        """``routes`` maps a service's full name to the address of its upstream."""
        self._routes = dict(routes)
        self._files = files
        self._options = options or []
        self._watch = FileWatch([files.ca_certificate, files.certificate, files.private_key])
        self._lock = threading.Lock()
        self._retired: list[grpc.Channel] = []
        self._channels = self._connect(files.read())

    def _connect(self, material: TlsMaterial) -> dict[str, grpc.Channel]:
        addresses = set(self._routes.values())
        return {
            address: secure_channel(address, material, options=self._options)
            for address in addresses
        }

    def services(self) -> dict[str, str]:
        """Every routed service and its upstream address."""
        return dict(self._routes)

    def for_service(self, service: str) -> tuple[str, grpc.Channel] | None:
        """The address and channel of the service's upstream, or None when unrouted."""
        address = self._routes.get(service)
        if address is None:
            return None
        if self._watch.changed():
            self._rotate()
        with self._lock:
            return address, self._channels[address]

    def _rotate(self) -> None:
        try:
            channels = self._connect(self._files.read())
        except OSError as error:
            log.error(  # noqa: TRY400 - an expected failure: the reason, not a traceback
                "upstream_credentials_reload_failed", error=str(error)
            )
            return
        with self._lock:
            # Closing the old channels now would cancel the calls still running on them.
            self._retired.extend(self._channels.values())
            self._channels = channels
        log.info("upstream_credentials_reloaded", certificate=str(self._files.certificate))

    def close(self) -> None:
        """Close every channel, current and retired."""
        with self._lock:
            for channel in [*self._channels.values(), *self._retired]:
                channel.close()
