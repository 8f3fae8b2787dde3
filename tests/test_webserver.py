"""The real Dagster web server serves the code location, its asset graph and checks (GraphQL)."""

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

QUERY = """{ assetNodes { assetKey { path } groupName isPartitioned
              assetChecksOrError { ... on AssetChecks { checks { name blocking } } } } }"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_webserver_serves_asset_graph(tmp_path):
    port = _free_port()
    webserver = Path(sys.executable).with_name("dagster-webserver")
    proc = subprocess.Popen(
        [str(webserver), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(url + "/server_info", timeout=2).read()
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise AssertionError("dagster-webserver did not come up") from None
                time.sleep(1)
        body = None
        while body is None or not body["data"]["assetNodes"]:  # the code location loads after start-up
            req = urllib.request.Request(
                url + "/graphql",
                data=json.dumps({"query": QUERY}).encode(),
                headers={"Content-Type": "application/json"},
            )
            body = json.loads(urllib.request.urlopen(req, timeout=30).read())
            assert "errors" not in body, body
            if time.time() > deadline:
                raise AssertionError(f"no asset nodes served: {body}")
            time.sleep(0.5)
        nodes = {"/".join(n["assetKey"]["path"]): n for n in body["data"]["assetNodes"]}
        assert nodes["vqa_items"]["groupName"] == "ingest" and nodes["vqa_items"]["isPartitioned"]
        checks = {c["name"]: c["blocking"] for c in nodes["vqa_items"]["assetChecksOrError"]["checks"]}
        assert checks == {"vqa_items_contract": True}
        assert "text_qa_items" in nodes
        html = urllib.request.urlopen(url + "/asset-groups", timeout=10).read().decode()
        assert "<title>Dagster</title>" in html or "dagster" in html.lower()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
