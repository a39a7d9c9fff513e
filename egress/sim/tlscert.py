"""Self-signed TLS certificates made at run time, for the emulators' TLS variants (tests only).

`self_signed(common_name, directory)` writes cert.pem/key.pem (an ECDSA P-256 key,
valid one day, the name as CN and DNS SAN) with the `cryptography` package, or with
the `openssl req` command when that package is missing. `server_context(name)` and
`client_context()` build ssl contexts; the client context does not verify (the
emulated pool is self-signed), which is fine for loopback/netns tests and nothing else.
"""
from __future__ import annotations

import datetime
import ssl
import subprocess
import tempfile
from pathlib import Path


def self_signed(common_name: str = "pool.test", directory: str | Path | None = None) -> tuple[Path, Path]:
    """(cert_path, key_path) of a fresh self-signed certificate for `common_name`."""
    directory = Path(directory or tempfile.mkdtemp(prefix="egress-sim-tls-"))
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    try:
        _with_cryptography(common_name, cert_path, key_path)
    except ImportError:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-days", "1", "-subj", "/CN=%s" % common_name,
                        "-addext", "subjectAltName=DNS:%s" % common_name,
                        "-keyout", str(key_path), "-out", str(cert_path)],
                       check=True, capture_output=True, timeout=30)
    return cert_path, key_path


def _with_cryptography(common_name: str, cert_path: Path, key_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name)]), critical=False)
            .sign(key, hashes.SHA256()))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def server_context(common_name: str = "pool.test", directory: str | Path | None = None) -> ssl.SSLContext:
    cert_path, key_path = self_signed(common_name, directory)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_path, key_path)
    return ctx


def client_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx
