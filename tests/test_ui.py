"""Start the real Dagster webserver on a free loopback port and read the graph over GraphQL."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[1]
WORKSPACE = """{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
SCHEDULES = """{ schedulesOrError(repositorySelector: {repositoryName: "__repository__",
  repositoryLocationName: "emp_predator"}) { ... on Schedules { results { name cronSchedule } } } }"""
QUERY = """{
  assetNodes { assetKey { path } isPartitioned
    assetChecksOrError { ... on AssetChecks { checks { name blocking } } } }
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_webserver_serves_the_asset_graph_and_checks(demo_home):
    port = free_port()
    env = {**os.environ, "EMP_HOME": str(demo_home), "DAGSTER_HOME": str(demo_home / "dagster")}
    exe = Path(sys.executable).with_name("dagster-webserver")
    proc = subprocess.Popen(
        [str(exe), "-w", str(ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            try:
                entries = requests.post(f"{url}/graphql", json={"query": WORKSPACE}, timeout=5).json()[
                    "data"]["workspaceOrError"]["locationEntries"]
                if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                    errors = [e["locationOrLoadError"] for e in entries
                              if e["locationOrLoadError"]["__typename"] == "PythonError"]
                    assert not errors, errors
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "the code location did not load in 180 s"
            time.sleep(0.5)
        reply = requests.post(f"{url}/graphql", json={"query": QUERY}, timeout=60)
        reply.raise_for_status()
        nodes = {"/".join(n["assetKey"]["path"]): n for n in reply.json()["data"]["assetNodes"]}
        assert set(nodes) == {"duckdb/market/bars_1d", "duckdb/market/bars_1h", "duckdb/market/universe",
                              "duckdb/macro/series", "duckdb/macro/treasury_curve",
                              *(f"duckdb/sensory/{n}" for n in ("why", "how", "what", "when", "anomaly", "fused",
                                                                 "calibration")),
                              *(f"duckdb/evolution/{n}" for n in ("catalogue", "experiment_log", "lineage",
                                                                   "population", "fitness_runs", "trials",
                                                                   "decision", "champion"))}
        assert nodes["duckdb/sensory/fused"]["isPartitioned"]
        drift = {c["name"]: c["blocking"] for c in nodes["duckdb/sensory/what"]["assetChecksOrError"]["checks"]}
        assert drift == {"drift": False}
        assert nodes["duckdb/market/bars_1d"]["isPartitioned"]
        checks = {c["name"]: c["blocking"] for c in nodes["duckdb/market/bars_1d"]["assetChecksOrError"]["checks"]}
        assert checks == dict.fromkeys(
            ["schema_and_types", "unique_symbol_ts", "ohlc_consistency", "calendar_gaps", "freshness"], True)
        schedules = requests.post(f"{url}/graphql", json={"query": SCHEDULES}, timeout=60).json()
        assert {s["name"]: s["cronSchedule"] for s in schedules["data"]["schedulesOrError"]["results"]} == {
            "daily_bars_ingest": "30 18 * * 1-5", "weekly_trailing_backfill": "0 6 * * 6",
            "evolution_weekly_schedule": "0 8 * * 0"}
        # the instance settings turn Dagster's new-user modal off: the first screen is the graph
        nux = requests.post(f"{url}/graphql", json={"query": "{ shouldShowNux }"}, timeout=60).json()
        assert nux["data"]["shouldShowNux"] is False
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode is not None
