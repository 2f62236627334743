"""Certificates and TLS settings for tests: a private CA and what it signs.

:func:`generate_tls_certificates` writes a complete, throw-away PKI into a
directory with the ``openssl`` command-line tool (present wherever OpenSSL
is; no Python dependency): a CA, the certificates a TLS test needs, and the
broken ones a TLS client must refuse.  Keys are EC P-256, so generating the
whole set takes a fraction of a second.

What is deterministic: file names, subjects, subject alternative names,
extensions, serial numbers and the expired certificate's dates.  Keys and
signatures are fresh on every call, as they must be.

:class:`TLSSettings` is what :class:`redis_cache.testing.RedisServer` takes
to listen on a TLS port; :meth:`TLSCertificates.server_tls` builds one.

Imported by :mod:`redis_cache.testing`, which re-exports the public names.
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "CertificateAndKey",
    "TLSCertificates",
    "TLSSettings",
    "find_openssl",
    "generate_tls_certificates",
]

AuthClients = Literal["yes", "no", "optional"]

#: Names in the server certificate: what a client on this machine dials.
SERVER_DNS_NAMES = ("localhost",)
SERVER_IP_ADDRESSES = ("127.0.0.1", "::1")
#: The only name in the hostname-mismatch certificate.
OTHER_NAME = "other.example"
#: Passphrase of :attr:`TLSCertificates.client_key_encrypted`.
CLIENT_KEY_PASSPHRASE = "redis-cache-test-passphrase"
#: Validity window of the expired certificate (UTCTime, both in the past).
EXPIRED_NOT_BEFORE = "200101000000Z"
EXPIRED_NOT_AFTER = "200102000000Z"
#: Validity of every other certificate, in days from now.
VALID_DAYS = 3650

_ORGANIZATION = "redis_cache tests"


@dataclass(frozen=True)
class CertificateAndKey:
    """Paths of a PEM certificate and its unencrypted PEM private key."""

    cert: str
    key: str


@dataclass(frozen=True)
class TLSSettings:
    """The TLS side of one ``redis-server``; paths are PEM files.

    ``cert_file``/``key_file`` are what the server presents; ``ca_cert_file``
    is what it trusts for client certificates (and for the servers it
    connects to: primaries, sentinels).  ``client_cert_file`` and
    ``client_key_file`` are presented when the server itself connects out
    (``tls-client-cert-file``: replication, Sentinel) and by the test
    harness's own TLS connections (:meth:`ssl_context`, ``redis-cli``).
    """

    cert_file: str
    key_file: str
    ca_cert_file: str
    auth_clients: AuthClients = "no"
    client_cert_file: str | None = None
    client_key_file: str | None = None

    def __post_init__(self) -> None:
        if self.auth_clients not in ("yes", "no", "optional"):
            raise ValueError(
                f"auth_clients must be 'yes', 'no' or 'optional', not {self.auth_clients!r}"
            )
        if (self.client_cert_file is None) != (self.client_key_file is None):
            raise ValueError("client_cert_file and client_key_file go together")

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that verifies this server (host name included)
        and presents the client certificate when there is one."""
        context = ssl.create_default_context(cafile=self.ca_cert_file)
        if self.client_cert_file is not None:
            context.load_cert_chain(self.client_cert_file, self.client_key_file)
        return context


@dataclass(frozen=True)
class TLSCertificates:
    """Everything :func:`generate_tls_certificates` wrote, as paths.

    ``server`` is valid for ``localhost``, ``127.0.0.1`` and ``::1`` and
    signed by ``ca``; ``client`` is signed by ``ca`` for client
    authentication.  The rest exist to be refused: ``wrong_ca_server`` (and
    ``wrong_ca_client``) are signed by ``wrong_ca``, a CA nobody trusts;
    ``expired_server`` was valid for one day in 2020; ``other_name_server``
    is signed by ``ca`` but names only ``other.example``.
    ``client_key_encrypted`` is ``client``'s key under
    ``client_key_passphrase``.
    """

    directory: str
    ca: CertificateAndKey
    server: CertificateAndKey
    client: CertificateAndKey
    client_key_encrypted: str
    client_key_passphrase: str
    wrong_ca: CertificateAndKey
    wrong_ca_server: CertificateAndKey
    wrong_ca_client: CertificateAndKey
    expired_server: CertificateAndKey
    other_name_server: CertificateAndKey

    def server_tls(
        self,
        server: CertificateAndKey | None = None,
        *,
        auth_clients: AuthClients = "no",
    ) -> TLSSettings:
        """Settings for a server presenting ``server`` (default: the valid
        one), trusting ``ca``, and connecting out with ``client``."""
        chosen = server or self.server
        return TLSSettings(
            cert_file=chosen.cert,
            key_file=chosen.key,
            ca_cert_file=self.ca.cert,
            auth_clients=auth_clients,
            client_cert_file=self.client.cert,
            client_key_file=self.client.key,
        )

    def client_context(
        self, *, client: CertificateAndKey | None = None, ca: CertificateAndKey | None = None
    ) -> ssl.SSLContext:
        """A Python client context trusting ``ca`` (default: the good CA),
        presenting ``client`` when given, checking host names."""
        context = ssl.create_default_context(cafile=(ca or self.ca).cert)
        if client is not None:
            context.load_cert_chain(client.cert, client.key)
        return context


def find_openssl() -> str | None:
    """Locate the ``openssl`` command-line tool."""
    return shutil.which("openssl") or (
        "/usr/bin/openssl" if os.access("/usr/bin/openssl", os.X_OK) else None
    )


class _OpenSSL:
    """Runs ``openssl`` subcommands inside one directory, failing loudly."""

    def __init__(self, directory: str) -> None:
        executable = find_openssl()
        if executable is None:
            raise RuntimeError("the openssl command-line tool is needed to make test certificates")
        self.executable = executable
        self.directory = directory

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def run(self, *args: str) -> None:
        result = subprocess.run(
            [self.executable, *args],
            cwd=self.directory,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"openssl {args[0]} failed ({result.returncode}):\n{result.stderr}{result.stdout}"
            )

    def new_key(self, name: str) -> str:
        path = self.path(name)
        self.run(
            "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path
        )
        os.chmod(path, 0o600)
        return path


# Extensions for every certificate the CAs sign, and the CA database settings.
# One file per CA: "openssl ca" keeps its index and serial next to it.
_CA_CONFIG = """\
[ req ]
distinguished_name = dn
prompt = no
[ dn ]
CN = unused
[ ca ]
default_ca = this_ca
[ this_ca ]
dir = {dir}
database = $dir/index.txt
new_certs_dir = $dir/issued
serial = $dir/serial
default_md = sha256
policy = any_name
unique_subject = no
copy_extensions = none
email_in_dn = no
[ any_name ]
organizationName = optional
commonName = supplied
[ ca_root ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[ server_cert ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = {server_names}
[ other_name_cert ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = DNS:{other_name}
[ client_cert ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


class _CertificateAuthority:
    """One CA: its key, self-signed certificate and ``openssl ca`` database."""

    def __init__(self, openssl: _OpenSSL, name: str, common_name: str) -> None:
        self.openssl = openssl
        self.name = name
        self.db_dir = openssl.path(f"{name}-db")
        os.makedirs(os.path.join(self.db_dir, "issued"))
        with open(os.path.join(self.db_dir, "index.txt"), "w", encoding="ascii"):
            pass
        with open(os.path.join(self.db_dir, "serial"), "w", encoding="ascii") as fh:
            fh.write("1000\n")  # serials 1000, 1001, ... in signing order
        server_names = ", ".join(
            [f"DNS:{name}" for name in SERVER_DNS_NAMES]
            + [f"IP:{address}" for address in SERVER_IP_ADDRESSES]
        )
        self.config = os.path.join(self.db_dir, "openssl.cnf")
        with open(self.config, "w", encoding="ascii") as fh:
            fh.write(
                _CA_CONFIG.format(
                    dir=self.db_dir, server_names=server_names, other_name=OTHER_NAME
                )
            )
        key = openssl.new_key(f"{name}.key")
        cert = openssl.path(f"{name}.crt")
        openssl.run(
            "req", "-config", self.config, "-new", "-x509", "-key", key,
            "-subj", _subject(common_name), "-days", str(VALID_DAYS), "-sha256",
            "-set_serial", "1", "-extensions", "ca_root", "-out", cert,
        )
        self.pair = CertificateAndKey(cert=cert, key=key)

    def issue(
        self,
        name: str,
        common_name: str,
        extensions: str,
        *,
        dates: tuple[str, str] | None = None,
    ) -> CertificateAndKey:
        """Sign a new key as ``<name>.crt`` / ``<name>.key``.

        ``dates`` is ``(not_before, not_after)``; by default the certificate
        is valid from now for :data:`VALID_DAYS`.
        """
        key = self.openssl.new_key(f"{name}.key")
        request = os.path.join(self.db_dir, f"{name}.csr")
        self.openssl.run(
            "req", "-config", self.config, "-new", "-key", key,
            "-subj", _subject(common_name), "-out", request,
        )
        cert = self.openssl.path(f"{name}.crt")
        validity = (
            ["-startdate", dates[0], "-enddate", dates[1]]
            if dates is not None
            else ["-days", str(VALID_DAYS)]
        )
        self.openssl.run(
            "ca", "-batch", "-config", self.config, "-name", "this_ca",
            "-cert", self.pair.cert, "-keyfile", self.pair.key,
            "-extensions", extensions, *validity, "-notext",
            "-in", request, "-out", cert,
        )
        return CertificateAndKey(cert=cert, key=key)


def _subject(common_name: str) -> str:
    return f"/O={_ORGANIZATION}/CN={common_name}"


def generate_tls_certificates(directory: str | os.PathLike[str]) -> TLSCertificates:
    """Write a test CA, the certificates TLS tests need, and broken ones.

    ``directory`` must exist and should be private to the caller (keys are
    written unencrypted, mode 0600).  Files (all PEM)::

        ca.crt ca.key                             the CA everything good chains to
        server.crt server.key                     CN=localhost; DNS:localhost, IP:127.0.0.1, IP:::1
        client.crt client.key                     CN=redis_cache test client (clientAuth)
        client-encrypted.key                      client.key under CLIENT_KEY_PASSPHRASE
        wrong-ca.crt wrong-ca.key                 an unrelated CA
        wrong-ca-server.crt wrong-ca-server.key   like server.crt, signed by wrong-ca
        wrong-ca-client.crt wrong-ca-client.key   like client.crt, signed by wrong-ca
        expired-server.crt expired-server.key     like server.crt, valid 2020-01-01..02 only
        other-name-server.crt ...key              signed by ca, for DNS:other.example only

    plus ``ca-db/`` and ``wrong-ca-db/`` (the ``openssl ca`` bookkeeping).
    """
    directory = os.fspath(directory)
    openssl = _OpenSSL(directory)
    ca = _CertificateAuthority(openssl, "ca", "redis_cache test CA")
    wrong_ca = _CertificateAuthority(openssl, "wrong-ca", "redis_cache wrong CA")

    server = ca.issue("server", "localhost", "server_cert")
    client = ca.issue("client", "redis_cache test client", "client_cert")
    expired = ca.issue(
        "expired-server",
        "localhost",
        "server_cert",
        dates=(EXPIRED_NOT_BEFORE, EXPIRED_NOT_AFTER),
    )
    other_name = ca.issue("other-name-server", OTHER_NAME, "other_name_cert")
    wrong_ca_server = wrong_ca.issue("wrong-ca-server", "localhost", "server_cert")
    wrong_ca_client = wrong_ca.issue("wrong-ca-client", "redis_cache test client", "client_cert")

    encrypted_key = openssl.path("client-encrypted.key")
    openssl.run(
        "pkey", "-in", client.key, "-aes-256-cbc",
        "-passout", f"pass:{CLIENT_KEY_PASSPHRASE}", "-out", encrypted_key,
    )
    os.chmod(encrypted_key, 0o600)

    return TLSCertificates(
        directory=directory,
        ca=ca.pair,
        server=server,
        client=client,
        client_key_encrypted=encrypted_key,
        client_key_passphrase=CLIENT_KEY_PASSPHRASE,
        wrong_ca=wrong_ca.pair,
        wrong_ca_server=wrong_ca_server,
        wrong_ca_client=wrong_ca_client,
        expired_server=expired,
        other_name_server=other_name,
    )
