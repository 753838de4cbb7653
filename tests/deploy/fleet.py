"""Several ticker hosts behind one nginx, run from deploy/README.md's own text.

Everything an operator is told to type comes from the README's code blocks,
with only the deployment's values replaced (each replacement must match
exactly as often as expected, so a changed README fails loudly instead of
drifting from the test):

- each host runs the systemd unit's ``ExecStart`` and ``Environment`` (step 2),
  bound to its own loopback address as "More than one host" says (127.0.0.2,
  127.0.0.3: addresses no other test binds, so the port stays ours across
  restarts), supervised as systemd would run it;
- nginx runs deploy/nginx.conf with the README's multi-host ``upstream`` block;
- the rolling restart is the README's shell block, run by ``sh``, with its
  ``ssh … systemctl restart ticker`` line replaced by ``systemctl_restart.py``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import trio

from ..support import STEP_TIMEOUT, Server, collect_lines
from .conftest import TLS, render_site, run_nginx, wait_for_port

README = Path(__file__).parents[2] / "deploy" / "README.md"
RESTART_STAND_IN = Path(__file__).with_name("systemctl_restart.py")

#: The README's example hosts, in its upstream block and its rolling restart, and ours.
README_HOSTS = ("10.0.0.5", "10.0.0.6")
HOSTS = ("127.0.0.2", "127.0.0.3")
README_PORT = 8000

#: Seconds a host may take to say "Running on" (two workers on a busy 2-core machine).
START_TIMEOUT = STEP_TIMEOUT * 3
#: Attempts at the whole stack when a port we chose was taken before we bound it.
ATTEMPTS = 3


class AddressInUse(Exception):
    """A port chosen as free was taken by someone else before nginx or hypercorn bound it."""


def readme_block(language: str, containing: str) -> str:
    """The one fenced ``language`` block of deploy/README.md that contains ``containing``."""
    blocks = re.findall(rf"^```{language}\n(.*?)^```$", README.read_text(), re.M | re.S)
    found = [block for block in blocks if containing in block]
    assert len(found) == 1, (
        f"deploy/README.md: {len(found)} ```{language} blocks with {containing!r}"
    )
    return str(found[0])


def replace(text: str, old: str, new: str, count: int = 1) -> str:
    found = text.count(old)
    assert found == count, f"deploy/README.md: expected {count}x {old!r}, found {found}"
    return text.replace(old, new)


@dataclass(frozen=True)
class Unit:
    """What the README's systemd unit runs: its command, environment and stop rules."""

    exec_start: list[str]
    environment: dict[str, str]
    kill_signal: str
    timeout_stop: float

    @classmethod
    def from_readme(cls) -> Unit:
        text = readme_block("ini", "ExecStart=")
        text = text.replace("\\\n", " ")  # systemd's line continuation
        settings: dict[str, list[str]] = {}
        for line in text.splitlines():
            if "=" in line and not line.startswith(("#", "[")):
                key, _, value = line.partition("=")
                settings.setdefault(key.strip(), []).append(value.strip())
        environment = {}
        for item in settings["Environment"]:
            name, _, value = item.partition("=")
            environment[name] = value
        (exec_start,) = settings["ExecStart"]
        (kill_signal,) = settings["KillSignal"]
        (timeout_stop,) = settings["TimeoutStopSec"]
        return cls(shlex.split(exec_start), environment, kill_signal, float(timeout_stop))

    def command(self, address: str, port: int) -> list[str]:
        """ExecStart for one host: this interpreter's hypercorn, bound as the README says."""
        command = shlex.join(self.exec_start)
        command = replace(command, "/opt/ticker/venv/bin/hypercorn", shlex.join(HYPERCORN))
        command = replace(command, f"--bind 127.0.0.1:{README_PORT}", f"--bind {address}:{port}")
        return shlex.split(command)

    def env(self, folder: Path, origin: str) -> dict[str, str]:
        """Environment= for one host: its own metrics folder, our page's origin."""
        env = dict(self.environment)
        assert env.pop("TICKER_METRICS_DIR") == "/run/ticker/metrics"  # RuntimeDirectory
        env["TICKER_METRICS_DIR"] = str(folder / "metrics")
        assert env["TICKER_ALLOWED_ORIGINS"] == "https://ticker.example.org"
        env["TICKER_ALLOWED_ORIGINS"] = origin
        return env


HYPERCORN = [sys.executable, "-m", "hypercorn"]


def upstream_block(port: int) -> str:
    """The README's multi-host ``upstream ticker { }`` block, for our hosts."""
    block = readme_block("nginx", "upstream ticker {")
    for readme_host, host in zip(README_HOSTS, HOSTS, strict=True):
        block = replace(block, f"server {readme_host}:{README_PORT} ", f"server {host}:{port} ")
    return block


def rolling_restart_script(port: int, run: Path) -> str:
    """The README's rolling restart for our hosts, with the stand-in for ``ssh … systemctl``."""
    script = readme_block("sh", "systemctl restart ticker")
    script = replace(
        script, f"for host in {' '.join(README_HOSTS)};", f"for host in {' '.join(HOSTS)};"
    )
    script = replace(script, f"http://$host:{README_PORT}/", f"http://$host:{port}/")
    stand_in = shlex.join([sys.executable, str(RESTART_STAND_IN), str(run)])
    return replace(script, 'ssh "$host" systemctl restart ticker', f'{stand_in} "$host"')


@dataclass
class Exit:
    pid: int
    returncode: int
    at: float  # wall clock


@dataclass
class Host:
    """One host's ticker, started again whenever it exits (systemd's restart)."""

    name: str
    address: str
    port: int
    command: list[str]
    env: dict[str, str]
    folder: Path
    pidfile: Path
    log: list[str] = field(default_factory=list)
    exits: list[Exit] = field(default_factory=list)
    process: trio.Process | None = None
    stopping: trio.Event = field(default_factory=trio.Event)  # systemctl stop

    @property
    def text(self) -> str:
        return "".join(self.log)

    def listening_since(self, offset: int) -> bool:
        return f"Running on http://{self.address}:{self.port}" in "".join(self.log[offset:])


async def _deliver_cancel(process: trio.Process) -> None:
    """On cancellation (a failed test): SIGTERM, then SIGKILL to the whole group."""
    process.terminate()
    with trio.move_on_after(STEP_TIMEOUT):
        await process.wait()
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


async def supervise(
    host: Host, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run ``host`` until ``host.stopping`` is set, starting it again whenever it exits.

    Reports started once the first process listens; raises AddressInUse if it
    could not bind.
    """
    first = True
    while not host.stopping.is_set():
        offset = len(host.log)
        async with trio.open_nursery() as nursery:
            process: trio.Process = await nursery.start(
                partial(
                    trio.run_process,
                    host.command,
                    cwd=host.folder,
                    env={**os.environ, **host.env},
                    stderr=subprocess.PIPE,
                    check=False,
                    start_new_session=True,  # a group of its own, as a systemd service
                    deliver_cancel=_deliver_cancel,
                )
            )
            host.process = process
            if host.stopping.is_set():  # stopped while this one was starting
                process.terminate()
            await trio.Path(host.pidfile).write_text(f"{process.pid}\n")
            assert process.stderr is not None
            nursery.start_soon(collect_lines, process.stderr, host.log)
            if first:
                with trio.fail_after(START_TIMEOUT):
                    while not host.listening_since(offset):
                        if process.returncode is not None:
                            break
                        await trio.sleep(0.05)
                if not host.listening_since(offset):
                    await process.wait()
                    if "Address already in use" in host.text:
                        raise AddressInUse(f"{host.address}:{host.port}")
                    raise RuntimeError(f"host {host.name} exited before listening:\n{host.text}")
                task_status.started()
                first = False
            await process.wait()
            if not host.listening_since(offset):
                await trio.sleep(1)  # the unit's RestartSec: no tight loop of failed starts
        assert process.returncode is not None
        host.exits.append(Exit(process.pid, process.returncode, time.time()))


@dataclass
class Fleet:
    """Two hosts behind nginx (TLS on ``server``), and the README's rolling restart for them."""

    server: Server
    hosts: list[Host]
    nginx_log: Path
    run: Path  # the stand-in's pid files and journal
    script: str  # the README's rolling restart, for these hosts

    @property
    def page_url(self) -> str:
        return f"https://{self.server.host}:{self.server.port}/"

    @property
    def wss_url(self) -> str:
        return f"wss://{self.server.host}:{self.server.port}/ws"

    def journal(self) -> list[tuple[float, str]]:
        """(wall-clock time, what) for each step the restart stand-in took."""
        path = self.run / "journal"
        if not path.exists():
            return []
        entries = []
        for line in path.read_text().splitlines():
            at, _, what = line.partition(" ")
            entries.append((float(at), what))
        return entries


def _free_port_on(addresses: tuple[str, ...]) -> int:
    """A port free on every one of ``addresses`` (chosen on the first, checked on the rest)."""
    for _ in range(20):
        with contextlib.ExitStack() as stack:
            first = stack.enter_context(socket.socket())
            first.bind((addresses[0], 0))
            port: int = first.getsockname()[1]
            try:
                for address in addresses[1:]:
                    stack.enter_context(socket.socket()).bind((address, port))
            except OSError:
                continue
            return port
    raise AddressInUse(f"no port free on all of {addresses}")


def _free_ports(count: int) -> list[int]:
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


async def _start(stack: contextlib.AsyncExitStack, root: Path, tls: TLS) -> Fleet:
    unit = Unit.from_readme()
    run = root / "run"
    run.mkdir(parents=True)
    (run / "KillSignal").write_text(unit.kill_signal)
    (run / "TimeoutStopSec").write_text(f"{unit.timeout_stop:g}")
    # nginx first (its ports are the race-prone ones, on 127.0.0.1, so it binds
    # them at once); it needs no live upstream to start.
    port = _free_port_on(HOSTS)
    http_port, https_port = _free_ports(2)
    site = render_site(
        http_port=http_port,
        https_port=https_port,
        upstream_port=0,
        cert=tls.cert,
        key=tls.key,
        upstream=upstream_block(port),
    )
    nginx_root = root / "nginx"
    nginx = await stack.enter_async_context(run_nginx(nginx_root, site))
    try:
        await wait_for_port(https_port, nginx, nginx_root / "error.log")
    except RuntimeError as error:
        if "Address already in use" in str(error):
            raise AddressInUse(str(error)) from None
        raise
    server = Server("127.0.0.1", https_port)
    origin = f"https://{server.host}:{server.port}"
    hosts: list[Host] = []
    nursery = await stack.enter_async_context(trio.open_nursery())
    stack.push_async_callback(_stop_hosts, hosts)  # before the nursery waits for them
    for name, address in zip("AB", HOSTS, strict=True):
        folder = root / f"host-{name}"
        folder.mkdir()  # the service's working folder: empty, as a user's would be
        host = Host(
            name,
            address,
            port,
            unit.command(address, port),
            unit.env(folder, origin),
            folder,
            run / f"{address}.pid",
        )
        hosts.append(host)
        await nursery.start(supervise, host)
    script = rolling_restart_script(port, run)
    return Fleet(server, hosts, nginx_root / "error.log", run, script)


async def _stop_hosts(hosts: list[Host]) -> None:
    """SIGTERM each host (its supervisor then ends), as ``systemctl stop``."""
    for host in hosts:
        host.stopping.set()
        if host.process is not None and host.process.returncode is None:
            host.process.terminate()
    with trio.move_on_after(STEP_TIMEOUT):
        for host in hosts:
            if host.process is not None:
                await host.process.wait()
    for host in hosts:
        if host.process is not None and host.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(host.process.pid, signal.SIGKILL)


@asynccontextmanager
async def open_fleet(root: Path, tls: TLS) -> AsyncIterator[Fleet]:
    """nginx with the README's upstream block in front of two supervised hosts."""
    for attempt in range(1, ATTEMPTS + 1):
        async with contextlib.AsyncExitStack() as stack:
            try:
                fleet = await _start(stack, root / f"attempt-{attempt}", tls)
            except Exception as error:
                if attempt == ATTEMPTS or not _address_in_use(error):
                    raise
                continue
            yield fleet
            return


def _address_in_use(error: BaseException) -> bool:
    if isinstance(error, BaseExceptionGroup):
        return all(_address_in_use(inner) for inner in error.exceptions)
    return isinstance(error, AddressInUse)
