"""TLS on the realm's client port (Python ssl and `openssl s_client` speak the text protocol over
it) and TLS / mTLS between realms and main (grpcurl with -cacert, and -cert/-key for mTLS). The
tests make their own CA and certificates with the openssl CLI."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .hardutil import add_realm
from .stack import Stack, start_stack
from .textclient import TextClient

OPENSSL = shutil.which("openssl")
GRPCURL = str(Path(sys.executable).parent / "grpcurl")
CHEAP = ("--argon2-time-cost", "1", "--argon2-memory-kib", "8192")
Names = Callable[[str], str]

pytestmark = pytest.mark.skipif(OPENSSL is None, reason="needs the openssl CLI")


def _run(*args: str, cwd: Path) -> None:
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _leaf(d: Path, name: str, usage: str) -> None:
    (d / f"{name}.ext").write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        f"extendedKeyUsage={usage}\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _run("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
    _run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
         "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=d)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ca.pem; server.pem/key (localhost, 127.0.0.1); client.pem/key (clientAuth); and a second,
    unrelated CA (other-ca.pem) whose certificates nobody trusts."""
    d = tmp_path_factory.mktemp("certs")
    for ca in ("ca", "other-ca"):
        _run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-days", "2", "-subj", f"/CN=realmchat test {ca}",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             cwd=d)
    _leaf(d, "server", "serverAuth")
    _leaf(d, "client", "clientAuth")
    return d


async def tls_connect(host: str, port: int, ca: Path) -> TextClient:
    ctx = ssl.create_default_context(cafile=str(ca))
    reader, writer = await asyncio.open_connection(host, port, ssl=ctx, server_hostname="localhost",
                                                   limit=1 << 24)
    c = TextClient(reader, writer)
    c.hello = json.loads(await asyncio.wait_for(reader.readline(), 10))
    assert c.hello["event"] == "hello"
    return c


def grpcurl(addr: str, *args: str) -> subprocess.CompletedProcess[str]:
    # a short connect timeout: a refused handshake is retried until it expires (10 s by default)
    return subprocess.run([GRPCURL, "-connect-timeout", "3", *args, addr, "list"], capture_output=True, text=True,
                          timeout=30)


# ---- the realm's client port -------------------------------------------------------------

@pytest.fixture(scope="module")
def tls_realm_stack(certs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = start_stack(tmp_path_factory.mktemp("data"), realms=("secure",), main_extra=CHEAP,
                    realm_extra=("--tls-cert", str(certs / "server.pem"), "--tls-key", str(certs / "server.key")))
    yield s
    s.stop()


async def test_text_protocol_over_tls(tls_realm_stack: Stack, certs: Path, uname: Names) -> None:
    host, port = tls_realm_stack.realm("secure")
    a, b = uname("tls_a"), uname("tls_b")
    ca, cb = await tls_connect(host, port, certs / "ca.pem"), await tls_connect(host, port, certs / "ca.pem")
    for c, u in ((ca, a), (cb, b)):
        await c.ok(f"register {u} pw-secret")
        await c.ok(f"auth {u} pw-secret")
    await ca.ok(f"sendprivate {b} over tls")
    assert (await cb.event())["text"] == "over tls"
    await ca.send_raw(f"sendfile {b} t.bin 4\n\x00\n\xff\r".encode("latin-1"))
    fid = (await ca.response())["id"]
    assert (await cb.event())["id"] == fid
    head = await cb.ok(f"receivefile {fid}")
    assert await cb.read_exactly(head["size"]) == b"\x00\n\xff\r"
    await cb.ok("ping")


async def test_untrusted_or_plaintext_clients_get_nothing(tls_realm_stack: Stack, certs: Path) -> None:
    host, port = tls_realm_stack.realm("secure")
    with pytest.raises(ssl.SSLError):
        await tls_connect(host, port, certs / "other-ca.pem")  # the client does not trust the realm
    reader, writer = await asyncio.open_connection(host, port)  # plaintext on a TLS port
    writer.write(b"ping\n")
    data = await asyncio.wait_for(reader.read(1000), 10)
    assert b"pong" not in data and b"hello" not in data
    writer.close()
    c = await tls_connect(host, port, certs / "ca.pem")  # the realm is fine
    await c.ok("ping")


def test_openssl_s_client_speaks_to_the_realm(tls_realm_stack: Stack, certs: Path) -> None:
    host, port = tls_realm_stack.realm("secure")
    assert OPENSSL is not None
    r = subprocess.run([OPENSSL, "s_client", "-connect", f"{host}:{port}", "-CAfile", str(certs / "ca.pem"),
                        "-verify_return_error", "-verify_hostname", "localhost", "-quiet"],
                       input="ping\nquit\n", capture_output=True, text=True, timeout=30)
    lines = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    assert lines[0] == {"event": "hello", "realm": "secure", "protocol": 2}, r.stdout + r.stderr
    assert lines[1] == {"status": "OK", "pong": True}
    assert lines[2] == {"status": "OK", "bye": True}


# ---- realm <-> main ----------------------------------------------------------------------

async def test_tls_between_realms_and_main(certs: Path, tmp_path: Path, uname: Names) -> None:
    main_tls = ("--tls-cert", str(certs / "server.pem"), "--tls-key", str(certs / "server.key"))
    s = start_stack(tmp_path / "data", main_extra=(*CHEAP, *main_tls),
                    realm_extra=("--main-ca", str(certs / "ca.pem")))
    try:
        a, b = uname("mt_a"), uname("mt_b")
        ca = await TextClient.connect(*s.realm("alpha"))
        cb = await TextClient.connect(*s.realm("beta"))
        for c, u in ((ca, a), (cb, b)):
            await c.ok(f"register {u} pw-secret")
            await c.ok(f"auth {u} pw-secret")
        await ca.ok(f"sendprivate {b} across realms over tls")
        assert (await cb.event())["text"] == "across realms over tls"
        # grpcurl: with the CA it lists the services; plaintext or an unknown CA does not get in
        r = grpcurl(s.main.addr, "-cacert", str(certs / "ca.pem"))
        assert r.returncode == 0 and "chat.v1.Chat" in r.stdout, r.stderr
        assert grpcurl(s.main.addr, "-plaintext").returncode != 0
        assert grpcurl(s.main.addr, "-cacert", str(certs / "other-ca.pem")).returncode != 0
        # a realm that does not speak TLS to main cannot work through it
        plain = add_realm(s, "plain")
        cp = await TextClient.connect(plain.host, plain.port)
        r2 = await cp.cmd(f"register {uname('mt_p')} pw-secret")
        assert r2["code"] == "UNAVAILABLE", r2
        await cp.ok("ping")
    finally:
        s.stop()


async def test_mtls_between_realms_and_main(certs: Path, tmp_path: Path, uname: Names) -> None:
    main_mtls = ("--tls-cert", str(certs / "server.pem"), "--tls-key", str(certs / "server.key"),
                 "--tls-ca", str(certs / "ca.pem"))
    s = start_stack(tmp_path / "data", realms=("alpha",), main_extra=(*CHEAP, *main_mtls),
                    realm_extra=("--main-ca", str(certs / "ca.pem"), "--main-cert", str(certs / "client.pem"),
                                 "--main-key", str(certs / "client.key")))
    try:
        c = await TextClient.connect(*s.realm("alpha"))
        u = uname("mtls")
        await c.ok(f"register {u} pw-secret")
        await c.ok(f"auth {u} pw-secret")
        await c.ok("who")
        # a realm without a client certificate is refused by main
        nocert = add_realm(s, "nocert", "--main-ca", str(certs / "ca.pem"))
        cn = await TextClient.connect(nocert.host, nocert.port)
        assert (await cn.cmd(f"register {uname('mtls_x')} pw-secret"))["code"] == "UNAVAILABLE"
        # grpcurl needs the client certificate too
        assert grpcurl(s.main.addr, "-cacert", str(certs / "ca.pem")).returncode != 0
        r = grpcurl(s.main.addr, "-cacert", str(certs / "ca.pem"), "-cert", str(certs / "client.pem"),
                    "-key", str(certs / "client.key"))
        assert r.returncode == 0 and "chat.v1.Chat" in r.stdout, r.stderr
    finally:
        s.stop()
