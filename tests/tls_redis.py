"""A redis-server that speaks only TLS, with a certificate from a throwaway CA made here, for
the tests that show offsite verifies the broker's certificate."""
from __future__ import annotations

import datetime
import ipaddress
import secrets
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.helpers import RedisServer


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def make_ca_and_server_cert(folder: Path) -> tuple[Path, Path, Path]:
    """(ca.pem, server.pem, server.key): the server's certificate names 127.0.0.1 and
    localhost, signed by the CA."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "offsite test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
                critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_path, cert_path, key_path = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, key_path)
    return ca_path, cert_path, key_path


class TlsRedisServer(RedisServer):
    """Only a TLS port (no plain one), a password; `url` trusts the CA, `untrusted_url` does
    not name it (so the system's trust store, which does not hold it, is used)."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.ca, cert, key = make_ca_and_server_cert(directory)
        self.password = "pw-" + secrets.token_hex(12)
        self.untrusted_url = f"rediss://:{self.password}@127.0.0.1:{self.port}/0"
        self.url = f"{self.untrusted_url}?ssl_ca_certs={self.ca}"
        self.extra_args = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file",
                           str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file",
                           str(self.ca), "--tls-auth-clients", "no",
                           "--requirepass", self.password]
