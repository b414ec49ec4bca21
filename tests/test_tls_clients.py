"""The clients over TLS to a real realm that serves it (certificates made by tests/test_tls.py's
fixtures with the openssl CLI): chat_cli with --ca / --tls, and the GUI's controller with the
same context. The realm's certificate is verified; an untrusted one is refused."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from chat_cli import ChatClient
from chat_cli.tls import client_context
from gui.controller import ChatController
from realmchat.errors import InvalidArgument, Unavailable

from .stack import Stack
from .test_cli_terminal import run_cli
from .test_tls import certs, tls_realm_stack  # noqa: F401  (fixtures: a CA and a realm serving TLS)

PW = "pw-secret-33"


def test_chat_cli_over_tls_with_the_realms_ca(tls_realm_stack: Stack, certs: Path,  # noqa: F811
                                              uname: Callable[[str], str]) -> None:
    ada, ben = uname("ada"), uname("ben")
    addr = tls_realm_stack.realm("secure")
    r = run_cli(addr, [f"register {ben} {PW}"], "--ca", str(certs / "ca.pem"))
    assert r.returncode == 0, r.stdout + r.stderr
    r = run_cli(addr, [f"register {ada} {PW}", f"auth {ada} {PW}", f"sendprivate {ben} over tls", "ping"],
                "--tls", "--ca", str(certs / "ca.pem"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"logged in as {ada} on realm secure" in r.stdout and "pong" in r.stdout


def test_chat_cli_refuses_a_realm_it_cannot_verify(tls_realm_stack: Stack, certs: Path) -> None:  # noqa: F811
    addr = tls_realm_stack.realm("secure")
    for extra in (("--tls",), ("--ca", str(certs / "other-ca.pem"))):  # system store / another CA
        r = run_cli(addr, ["ping"], *extra, "--no-reconnect")
        assert r.returncode == 2, r.stdout + r.stderr
        assert "error UNAVAILABLE" in r.stdout and "CERTIFICATE_VERIFY_FAILED" in r.stdout, r.stdout
    r = run_cli(addr, ["ping"], "--ca", str(certs / "missing.pem"))
    assert r.returncode == 2 and "cannot use the CA file" in r.stderr, r.stderr


async def test_gui_controller_over_tls(tls_realm_stack: Stack, certs: Path,  # noqa: F811
                                       uname: Callable[[str], str], tmp_path: Path) -> None:
    cleo, dora = uname("cleo"), uname("dora")
    host, port = tls_realm_stack.realm("secure")
    tls = client_context(str(certs / "ca.pem"))
    dora_client = await ChatClient.connect(host, port, ssl=tls)
    ctl = ChatController(tmp_path / "downloads", tls=tls, who_interval=0)
    try:
        await dora_client.register(dora, PW)
        await dora_client.auth(dora, PW)
        events = dora_client.events()
        await ctl.connect(host, port)
        await ctl.register(cleo, PW)
        await ctl.login(cleo, PW)
        conv = await ctl.start_private(dora)
        await ctl.send("hello over tls", conv.key)
        ev = await asyncio.wait_for(anext(events), 20)
        while getattr(ev, "message", None) is None:
            ev = await asyncio.wait_for(anext(events), 20)
        assert ev.message.text == "hello over tls"  # type: ignore[attr-defined]
    finally:
        await ctl.close()
        await dora_client.close()

    untrusting = ChatController(tmp_path / "d2", tls=client_context(str(certs / "other-ca.pem")), who_interval=0)
    with pytest.raises(Unavailable, match="CERTIFICATE_VERIFY_FAILED"):
        await untrusting.connect(host, port)
    await untrusting.close()
    with pytest.raises(InvalidArgument):
        client_context(str(certs / "missing.pem"))
