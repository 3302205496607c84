"""The node's Southbound certificate: issued by the node CA with CN = the chassis name, kept while good."""

from __future__ import annotations

import datetime
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from ovnk.core.node import chassis_tls
from ovnk.core.node.chassis_tls import ChassisCertError
from ovnk.core.node.chassis_tls import ensure_chassis_certificate

NOW = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)


def make_ca(folder: Path, name: str) -> tuple[str, str]:
    """An RSA CA like helm's genCA makes (PKCS#1 key)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(1).not_valid_before(NOW - datetime.timedelta(days=1))
            .not_valid_after(NOW + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "tls.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                       serialization.PrivateFormat.TraditionalOpenSSL,
                                                       serialization.NoEncryption()))
    return str(folder / "tls.crt"), str(folder / "tls.key")


def test_issued_for_the_chassis_signed_by_the_node_ca_and_kept_while_good(tmp_path: Path) -> None:
    ca_cert, ca_key = make_ca(tmp_path / "ca", "node-ca")
    out = str(tmp_path / "out")
    first = ensure_chassis_certificate(ca_cert=ca_cert, ca_key=ca_key, chassis="chassis-7", directory=out, now=NOW)
    assert first.issued
    cert = x509.load_pem_x509_certificate(first.cert.read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "chassis-7"
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(Path(ca_cert).read_bytes()))
    assert stat.S_IMODE(first.key.stat().st_mode) == 0o600
    assert stat.S_IMODE(Path(out).stat().st_mode) == 0o700
    # Again: nothing changes.
    again = ensure_chassis_certificate(ca_cert=ca_cert, ca_key=ca_key, chassis="chassis-7", directory=out, now=NOW)
    assert not again.issued and again.cert.read_bytes() == first.cert.read_bytes()
    # Another chassis name, a new node CA, or the end in sight: issued again.
    other_ca = make_ca(tmp_path / "ca2", "node-ca-2")
    for chassis, ca, now in [("chassis-8", (ca_cert, ca_key), NOW), ("chassis-8", other_ca, NOW),
                             ("chassis-8", other_ca, NOW + chassis_tls.VALIDITY - chassis_tls.RENEW_BEFORE)]:
        renewed = ensure_chassis_certificate(ca_cert=ca[0], ca_key=ca[1], chassis=chassis, directory=out, now=now)
        assert renewed.issued, (chassis, ca, now)


def test_unreadable_ca_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ChassisCertError, match="cannot read the node CA"):
        ensure_chassis_certificate(ca_cert=str(tmp_path / "none.crt"), ca_key=str(tmp_path / "none.key"),
                                   chassis="c", directory=str(tmp_path / "out"))
