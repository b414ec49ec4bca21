"""The web GUI as a new user meets it, in Debian's headless Chromium against a real stack:

- a closed tab: its realm connection closes soon after (Flet evicts the session), the user is
  offline and the next message waits in `inbox`; a tab closed on the login screen leaves no
  realm connection behind;
- emoji and other scripts render with real glyphs (not the tofu box) at phone and desktop size;
- the whole chat flow at 400x800: one pane at a time, back button, Log out on screen;
- an outage of main: the header says so, a failed send keeps its text and offers Retry, the
  online list says it is not current.

Screenshots go to test-artifacts/ (git-ignored); looking at them is part of reviewing a change.
"""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import psutil
import pytest
from PIL import Image

from gui.config import parse_args

from . import test_gui_web_e2e as e2e
from .gui_driver import AXNode, Browser, wait_for
from .stack import PYTHON, ROOT, ServerProcess, Stack, start_main
from .textclient import TextClient, login

# One browser at a time: two Chromiums with their stacks on two cores starve each other.
pytestmark = pytest.mark.xdist_group("browser")

ARTIFACTS = ROOT / "test-artifacts"
PW = "pw-secret-1"
PHONE = (400, 800)
DESKTOP = (1100, 720)
SESSION_TIMEOUT = 4  # seconds a closed tab keeps its session in these tests (default: 90)


def start_gui(stack: Stack, tmp: Path, *extra: str) -> ServerProcess:
    host, port = stack.realm("alpha")
    return ServerProcess("gui", [PYTHON, "-m", "gui", "--web", "--host", "127.0.0.1", "--port", "0",
                                 "--realm", f"{host}:{port}", "--downloads", str(tmp / "downloads"),
                                 "--upload-dir", str(tmp / "uploads"), *extra],
                         env={"FLET_WEB_NO_CDN": "1"})


@pytest.fixture(scope="module")
def gui_server(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_gui(stack, tmp_path_factory.mktemp("gui"), "--session-timeout", str(SESSION_TIMEOUT))
    yield proc
    code = proc.terminate()
    assert code == 0, f"the GUI did not shut down cleanly on SIGTERM (exit {code}):\n{proc.log()}"


async def open_page(url: str, size: tuple[int, int]) -> Browser:
    b = await Browser.launch()
    try:
        await set_size(b, size)
        await b.navigate(url)
    except BaseException:
        await b.close()
        raise
    return b


async def set_size(b: Browser, size: tuple[int, int]) -> None:
    await b.cdp.send("Emulation.setDeviceMetricsOverride", width=size[0], height=size[1], deviceScaleFactor=1,
                     mobile=False)


@pytest.fixture
async def phone(gui_server: ServerProcess) -> AsyncIterator[Browser]:
    b = await open_page(f"http://{gui_server.addr}/", PHONE)
    yield b
    await b.close()


async def register_in_browser(b: Browser, user: str, realm: str = "alpha") -> None:
    await e2e.register_in_browser(b, user, realm, PW)


async def box(b: Browser, node: AXNode) -> tuple[float, float, float, float]:
    """x, y, width, height of a node on the page."""
    r = await b.cdp.send("DOM.getBoxModel", backendNodeId=node.backend_id)
    q = r["model"]["border"]
    xs, ys = q[0::2], q[1::2]
    return min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)


async def on_screen(b: Browser, node: AXNode, size: tuple[int, int]) -> bool:
    x, y, w, h = await box(b, node)
    return x >= 0 and y >= 0 and x + w <= size[0] + 0.5 and y + h <= size[1] + 0.5 and w > 0 and h > 0


async def clip(b: Browser, node: AXNode, path: Path) -> Image.Image:
    """A screenshot of just `node`'s box (saved to `path` too)."""
    import base64

    await b.settle()
    x, y, w, h = await box(b, node)
    r = await b.cdp.send("Page.captureScreenshot", format="png",
                         clip={"x": x, "y": y, "width": w, "height": h, "scale": 1})
    data = base64.b64decode(r["data"])
    path.parent.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(path.write_bytes, data)
    return Image.open(io.BytesIO(data)).convert("RGB")


async def realm_connections(gui: ServerProcess, realm_port: int) -> int:
    """TCP connections the GUI server process holds to the realm right now."""
    def count() -> int:
        conns = psutil.Process(gui.pid).net_connections(kind="tcp")
        return sum(1 for c in conns if c.raddr and c.raddr.port == realm_port and c.status == psutil.CONN_ESTABLISHED)

    return await asyncio.to_thread(count)


async def who(c: TextClient) -> set[str]:
    return {p["user"] for p in (await c.ok("who"))["online"]}


def test_a_closed_tab_lets_go_within_two_minutes_by_default() -> None:
    """Flet evicts a disconnected session after the timeout, checking every 10 s."""
    assert parse_args(["--web"]).session_timeout + 10 <= 120


async def test_closed_tab_goes_offline_and_messages_wait(
        stack: Stack, gui_server: ServerProcess, uname: Callable[[str], str]) -> None:
    ann, bob = uname("ann"), uname("bob")
    bob_client = await login(*stack.realm("beta"), bob, PW)
    b = await open_page(f"http://{gui_server.addr}/", DESKTOP)
    try:
        await register_in_browser(b, ann)
        assert ann in await who(bob_client)
    finally:
        await b.close()  # the whole browser goes, as when a person closes the tab
    try:
        async def offline() -> bool:
            return ann not in await who(bob_client)

        # Eviction runs every 10 s: timeout + 10 s + slack for a loaded machine.
        await wait_for(offline, SESSION_TIMEOUT + 40, f"{ann} to go offline after the tab closed", interval=0.5)
        await bob_client.ok(f"sendprivate {ann} are you there?")
        ann_client = await login(*stack.realm("alpha"), ann, PW, register=False)
        try:
            inbox = (await ann_client.ok("inbox"))["messages"]
            assert [m["text"] for m in inbox] == ["are you there?"], inbox
        finally:
            await ann_client.close()
    finally:
        await bob_client.close()


async def test_tab_closed_on_the_login_screen_leaves_no_realm_connection(
        stack: Stack, gui_server: ServerProcess, uname: Callable[[str], str]) -> None:
    _, realm_port = stack.realm("alpha")
    before = await realm_connections(gui_server, realm_port)
    b = await open_page(f"http://{gui_server.addr}/", DESKTOP)
    try:
        # A failed login: the page is connected to the realm, nobody is logged in.
        await b.wait_text("Create account", 90, role="button")
        await b.fill("User name", uname("nobody"))
        await b.fill("Password", PW)
        await b.click(await b.wait_text("Log in", role="button"))
        await b.wait_text(re.compile("(?i)password|unknown|invalid"), 20)

        async def connected() -> bool:
            return await realm_connections(gui_server, realm_port) > before

        await wait_for(connected, 10, "the page's realm connection")
    finally:
        await b.close()

    async def released() -> bool:
        return await realm_connections(gui_server, realm_port) <= before

    await wait_for(released, SESSION_TIMEOUT + 40, "the closed tab's realm connection to close", interval=0.5)
    # And it stays closed: no reconnect loop for a page nobody has open.
    await asyncio.sleep(3)
    assert await realm_connections(gui_server, realm_port) <= before


SAMPLES = {"emoji": "😀😀😀", "chinese": "中文中文", "arabic": "العربية"}


def tofu_for(sample: str) -> str:
    """As many private-use characters (no font has them: every one is the tofu box) as `sample`."""
    return "".join(chr(0xE000 + i) for i in range(len(sample)))


def differs(a: Image.Image, b: Image.Image) -> float:
    """Share of pixels that differ between two renderings (1.0 if their sizes differ)."""
    if a.size != b.size:
        return 1.0
    pa, pb = a.tobytes(), b.tobytes()
    diff = sum(1 for i in range(0, len(pa), 3) if pa[i:i + 3] != pb[i:i + 3])
    return diff / (len(pa) // 3)


def colourful(img: Image.Image) -> int:
    """Pixels with a strong hue (emoji are yellow; text and tofu are grey or the theme's blue)."""
    px = img.tobytes()
    return sum(1 for i in range(0, len(px), 3) if px[i] > 180 and px[i + 1] > 120 and px[i + 2] < 90)


@pytest.mark.parametrize("size", [PHONE, DESKTOP], ids=["phone", "desktop"])
async def test_emoji_and_scripts_render_not_tofu(
        stack: Stack, gui_server: ServerProcess, uname: Callable[[str], str], size: tuple[int, int]) -> None:
    cai, dan = uname("cai"), uname("dan")
    dan_client = await login(*stack.realm("beta"), dan, PW)
    b = await open_page(f"http://{gui_server.addr}/", size)
    try:
        await register_in_browser(b, cai)
        for sample in SAMPLES.values():
            await dan_client.ok(f"sendprivate {cai} {sample}")
            await dan_client.ok(f"sendprivate {cai} {tofu_for(sample)}")
        await b.click(await b.wait_text(dan, 20, role="button"))
        name = f"{size[0]}x{size[1]}"
        for label, sample in SAMPLES.items():
            good = await b.wait_text(re.compile(rf"^{re.escape(dan)} \d\d:\d\d {re.escape(sample)}$"), 30)
            bad = await b.wait_text(re.compile(rf"^{re.escape(dan)} \d\d:\d\d {re.escape(tofu_for(sample))}$"), 30)

            async def rendered(good: AXNode = good, bad: AXNode = bad, label: str = label) -> bool:
                # Fonts load on demand: wait until the sample no longer looks like the tofu box.
                g = await clip(b, good, ARTIFACTS / f"gui-script-{label}-{name}.png")
                t = await clip(b, bad, ARTIFACTS / f"gui-script-{label}-tofu-{name}.png")
                if label == "emoji" and colourful(g) < 30:
                    return False
                return differs(g, t) > 0.02

            # The CJK font alone is 13 MB to fetch and parse: on a loaded machine that takes a while.
            await wait_for(rendered, 90, f"{label} ({sample}) drawn with real glyphs at {name}", interval=1.0)
        await b.screenshot(ARTIFACTS / f"gui-scripts-{name}.png")
    finally:
        await b.close()
        await dan_client.close()


async def test_whole_chat_flow_at_phone_size(
        stack: Stack, phone: Browser, uname: Callable[[str], str]) -> None:
    eve, fay, club = uname("eve"), uname("fay"), uname("club")
    b = phone
    fay_client = await login(*stack.realm("beta"), fay, PW)
    fay_client.ignore = fay_client.ignore | {"seen", "typing"}  # the GUI reads and types
    try:
        await b.wait_text("Create account", 90, role="button")
        await b.screenshot(ARTIFACTS / "gui-phone-login.png")
        assert await on_screen(b, await b.wait_text("Create account", role="button"), PHONE)
        await register_in_browser(b, eve)
        # The list pane alone, Log out on screen.
        logout = await b.wait_text("Log out", role="button")
        assert await on_screen(b, logout, PHONE), await box(b, logout)
        await b.wait_text("online · realm alpha")

        # Read receipts: an icon on a phone (the switch's label does not fit); it turns them off
        # for the account, and back on.
        icon = await b.wait_text("Read receipts on", 20)
        assert await on_screen(b, icon, PHONE), await box(b, icon)
        await b.click(icon)
        await b.wait_text("Read receipts off", 20)
        eve_client = await login(*stack.realm("beta"), eve, PW, register=False)
        try:
            assert (await eve_client.ok("receipts"))["receipts"] == "off"
            await b.click(await b.wait_text("Read receipts off"))
            await b.wait_text("Read receipts on", 20)
            assert (await eve_client.ok("receipts"))["receipts"] == "on"
        finally:
            await eve_client.close()

        # Start a private chat: the conversation replaces the list, the message box has focus.
        await b.click(await b.wait_text("Chat", role="button"))
        await b.fill("User name", fay)
        await b.click(await b.wait_text("Start chat", role="button"))
        back = await b.wait_text("Back to conversations", 20, role="button")
        assert await on_screen(b, back, PHONE)
        assert await b.find("CONVERSATIONS") is None  # one pane at a time
        await wait_for(lambda: _focused(b), 10, "the message box to have focus when the conversation opens")
        message_box = await b.wait_text("Message", role="textbox")
        _, _, w, _ = await box(b, message_box)
        assert w > PHONE[0] * 0.6, f"the message box is a sliver: {w:.0f}px of {PHONE[0]}"
        await b.type_text("hello from a phone")
        await asyncio.sleep(0.3)
        await b.press_enter()
        ev = await fay_client.event(30)
        assert ev["event"] == "private" and ev["text"] == "hello from a phone", ev
        await b.wait_text(re.compile(r"^you \d\d:\d\d hello from a phone$"), 20)
        await b.wait_text("Today")  # the date separator
        await fay_client.ok(f"sendprivate {eve} hi eve, nice phone")
        await b.wait_text(re.compile(rf"^{re.escape(fay)} \d\d:\d\d hi eve, nice phone$"), 20)
        await b.screenshot(ARTIFACTS / "gui-phone-chat.png")

        # Back to the list: the conversation with its preview; a new message there is unread.
        await b.click(back)
        await b.wait_text("CONVERSATIONS", 10)
        await fay_client.ok(f"sendprivate {eve} still there?")
        await b.wait_text("1 unread", 20)
        await b.screenshot(ARTIFACTS / "gui-phone-list.png")

        # A group made on the phone.
        await e2e.create_group_in_browser(b, club)
        await b.wait_text("Leave group", role="button")
        await b.click(await b.wait_text("Back to conversations", role="button"))

        # Log out is reachable and works.
        await b.click(await b.wait_text("Log out", role="button"))
        await b.wait_text("You are logged out.", 20)
    finally:
        await fay_client.close()


async def _focused(b: Browser) -> bool:
    return await b.focused_value() is not None


async def test_main_outage_shows_in_header_and_send_offers_retry(
        fresh_stack: Stack, uname: Callable[[str], str], tmp_path: Path) -> None:
    gia, hal = uname("gia"), uname("hal")
    gui = start_gui(fresh_stack, tmp_path)
    b: Browser | None = None
    hal_client: TextClient | None = None
    try:
        hal_client = await login(*fresh_stack.realm("beta"), hal, PW)
        b = await open_page(f"http://{gui.addr}/", DESKTOP)
        await register_in_browser(b, gia)
        await hal_client.ok(f"sendprivate {gia} before the outage")
        await b.click(await b.wait_text(hal, 20, role="button"))
        await b.wait_text(re.compile(rf"^{re.escape(hal)} \d\d:\d\d before the outage$"), 20)
        # Opened from the list on a desktop: the message box has the focus too.
        await wait_for(lambda: _focused(b), 10, "the message box to have focus when the conversation opens")
        await hal_client.close()
        hal_client = None

        main_port = fresh_stack.main.port
        fresh_stack.main.kill()
        await b.fill("Message", "sent during the outage")
        await b.press_enter()
        await b.wait_text("main server unreachable", 30)
        await b.wait_text(re.compile("^not sent: "), 20)
        retry = await b.wait_text("Retry", 10, role="button")
        await b.wait_text(re.compile("^not current: as of"), 30)
        assert await b.find("online · realm alpha") is None
        # The text is still in the message box.
        await b.click(await b.wait_text("Message", role="textbox"))
        await wait_for(lambda: _value_is(b, "sent during the outage"), 10, "the unsent text kept in the message box")
        await b.screenshot(ARTIFACTS / "gui-main-down.png")

        fresh_stack.main = start_main(fresh_stack.data_dir, main_port)
        await b.wait_text("online · realm alpha", 60)
        hal_client = await login(*fresh_stack.realm("beta"), hal, PW, register=False)
        hal_client.ignore = hal_client.ignore | {"seen", "typing"}  # the GUI reads and types
        retry = await b.wait_text("Retry", 10, role="button")
        await b.click(retry)
        ev = await hal_client.event(30)
        assert ev["event"] == "private" and ev["text"] == "sent during the outage", ev
        await b.wait_text(re.compile(r"^you \d\d:\d\d sent during the outage$"), 20)
        assert await b.find("Retry", role="button") is None
    finally:
        if hal_client is not None:
            await hal_client.close()
        if b is not None:
            await b.close()
        assert gui.terminate() == 0, gui.log()


async def _value_is(b: Browser, text: str) -> bool:
    return await b.focused_value() == text


def test_readme_phone_picture_is_a_small_png() -> None:
    """docs/gui-phone.png is the README's phone picture (taken by the phone flow test)."""
    png = ROOT / "docs" / "gui-phone.png"
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and 5_000 < len(data) < 200_000
    assert Image.open(png).size == PHONE


def test_fonts_and_runtime_files_are_compressed_and_cacheable(gui_server: ServerProcess) -> None:
    import urllib.error
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    base = f"http://{gui_server.addr}"

    def get(path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(base + path, headers=headers)
        try:
            with opener.open(req, timeout=60) as r:
                return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
        except urllib.error.HTTPError as e:
            return e.code, {k.lower(): v for k, v in e.headers.items()}, b""

    # Every slice Flutter may ask for, of any CJK family, leads to the one CJK font.
    for family in ("notosanssc", "notosansjp", "notosanskr"):
        status, h, _ = get(f"/assets/fonts/{family}/v37/abcDEF_12-x.4.woff2")
        assert status == 301 and h["location"] == "/fonts/notosanscjk.ttf" and "max-age" in h["cache-control"]
    status, h, body = get("/fonts/notosansarabic.ttf", **{"Accept-Encoding": "gzip"})
    assert status == 200 and h["content-encoding"] == "gzip" and "max-age" in h["cache-control"] and h["etag"]
    assert status == 200 and get("/fonts/notosansarabic.ttf", **{"If-None-Match": h["etag"]})[0] == 304

    wasm = Path(__import__("flet_web").__file__).parent / "web" / "main.dart.wasm"
    status, h, body = get("/main.dart.wasm", **{"Accept-Encoding": "gzip, deflate"})
    assert status == 200 and h["content-encoding"] == "gzip" and h["content-type"] == "application/wasm"
    assert "max-age" in h["cache-control"] and len(body) < wasm.stat().st_size / 2
    status, h, body = get("/main.dart.wasm")  # no gzip asked: the plain file
    assert status == 200 and "content-encoding" not in h and len(body) == wasm.stat().st_size
