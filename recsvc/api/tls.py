"""Binding the gRPC port: plaintext, TLS, or mutual TLS, with certificates reloaded on change.

``add_port(server, address, settings)`` is the one place both server models (grpc.aio and the
sync one) bind their port. With ``RECSVC_TLS_CERT_FILE`` and ``RECSVC_TLS_KEY_FILE`` the port
speaks TLS; with ``RECSVC_TLS_CLIENT_CA_FILE`` too, every client must present a certificate
signed by that CA (mutual TLS). grpc calls our fetcher before each new connection's handshake:
it compares the files' modification times and hands grpc new certificates when they changed,
so a renewed certificate (cert-manager, certbot) is used without a restart. A renewal caught
half-written (key and certificate not matching yet) keeps the previous pair until both agree.
"""

from __future__ import annotations

import logging
import os
import ssl
from typing import Any

import grpc

from recsvc.core.config import Settings
from recsvc.core.errors import RecsvcError

log = logging.getLogger(__name__)


class CertificateFiles:
    """The server's PEM files and the certificate configuration grpc asks for."""

    def __init__(self, cert: str, key: str, client_ca: str) -> None:
        self.paths = tuple(p for p in (cert, key, client_ca) if p)
        self.cert, self.key, self.client_ca = cert, key, client_ca
        try:
            self._stamp = self._mtimes()
        except OSError as exc:
            raise RecsvcError(f"TLS file {exc.filename}: {exc.strerror}") from None
        self.initial = self._configuration(first=True)

    def _mtimes(self) -> tuple[float, ...]:
        return tuple(os.stat(path).st_mtime for path in self.paths)

    def _configuration(self, first: bool = False) -> Any:
        try:
            cert, key = _read(self.cert), _read(self.key)
            client_ca = _read(self.client_ca) if self.client_ca else None
            _check_pair(self.cert, self.key)
        except (OSError, ssl.SSLError) as exc:
            if first:
                raise RecsvcError(f"TLS files unusable: {exc}") from exc
            log.warning("TLS certificate change not applied yet", extra={"cause": str(exc)})
            return None
        return grpc.ssl_server_certificate_configuration([(key, cert)], client_ca)

    def fetch(self) -> Any:
        """grpc's certificate-configuration fetcher: a new configuration, or None (no change)."""
        try:
            stamp = self._mtimes()
        except OSError:
            return None
        if stamp == self._stamp:
            return None
        configuration = self._configuration()
        if configuration is not None:
            self._stamp = stamp
            log.info("TLS certificates reloaded", extra={"files": list(self.paths)})
        return configuration


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials from the settings' files, or None for plaintext."""
    if not (settings.tls_cert_file or settings.tls_key_file):
        if settings.tls_client_ca_file:
            raise RecsvcError("RECSVC_TLS_CLIENT_CA_FILE needs RECSVC_TLS_CERT_FILE and "
                              "RECSVC_TLS_KEY_FILE (mutual TLS is TLS first)")
        return None
    if not (settings.tls_cert_file and settings.tls_key_file):
        raise RecsvcError("TLS needs both RECSVC_TLS_CERT_FILE and RECSVC_TLS_KEY_FILE")
    files = CertificateFiles(settings.tls_cert_file, settings.tls_key_file,
                             settings.tls_client_ca_file)
    return grpc.dynamic_ssl_server_credentials(
        files.initial, files.fetch,
        require_client_authentication=bool(settings.tls_client_ca_file))


def add_port(server: Any, address: str, settings: Settings) -> int:
    """Bind ``address`` on a grpc or grpc.aio server, with TLS when configured; the bound port."""
    credentials = server_credentials(settings)
    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    if port == 0:
        raise OSError(f"cannot bind {address}")
    return int(port)


def _read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def _check_pair(cert: str, key: str) -> None:
    """Raises ssl.SSLError when the key does not belong to the certificate."""
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
