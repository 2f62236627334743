"""TLS (``rediss://``, ``ssl=True``) in the C core, both clients, against real
TLS servers started by the fixtures with certificates they generate: every
method over TLS, large values, auto-pipelining, mutual TLS, and a clear error
for each way it can fail (unknown CA, expired certificate, name mismatch, a
client certificate the server wants, a plain server behind rediss://, a TLS
port behind redis://)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from async_support import Runner, run  # noqa: F401

from redis_cache import ConfigurationError, ConnectionError, RedisCache, SyncRedisCache, TimeoutError
from redis_cache._testing_tls import TLSCertificates
from redis_cache.testing import RedisServer

HANG = 20.0


def tls_options(certs: TLSCertificates, **extra: Any) -> dict[str, Any]:
    return {"ssl": True, "ssl_ca_certs": certs.ca.cert, "connect_wait": 0, **extra}


def exercise_sync(cache: SyncRedisCache) -> None:
    assert cache.ping() is True
    assert cache.set("k", {"a": [1, 2]}) is True
    assert cache.get("k") == {"a": [1, 2]}
    assert cache.set_many({f"m{i}": i for i in range(500)}) is True
    assert cache.get_many([f"m{i}" for i in range(500)]) == {f"m{i}": i for i in range(500)}
    big = "x" * 3_000_000  # many TLS records each way
    assert cache.set("big", big) is True
    assert cache.get("big") == big
    assert cache.incr("n", 5) == 5
    assert cache.delete_many([f"m{i}" for i in range(500)]) == 500
    assert cache.clear_pattern("*") >= 3


async def exercise_async(cache: RedisCache) -> None:
    assert await cache.ping() is True
    assert await cache.set("k", {"a": [1, 2]}) is True
    # Many commands in one loop iteration: one pipelined TLS write.
    results = await asyncio.gather(*(cache.set(f"m{i}", i) for i in range(2000)))
    assert results == [True] * 2000
    got = await asyncio.gather(*(cache.get(f"m{i}") for i in range(2000)))
    assert got == list(range(2000))
    big = "y" * 3_000_000
    assert await cache.set("big", big) is True
    assert await cache.get("big") == big
    assert await cache.get_many(["k", "absent"]) == {"k": {"a": [1, 2]}}
    assert await cache.clear_pattern("*") >= 2002


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_sync_over_tls(tls_only_server: RedisServer, tls_certs: TLSCertificates, host: str) -> None:
    tls_only_server.flushall()
    with SyncRedisCache(host=host, port=tls_only_server.tls_port, **tls_options(tls_certs)) as cache:
        exercise_sync(cache)


def test_async_over_tls(run: Runner, tls_only_server: RedisServer, tls_certs: TLSCertificates) -> None:
    tls_only_server.flushall()

    async def main() -> None:
        async with RedisCache(
            host="localhost", port=tls_only_server.tls_port, **tls_options(tls_certs)
        ) as cache:
            await exercise_async(cache)

    run(main())


def test_rediss_url_and_ca_data(tls_only_server: RedisServer, tls_certs: TLSCertificates) -> None:
    pem = Path(tls_certs.ca.cert).read_text()
    url = f"rediss://localhost:{tls_only_server.tls_port}/0?ssl_ca_certs={tls_certs.ca.cert}"
    with SyncRedisCache.from_url(url) as cache:
        assert cache.ping() is True
    with SyncRedisCache(host="localhost", port=tls_only_server.tls_port, ssl=True, ssl_ca_data=pem) as cache:
        assert cache.ping() is True
    env = {
        "REDIS_HOST": "localhost",
        "REDIS_PORT": str(tls_only_server.tls_port),
        "REDIS_USE_SSL": "true",
        "REDIS_SSL_CA_CERTS": tls_certs.ca.cert,
    }
    with SyncRedisCache.from_env(env) as cache:
        assert cache.ping() is True


def test_mutual_tls(run: Runner, tls_client_auth_server: RedisServer, tls_certs: TLSCertificates) -> None:
    port = tls_client_auth_server.tls_port
    client = {"ssl_certfile": tls_certs.client.cert, "ssl_keyfile": tls_certs.client.key}
    with SyncRedisCache(host="localhost", port=port, **tls_options(tls_certs, **client)) as cache:
        assert cache.ping() is True
    encrypted = {
        "ssl_certfile": tls_certs.client.cert,
        "ssl_keyfile": tls_certs.client_key_encrypted,
        "ssl_password": tls_certs.client_key_passphrase,
    }
    with SyncRedisCache(host="localhost", port=port, **tls_options(tls_certs, **encrypted)) as cache:
        assert cache.ping() is True

    async def main() -> None:
        async with RedisCache(host="localhost", port=port, **tls_options(tls_certs, **client)) as cache:
            assert await cache.set("mtls", 1) is True
            assert await cache.get("mtls") == 1

    run(main())


def test_a_wrong_key_password_is_a_configuration_error(tls_certs: TLSCertificates) -> None:
    with pytest.raises(ConfigurationError, match="client key"):
        SyncRedisCache(
            ssl=True,
            ssl_certfile=tls_certs.client.cert,
            ssl_keyfile=tls_certs.client_key_encrypted,
            ssl_password="not the passphrase",
        )
    with pytest.raises(ConfigurationError, match="does not match"):
        SyncRedisCache(ssl=True, ssl_certfile=tls_certs.client.cert, ssl_keyfile=tls_certs.ca.key)


def both_clients_fail(run: Runner, match: str, **options: Any) -> None:
    """The same failure, with the same words, from both clients."""
    with SyncRedisCache(**options) as cache:
        with pytest.raises((ConnectionError, TimeoutError), match=match):
            cache.ping()

    async def main() -> None:
        async with RedisCache(**options) as cache:
            with pytest.raises((ConnectionError, TimeoutError), match=match):
                await asyncio.wait_for(cache.ping(), HANG)

    run(main())


@pytest.mark.parametrize(
    ("reason", "words"),
    [
        ("wrong_ca", r"not signed by a CA this client trusts \(unknown CA\)"),
        ("expired", r"certificate has expired"),
        ("other_name", r"not issued for 'localhost' \(hostname mismatch\)"),
    ],
)
def test_certificates_that_fail_verification(
    run: Runner, tls_broken_servers: dict[str, RedisServer], tls_certs: TLSCertificates,
    reason: str, words: str,
) -> None:
    server = tls_broken_servers[reason]
    both_clients_fail(run, words, host="localhost", port=server.tls_port, **tls_options(tls_certs))


def test_system_cas_do_not_trust_a_private_ca(run: Runner, tls_only_server: RedisServer) -> None:
    both_clients_fail(
        run, "unknown CA", host="localhost", port=tls_only_server.tls_port, ssl=True, connect_wait=0
    )


def test_hostname_check_can_be_switched_off(
    tls_broken_servers: dict[str, RedisServer], tls_certs: TLSCertificates
) -> None:
    server = tls_broken_servers["other_name"]
    options = tls_options(tls_certs, ssl_check_hostname=False)
    with SyncRedisCache(host="localhost", port=server.tls_port, **options) as cache:
        assert cache.ping() is True


def test_optional_and_none_verification_log_what_is_skipped(
    run: Runner,
    tls_broken_servers: dict[str, RedisServer],
    tls_certs: TLSCertificates,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = tls_broken_servers["wrong_ca"]
    with caplog.at_level(logging.WARNING, logger="redis_cache"):
        with SyncRedisCache(
            host="localhost", port=server.tls_port, **tls_options(tls_certs, ssl_cert_reqs="optional")
        ) as cache:
            assert cache.ping() is True
            assert cache.set("a", 1) is True
        optional = [r.getMessage() for r in caplog.records if "not verified" in r.getMessage()]
        assert len(optional) == 1 and "unknown CA" in optional[0]
        caplog.clear()
        with SyncRedisCache(
            host="localhost", port=server.tls_port, **tls_options(tls_certs, ssl_cert_reqs="none")
        ) as cache:
            assert cache.ping() is True
        none = [r.getMessage() for r in caplog.records if "ssl_cert_reqs='none'" in r.getMessage()]
        assert len(none) == 1

    async def main() -> None:
        async with RedisCache(
            host="localhost", port=server.tls_port, **tls_options(tls_certs, ssl_cert_reqs="optional")
        ) as cache:
            assert await cache.ping() is True

    run(main())


def test_server_wanting_a_client_certificate(
    run: Runner, tls_client_auth_server: RedisServer, tls_certs: TLSCertificates
) -> None:
    # The server's "certificate required" alert, or (when the client's first
    # command crosses it) a reset right after the handshake: either way the
    # message names the client certificate.
    both_clients_fail(
        run,
        "client certificate",
        host="localhost",
        port=tls_client_auth_server.tls_port,
        **tls_options(tls_certs),
    )


def test_plain_server_behind_rediss(run: Runner, redis_server: RedisServer, tls_certs: TLSCertificates) -> None:
    """A plain Redis reads a TLS ClientHello as an unfinished inline command
    and never answers: the handshake times out, and the error says why that
    is likely."""
    both_clients_fail(
        run,
        r"non-TLS port behind a rediss:// URL",
        host="127.0.0.1",
        port=redis_server.port,
        socket_connect_timeout=0.5,
        socket_timeout=0.5,
        **tls_options(tls_certs),
    )


def test_tls_port_behind_redis(run: Runner, tls_only_server: RedisServer) -> None:
    both_clients_fail(
        run,
        r"rediss:// or ssl=True",
        host="127.0.0.1",
        port=tls_only_server.tls_port,
        connect_wait=0,
        socket_timeout=5,
    )


def test_tls_on_a_unix_socket_is_refused(tls_certs: TLSCertificates, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="TCP only"):
        SyncRedisCache(unix_socket_path=str(tmp_path / "r.sock"), **tls_options(tls_certs))


def test_min_version_and_ciphers(tls_only_server: RedisServer, tls_certs: TLSCertificates) -> None:
    options = tls_options(tls_certs, ssl_min_version="TLSv1.3")
    with SyncRedisCache(host="localhost", port=tls_only_server.tls_port, **options) as cache:
        assert cache.ping() is True
    with pytest.raises(ConfigurationError, match="ssl_ciphers"):
        SyncRedisCache(ssl=True, ssl_ciphers="NO-SUCH-CIPHER")
