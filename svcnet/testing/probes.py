"""Probe strategies: a probe drawn from where a packet may go and come from.

Part of :mod:`svcnet.testing.strategies` (which re-exports :data:`probes` and
:func:`draw_probe`). The probe space itself (:class:`ProbeSpace`, frontends, the
places next to one and elsewhere, the sources) lives in :mod:`svcnet.probes`, which
needs no Hypothesis; its names stay importable from here.
"""

from __future__ import annotations

from svcnet.probe import Probe
from svcnet.probes import (
    Destination,
    ProbeSpace,
    Source,
    frontends,
    near_frontends,
    other_places,
    probe_space,
)
from svcnet.state import ClusterState
from svcnet.testing.vocabulary import Draw, integer, pick

__all__ = [
    "Destination",
    "ProbeSpace",
    "Source",
    "draw_probe",
    "frontends",
    "near_frontends",
    "other_places",
    "probe_space",
]

# Weights of the three kinds of destination: frontends, next to one, elsewhere.
_KIND = (0, 0, 0, 0, 0, 0, 0, 0, 1, 2)


def draw_probe(draw: Draw, state: ClusterState) -> Probe:
    """A probe at one of the cluster's interesting places — a frontend (80%),
    next to one (port + 1, the other protocols, the other family), or no frontend
    (an unallocated service address, a pod, a node, loopback, the internet) —
    from a source a scenario can name: a pod of the service itself (hairpin),
    a pod on its own node or arriving at the next node, a node itself, or an
    external client via a node (inside and outside LoadBalancer source ranges,
    another node, a LoadBalancer IP). ``state`` must have a node."""
    assert state.nodes, "probes need a node to handle them"
    space = probe_space(state)
    kind = min(pick(draw, _KIND), len(space.kinds) - 1)
    dsts = space.kinds[kind]
    dst = dsts[integer(draw, 0, len(dsts) - 1)]
    sources = space.sources(dst)
    source_kind, source_ip, node = sources[integer(draw, 0, len(sources) - 1)]
    return Probe(source_kind, source_ip, node, *dst)
