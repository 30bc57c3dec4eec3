"""observed_plan() on a real kernel, each case in a fresh ``svcnet-`` network namespace:
the restore driver on the host's variant and on forced legacy, and the libiptc
driver. What the kernel holds, read back, is the plan installed, after a full sync
and after incremental applies; a rule deleted by hand with ``iptables -D`` shows as
a difference in the service it belonged to."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import kernel_skip_reason, netns, sh
from svcnet_iptables import IptablesBackend
from test_iptables_kernel import _plan
from test_iptables_observed import _nodes, _state

from svcnet.errors import SvcnetError
from svcnet.plan import ServiceRef, compile
from svcnet.state import ClusterState
from svcnet.testing import strategies

pytestmark = pytest.mark.kernel

#: (driver, forced variant): the host's variant, legacy, and libiptc (legacy only)
CASES = [("restore", None), ("restore", "legacy"), ("iptc", None)]
#: Hypothesis examples per case (each is a namespace, a sync and a few applies)
EXAMPLES = 10


def _backend(ns: str, driver: str, variant: str | None) -> IptablesBackend:
    return IptablesBackend("node-a", netns=ns, driver=driver, variant=variant)


def _skip(driver: str) -> None:
    reason = kernel_skip_reason(driver)
    if reason:
        pytest.skip(reason)


@pytest.mark.parametrize(("driver", "variant"), CASES)
def test_read_back_is_the_installed_plan(driver: str, variant: str | None) -> None:
    """Random clusters: sync, then a few events applied incrementally; after each,
    observed_plan() == the installed plan (the read-back is the kernel's, every
    call). A 90 s guard bounds a heavily loaded box."""
    _skip(driver)
    deadline = time.monotonic() + 90
    ran: list[int] = []

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        if time.monotonic() > deadline:
            return
        state: ClusterState = _state(data)
        node = _nodes(state)[0]
        with netns() as ns:
            be = IptablesBackend(node, netns=ns, driver=driver, variant=variant)
            try:
                plan = compile(state, node)
                be.sync(plan)
                assert be.observed_plan() == plan, str(plan)
                applies = 0
                for _ in range(4):
                    try:
                        event = data.draw(strategies.events(state, IptablesBackend.capabilities))
                        state = state.step(event)
                    except SvcnetError:
                        continue  # refused: nothing changes
                    new = compile(state, node)
                    be.apply(new.diff(plan))
                    plan = new
                    applies += 1
                    assert be.observed_plan() == plan, str(plan)
                ran.append(applies)
            finally:
                be.close()

    run()
    assert ran, "no example ran before the deadline"
    assert sum(ran) > 0, "no event was accepted: nothing was applied incrementally"


@pytest.mark.parametrize(("driver", "variant"), CASES)
def test_a_rule_deleted_by_hand_shows_in_the_observed_plan(
    driver: str, variant: str | None
) -> None:
    _skip(driver)
    plan = compile(_plan(), "node-a")
    web = ServiceRef("default", "web")
    with netns() as ns:
        be = _backend(ns, driver, variant)
        try:
            be.sync(plan)
            assert be.observed_plan() == plan
            variant_used = getattr(be.driver, "variant", "legacy")
            tool = f"iptables-{variant_used}"
            saved = sh(ns, f"{tool}-save -t nat")
            # the IPv4 ClusterIP frontend's dispatch rule
            (line,) = [
                ln
                for ln in saved.splitlines()
                if ln.startswith("-A SVCNET-SERVICES ") and "default/web ClusterIP" in ln
            ]
            sh(ns, f"{tool} -t nat -D {line[3:]}")
            assert line not in sh(ns, f"{tool}-save -t nat")
            observed = be.observed_plan()
            assert observed != plan
            changes = observed.diff(plan)
            assert [s.ref for s in changes.replaced] == [web] and not changes.removed
            assert "~ service default/web" in str(changes)
            lost = {f.ip for p in plan.services[web].ports for f in p.frontends} - {
                f.ip for p in observed.services[web].ports for f in p.frontends
            }
            assert lost == {"10.96.1.10"}
            # the next full sync puts it back
            be.sync(plan)
            assert be.observed_plan() == plan
            # an endpoint's DNAT rule: the port whose cascade jumps to that chain is
            # not svcnet's any more and is not read back; the other family's stays
            saved = sh(ns, f"{tool}-save -t nat")
            dnat = next(
                ln for ln in saved.splitlines() if ln.startswith("-A SVCNET-SEP-") and "DNAT" in ln
            )
            sh(ns, f"{tool} -t nat -D {dnat.split()[1]} 2")  # by number (-m recent's text
            # does not round-trip through -D)
            observed = be.observed_plan()
            assert [s.ref for s in observed.diff(plan).replaced] == [web]
            assert [p.family.value for p in observed.services[web].ports] == [
                p.family.value for p in plan.services[web].ports if p.family.value != "IPv4"
            ]
        finally:
            be.cleanup()
            be.close()
