"""``svcnet agent`` as a real process, without privileges (the memory backend):
it follows ``svcnet apply`` run by another process, writes its status file, says
when the first sync is done, logs each sync, and exits 0 on SIGTERM; and the
namespace options it refuses."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
from collections.abc import Callable

from storehelp import DEMO, WEB4_POD, wait
from storehelp import svcnet as run_svcnet

from svcnet.agent import read_status

DEADLINE = 60.0  # seconds any wait below may take at most (it normally takes far less)

POD = WEB4_POD


def svcnet(store: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_svcnet(store, *args, timeout=DEADLINE)


def _wait(what: str, cond: Callable[[], bool]) -> None:
    wait(what, cond, DEADLINE, interval=0.02)


def _version(path: str) -> int | None:
    status = read_status(path)
    return None if status is None else status.get("version")


def _store_version(store: str) -> int:
    from svcnet.store import Store

    return Store(store).version()


def test_agent_process_follows_apply_and_exits_0_on_sigterm(tmp_path: pathlib.Path) -> None:
    store = str(tmp_path / "store.db")
    assert svcnet(store, "apply", "-f", str(DEMO)).returncode == 0
    run_dir = str(tmp_path / "agents")
    status = os.path.join(run_dir, "memory-node-a.json")
    args = ["--store", store, "agent", "--node", "node-a", "--backend", "memory"]
    agent = subprocess.Popen(
        [sys.executable, "-m", "svcnet", *args, "--run-dir", run_dir],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait("the first sync", lambda: _version(status) == _store_version(store))
        pod = tmp_path / "web4.yaml"
        pod.write_text(POD)
        assert svcnet(store, "apply", "-f", str(pod)).returncode == 0
        _wait("web-4 programmed", lambda: _version(status) == _store_version(store))
        got = read_status(status)
        assert got is not None and got["pid"] == agent.pid and got["syncs"] >= 2
        assert got["last_sync"]["full"] is False and got["last_sync"]["replaced"] >= 1
        assert got["store"] == store and got["netns"] is None and got["error"] is None
        agent.send_signal(signal.SIGTERM)
        _, err = agent.communicate(timeout=DEADLINE)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    assert agent.returncode == 0, err
    assert "agent: node node-a programmed store version" in err
    assert "services) in" in err
    assert "synced version" in err and "incremental" in err
    final = read_status(status)
    assert final is not None and final["running"] is False


def test_agent_refuses_a_kernel_backend_without_one_namespace(tmp_path: pathlib.Path) -> None:
    store = str(tmp_path / "store.db")
    neither = svcnet(store, "agent", "--node", "node-a", "--backend", "nftables")
    assert neither.returncode == 2
    assert "give --netns NS" in neither.stderr and "--host" in neither.stderr
    both = svcnet(
        store, "agent", "--node", "node-a", "--backend", "nftables", "--netns", "x", "--host"
    )
    assert both.returncode == 2 and "not both" in both.stderr
    missing = svcnet(
        store, "agent", "--node", "node-a", "--backend", "nftables",
        "--netns", "svcnet-agent-no-such-ns",
    )  # fmt: skip
    assert missing.returncode == 1
    assert missing.stderr.strip() == (
        "error: network namespace 'svcnet-agent-no-such-ns' does not exist (ip netns list)"
    )
    unknown = svcnet(store, "agent", "--node", "node-a", "--backend", "no-such-backend")
    assert unknown.returncode == 2 and "no backend named 'no-such-backend'" in unknown.stderr
