"""Deployment tier: deploy/nginx.conf, as shipped, in front of a two-worker hypercorn.

Debian's nginx terminates TLS with a certificate from a throwaway ``trustme``
authority, on loopback ports; the hypercorn behind it is the README's command
with ``--workers 2``. The site file is used verbatim except for the values a
deployment edits (ports, certificate paths, the static folder, the upstream),
and every one of those substitutions must match, so the test and the recipe
cannot drift apart silently. The rolling restart's stack (two hosts, the
README's multi-host upstream block and procedure) is in ``fleet.py``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib.resources
import os
import re
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
import trio
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ticker.app import static_dir

from ..support import STEP_TIMEOUT, Server, ServerProcess, run_server_command

SITE_FILE = Path(__file__).parents[2] / "deploy" / "nginx.conf"
NO_NGINX = (
    "No nginx for the deployment tests: install Debian's package "
    "(`apt-get install nginx`) or set TICKER_NGINX to an nginx executable."
)


def find_nginx() -> str:
    """$TICKER_NGINX, else nginx on PATH or in /usr/sbin (not on a user's PATH)."""
    configured = os.environ.get("TICKER_NGINX")
    found = configured or shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if not found:
        pytest.fail(NO_NGINX)  # not a skip: these tests are the recipe's proof
    return found


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (held together while chosen, so never the same)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def static_folder() -> Path:
    """The installed package's page and files, found as deploy/nginx.conf tells operators.

    (An editable install has none inside the package: then the checkout's.)
    """
    installed = Path(str(importlib.resources.files("ticker") / "static"))
    return installed if installed.is_dir() else static_dir()


def substitute(text: str, old: str, new: str, count: int = 1) -> str:
    found = text.count(old)
    assert found == count, f"deploy/nginx.conf: expected {count}x {old!r}, found {found}"
    return text.replace(old, new)


def render_site(
    *,
    http_port: int,
    https_port: int,
    upstream_port: int,
    cert: Path,
    key: Path,
    read_timeout: str | None = None,
    upstream: str | None = None,
) -> str:
    """deploy/nginx.conf with a deployment's values filled in, IPv4 loopback only.

    ``read_timeout`` replaces the websocket location's ``proxy_read_timeout``,
    so a test can outlast it in seconds instead of a minute. ``upstream``, a
    whole ``upstream ticker { }`` block, replaces the shipped one-host block
    (then ``upstream_port`` is not used), as deploy/README.md tells operators
    of several hosts to do.
    """
    site = SITE_FILE.read_text()
    if upstream is not None:
        shipped = re.search(r"^upstream ticker \{\n.*?^\}\n", site, re.M | re.S)
        assert shipped is not None, "deploy/nginx.conf: no upstream ticker { } block"
        site = substitute(site, shipped.group(0), upstream)
    if read_timeout is not None:
        site = substitute(site, "proxy_read_timeout 60s;", f"proxy_read_timeout {read_timeout};")
    site = substitute(site, "listen 80;", f"listen 127.0.0.1:{http_port};")
    site = substitute(site, "    listen [::]:80;\n", "")
    site = substitute(site, "listen 443 ssl ", f"listen 127.0.0.1:{https_port} ssl ")
    site = substitute(site, "    listen [::]:443 ssl sndbuf=64k;\n", "")
    if upstream is None:
        site = substitute(site, "server 127.0.0.1:8000;", f"server 127.0.0.1:{upstream_port};")
    site = substitute(site, "/etc/ssl/ticker/fullchain.pem", str(cert))
    site = substitute(site, "/etc/ssl/ticker/privkey.pem", str(key))
    # The recipe links /opt/ticker/static to this folder; the test points at it.
    site = substitute(site, "root /opt/ticker/static;", f"root {static_folder()};")
    return substitute(site, "alias /opt/ticker/static/;", f"alias {static_folder()}/;")


MAIN_CONFIG = """\
daemon off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log info;
{user}
events {{ worker_connections 1024; }}
http {{
    {mime_types}
    default_type application/octet-stream;
    access_log {root}/access.log;
    client_body_temp_path {root}/temp/body;
    proxy_temp_path {root}/temp/proxy;
    fastcgi_temp_path {root}/temp/fastcgi;
    uwsgi_temp_path {root}/temp/uwsgi;
    scgi_temp_path {root}/temp/scgi;
    include {root}/ticker.conf;
}}
"""


@dataclass(frozen=True)
class TLS:
    """The test authority's trust, and the server certificate nginx presents."""

    client_context: ssl.SSLContext
    cert: Path
    key: Path
    #: The authority's certificate, for clients that read a file (SSL_CERT_FILE).
    authority: Path
    #: base64 of the SHA-256 of the leaf's SubjectPublicKeyInfo: what Chromium is
    #: told to trust (``--ignore-certificate-errors-spki-list``), that key only.
    spki_sha256: str


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLS:
    folder = tmp_path_factory.mktemp("tls")
    authority = trustme.CA()
    issued = authority.issue_cert("127.0.0.1", "localhost")
    cert, key = folder / "fullchain.pem", folder / "privkey.pem"
    issued.private_key_pem.write_to_path(str(key))
    cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    authority_file = folder / "authority.pem"
    authority.cert_pem.write_to_path(str(authority_file))
    context = ssl.create_default_context()
    authority.configure_trust(context)
    leaf = x509.load_pem_x509_certificate(issued.cert_chain_pems[0].bytes())
    spki = leaf.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    spki_sha256 = base64.b64encode(hashlib.sha256(spki).digest()).decode()
    return TLS(context, cert, key, authority_file, spki_sha256)


@dataclass
class Stack:
    """nginx (https on ``server``, plain http on ``http_port``) in front of ``hypercorn``."""

    server: Server  # nginx's TLS port
    http_port: int
    hypercorn: ServerProcess
    nginx_log: Path
    tls: TLS

    @property
    def wss_url(self) -> str:
        return f"wss://{self.server.host}:{self.server.port}/ws"

    def nginx_errors(self) -> str:
        return self.nginx_log.read_text()


@asynccontextmanager
async def run_nginx(root: Path, site: str) -> AsyncIterator[trio.Process]:
    """Debian's nginx in the foreground with ``site`` as its only site; stopped at exit."""
    nginx = find_nginx()
    (root / "temp").mkdir(parents=True)
    (root / "ticker.conf").write_text(site)
    mime_types = Path("/etc/nginx/mime.types")  # Debian's; else .js is octet-stream
    has_mime_types = mime_types.exists()  # noqa: ASYNC240 - one stat before nginx starts
    (root / "nginx.conf").write_text(
        MAIN_CONFIG.format(
            root=root,
            # As root, nginx's workers would run as "nobody", who cannot enter
            # pytest's private temporary folders.
            user="user root;" if os.geteuid() == 0 else "",
            mime_types=f"include {mime_types};" if has_mime_types else "",
        )
    )
    command = [
        nginx,
        "-p",
        str(root),
        "-c",
        str(root / "nginx.conf"),
        "-e",
        str(root / "error.log"),
    ]
    checked = await trio.run_process([*command, "-t"], capture_stderr=True, check=False)
    assert checked.returncode == 0, checked.stderr.decode()
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            partial(trio.run_process, command, check=False, stderr=subprocess.DEVNULL)
        )
        try:
            yield process
        finally:
            process.terminate()  # fast shutdown: websockets do not hold it up
            with trio.move_on_after(STEP_TIMEOUT):
                await process.wait()
            if process.returncode is None:
                process.kill()


async def wait_for_port(port: int, process: trio.Process, log: Path) -> None:
    with trio.fail_after(STEP_TIMEOUT):
        while True:
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                if process.returncode is not None:
                    errors = log.read_text()  # noqa: ASYNC240 - failing anyway
                    raise RuntimeError(f"nginx exited: {errors}") from None
                await trio.sleep(0.02)
            else:
                await stream.aclose()
                return


@asynccontextmanager
async def open_stack(
    tmp_path: Path, tls: TLS, env: dict[str, str] | None = None, *, read_timeout: str | None = None
) -> AsyncIterator[Stack]:
    """The recipe: ``hypercorn ... --workers 2`` with TICKER_PROXY_HOPS=1, nginx in front."""
    folder = tmp_path / "empty"  # the server runs from an empty folder, as a user's would
    folder.mkdir()
    server_env = {
        "TICKER_PROXY_HOPS": "1",
        "TICKER_METRICS_DIR": str(tmp_path / "metrics"),
        **(env or {}),
    }
    args = ("--workers", "2", "--graceful-timeout", "2")
    async with run_server_command(folder, server_env, args) as hypercorn:
        http_port, https_port = free_ports(2)
        site = render_site(
            http_port=http_port,
            https_port=https_port,
            upstream_port=hypercorn.server.port,
            cert=tls.cert,
            key=tls.key,
            read_timeout=read_timeout,
        )
        root = tmp_path / "nginx"
        async with run_nginx(root, site) as nginx:
            await wait_for_port(https_port, nginx, root / "error.log")
            yield Stack(
                Server("127.0.0.1", https_port), http_port, hypercorn, root / "error.log", tls
            )
