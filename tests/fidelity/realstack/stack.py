"""The real Golem stack, offline: a local chain, our ERC-20 token, and two real yagna daemons.

* **Chain**: anvil (npm ``@foundry-rs/anvil-linux-amd64``, installed into ``.npm-tools/`` by
  ``scripts/bootstrap.sh``) with chain id 17000, the id of holesky, whose payment platform
  ``erc20-holesky-tglm`` the daemons then use.
* **Token**: ``TestGLM.sol`` (ours, a minimal ERC-20 whose deployer may mint), compiled with solcjs (npm ``solc``)
  or taken from ``build/TestGLM.<sha256 of the source, 16 hex>.bin``, deployed from anvil's first account
  (``0x5fbdb2315678afecb367f032d93f642f64180aa3``: account 0, nonce 0) and minted to the requestor.
* **Daemons**: two ``yagna service run`` (golem-node 0.17.6), a requestor and a provider, each with its own data
  directory and ``config-payments.toml`` pointing holesky at anvil and the token. They talk in central-net
  mode through the requestor daemon's GSB router (``YA_NET_TYPE=central``), so nothing leaves loopback.

Readiness is read from the processes' own output: anvil's ``Listening on``, each daemon's ``http workers started``
and ``Config file loaded successfully`` (yagna silently falls back to the public holesky RPC when the file does not
load, so a missing line is a failure). Every wait is bounded; each failure raises :class:`StackError` saying what
did not start and where its log is.

Pitfalls this set-up avoids (found with the prototype): GSB ports of five digits make the daemon loop on
``host not found``, so every port here has four; ``PAYMENT_CYCLE_DEFAULT_INTERVAL`` and ``…_EXTRA_PAY_TIME`` below
5 s make the payment cycle panic; ``OFFER_BROADCAST_DELAY`` (5 s by default) delays the first proposal, so it is
100 ms; timestamps in queries end with ``Z``.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

__all__ = [
    "ANVIL",
    "CHAIN_ID",
    "NETWORK",
    "PLATFORM",
    "SOLCJS",
    "TOKEN_SOURCE",
    "WEI",
    "Chain",
    "Daemon",
    "Processes",
    "RealStack",
    "StackError",
    "compile_token",
    "start_stack",
    "token_bytecode",
]

ROOT = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent
NPM_TOOLS = ROOT / ".npm-tools" / "node_modules"
ANVIL = NPM_TOOLS / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
SOLCJS = NPM_TOOLS / ".bin" / "solcjs"
TOKEN_SOURCE = HERE / "TestGLM.sol"
BUILD = HERE / "build"

NETWORK = "holesky"
DRIVER = "erc20"
PLATFORM = f"{DRIVER}-{NETWORK}-tglm"
CHAIN_ID = 17000
WEI = Decimal(10) ** 18
MINTED = 1000 * 10**18  # tGLM (in wei) minted to the requestor
GAS_ETH = 10 * 10**18  # ETH (in wei) each identity gets for gas

SELECTORS = {"balanceOf(address)": "70a08231", "mint(address,uint256)": "40c10f19"}
TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"

_ANVIL_TIMEOUT = 15.0  # seconds anvil gets to listen
_DAEMON_TIMEOUT = 30.0  # seconds both daemons get to serve REST and load their payment config (about 1 s here)
_CLI_TIMEOUT = 30.0  # seconds one `yagna …` command gets
_STOP_TIMEOUT = 10.0  # seconds a process gets after SIGTERM before SIGKILL
_SOLC_TIMEOUT = 120.0  # seconds solcjs gets
_RECEIPT_TIMEOUT = 10.0  # seconds a transaction gets to be mined
_PORTS = (7000, 9999)  # four digits: a five-digit GSB port makes yagna loop on "host not found"

_ANVIL_READY = re.compile(r"Listening on 127\.0\.0\.1:\d+")
_REST_READY = re.compile(r"http workers started - listening on")
_CONFIG_LOADED = re.compile(r"Config file loaded successfully")
_DAEMON_BROKEN = re.compile(r"Config file found but failed to load|panicked|Failed to bind handlers: host not found")


class StackError(Exception):
    """A part of the stack could not start; the message says which, why, and where its log is."""


# -- processes ------------------------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the test process dies (Linux ``PR_SET_PDEATHSIG``)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]
    seen: str = ""  # the output read while waiting for readiness (bounded)
    drainer: threading.Thread | None = None

    def tail(self, lines: int = 15) -> str:
        self.log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return "\n    ".join(text)


class Processes:
    """Every process the stack started; :meth:`stop_all` ends them (by process group) and closes their logs."""

    def __init__(self) -> None:
        self._items: list[_Process] = []

    def start(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> _Process:
        log = log_path.open("wb")
        try:
            popen = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        except OSError as exc:
            log.close()
            raise StackError(f"{name} cannot be run ({argv[0]}): {exc}") from exc
        process = _Process(name, popen, log_path, log)
        self._items.append(process)
        return process

    def stop_all(self, grace: float = _STOP_TIMEOUT) -> dict[str, float]:
        """SIGTERM to every live process group at once, SIGKILL what is left after ``grace`` s; seconds each took."""
        started = time.monotonic()
        for process in self._items:
            if process.drainer is None and process.popen.stdout is not None:  # it failed to start: keep reading
                process.drainer = threading.Thread(
                    target=_drain, args=(process,), name=f"{process.name}-log", daemon=True
                )
                process.drainer.start()
            if process.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.popen.pid, signal.SIGTERM)
        took = {}
        for process in self._items:
            try:
                process.popen.wait(max(grace - (time.monotonic() - started), 0.1))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.popen.pid, signal.SIGKILL)
                process.popen.wait(_STOP_TIMEOUT)
            took[process.name] = time.monotonic() - started
            if process.drainer is not None:
                process.drainer.join(_STOP_TIMEOUT)
            if process.popen.stdout is not None:
                process.popen.stdout.close()
            process.log.close()
        self._items.clear()
        return took


def _drain(process: _Process) -> None:
    stream = process.popen.stdout
    assert stream is not None
    for chunk in iter(lambda: stream.read1(65536), b""):  # type: ignore[attr-defined]
        process.log.write(chunk)
    process.log.flush()


def _wait_for_lines(
    wanted: dict[str, list[re.Pattern[str]]],
    processes: dict[str, _Process],
    timeout: float,
    broken: re.Pattern[str] | None = None,
) -> None:
    """Copy each process's output to its log until every pattern of ``wanted[name]`` has been seen in it.

    Raises :class:`StackError` when a process exits, prints a ``broken`` line, or ``timeout`` passes first. Then
    a thread per process keeps copying its output to its log.
    """
    missing = {name: list(patterns) for name, patterns in wanted.items()}
    by_fd = {}
    for name in wanted:
        stream = processes[name].popen.stdout
        assert stream is not None
        by_fd[stream.fileno()] = processes[name]
    deadline = time.monotonic() + timeout
    while any(missing.values()):
        left = deadline - time.monotonic()
        if left <= 0:
            lacking = "; ".join(
                f"{name}: no line matching {[p.pattern for p in patterns]} (log {processes[name].log_path}:\n    "
                f"{processes[name].tail()})"
                for name, patterns in missing.items()
                if patterns
            )
            raise StackError(f"not ready within {timeout:g} s: {lacking}")
        readable, _, _ = select.select(list(by_fd), [], [], left)
        for fd in readable:
            process = by_fd[fd]
            chunk = os.read(fd, 65536)
            if not chunk:
                code = process.popen.wait(_STOP_TIMEOUT)
                raise StackError(
                    f"{process.name} exited with code {code} while starting; its log {process.log_path} ends:\n    "
                    f"{process.tail()}"
                )
            process.log.write(chunk)
            process.seen = (process.seen + chunk.decode(errors="replace"))[-200_000:]
            if broken is not None and (bad := broken.search(process.seen)):
                line = process.seen[process.seen.rfind("\n", 0, bad.start()) + 1 :].split("\n", 1)[0]
                raise StackError(f"{process.name} failed while starting: {line.strip()} (log {process.log_path})")
            missing[process.name] = [p for p in missing[process.name] if not p.search(process.seen)]
            if not missing[process.name]:
                del by_fd[fd]
    for name in wanted:
        process = processes[name]
        process.log.flush()
        process.drainer = threading.Thread(target=_drain, args=(process,), name=f"{name}-log", daemon=True)
        process.drainer.start()


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback TCP ports of four digits that nobody listens on now."""
    low, high = _PORTS
    start = random.randrange(low, high)
    ports: list[int] = []
    for offset in range(high - low):
        port = low + (start - low + offset) % (high - low)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == count:
            return ports
    raise StackError(f"no {count} free loopback ports between {low} and {high}")


# -- the chain ------------------------------------------------------------------------------------------------


def _address_word(address: str) -> str:
    return address.lower().removeprefix("0x").rjust(64, "0")


class Chain:
    """JSON-RPC to anvil (blocking: each call is a few ms on loopback)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._id = 0

    def rpc(self, method: str, *params: Any, timeout: float = 10.0) -> Any:
        self._id += 1
        body = json.dumps({"jsonrpc": "2.0", "id": self._id, "method": method, "params": list(params)}).encode()
        request = urllib.request.Request(self.url, body, {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                answer = json.loads(response.read())
        except (urllib.error.URLError, OSError) as exc:
            raise StackError(f"the chain at {self.url} did not answer {method}: {exc}") from exc
        if "error" in answer:
            raise StackError(f"the chain refused {method}: {answer['error']}")
        return answer["result"]

    def send(self, sender: str, to: str | None, data: str, *, gas: int = 3_000_000) -> dict[str, Any]:
        """Send a transaction from an unlocked dev account; its receipt, once anvil has mined it."""
        tx: dict[str, Any] = {"from": sender, "data": data, "gas": hex(gas)}
        if to is not None:
            tx["to"] = to
        tx_hash = self.rpc("eth_sendTransaction", tx)
        deadline = time.monotonic() + _RECEIPT_TIMEOUT
        while (receipt := self.rpc("eth_getTransactionReceipt", tx_hash)) is None:
            if time.monotonic() > deadline:  # anvil mines each transaction as it comes: milliseconds
                raise StackError(f"transaction {tx_hash} was not mined within {_RECEIPT_TIMEOUT:g} s")
            time.sleep(0.005)
        if int(receipt["status"], 16) != 1:
            raise StackError(f"transaction {tx_hash} reverted: {receipt}")
        return receipt

    def balance_of(self, token: str, holder: str) -> int:
        """``token.balanceOf(holder)`` in wei, read with ``eth_call``."""
        data = "0x" + SELECTORS["balanceOf(address)"] + _address_word(holder)
        return int(self.rpc("eth_call", {"to": token, "data": data}, "latest"), 16)

    def transfers_to(self, token: str, holder: str) -> list[dict[str, Any]]:
        """The token's ``Transfer`` logs to ``holder``: tx hash, block, sender, value (wei)."""
        logs = self.rpc(
            "eth_getLogs",
            {
                "fromBlock": "0x0",
                "toBlock": "latest",
                "address": token,
                "topics": [TRANSFER_TOPIC, None, "0x" + _address_word(holder)],
            },
        )
        return [
            {
                "tx": log["transactionHash"],
                "block": int(log["blockNumber"], 16),
                "from": "0x" + log["topics"][1][-40:],
                "value": int(log["data"], 16),
            }
            for log in logs
        ]


def compile_token(out_dir: Path) -> str:
    """The creation bytecode of ``TestGLM.sol``, compiled now with solcjs (``--bin --optimize``)."""
    if not SOLCJS.exists():
        raise StackError(f"solcjs is missing at {SOLCJS}: run ./scripts/test (it installs .npm-tools)")
    done = subprocess.run(
        [str(SOLCJS), "--bin", "--optimize", "-o", str(out_dir), TOKEN_SOURCE.name],
        cwd=TOKEN_SOURCE.parent,
        capture_output=True,
        timeout=_SOLC_TIMEOUT,
        check=False,
    )
    outputs = list(out_dir.glob("*TestGLM.bin"))
    if done.returncode != 0 or not outputs:
        raise StackError(f"solcjs failed ({done.returncode}): {done.stderr.decode(errors='replace')[-2000:]}")
    return outputs[0].read_text().strip()


def token_bytecode(cache: Path = BUILD) -> tuple[str, str]:
    """The token's bytecode and where it came from: ``cached`` (``build/``, keyed by the source's hash) or
    ``compiled`` (solcjs, then cached)."""
    key = hashlib.sha256(TOKEN_SOURCE.read_bytes()).hexdigest()[:16]
    cached = cache / f"TestGLM.{key}.bin"
    if cached.exists():
        return cached.read_text().strip(), "cached"
    with tempfile.TemporaryDirectory() as out:
        code = compile_token(Path(out))
    cache.mkdir(parents=True, exist_ok=True)
    cached.write_text(code + "\n")
    return code, "compiled"


# -- the daemons ----------------------------------------------------------------------------------------------


def payments_config(rpc_url: str, token: str) -> str:
    """``config-payments.toml``: holesky is anvil with our token (the file replaces the built-in config whole)."""
    return f"""\
[engine]
process-interval = 1
process-interval-after-error = 2
process-interval-after-no-gas-or-token-start = 2
process-interval-after-no-gas-or-token-max = 10
process-interval-after-no-gas-or-token-increase = 1.5
process-interval-after-send = 1
report-alive-interval = 5
gather-interval = 1
gather-at-start = true
automatic-recover = false
ignore-deadlines = false

[chain.{NETWORK}]
chain-name = "Holesky (local anvil)"
chain-id = {CHAIN_ID}
currency-symbol = "tETH"
priority-fee = 0.000001
max-fee-per-gas = 20.0
transaction-timeout = 100
token = {{ address = "{token}", symbol = "tGLM" }}
confirmation-blocks = 0
external-source-check-interval = 300

[[chain.{NETWORK}.rpc-endpoints]]
names = "anvil"
endpoints = "{rpc_url}"
priority = 0
max-timeout-ms = 5000
verify-interval-secs = 300
allowed-head-behind-secs = 86400
"""


def yagna_binary() -> Path:
    """The ``yagna`` of the test venv (the golem-node wheel), else one on PATH."""
    beside = Path(sys.executable).parent / "yagna"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("yagna")
    if found is None:
        raise StackError("no yagna binary: install the golem-node wheel into the test venv (pip install golem-node)")
    return Path(found)


@dataclass(frozen=True)
class Daemon:
    """One running yagna: its REST root ``url``, the autoconfigured ``app_key`` and its ``identity``."""

    name: str
    url: str
    app_key: str
    identity: str
    env: dict[str, str]
    data_dir: Path
    log_path: Path
    binary: Path

    def cli(self, *args: str) -> Any:
        """``yagna <args> --json`` against this daemon; its decoded answer."""
        done = subprocess.run(
            [str(self.binary), *args, "--json"], env=self.env, capture_output=True, timeout=_CLI_TIMEOUT, check=False
        )
        if done.returncode != 0:
            raise StackError(
                f"{self.name}: yagna {' '.join(args)} failed ({done.returncode}): "
                f"{done.stderr.decode(errors='replace')[-1500:]}"
            )
        text = done.stdout.decode().strip()
        return json.loads(text) if text else None

    def panics(self) -> list[str]:
        """Lines of its log that report a panic (a poisoned payment cycle keeps running, broken)."""
        return [line for line in self.log_path.read_text(errors="replace").splitlines() if "panicked" in line]


def _daemon_env(data_dir: Path, gsb: int, api: int, app_key: str, router: int, relay: int) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("YAGNA_", "GSB_", "YA_", "CENTRAL_", "PAYMENT_", "ERC20", "HOLESKY_", "HOODI_"))
    }
    env.update(
        YAGNA_DATADIR=str(data_dir),
        GSB_URL=f"tcp://127.0.0.1:{gsb}",
        YAGNA_API_URL=f"http://127.0.0.1:{api}",
        YAGNA_AUTOCONF_APPKEY=app_key,
        YA_NET_TYPE="central",
        CENTRAL_NET_HOST=f"127.0.0.1:{router}",  # the requestor daemon's GSB router, for both
        YA_NET_RELAY_HOST=f"127.0.0.1:{relay}",  # nobody listens: the hybrid net is never used
        PAYMENT_CYCLE_DEFAULT_INTERVAL="5s",  # less than 5 s panics the payment cycle
        PAYMENT_CYCLE_DEFAULT_EXTRA_PAY_TIME="5s",
        OFFER_BROADCAST_DELAY="100ms",  # yagna's default (5 s) delays every first proposal
        UNSUB_BROADCAST_DELAY="100ms",
        RUST_LOG="info",
    )
    return env


@dataclass
class RealStack:
    """The running stack: the chain, the token, both daemons, and what starting them took."""

    rpc_url: str
    token: str
    deployer: str
    requestor: Daemon
    provider: Daemon
    anvil_version: str
    yagna_version: str
    token_source: str  # "cached" or "compiled"
    transactions: dict[str, str] = field(default_factory=dict)  # "deploy", "mint" -> tx hash
    timings: dict[str, float] = field(default_factory=dict)  # phase -> seconds

    @property
    def chain(self) -> Chain:
        return Chain(self.rpc_url)


@contextlib.contextmanager
def _timed(timings: dict[str, float], phase: str) -> Iterator[None]:
    started = time.monotonic()
    try:
        yield
    finally:
        timings[phase] = time.monotonic() - started


def start_stack(
    root: Path,
    processes: Processes,
    *,
    token: Callable[[], tuple[str, str]] = token_bytecode,
    config: Callable[[str, str], str] = payments_config,
) -> RealStack:
    """Start anvil, deploy the token, start both daemons, fund the requestor; :class:`StackError` on failure.

    Every process goes into ``processes`` as it starts, so that the caller stops whatever did start. ``token``
    gives the bytecode, ``config(rpc_url, token address)`` each daemon's ``config-payments.toml``.
    """
    if not ANVIL.exists():
        raise StackError(f"anvil is missing at {ANVIL}: run ./scripts/test (it installs .npm-tools)")
    binary = yagna_binary()
    timings: dict[str, float] = {}
    anvil_port, req_gsb, req_api, prov_gsb, prov_api, relay = free_ports(6)
    rpc_url = f"http://127.0.0.1:{anvil_port}"
    chain = Chain(rpc_url)
    started = time.monotonic()

    with _timed(timings, "anvil up"):
        anvil = processes.start(
            "anvil",
            [
                str(ANVIL),
                "--chain-id",
                str(CHAIN_ID),
                "--port",
                str(anvil_port),
                "--host",
                "127.0.0.1",
                "--accounts",
                "2",
            ],
            dict(os.environ),
            root / "anvil.log",
        )
        _wait_for_lines({"anvil": [_ANVIL_READY]}, {"anvil": anvil}, _ANVIL_TIMEOUT)
        if int(chain.rpc("eth_chainId"), 16) != CHAIN_ID:
            raise StackError(f"anvil does not run chain {CHAIN_ID}")
        anvil_version = str(chain.rpc("web3_clientVersion"))

    with _timed(timings, "token deploy"):
        bytecode, source = token()
        deployer = chain.rpc("eth_accounts")[0]
        receipt = chain.send(deployer, None, "0x" + bytecode)
        token_address = str(receipt["contractAddress"])

    with _timed(timings, "daemons up"):
        config_text = config(rpc_url, token_address)
        envs = {}
        for name, gsb, api in (("requestor", req_gsb, req_api), ("provider", prov_gsb, prov_api)):
            data_dir = root / name
            data_dir.mkdir()
            (data_dir / "config-payments.toml").write_text(config_text)  # before the first start
            envs[name] = _daemon_env(data_dir, gsb, api, f"realstack-{name}-key", req_gsb, relay)
        daemons = {
            name: processes.start(
                name, [str(binary), "service", "run", "--disable-metrics-push"], env, root / f"{name}.log"
            )
            for name, env in envs.items()
        }
        ready = [_REST_READY, _CONFIG_LOADED]
        _wait_for_lines(dict.fromkeys(daemons, ready), daemons, _DAEMON_TIMEOUT, broken=_DAEMON_BROKEN)

    def daemon(name: str, api: int) -> Daemon:
        env = envs[name]
        made = Daemon(
            name,
            f"http://127.0.0.1:{api}",
            env["YAGNA_AUTOCONF_APPKEY"],
            "",
            env,
            root / name,
            root / f"{name}.log",
            binary,
        )
        identity = made.cli("id", "show")["Ok"]["nodeId"]
        return Daemon(made.name, made.url, made.app_key, str(identity), env, made.data_dir, made.log_path, binary)

    with _timed(timings, "identities + funds"):
        requestor, provider = daemon("requestor", req_api), daemon("provider", prov_api)
        mint = "0x" + SELECTORS["mint(address,uint256)"] + _address_word(requestor.identity) + f"{MINTED:064x}"
        minted = chain.send(deployer, token_address, mint)
        for address in (requestor.identity, provider.identity):
            chain.rpc("anvil_setBalance", address, hex(GAS_ETH))
        if chain.balance_of(token_address, requestor.identity) != MINTED:
            raise StackError("the mint did not reach the requestor")
        requestor.cli("payment", "init", "--sender", "--network", NETWORK, "--driver", DRIVER)
        provider.cli("payment", "init", "--receiver", "--network", NETWORK, "--driver", DRIVER)
        status = requestor.cli("payment", "status", "--network", NETWORK, "--driver", DRIVER)
        if Decimal(str(status.get("amount", "0"))) != Decimal(MINTED) / WEI:
            raise StackError(f"the requestor daemon does not see its {MINTED / 10**18} tGLM on anvil: {status}")
    timings["whole start"] = time.monotonic() - started

    version = subprocess.run([str(binary), "--version"], capture_output=True, timeout=_CLI_TIMEOUT, check=False)
    return RealStack(
        rpc_url=rpc_url,
        token=token_address,
        deployer=deployer,
        requestor=requestor,
        provider=provider,
        anvil_version=anvil_version,
        yagna_version=version.stdout.decode().strip(),
        token_source=source,
        transactions={"deploy": receipt["transactionHash"], "mint": minted["transactionHash"]},
        timings=timings,
    )
