"""TLS on a service's gRPC port: its certificate chain and key and, with a client CA, mutual
TLS (a client must present a certificate that CA signed, or the handshake fails).

The files are checked again at most every ``keys_reload_s`` when a client connects and, when
their content changed, served from the next handshake on, without a restart (a Kubernetes
Secret or cert-manager renewal swaps them in place); connections already open keep the
certificate they were made with. A new set that does not load (a half-written file, a key that
does not match) is logged and the one in force stays. Files that do not load at start-up stop
the service with a message naming the setting.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc

from avatarflow.contracts.errors import InvalidInput
from avatarflow.runtime.settings import Settings

log = logging.getLogger(__name__)

class CertificateFiles:
    """The PEM files behind a TLS port, and the gRPC certificate configuration they make."""

    def __init__(self, cert: str, key: str, client_ca: str = "", *, check_every_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.paths = {"tls_cert": Path(cert), "tls_key": Path(key)}
        if client_ca:
            self.paths["tls_client_ca"] = Path(client_ca)
        self.check_every_s = check_every_s
        self._clock = clock
        self._lock = threading.Lock()  # gRPC calls fetch() from its own poller threads
        self._next_check = 0.0
        self.config, self._digest = self._load()
        self.reloads = 0

    @property
    def mutual(self) -> bool:
        return "tls_client_ca" in self.paths

    def credentials(self) -> grpc.ServerCredentials:
        """Server credentials that ask ``fetch`` for a newer configuration per handshake."""
        return grpc.dynamic_ssl_server_credentials(
            self.config, self.fetch, require_client_authentication=self.mutual)

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """A new configuration when the files changed since the last one, else None (gRPC's
        certificate-configuration fetcher: None keeps the current one)."""
        with self._lock:
            now = self._clock()
            if now < self._next_check:
                return None
            self._next_check = now + self.check_every_s
            try:
                if self._read()[1] == self._digest:
                    return None
                self.config, self._digest = self._load()
            except InvalidInput as exc:
                log.warning("TLS files changed but do not load, keeping the previous ones: %s",
                            exc.message)
                return None
            self.reloads += 1
            log.info("TLS certificate reloaded from %s", self.paths["tls_cert"])
            return self.config

    def _read(self) -> tuple[dict[str, bytes], str]:
        data: dict[str, bytes] = {}
        for name, path in self.paths.items():
            try:
                data[name] = path.read_bytes()
            except OSError as exc:
                raise InvalidInput(f"{name}: cannot read {path}: {exc.strerror}") from None
        digest = hashlib.sha256(b"\0".join(data.values())).hexdigest()
        return data, digest

    def _load(self) -> tuple[grpc.ServerCertificateConfiguration, str]:
        """Reads and checks the files; the bytes read before and after the check must agree,
        so a set swapped in meanwhile is not half taken (the next handshake tries again)."""
        data, digest = self._read()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(self.paths["tls_cert"], self.paths["tls_key"])
        except (ssl.SSLError, OSError) as exc:
            raise InvalidInput(f"tls_cert/tls_key: {self.paths['tls_cert']} and "
                               f"{self.paths['tls_key']} are not a PEM certificate chain and "
                               f"its private key ({exc})") from None
        if self.mutual:
            try:
                context.load_verify_locations(cadata=data["tls_client_ca"].decode("ascii"))
            except (ssl.SSLError, ValueError) as exc:
                raise InvalidInput(f"tls_client_ca: {self.paths['tls_client_ca']} holds no "
                                   f"PEM CA certificate ({exc})") from None
        if self._read()[1] != digest:
            raise InvalidInput("the TLS files changed while they were read")
        config = grpc.ssl_server_certificate_configuration(
            [(data["tls_key"], data["tls_cert"])],
            root_certificates=data.get("tls_client_ca"))
        return config, digest


def certificate_files(settings: Settings) -> CertificateFiles | None:
    """The service's TLS files, checked now; None when TLS is off (no ``tls_cert``)."""
    if not settings.tls_cert:
        return None
    return CertificateFiles(settings.tls_cert, settings.tls_key, settings.tls_client_ca,
                            check_every_s=settings.keys_reload_s)
