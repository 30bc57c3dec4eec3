"""The small vocabularies and cheap drawing helpers the strategies share.

Part of :mod:`svcnet.testing.strategies`: names, CIDRs, addresses and ports that
objects are drawn from (small, so that objects meet), and ``draw_*`` helpers over
cached integer strategies.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from hypothesis import strategies as st

from svcnet.model import IPFamily
from svcnet.probes import CLIENTS as CLIENTS  # re-exported
from svcnet.probes import NODE_PORT_RANGE as NODE_PORT_RANGE

V4, V6 = IPFamily.IPv4, IPFamily.IPv6

# -- the vocabulary ----------------------------------------------------------------

NODE_NAMES = ("node-a", "node-b", "node-c")
NAMESPACES = ("default", "default", "default", "default", "shop")
POD_NAMES = ("p0", "p1", "p2", "p3", "p4", "p5")
SERVICE_NAMES = ("web", "api", "db", "dns")
ZONES = ("", "zone-1", "zone-2")
LABELS = (("app", ("web", "api")), ("tier", ("front", "back")))
PORT_NAMES = ("http", "metrics")

SERVICE_CIDR = {V4: "10.96.0.0/24", V6: "fd00:96::/120"}
CLUSTER_CIDR = {V4: "10.244.0.0/16", V6: "fd00:244::/56"}
LB_POOL = {V4: "203.0.113.0/29", V6: "2001:db8:1b::/125"}


def _service_index(namespace: str, name: str) -> int:
    known = sorted({(ns, n) for ns in NAMESPACES for n in SERVICE_NAMES})
    if (namespace, name) in known:
        return known.index((namespace, name))
    return len(known) + sum(f"{namespace}/{name}".encode()) % (40 - len(known))


# One address per family that any service may list among its externalIPs and its
# LoadBalancer status ingress, so that frontends conflict now and then.
SHARED_IPS = {V4: "198.51.100.98", V6: "2001:db8:e::1"}


def status_ips_of(namespace: str, name: str, family: IPFamily) -> tuple[str, str]:
    """Two ``status.loadBalancer.ingress`` addresses, outside the pool (a status
    address is not reserved in the pool): one of this service alone, then the
    :data:`SHARED_IPS` address (a conflict, see :func:`external_ips_of`)."""
    index = _service_index(namespace, name)
    if family is V4:
        return (f"192.0.2.{100 + 2 * index}", SHARED_IPS[V4])
    return (f"2001:db8:1c::{100 + 2 * index:x}", SHARED_IPS[V6])


def external_ips_of(namespace: str, name: str, family: IPFamily) -> tuple[str, str]:
    """Two externalIPs: one that belongs to this service alone, then the
    :data:`SHARED_IPS` address, which other services may list too.

    Kubernetes lets services claim one address, port and protocol together (the
    same externalIP, or an externalIP equal to another service's — or the
    service's own — LoadBalancer ingress); the first service by namespace/name
    wins, then its first port, then the first frontend kind, and the compiled plan
    holds only the winner's frontend (docs/reference/semantics.md, "Conflicting
    frontends"). The shared address is drawn second, so shrinking drops it first.
    """
    index = _service_index(namespace, name)
    if family is V4:
        return (f"198.51.100.{100 + 2 * index}", SHARED_IPS[V4])
    return (f"2001:db8:e::{100 + 2 * index:x}", SHARED_IPS[V6])


# Clients (svcnet.probes): the first is inside SOURCE_RANGES[family][0], the second
# outside all.
SOURCE_RANGES = {
    V4: ("198.51.100.0/28", "192.168.56.0/24", "10.244.0.0/17"),
    V6: ("2001:db8:c::/64", "fd00:56::/64"),
}


def node_ip(family: IPFamily, index: int) -> str:
    return f"192.168.56.{11 + index}" if family is V4 else f"fd00:56::{11 + index:x}"


def pod_cidr(family: IPFamily, index: int) -> str:
    return f"10.244.{index + 1}.0/24" if family is V4 else f"fd00:244:0:{index + 1}::/64"


def pinned_ip(cidr: str, offset: int) -> str:
    """The ``offset``-th address of ``cidr``."""
    return str(ipaddress.ip_network(cidr)[offset])


# -- drawing cheaply ----------------------------------------------------------------
#
# Every strategy here is a plain ``draw_*(draw, ...)`` function over a few cached
# integer strategies (building strategy objects per draw dominates a run's time);
# the public strategies at the end of the module wrap them with st.composite.

Draw = Callable[[st.SearchStrategy[Any]], Any]
T = TypeVar("T")


@functools.cache
def _between(lo: int, hi: int) -> st.SearchStrategy[int]:
    return st.integers(lo, hi)


class Digits:
    """A ``draw`` that decodes every choice from one big integer (mixed radix).

    Hypothesis spends far more time per draw than the harness spends per probe,
    so the agreement machine draws one integer per event (and one per batch of
    probes) and decodes it with the same ``draw_*`` functions; 0 decodes to the
    first choice everywhere, so shrinking the integer simplifies the object.
    """

    def __init__(self, value: int) -> None:
        self.value = value

    def __call__(self, strategy: st.SearchStrategy[Any]) -> Any:
        raise TypeError("Digits only decodes integer()/pick()/chance()/flip()/subset()")

    def take(self, n: int) -> int:
        self.value, digit = divmod(self.value, n)
        return digit


def integer(draw: Draw, lo: int, hi: int) -> int:
    """An integer in [lo, hi], shrinking towards ``lo``."""
    if hi <= lo:
        return lo
    if isinstance(draw, Digits):
        return lo + draw.take(hi - lo + 1)
    return int(draw(_between(lo, hi)))


def pick(draw: Draw, items: Sequence[T]) -> T:
    """One of ``items``, shrinking towards the first."""
    return items[integer(draw, 0, len(items) - 1)]


def chance(draw: Draw, n: int) -> bool:
    """True with probability 1/n (shrinks to False)."""
    return integer(draw, 0, n - 1) == n - 1


def flip(draw: Draw) -> bool:
    return integer(draw, 0, 1) == 1


def subset(draw: Draw, items: Sequence[T], lo: int, hi: int) -> tuple[T, ...]:
    """Between ``lo`` and ``hi`` distinct items, in the order drawn."""
    rest = list(items)
    out: list[T] = []
    for _ in range(integer(draw, lo, min(hi, len(rest)))):
        out.append(rest.pop(integer(draw, 0, len(rest) - 1)))
    return tuple(out)
