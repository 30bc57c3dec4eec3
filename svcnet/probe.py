"""Probes (a packet at a node) and Outcomes (what the data plane does to it).

Every answer to "what happens to this packet" — the reference semantics, each
backend's interpreter of its kernel read-back, real traffic in the lab — is an
:class:`Outcome`, so they can be compared with ``==``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from fractions import Fraction

import attrs

from svcnet.model import Protocol, format_endpoint


class SourceKind(enum.Enum):
    POD = "pod"  # source address inside clusterCIDRs
    NODE = "node"  # a host-network process on the handling node
    EXTERNAL = "external"  # anything else, other nodes included


class Verdict(enum.Enum):
    FORWARD = "forward"
    REJECT = "reject"
    DROP = "drop"
    PASS = "pass"


@attrs.frozen
class Probe:
    """A new connection's first packet, as it reaches ``node``.

    ``source_kind`` is what the handling node's kernel can tell about the source
    (is it a pod address, is it one of my own addresses); ``source_ip`` is the
    address the packet carries.
    """

    source_kind: SourceKind
    source_ip: str
    node: str
    dst_ip: str
    dst_port: int
    protocol: Protocol = Protocol.TCP

    def __str__(self) -> str:
        return (
            f"{self.source_kind.value} {self.source_ip} -> "
            f"{format_endpoint(self.dst_ip, self.dst_port)}/{self.protocol.value} on {self.node}"
        )


@attrs.frozen(order=True)
class Target:
    """One possible destination of a forwarded packet."""

    ip: str
    port: int
    masquerade: bool
    probability: Fraction = attrs.field(order=False)

    @property
    def address(self) -> str:
        return format_endpoint(self.ip, self.port)


def _targets(value: Iterable[Target]) -> frozenset[Target]:
    return frozenset(value)


@attrs.frozen
class Outcome:
    """The fate of a probe.

    For ``FORWARD``, ``targets`` lists every endpoint a new client can reach, with
    whether the source is masqueraded towards it and the probability of choosing
    it; ``affinity_timeout`` is set when ClientIP session affinity holds.
    """

    verdict: Verdict
    targets: frozenset[Target] = attrs.field(default=frozenset(), converter=_targets)
    affinity_timeout: int | None = None

    @property
    def endpoints(self) -> frozenset[str]:
        return frozenset(t.address for t in self.targets)

    @property
    def sticky(self) -> bool:
        return self.affinity_timeout is not None

    @property
    def uniform(self) -> bool:
        """Every target is equally likely and the probabilities add up to 1."""
        if not self.targets:
            return True
        n = len(self.targets)
        return all(t.probability == Fraction(1, n) for t in self.targets)

    def masquerade(self) -> dict[str, bool]:
        return {t.address: t.masquerade for t in self.targets}

    @classmethod
    def forward(
        cls,
        endpoints: Iterable[tuple[str, int, bool]],
        affinity_timeout: int | None = None,
    ) -> Outcome:
        """A forward to each ``(ip, port, masquerade)``, uniformly."""
        items = list(dict.fromkeys(endpoints))
        p = Fraction(1, len(items)) if items else Fraction(0)
        return cls(
            Verdict.FORWARD,
            frozenset(Target(ip, port, masq, p) for ip, port, masq in items),
            affinity_timeout,
        )

    def __str__(self) -> str:
        if self.verdict is not Verdict.FORWARD:
            return str(self.verdict.value)
        parts = []
        for t in sorted(self.targets):
            masq = " masq" if t.masquerade else ""
            parts.append(f"{t.address}{masq} p={t.probability}")
        sticky = f" sticky({self.affinity_timeout}s)" if self.sticky else ""
        return "forward to {" + ", ".join(parts) + "}" + sticky


@attrs.frozen
class Affinity:
    """A learned ClientIP affinity: which endpoint a client went to, and when.

    A pure table for simulating session affinity with an explicit clock; both
    the reference semantics and the backends' interpreters use it.
    """

    entries: tuple[tuple[tuple[str, str], str, float], ...] = ()  # ((client, key), endpoint, last)

    def lookup(self, client: str, key: str, now: float, timeout: int) -> str | None:
        for (c, k), endpoint, last in self.entries:
            if c == client and k == key and now - last < timeout:
                return endpoint
        return None

    def connect(
        self, client: str, key: str, outcome: Outcome, now: float, choose: str
    ) -> tuple[str, Affinity]:
        """The endpoint a connection at ``now`` reaches, and the updated table.

        ``choose`` is the endpoint a fresh random pick would give; a learned
        entry that is still valid and still usable wins over it.
        """
        if outcome.affinity_timeout is None:
            return choose, self
        learned = self.lookup(client, key, now, outcome.affinity_timeout)
        endpoint = learned if learned is not None and learned in outcome.endpoints else choose
        rest = tuple(e for e in self.entries if e[0] != (client, key))
        return endpoint, Affinity((*rest, ((client, key), endpoint, now)))
