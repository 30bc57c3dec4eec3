"""Kernel tests, both drivers, each in a fresh ``svcnet-`` network namespace."""

from __future__ import annotations

import glob
import os
import subprocess
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import (
    agree_with_semantics,
    clusters,
    events,
    initial_state,
    kernel_skip_reason,
    netns,
    sh,
    step,
    strip_save,
)
from svcnet_iptables import IptablesBackend

from svcnet.errors import BackendError, BackendErrorKind
from svcnet.kernel import SCENARIO_PREFIX, kernel_backends
from svcnet.model import IPFamily
from svcnet.plan import compile
from svcnet.scenario import format_report, run_files, totals

# the public examples, vendored in the package's svcnet/scenarios/examples
SHARED_EXAMPLES = str(
    __import__("pathlib").Path(__file__).resolve().parents[3] / "svcnet" / "scenarios" / "examples"
)

pytestmark = pytest.mark.kernel
DRIVERS = ["restore", "iptc"]
SCENARIOS = sorted(
    glob.glob(SHARED_EXAMPLES + "/*.yaml")
    + glob.glob(os.path.join(os.path.dirname(__file__), "../../../svcnet/scenarios/*.yaml"))
    + glob.glob(os.path.join(os.path.dirname(__file__), "scenarios/*.yaml"))
)
SAVE = {"restore": "iptables-save", "iptc": "iptables-legacy-save"}
#: Hypothesis examples of the kernel agreement test, per driver.
BAD_LINE = "-A SVCNET-SERVICES -j NO-SUCH-TARGET-X"
AGREEMENT_EXAMPLES = {"restore": 40, "iptc": 25}


def _skip(driver: str) -> None:
    reason = kernel_skip_reason(driver)
    if reason:
        pytest.skip(reason)


def _factory(driver: str) -> type[IptablesBackend]:
    class Bound(IptablesBackend):
        def __init__(self, node: str, *, netns: str | None = None) -> None:
            super().__init__(node, netns=netns, driver=driver)

    return Bound


@pytest.mark.parametrize("driver", DRIVERS)
def test_scenarios(driver: str) -> None:
    _skip(driver)
    assert SCENARIOS, "no scenario files found"
    with kernel_backends(_factory(driver), SCENARIO_PREFIX) as make:
        results = run_files(SCENARIOS, make)
    passed, failed, _skipped = totals(results)
    assert failed == 0, format_report(results)
    assert passed > 0


@pytest.mark.parametrize("driver", DRIVERS)
def test_agreement_random_clusters(driver: str) -> None:
    """Random clusters and events, applied incrementally to a real kernel, probed
    through the read-back, agree with svcnet.semantics (derandomised; about 30 s for
    restore, about 10 s for iptc; a 150 s guard bounds a heavily loaded box)."""
    _skip(driver)
    deadline = time.monotonic() + 150
    examples = []

    @settings(
        max_examples=AGREEMENT_EXAMPLES[driver],
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(batches=clusters(), data=st.data())
    def run(batches, data):  # type: ignore[no-untyped-def]
        if time.monotonic() > deadline:
            return
        examples.append(1)
        state = initial_state(batches)
        with netns() as ns:
            be = IptablesBackend("node-a", netns=ns, driver=driver)
            be.update(compile(state, "node-a"))
            _agree(be, state)
            for event in data.draw(events(nsvc=3)):
                state = step(state, event)
                be.update(compile(state, "node-a"))
            _agree(be, state)

    run()
    assert examples


def _agree(be: IptablesBackend, state: object) -> None:
    agree_with_semantics(be.observe(), state)  # type: ignore[arg-type]


FOREIGN = {
    "nat": "*nat\n:FOREIGN-NAT - [0:0]\n-A PREROUTING -s 1.2.3.4/32 -j FOREIGN-NAT\n"
    "-A FOREIGN-NAT -j RETURN\n-A PREROUTING -p tcp -m tcp --dport 2222 -j ACCEPT\nCOMMIT\n",
    "filter": "*filter\n:FOREIGN-F - [0:0]\n-A INPUT -s 5.6.7.8/32 -j FOREIGN-F\n"
    "-A FOREIGN-F -j ACCEPT\n-A INPUT -p udp -m udp --dport 53 -j ACCEPT\nCOMMIT\n",
}


def _plan():  # type: ignore[no-untyped-def]
    """A fixed small cluster: one NodePort service, three endpoints, affinity."""
    from support import initial_state as init
    from support import node_docs

    docs = (
        node_docs()
        + [
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "web", "namespace": "default"},
                "spec": {
                    "type": "NodePort",
                    "selector": {"app": "web"},
                    "clusterIP": "10.96.1.10",
                    "ipFamilyPolicy": "PreferDualStack",
                    "ports": [{"port": 80, "targetPort": 8080, "nodePort": 30080}],
                    "sessionAffinity": "ClientIP",
                },
            },
        ]
        + [
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"w{i}", "namespace": "default", "labels": {"app": "web"}},
                "spec": {
                    "nodeName": "node-a" if i % 2 else "node-b",
                    "containers": [{"name": "c"}],
                },
                "status": {
                    "podIPs": [{"ip": f"10.244.{1 + i % 2}.{20 + i}"}],
                    "conditions": [{"type": "Ready", "status": "True"}],
                },
            }
            for i in range(3)
        ]
    )
    return init([docs])


@pytest.mark.parametrize("driver", DRIVERS)
def test_failed_restore_leaves_rules(driver: str) -> None:
    _skip(driver)
    state = _plan()
    plan = compile(state, "node-a")
    with netns() as ns:
        be = IptablesBackend("node-a", netns=ns, driver=driver)
        be.sync(plan)
        before = {
            f: strip_save(sh(ns, SAVE[driver].replace("iptables", p)))
            for f, p in (("4", "iptables"), ("6", "ip6tables"))
        }
        assert "SVCNET-SERVICES" in before["4"]
        # every table's text gets a line the kernel refuses, just before COMMIT
        drv = be.driver
        apply_texts = drv.apply

        def broken_apply(texts):  # type: ignore[no-untyped-def]
            bad = {k: v.replace("COMMIT", BAD_LINE + "\nCOMMIT") for k, v in texts.items()}
            return apply_texts(bad)

        drv.apply = broken_apply  # type: ignore[method-assign]
        streaming = getattr(drv, "restore_stream", None)
        if streaming is not None:  # the restore driver streams a full sync

            def broken_stream(family, chunks, **kw):  # type: ignore[no-untyped-def]
                bad = (c.replace("COMMIT", BAD_LINE + "\nCOMMIT") for c in chunks)
                return streaming(family, bad, **kw)

            drv.restore_stream = broken_stream  # type: ignore[attr-defined]
        try:
            with pytest.raises(BackendError) as info:
                be.sync(
                    compile(
                        state.step(
                            __import__("svcnet.state").state.Delete(
                                (
                                    __import__("svcnet.model").model.ObjectKey(
                                        __import__("svcnet.model").model.Kind.POD, "default", "w1"
                                    ),
                                )
                            )
                        ),
                        "node-a",
                    )
                )
            assert info.value.__cause__ is not None
        finally:
            del drv.apply
            if streaming is not None:
                del drv.restore_stream  # type: ignore[attr-defined]
        after = {
            f: strip_save(sh(ns, SAVE[driver].replace("iptables", p)))
            for f, p in (("4", "iptables"), ("6", "ip6tables"))
        }
        assert after == before
        assert be.installed == plan


def test_render_error_mid_stream_changes_nothing() -> None:
    """A full sync streams its text into iptables-restore while rendering; if
    rendering fails half-way, the process is killed before COMMIT and the kernel
    keeps the previous rules exactly."""
    _skip("restore")
    state = _plan()
    plan = compile(state, "node-a")
    with netns() as ns:
        be = IptablesBackend("node-a", netns=ns, variant="legacy")  # legacy streams
        be.sync(plan)
        before = strip_save(sh(ns, "iptables-legacy-save"))
        streaming = be.driver.restore_stream  # type: ignore[attr-defined]

        def failing(family, chunks, **kw):  # type: ignore[no-untyped-def]
            def gen():  # type: ignore[no-untyped-def]
                for i, chunk in enumerate(chunks):
                    if i == 2:
                        raise RuntimeError("renderer failed half-way")
                    yield chunk

            return streaming(family, gen(), **kw)

        be.driver.restore_stream = failing  # type: ignore[attr-defined]
        with pytest.raises(RuntimeError, match="half-way"):
            be.sync(plan)
        assert strip_save(sh(ns, "iptables-legacy-save")) == before
        assert be.installed == plan

        def refused(family, chunks, **kw):  # type: ignore[no-untyped-def]
            bad = (c.replace("COMMIT", BAD_LINE + "\nCOMMIT") for c in chunks)
            return streaming(family, bad, **kw)

        be.driver.restore_stream = refused  # type: ignore[attr-defined]
        with pytest.raises(BackendError, match=r"iptables-legacy-restore failed"):
            be.sync(plan)
        assert strip_save(sh(ns, "iptables-legacy-save")) == before
        assert be.installed == plan


@pytest.mark.parametrize("driver", DRIVERS)
def test_cleanup_keeps_foreign_rules(driver: str) -> None:
    _skip(driver)
    restore = "iptables-legacy-restore" if driver == "iptc" else "iptables-restore"
    with netns() as ns:
        for text in FOREIGN.values():
            sh(ns, f"{restore} --noflush", stdin=text)
        # nat and filter only: libiptc's table handles make the kernel load empty
        # raw/mangle/security tables, which hold no rules
        save = SAVE[driver] + " -t nat"
        pristine = strip_save(sh(ns, save))
        be = IptablesBackend("node-a", netns=ns, driver=driver)
        be.sync(compile(_plan(), "node-a"))
        mid = sh(ns, save)
        assert "SVCNET-SEP-" in mid and "FOREIGN-NAT" in mid
        # foreign rules are still there and in their order
        foreign_lines = [ln for ln in pristine.splitlines() if ln.startswith("-A")]
        mid_foreign = [ln for ln in mid.splitlines() if ln in foreign_lines]
        assert mid_foreign == foreign_lines
        be.cleanup()
        assert strip_save(sh(ns, save)) == pristine
        assert "SVCNET" not in sh(ns, SAVE[driver] + " -t filter")
        assert "SVCNET" not in sh(ns, save.replace("iptables", "ip6tables"))


@pytest.mark.parametrize("driver", DRIVERS)
def test_resync_is_idempotent_and_partial_matches_full(driver: str) -> None:
    _skip(driver)
    state = _plan()
    with netns() as ns:
        be = IptablesBackend("node-a", netns=ns, driver=driver)
        be.sync(compile(state, "node-a"))
        from svcnet.model import Kind, ObjectKey
        from svcnet.state import Delete

        state2 = state.step(Delete((ObjectKey(Kind.POD, "default", "w1"),)))
        be.update(compile(state2, "node-a"))  # partial
        partial = str(be.observe())
        be.sync(compile(state2, "node-a"))  # full over it
        assert str(be.observe()) == partial
        # PREROUTING + OUTPUT, once each, per family
        assert partial.count("-j SVCNET-SERVICES") == 4


def test_preflight_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    _skip("restore")
    plan = compile(_plan(), "node-a")
    be = IptablesBackend("node-a", netns="svcnet-does-not-exist-xyz")
    with pytest.raises(BackendError) as info:
        be.sync(plan)
    assert info.value.kind is BackendErrorKind.NOT_FOUND
    with netns() as ns:
        import svcnet_iptables.restore as restore

        monkeypatch.setattr(restore, "has_net_admin", lambda: False)
        be = IptablesBackend("node-a", netns=ns)
        with pytest.raises(BackendError) as info:
            be.sync(plan)
        assert info.value.kind is BackendErrorKind.PERMISSION
        monkeypatch.undo()
        monkeypatch.setenv("PATH", "/nonexistent")
        be = IptablesBackend("node-a", netns=ns, variant="nft")
        with pytest.raises(BackendError) as info:
            be.sync(plan)
        assert info.value.kind is BackendErrorKind.UNSUPPORTED
        monkeypatch.undo()
        assert "SVCNET" not in sh(ns, "iptables-save")
    with pytest.raises(BackendError):
        IptablesBackend("node-a", netns=None, driver="bogus")


def test_variant_forcing_and_detection() -> None:
    _skip("restore")
    with netns() as ns:
        sh(ns, "iptables-legacy-restore --noflush", stdin=FOREIGN["nat"])
        be = IptablesBackend("node-a", netns=ns)
        be.sync(compile(_plan(), "node-a"))
        assert be.driver.variant == "legacy"  # type: ignore[attr-defined]
        assert "SVCNET-SERVICES" in sh(ns, "iptables-legacy-save")
        be.cleanup()
    with netns() as ns:
        be = IptablesBackend("node-a", netns=ns, variant="legacy")
        be.sync(compile(_plan(), "node-a"))
        assert "SVCNET-SERVICES" in sh(ns, "iptables-legacy-save")
        assert (
            "SVCNET"
            not in subprocess.run(
                ["ip", "netns", "exec", ns, "iptables-nft-save"], capture_output=True, text=True
            ).stdout
        )
        outcome = be.evaluate(
            __import__("svcnet.probe").probe.Probe(
                __import__("svcnet.probe").probe.SourceKind.POD,
                "10.244.9.9",
                "node-a",
                "10.96.1.10",
                80,
            )
        )
        assert len(outcome.targets) == 3 and outcome.sticky
        assert IPFamily.IPv4
