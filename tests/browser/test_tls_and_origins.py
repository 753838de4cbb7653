"""The page over Hypercorn's own TLS, and TICKER_ALLOWED_ORIGINS, in real Chromium.

TLS: a trustme CA signs a certificate for 127.0.0.1; Chromium is told to
trust exactly that key (``--ignore-certificate-errors-spki-list``), nothing
more. Origins: ticker's own page may open its websocket; a page from another
origin (a static page on 127.0.0.2, another loopback address) may not.
"""

from __future__ import annotations

import base64
import hashlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, expect
from playwright.sync_api import Error as PlaywrightError

from .conftest import (
    WEBSOCKET_FAILED,
    HypercornProcess,
    PageProblems,
    chromium_executable,
    watched_page,
)
from .test_page import CONNECTED, expect_done, start

pytestmark = pytest.mark.slow

#: One access-log line per request (after Hypercorn's own date, pid and level):
#: client address, request line (its last word is the HTTP version: ``1.1``
#: or ``2``), status.
ACCESS_LOG_FORMAT = 'access %(h)s "%(r)s" %(s)s'

#: Seconds to wait for a line the server writes after the page has seen its effect
#: (an upper bound only: the wait polls, and ends as soon as the line is there).
LOG_TIMEOUT = 15.0

# ---------------------------------------------------------------------------
# TLS at Hypercorn


@dataclass
class Certificate:
    chain: Path
    key: Path
    spki_sha256: str  # base64 of the SHA-256 of the leaf's SubjectPublicKeyInfo


@pytest.fixture
def certificate(tmp_path: Path) -> Certificate:
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    chain, key = tmp_path / "chain.pem", tmp_path / "key.pem"
    chain.write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
    key.write_bytes(leaf.private_key_pem.bytes())
    cert = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
    spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return Certificate(chain, key, base64.b64encode(hashlib.sha256(spki).digest()).decode())


@pytest.fixture
def tls_server(tmp_path: Path, certificate: Certificate) -> Iterator[HypercornProcess]:
    access_log = tmp_path / "access.log"
    process = HypercornProcess(
        tmp_path,
        {},
        args=[
            *("--certfile", str(certificate.chain), "--keyfile", str(certificate.key)),
            *("--access-logfile", str(access_log), "--access-logformat", ACCESS_LOG_FORMAT),
        ],
    )
    process.start()
    yield process
    process.stop()
    assert "Traceback" not in "".join(process.log)


@pytest.fixture
def tls_browser(playwright: Playwright, certificate: Certificate) -> Iterator[Browser]:
    """Chromium that trusts the test certificate's key and no other untrusted one."""
    browser = playwright.chromium.launch(
        executable_path=chromium_executable(),
        args=[
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            # Honoured only with --user-data-dir, which Playwright always passes.
            f"--ignore-certificate-errors-spki-list={certificate.spki_sha256}",
        ],
    )
    yield browser
    browser.close()


@pytest.fixture
def tls_page(
    tls_server: HypercornProcess, tls_browser: Browser, problems: PageProblems
) -> Iterator[Page]:
    # Depends on tls_server, so it is closed before the server stops: a page
    # left open would log each refused reconnect as a console error.
    yield from watched_page(tls_browser, problems)


def access_log(server: HypercornProcess, path: str) -> list[tuple[str, str, str]]:
    """(client, HTTP version, status) of each request for `path`."""
    text = (server.cwd / "access.log").read_text()
    return re.findall(rf' access (\S+) "GET {re.escape(path)} (\S+)" (\d+)$', text, re.MULTILINE)


def test_the_page_works_over_hypercorns_own_tls(
    tls_page: Page, tls_server: HypercornProcess, certificate: Certificate
) -> None:
    page = tls_page
    assert tls_server.url.startswith("https://127.0.0.1:")
    response = page.goto(tls_server.url)
    assert response is not None
    assert response.ok
    security = response.security_details()
    assert security is not None
    assert security.get("protocol") == "TLS 1.3"
    expect(page.get_by_role("status")).to_have_text(CONNECTED)

    start(page, "0.1", "5")
    expect_done(page, 5)

    # The page came over HTTP/2: Hypercorn offers h2 first by ALPN.
    protocol = page.evaluate("performance.getEntriesByType('navigation')[0].nextHopProtocol")
    assert protocol == "h2"

    # And the websocket? The access log's request line ends in the HTTP
    # version of the handshake, and the status tells the two apart as well:
    # 101 Switching Protocols over HTTP/1.1, 200 for an RFC 8441 extended
    # CONNECT over HTTP/2. Hypercorn sends SETTINGS_ENABLE_CONNECT_PROTOCOL=1
    # (hypercorn/protocol/h2.py), so Chromium, which already has an HTTP/2
    # connection to this origin, opens the websocket as a stream of it.
    deadline = time.monotonic() + LOG_TIMEOUT
    while not (handshakes := access_log(tls_server, "/ws")) and time.monotonic() < deadline:
        time.sleep(0.05)
    pages = access_log(tls_server, "/")
    assert [version for _, version, _ in pages] == ["2"], pages
    assert [(version, status) for _, version, status in handshakes] == [("2", "200")], handshakes
    # Same client address and port: one TCP connection carries page and websocket.
    assert handshakes[0][0] == pages[0][0]
    assert f"{handshakes[0][0]} connected (1 open)" in "".join(tls_server.log)


def test_chromium_without_the_spki_flag_refuses_the_certificate(
    browser: Browser, tls_server: HypercornProcess
) -> None:
    """The flag, not a blanket ignore, is what lets the test above in."""
    context = browser.new_context()
    try:
        with pytest.raises(PlaywrightError, match="ERR_CERT_AUTHORITY_INVALID"):
            context.new_page().goto(tls_server.url)
    finally:
        context.close()


# ---------------------------------------------------------------------------
# TICKER_ALLOWED_ORIGINS


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on now (the ticker server needs its own in its setting)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def guarded_server(tmp_path: Path) -> Iterator[HypercornProcess]:
    """Ticker that lets only its own page, http://127.0.0.1:PORT, open websockets."""
    process = HypercornProcess(tmp_path, {})
    process.port = free_port()
    process.env["TICKER_ALLOWED_ORIGINS"] = f"http://127.0.0.1:{process.port}"
    process.start()
    yield process
    process.stop()
    assert "Traceback" not in "".join(process.log)


@pytest.fixture
def guarded_page(
    guarded_server: HypercornProcess, browser: Browser, problems: PageProblems
) -> Iterator[Page]:
    # Depends on guarded_server, so it is closed before the server stops (as ``page``).
    yield from watched_page(browser, problems)


FOREIGN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Another site</title>
<link rel="icon" href="data:,"></head>
<body><h1>Another site</h1>
<ul aria-label="Websocket events"></ul>
<script>
  const events = document.querySelector("ul");
  const note = (text) => {
    const item = document.createElement("li");
    item.textContent = text;
    events.append(item);
  };
  window.received = [];
  const socket = new WebSocket("ws://127.0.0.1:PORT/ws");
  socket.onopen = () => note("open");
  socket.onmessage = (event) => { window.received.push(event.data); note("message"); };
  socket.onerror = () => note("error");
  socket.onclose = (event) => note(`close ${event.code} clean=${event.wasClean}`);
</script></body></html>
"""


@pytest.fixture
def foreign_site(guarded_server: HypercornProcess) -> Iterator[str]:
    """A static page on http://127.0.0.2:OTHERPORT whose script opens ticker's websocket."""
    html = FOREIGN_PAGE.replace("PORT", str(guarded_server.port)).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/" else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(html)))
            self.end_headers()
            self.wfile.write(html)

        def log_message(self, format: str, *args: object) -> None:
            pass

    site = ThreadingHTTPServer(("127.0.0.2", 0), Handler)
    thread = threading.Thread(target=site.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.2:{site.server_address[1]}"
    site.shutdown()
    site.server_close()
    thread.join(timeout=10)


def test_the_page_from_an_allowed_origin_opens_its_websocket(
    guarded_page: Page, guarded_server: HypercornProcess
) -> None:
    page = guarded_page
    page.goto(guarded_server.url)
    expect(page.get_by_role("status")).to_have_text(CONNECTED)
    start(page, "0.05", "3")
    expect_done(page, 3)
    assert "refused" not in "".join(guarded_server.log)


def test_a_page_from_another_origin_is_refused(
    guarded_page: Page,
    guarded_server: HypercornProcess,
    foreign_site: str,
    problems: PageProblems,
) -> None:
    page = guarded_page
    # Chromium logs the refused handshake as a console error. It is expected
    # here, and only here; it is checked below rather than just dropped.
    problems.allow_websocket_failures = True
    websocket_errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" and WEBSOCKET_FAILED.match(message.text):
            websocket_errors.append(message.text)

    page.on("console", on_console)

    page.goto(foreign_site + "/")
    events = page.get_by_role("list", name="Websocket events").get_by_role("listitem")
    expect(events.last).to_have_text(re.compile(r"^close "))
    # onerror then onclose with 1006 (abnormal closure): never open, no message.
    expect(events).to_have_text(["error", "close 1006 clean=false"])
    assert page.evaluate("window.received") == []

    refused = f"refused: origin {foreign_site} is not allowed"
    deadline = time.monotonic() + LOG_TIMEOUT
    while refused not in "".join(guarded_server.log) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert refused in "".join(guarded_server.log)
    assert " connected (" not in "".join(guarded_server.log)
    url = f"ws://127.0.0.1:{guarded_server.port}/ws"
    assert websocket_errors == [
        f"WebSocket connection to '{url}' failed: "
        "Error during WebSocket handshake: Unexpected response code: 403"
    ]
