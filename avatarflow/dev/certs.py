"""Certificates for trying and testing TLS locally: a CA, a server certificate for this host
(127.0.0.1, ::1, localhost), a client certificate the CA signed and one a second, untrusted CA
signed (a client that mutual TLS must turn away). ECDSA P-256 keys, PEM files.

``python -m avatarflow.dev.certs DIR`` writes them for ``avatarflow up --tls-cert ...`` and
``avatarflow client --tls --ca ...``; never use them outside this machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from avatarflow.contracts.errors import MissingExtra

try:  # a dev dependency: only tests, benchmarks and local trials make certificates
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
except ModuleNotFoundError as exc:  # pragma: no cover - dev extra
    raise MissingExtra("cryptography", "dev") from exc

HOSTS = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class Pair:
    """A certificate (chain) and its private key, as PEM files."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class Certs:
    ca: Path  # the CA that signed ``server`` and ``client``
    server: Pair
    client: Pair
    other_ca: Path  # a second CA: signed ``stranger``, trusted by nobody here
    stranger: Pair


def write(directory: str | Path, *, hosts: Sequence[str] = HOSTS, prefix: str = "",
          days: int = 30) -> Certs:
    """Writes a fresh set under ``directory`` (``prefix`` keeps several sets apart)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    ca = _Authority(f"{prefix}avatarflow test CA", days)
    other = _Authority(f"{prefix}avatarflow other CA", days)
    return Certs(
        ca=ca.save_cert(out / f"{prefix}ca.pem"),
        server=ca.issue(out, f"{prefix}server", hosts, server=True),
        client=ca.issue(out, f"{prefix}client", (), server=False),
        other_ca=other.save_cert(out / f"{prefix}other-ca.pem"),
        stranger=other.issue(out, f"{prefix}stranger", (), server=False))


class _Authority:
    """A self-signed CA that issues leaf certificates."""

    def __init__(self, name: str, days: int) -> None:
        self.days = days
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        usage = x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                              content_commitment=False, key_encipherment=False,
                              data_encipherment=False, key_agreement=False,
                              encipher_only=False, decipher_only=False)
        self.cert = (self._builder(self.name, self.key.public_key())
                     .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                     .add_extension(usage, critical=True)
                     .sign(self.key, hashes.SHA256()))

    def _builder(self, subject: x509.Name,
                 public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
        now = dt.datetime.now(dt.UTC)
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(self.name)
                .public_key(public_key).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5))
                .not_valid_after(now + dt.timedelta(days=self.days)))

    def save_cert(self, path: Path) -> Path:
        path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        return path

    def issue(self, out: Path, name: str, hosts: Sequence[str], *, server: bool) -> Pair:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = self._builder(subject, key.public_key()).add_extension(
            x509.ExtendedKeyUsage([usage]), critical=False)
        if hosts:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [_general_name(h) for h in hosts]), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        pair = Pair(out / f"{name}.pem", out / f"{name}.key")
        pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        pair.key.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        pair.key.chmod(0o600)
        return pair


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m avatarflow.dev.certs", description=__doc__)
    p.add_argument("directory")
    p.add_argument("--host", action="append", help="a name or address the server certificate "
                   f"covers (repeat; default {', '.join(HOSTS)})")
    args = p.parse_args(argv)
    certs = write(args.directory, hosts=args.host or HOSTS)
    print(f"CA {certs.ca}\nserver {certs.server.cert} {certs.server.key}\n"
          f"client {certs.client.cert} {certs.client.key}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
