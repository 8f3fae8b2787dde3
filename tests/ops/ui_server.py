"""The real Dagster UI (``dagster dev``: web server + daemon) started the way ``make ui`` starts it.

:func:`dagster_ui` runs the command and environment of :func:`orchestration.ui.launch_spec` on a free
localhost port, waits (bounded) until the web server serves the code location's assets, and stops the whole
process group afterwards, so a server that never comes up fails the test instead of hanging CI.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from orchestration import ui

ASSET_NODES = "{ assetNodes { assetKey { path } } }"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def graphql(base_url: str, query: str, timeout_s: float = 30) -> dict:
    """POST ``query`` to the web server's GraphQL endpoint; raises on GraphQL errors."""
    request = urllib.request.Request(
        base_url + "/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    body = json.loads(urllib.request.urlopen(request, timeout=timeout_s).read())
    if "errors" in body:
        raise RuntimeError(f"GraphQL errors from {base_url}: {body['errors']}")
    return body["data"]


def _tail(path: Path, n: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else "(no log)"


def asset_keys(base_url: str) -> list[str]:
    return sorted("/".join(n["assetKey"]["path"]) for n in graphql(base_url, ASSET_NODES)["assetNodes"])


def _wait_until_serving(proc: subprocess.Popen, base_url: str, timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(
                f"dagster dev exited with {proc.returncode} before serving; its log ({log}):\n{_tail(log)}"
            )
        with contextlib.suppress(OSError, ValueError, RuntimeError):
            urllib.request.urlopen(base_url + "/server_info", timeout=2).read()
            if asset_keys(base_url):  # the code location loads after the web server starts
                return
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"dagster dev did not serve the asset graph within {timeout_s:.0f} s; "
                f"its log ({log}):\n{_tail(log)}"
            )
        time.sleep(1)


def _stop(proc: subprocess.Popen, grace_s: float = 30) -> None:
    """SIGTERM to ``dagster dev`` (it stops its web server, daemon and code servers), then SIGKILL to the
    process group it leads if anything is left after ``grace_s``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: only processes this test started
    proc.wait(timeout=30)


@contextlib.contextmanager
def dagster_ui(home: Path, log: Path, start_timeout_s: float = 240) -> Iterator[str]:
    """Start the UI for the instance at ``home`` (settings recorded there) and yield its base URL."""
    port = free_port()
    command, env = ui.launch_spec(home, "127.0.0.1", port)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            command,
            cwd=ui.REPO_DIR,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        base_url = f"http://127.0.0.1:{port}"
        _wait_until_serving(proc, base_url, start_timeout_s, log)
        yield base_url
    finally:
        _stop(proc)
