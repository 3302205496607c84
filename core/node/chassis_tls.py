"""The node's own certificate for the OVN Southbound database (TLS mode).

OVN's Southbound RBAC role ``ovn-controller`` lets a client change only the
``Chassis``, ``Chassis_Private`` and ``Encap`` rows whose name is the common
name of its certificate (and a few columns of shared tables), so every node
needs a certificate whose CN is its chassis name (``system-id``). The chart
cannot know the nodes in advance; instead each node agent holds the *node CA*
(``[node] chassis-ca-cert`` / ``chassis-ca-key``) and issues its own
certificate at start-up, then points ovn-controller at it through the
node's Open_vSwitch ``SSL`` table (read at run time, no restart).

The node CA signs nothing else, and the Northbound database does not trust it:
a node's certificate reaches the Southbound only, with the ``ovn-controller``
role. Anyone holding the node CA can issue a certificate for any chassis name,
so a compromised node can still pose as another chassis in the Southbound
(what the role allows); it cannot write the Northbound or the Southbound's
logical flows.
"""

from __future__ import annotations

import datetime
import logging
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.oid import NameOID

logger = logging.getLogger(__name__)

VALIDITY = datetime.timedelta(days=365)
#: A certificate closer than this to its end is issued again at the next start.
RENEW_BEFORE = datetime.timedelta(days=30)
KEY_FILE = "chassis.key"
CERT_FILE = "chassis.crt"


class ChassisCertError(Exception):
    """The node CA cannot be read or the certificate cannot be written; the message says which."""


@dataclass(frozen=True)
class ChassisCertificate:
    key: Path
    cert: Path
    issued: bool  # False when the existing one was still good


def ensure_chassis_certificate(*, ca_cert: str, ca_key: str, chassis: str, directory: str,
                               now: datetime.datetime | None = None) -> ChassisCertificate:
    """A key and certificate with CN ``chassis`` signed by the node CA, in ``directory``.

    The existing pair is kept while it names ``chassis``, was signed by this CA and is not within
    :data:`RENEW_BEFORE` of its end; otherwise a new key and certificate replace it.
    """
    now = now or datetime.datetime.now(datetime.UTC)
    try:
        authority = x509.load_pem_x509_certificate(Path(ca_cert).read_bytes())
        authority_key = serialization.load_pem_private_key(Path(ca_key).read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise ChassisCertError(f"cannot read the node CA {ca_cert} / {ca_key}: {exc}") from exc
    if not isinstance(authority_key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ChassisCertError(f"the node CA key {ca_key} is neither RSA nor EC")
    folder = Path(directory)
    key_path, cert_path = folder / KEY_FILE, folder / CERT_FILE
    if _still_good(cert_path, key_path, authority=authority, chassis=chassis, now=now):
        return ChassisCertificate(key=key_path, cert=cert_path, issued=False)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, chassis)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(authority.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # clocks of the node and the servers differ
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(authority_key, hashes.SHA256())
    )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        _write(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()), mode=0o600)
        _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    except OSError as exc:
        raise ChassisCertError(f"cannot write the chassis certificate into {folder}: {exc}") from exc
    logger.info("issued the chassis certificate %s for CN %s (node CA %s), valid until %s", cert_path, chassis,
                authority.subject.rfc4514_string(), cert.not_valid_after_utc.date())
    return ChassisCertificate(key=key_path, cert=cert_path, issued=True)


def configure_ovn_controller_ssl(*, ovs_address: str, key: Path, cert: Path, ca_cert: str) -> None:
    """Point ovn-controller at the chassis certificate: the Open_vSwitch ``SSL`` row (``ovs-vsctl
    set-ssl``), which it reads at run time. Once per start, not per pod, so a tool run is fine."""
    argv = ["ovs-vsctl", f"--db={ovs_address}", "--timeout=30", "--no-wait", "set-ssl", str(key), str(cert), ca_cert]
    try:
        subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", "") or exc
        raise ChassisCertError(f"ovs-vsctl set-ssl failed: {detail}") from exc


def _still_good(cert_path: Path, key_path: Path, *, authority: x509.Certificate, chassis: str,
                now: datetime.datetime) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError):
        return False
    names = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    matching_key = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) == cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        cert.verify_directly_issued_by(authority)
        signed_here = True
    except (InvalidSignature, ValueError, TypeError):
        signed_here = False
    return (names == [chassis] and matching_key and signed_here
            and cert.not_valid_after_utc - RENEW_BEFORE > now)


def _write(path: Path, data: bytes, *, mode: int) -> None:
    """Write atomically (a reader never sees half a key) with ``mode`` from the start."""
    partial = path.with_name(path.name + ".new")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(partial, mode)
    os.replace(partial, path)
