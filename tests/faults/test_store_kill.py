"""Fault injection: ``kill -9`` of store writers at random moments.

Each try starts two writer processes on one store; each commits, again and again,
one transaction that relabels every service with its own generation tag (and,
so that much of the time goes to SQLite writing rather than Python, a 200 kB
annotation: 4 MB a transaction, more than SQLite's page cache, so its pages
spill into the file before the commit). Each is killed with SIGKILL at a random
moment within its first few transactions. Then every read
command and a write must work, and the data must be one committed transaction,
whole: all the services, all with the same tag (the old one or a new one).

The number of tries is bounded (``SVCNET_FAULT_TRIES``, default 20); the seed is
printed so a failure can be replayed (``SVCNET_FAULT_SEED``). The figures (tries,
hot journals left by the kills, reads that rolled them back) are printed.
"""

from __future__ import annotations

import inspect
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import pytest

from svcnet import manifests
from svcnet.model import KubeObject
from svcnet.state import Apply
from svcnet.store import Store

SERVICES = 20
TRIES = int(os.environ.get("SVCNET_FAULT_TRIES", "20"))
JOURNAL_MAGIC = bytes.fromhex("d9d505f920a163d7")  # a rollback journal's synced header

pytestmark = pytest.mark.slow


def services(tag: str, pad: int = 0) -> list[dict[str, object]]:
    """The manifests of one generation (here and, by its source, in the writers)."""
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": f"s{i}", "labels": {"gen": tag}, "annotations": {"p": "x" * pad}},
            "spec": {"selector": {"app": "a"}, "ports": [{"port": 80}]},
        }
        for i in range(SERVICES)
    ]


WRITER = (
    f"SERVICES = {SERVICES}\n"
    + inspect.getsource(services)
    + """
import sys
from svcnet import manifests
from svcnet.state import Apply
from svcnet.store import Store
store, who = Store(sys.argv[1]), sys.argv[2]
print("started", flush=True)
for n in range(1, 1_000_000):
    with store.modify() as s:
        objs = tuple(manifests.load(services(f"{who}-{n}", pad=200_000 + n % 7)))
        s.save(s.state.step(Apply(objs)))
    print(f"{who}-{n}", flush=True)
"""
)


def is_hot(journal: pathlib.Path) -> bool:
    """A journal SQLite must roll back: its header was synced (a journal left
    with a zeroed header, from a writer killed before its first sync, is ignored)."""
    try:
        with journal.open("rb") as f:
            return f.read(8) == JOURNAL_MAGIC
    except FileNotFoundError:
        return False


def tags(store: Store) -> set[str]:
    state = store.load()
    assert len(state.services) == SERVICES  # nothing lost
    return {svc.labels["gen"] for svc in state.services.values()}


def test_kill_writers_at_random_moments(tmp_path: pathlib.Path) -> None:
    seed = int(os.environ.get("SVCNET_FAULT_SEED", str(random.randrange(1 << 32))))
    rnd = random.Random(seed)
    print(f"\nseed {seed}, {TRIES} tries")
    path = str(tmp_path / "s.db")
    store = Store(path)
    with store.modify() as s:
        first: tuple[KubeObject, ...] = tuple(manifests.load(services("base")))
        s.save(s.state.step(Apply(first)))
    hot = committed = 0
    for attempt in range(TRIES):
        before = tags(store)
        assert len(before) == 1
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", WRITER, path, f"w{attempt}{who}"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for who in "ab"
        ]
        outputs: list[list[str]] = []
        try:
            for p in procs:  # imported, and starting their first transaction
                assert p.stdout is not None and p.stdout.readline() == "started\n"
            # the kill moments: within the first few transactions, independently (a
            # writer waiting for the lock is at a moment like any other)
            for p in rnd.sample(procs, len(procs)):
                time.sleep(rnd.uniform(0.0, 0.4))
                p.send_signal(signal.SIGKILL)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                out, err = p.communicate()
                outputs.append(out.split())
                assert p.returncode == -signal.SIGKILL, err
        journal = pathlib.Path(path + "-journal")
        hot += is_hot(journal)
        done = {line for out in outputs for line in out}
        committed += len(done)
        # every read command works, and reads one committed transaction, whole:
        # the last one before the kills, or one whose commit the kill cut before
        # its writer printed it
        (tag,) = tags(store)
        assert tag in before | done or tag.startswith(f"w{attempt}")
        assert store.synced("memory", "t", "node-a") is None
        assert not is_hot(journal)  # the reader rolled any hot journal back
        # a write works, and is read back
        with store.modify() as s:
            after: tuple[KubeObject, ...] = tuple(manifests.load(services(f"fix{attempt}")))
            s.save(s.state.step(Apply(after)))
        assert tags(store) == {f"fix{attempt}"}
    print(
        f"{TRIES} tries, 2 writers each: {committed} transactions committed, "
        f"{hot} hot journals left by the kills, all rolled back by the next read"
    )
