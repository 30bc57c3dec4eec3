"""Service DNS: the records of the Kubernetes DNS specification, computed from a
:class:`~svcnet.state.ClusterState`, and name resolution as a pod sees it (pure).

Records (``<d>`` is ``config.cluster_domain``; every name is lower case, stored
without its trailing dot):

- a service with ClusterIPs (ClusterIP, NodePort, LoadBalancer):
  ``<svc>.<ns>.svc.<d>`` A/AAAA = its ClusterIPs, PTR of each ClusterIP to that
  name, and per named port ``_<port>._<proto>.<svc>.<ns>.svc.<d>`` SRV
  ``0 100 <port> <svc>.<ns>.svc.<d>.``;
- a headless service: A/AAAA = the addresses of its ready endpoints (the state's
  ``Endpoint.ready`` already includes ``publishNotReadyAddresses``); each ready
  endpoint is also named ``<host>.<svc>.<ns>.svc.<d>`` (``<host>`` = its hostname —
  a pod's ``spec.hostname`` when its ``spec.subdomain`` is the service — or its
  address with ``.``/``:`` replaced by ``-``, as CoreDNS names them) with a PTR back;
  per named port one SRV per ready endpoint, ``0 <100//N> <endpoint port>
  <host>.<svc>.<ns>.svc.<d>.``. A headless service with no published endpoint
  (none ready, or none at all) has no name: it and its SRV names are NXDOMAIN, as
  CoreDNS answers (it holds no record of any type for them); likewise an SRV name
  whose port no published endpoint has. A headless service without ports gets
  its addresses from its pods (or slices) directly, as Kubernetes' controllers do;
- an ExternalName service: ``<svc>.<ns>.svc.<d>`` CNAME ``<externalName>.`` (no
  record when externalName is an IP address, as CoreDNS). A query of another type
  follows the alias while it stays in our zones (CoreDNS follows in-zone CNAMEs),
  at most :data:`MAX_CHAIN` links and never round a loop: the answer carries the
  chain and the final name's records of the type, so an ExternalName aliasing a
  service of the cluster resolves to that service's addresses;
- ``dns-version.<d>`` TXT ``"1.1.0"`` (the specification's schema record).

Services labelled ``service.kubernetes.io/service-proxy-name`` get DNS like any
other: that label only concerns the proxy.

Names that exist without records (NOERROR, empty answer), as CoreDNS answers:
``<d>``, ``svc.<d>``, ``pod.<d>``, ``<ns>.svc.<d>`` for a namespace holding a
service, and the apex of each reverse zone. Every other name under ``<d>`` or in a
reverse zone is NXDOMAIN (CoreDNS also answers NXDOMAIN for the empty non-terminal
``_<proto>.<svc>.<ns>.svc.<d>``). The reverse zones are those of the service and
cluster CIDRs, split at octet (IPv4) or nibble (IPv6) boundaries. Names outside
every zone are REFUSED here (the server forwards them or refuses them).
Deliberately not served: the deprecated ``<a-b-c-d>.<ns>.pod.<d>`` records.

:func:`records` builds a :class:`Zone`; ``zone.update(old, new)`` recomputes only
the services ``new.changed_since(old.revision)`` names. :func:`lookup` answers one
fully qualified query, :func:`resolve` a query as a pod's resolver makes it (glibc
with ``search <ns>.svc.<d> svc.<d> <d>`` and ``ndots:5``).

Names off the wire are lists of labels, and are compared label by label:
:func:`wire_labels` checks them (1..63 octets a label, 255 octets in all, as RFC 1035
limits them; None: a format error) and :meth:`Zone.lookup_labels` answers them, so
that a label holding a literal dot (``web.default.svc.cluster.local`` sent as one
label) names nothing of ours rather than the dotted name. A type we hold no record
of (0, 1234, 65535...) gets an empty answer for a name that exists.
"""

from __future__ import annotations

import ipaddress
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence

import attrs

from svcnet.model import Endpoint, Pod, Service, ServicePort, ServiceType, norm_ip
from svcnet.state import ClusterState
from svcnet.state import endpoints as _ep

__all__ = [
    "MAX_CHAIN",
    "SCHEMA_VERSION",
    "Answer",
    "Zone",
    "dashed",
    "lookup",
    "records",
    "resolve",
    "reverse_name",
    "reverse_zones",
    "search_names",
    "search_path",
    "service_records",
    "wire_labels",
    "zone_for",
]

SCHEMA_VERSION = "1.1.0"
NDOTS = 5
MAX_CHAIN = 8  # CNAME links followed inside our zones (CoreDNS stops after 8 too)
MAX_LABEL = 63  # octets (RFC 1035 2.3.4)
MAX_NAME = 255  # octets of the name on the wire, length bytes and root included

NsName = tuple[str, str]
Record = tuple[str, str, str]  # (owner name, type, rdata text); type "" = the name exists
_STATIC: NsName = ("", "")  # the key of the records that depend on the config only

NOERROR = "NOERROR"
NXDOMAIN = "NXDOMAIN"
REFUSED = "REFUSED"


@attrs.frozen
class Answer:
    """The answer to one query.

    ``rcode`` is NOERROR, NXDOMAIN or REFUSED (the name is in none of our zones);
    ``records`` holds the records of the asked type only, in the scenario format's
    text form (docs/reference/scenario-format.md)
    (A ``10.96.3.3``, SRV ``0 100 6379 cache.data.svc.cluster.local.``, CNAME/PTR
    ``name.``), sorted. ``name`` is the name answered (for :func:`resolve`, the one
    the search path reached), ``cname`` the alias target when the name is a CNAME
    and another type was asked, ``zone`` the apex of the zone holding the name
    ("" when it is not ours).

    When the name is an alias, ``chain`` holds the CNAME links followed, in order,
    as (owner, target with its trailing dot) pairs (the first owner is ``name``),
    and ``records`` are the records of the last target (:attr:`final`) when it is
    in our zones; empty when it is outside them (the server asks its upstream) or
    has none of the type.
    """

    rcode: str
    records: tuple[str, ...] = ()
    name: str = ""
    qtype: str = ""
    cname: str = ""
    zone: str = ""
    chain: tuple[tuple[str, str], ...] = ()

    @property
    def answer(self) -> tuple[str, ...]:
        return self.records

    @property
    def final(self) -> str:
        """The name the records belong to: the last alias target, else ``name``."""
        return _norm(self.chain[-1][1]) if self.chain else self.name


# -- names ------------------------------------------------------------------------


def _norm(name: str) -> str:
    return name.rstrip(".").lower()


def wire_labels(labels: Sequence[bytes]) -> tuple[str, ...] | None:
    """The labels of a name off the wire, lower-cased (ASCII only, as DNS compares
    names), or None when the name breaks RFC 1035's limits: an empty label, a label
    over 63 octets, or a name over 255 octets on the wire."""
    size = 1
    out = []
    for label in labels:
        if not 0 < len(label) <= MAX_LABEL:
            return None
        size += len(label) + 1
        out.append(label.lower().decode("latin-1"))
    if size > MAX_NAME:
        return None
    return tuple(out)


def _escaped(labels: Sequence[str]) -> str:
    return ".".join(label.replace("\\", "\\\\").replace(".", "\\.") for label in labels)


def reverse_name(ip: str) -> str:
    """``10.96.3.3`` -> ``3.3.96.10.in-addr.arpa`` (nibbles in ``ip6.arpa`` for IPv6)."""
    return ipaddress.ip_address(ip).reverse_pointer


def dashed(ip: str) -> str:
    """An endpoint's name when it has no hostname: its address with ``.``/``:`` -> ``-``."""
    text = norm_ip(ip)
    return text.replace(".", "-").replace(":", "-")


def reverse_zones(cidr: str) -> tuple[str, ...]:
    """The reverse zones covering ``cidr`` exactly, split at the next octet (IPv4)
    or nibble (IPv6) boundary: 10.96.0.0/16 -> 96.10.in-addr.arpa; a /12 gives 16;
    a /25../31 the enclosing /24 (rather than a zone per address)."""
    net = ipaddress.ip_network(cidr, strict=False)
    step = 8 if net.version == 4 else 4
    boundary = max(step, -(-net.prefixlen // step) * step)
    if boundary == net.max_prefixlen:  # zones of single addresses: use the enclosing one
        boundary = max(step, (net.prefixlen // step) * step)
    starts: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [net.network_address]
    if boundary > net.prefixlen:
        starts = [s.network_address for s in net.subnets(new_prefix=boundary)]
    keep = boundary // step + 2  # the address labels kept, plus "in-addr"/"ip6" and "arpa"
    out = []
    for start in starts:
        labels = start.reverse_pointer.split(".")
        out.append(".".join(labels[-keep:]))
    return tuple(out)


def search_path(namespace: str, domain: str) -> tuple[str, ...]:
    """A pod's resolv.conf ``search`` list (dnsPolicy ClusterFirst)."""
    d = _norm(domain)
    return (f"{namespace.lower()}.svc.{d}", f"svc.{d}", d)


def search_names(name: str, search: Iterable[str], ndots: int = NDOTS) -> tuple[str, ...]:
    """The names glibc tries, in order: a name ending in a dot only as is; a name
    with at least ``ndots`` dots as is first, then with each search domain; any
    other name with each search domain first, then as is."""
    if name.endswith("."):
        return (name,)
    expanded = tuple(f"{name}.{d}" for d in search)
    if name.count(".") >= ndots:
        return (name, *expanded)
    return (*expanded, name)


# -- records ------------------------------------------------------------------------


def _addr_type(ip: str) -> str:
    return "AAAA" if ":" in ip else "A"


def _srv_owner(sp: ServicePort, base: str) -> str:
    return f"_{sp.name.lower()}._{sp.protocol.value.lower()}.{base}"


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def service_records(
    svc: Service, endpoints: Mapping[str, tuple[Endpoint, ...]], domain: str
) -> tuple[Record, ...]:
    """Every record one service contributes (see the module docstring)."""
    d = _norm(domain)
    ns_name = f"{svc.namespace.lower()}.svc.{d}"
    base = f"{svc.name.lower()}.{ns_name}"
    out: list[Record] = [(ns_name, "", ""), (base, "", "")]
    if svc.type is ServiceType.EXTERNAL_NAME:
        target = _norm(svc.external_name)
        if target and not _is_ip(target):
            out.append((base, "CNAME", target + "."))
        return tuple(out)
    if not svc.headless and svc.cluster_ips:
        for ip in svc.cluster_ips:
            out.append((base, _addr_type(ip), ip))
            out.append((reverse_name(ip), "PTR", base + "."))
        for sp in svc.ports:
            if sp.name:
                out.append((_srv_owner(sp, base), "SRV", f"0 100 {sp.port} {base}."))
        return tuple(out)
    if not svc.headless:  # not allocated (should not happen in a valid state)
        return tuple(out)

    def host(ep: Endpoint) -> str:
        return (ep.hostname.lower() or dashed(ep.ip)) + "." + base

    # the name exists only with a published endpoint (CoreDNS: no record, NXDOMAIN)
    out = [(ns_name, "", "")]
    seen: set[tuple[str, str]] = set()
    for eps in endpoints.values():
        for ep in eps:
            if not ep.ready or (ep.ip, ep.hostname) in seen:
                continue
            seen.add((ep.ip, ep.hostname))
            name = host(ep)
            out.append((base, _addr_type(ep.ip), ep.ip))
            out.append((name, _addr_type(ep.ip), ep.ip))
            out.append((reverse_name(ep.ip), "PTR", name + "."))
    for sp in svc.ports:
        if not sp.name:
            continue
        owner = _srv_owner(sp, base)
        targets = sorted({(host(ep), ep.port) for ep in endpoints.get(sp.name, ()) if ep.ready})
        if targets:
            weight = 100 // len(targets)
            out.extend((owner, "SRV", f"0 {weight} {port} {t}.") for t, port in targets)
    return tuple(out)


def _portless_endpoints(state: ClusterState, svc: Service) -> dict[str, tuple[Endpoint, ...]]:
    """A headless service without ports: its addresses straight from its pods
    (selector) or slices (no selector), since the state keeps endpoints per port."""
    if _ep.has_selector(svc):
        ns = svc.namespace
        pods = [p for (pns, _), p in state.pods.items() if pns == ns]
        probe = attrs.evolve(svc, ports=(ServicePort(port=1),))
        return dict(_ep.pod_endpoints(probe, pods, state.nodes, state.config))
    found: list[Endpoint] = []
    for sl in _ep.slices_of(svc, state.slices.values(), state.config):
        for se in sl.endpoints:
            if se.addresses:
                ip = norm_ip(se.addresses[0])
                found.append(Endpoint(ip=ip, port=0, ready=se.ready, hostname=se.hostname))
    return {"": tuple(found)}


def _is_portless(svc: Service) -> bool:
    return svc.headless and not svc.ports and svc.type is not ServiceType.EXTERNAL_NAME


def _records_of(state: ClusterState, key: NsName) -> tuple[Record, ...]:
    svc = state.services.get(key)
    if svc is None:
        return ()
    domain = state.config.cluster_domain
    if _is_portless(svc):
        return service_records(svc, _portless_endpoints(state, svc), domain)
    return service_records(svc, state.service_endpoints(key[0], key[1]), domain)


def _static_records(state: ClusterState) -> tuple[Record, ...]:
    d = _norm(state.config.cluster_domain)
    out: list[Record] = [
        (d, "", ""),
        (f"svc.{d}", "", ""),
        (f"pod.{d}", "", ""),
        (f"dns-version.{d}", "TXT", f'"{SCHEMA_VERSION}"'),
    ]
    for z in _reverse_zones_of(state):
        out.append((z, "", ""))
    return tuple(out)


def _reverse_zones_of(state: ClusterState) -> tuple[str, ...]:
    zones: list[str] = []
    for cidr in (*state.config.service_cidrs, *state.config.cluster_cidrs):
        for z in reverse_zones(cidr):
            if z not in zones:
                zones.append(z)
    return tuple(zones)


# -- the zone -----------------------------------------------------------------------

_Names = dict[str, dict[str, dict[str, int]]]  # name -> type -> rdata -> reference count


class Zone:
    """Every record of one cluster state, indexed by name. Treat as immutable:
    :meth:`update` returns a new zone (it copies the name index, O(names), and
    recomputes only the changed services' records)."""

    __slots__ = ("__weakref__", "_contrib", "_names", "_portless", "domain", "revision", "zones")

    def __init__(
        self,
        domain: str,
        revision: int,
        zones: frozenset[str],
        names: _Names,
        contrib: dict[NsName, tuple[Record, ...]],
        portless: frozenset[NsName],
    ) -> None:
        self.domain = domain
        self.revision = revision
        self.zones = zones  # the apexes we answer for: the cluster domain, reverse zones
        self._names = names
        self._contrib = contrib
        self._portless = portless

    # -- building
    @classmethod
    def build(cls, state: ClusterState) -> Zone:
        d = _norm(state.config.cluster_domain)
        zone = cls(
            d, state.revision, frozenset((d, *_reverse_zones_of(state))), {}, {}, frozenset()
        )
        copied: set[str] = set()
        zone._set(_STATIC, _static_records(state), copied)
        portless = set()
        for key, svc in state.services.items():
            zone._set(key, _records_of(state, key), copied)
            if _is_portless(svc):
                portless.add(key)
        zone._portless = frozenset(portless)
        return zone

    def update(self, old_state: ClusterState, new_state: ClusterState) -> Zone:
        """The zone of ``new_state``, given that ``self`` is the zone of
        ``old_state`` (an ancestor of it): only the services that changed since
        are recomputed; everything when the change log cannot tell or the config
        changed."""
        if self.revision != old_state.revision:
            return Zone.build(new_state)
        changed = new_state.changed_since(old_state.revision)
        if changed is None or changed.config:
            return Zone.build(new_state)
        keys = set(changed.services) | set(self._portless)
        zone = Zone(
            self.domain,
            new_state.revision,
            self.zones,
            dict(self._names),
            dict(self._contrib),
            self._portless,
        )
        copied: set[str] = set()
        portless = set(self._portless)
        for key in keys:
            zone._set(key, _records_of(new_state, key), copied)
            svc = new_state.services.get(key)
            if svc is not None and _is_portless(svc):
                portless.add(key)
            else:
                portless.discard(key)
        zone._portless = frozenset(portless)
        return zone

    def _node(self, name: str, copied: set[str]) -> dict[str, dict[str, int]]:
        node = self._names.get(name)
        if node is None:
            node = {}
            self._names[name] = node
            copied.add(name)
        elif name not in copied:
            node = {t: dict(rd) for t, rd in node.items()}
            self._names[name] = node
            copied.add(name)
        return node

    def _set(self, key: NsName, new: tuple[Record, ...], copied: set[str]) -> None:
        old = self._contrib.get(key, ())
        if old == new:
            return
        for name, rtype, rdata in old:
            node = self._node(name, copied)
            counts = node[rtype]
            counts[rdata] -= 1
            if not counts[rdata]:
                del counts[rdata]
                if not counts:
                    del node[rtype]
                    if not node:
                        del self._names[name]
        for name, rtype, rdata in new:
            counts = self._node(name, copied).setdefault(rtype, {})
            counts[rdata] = counts.get(rdata, 0) + 1
        if new:
            self._contrib[key] = new
        else:
            self._contrib.pop(key, None)

    # -- reading
    def zone_of(self, name: str) -> str:
        """The apex of our zone holding ``name`` ("" when none does)."""
        n = _norm(name)
        zones = self.zones
        while n:
            if n in zones:
                return n
            dot = n.find(".")
            if dot < 0:
                return ""
            n = n[dot + 1 :]
        return ""

    def names(self) -> Iterable[str]:
        return self._names.keys()

    def rrsets(self, name: str) -> dict[str, tuple[str, ...]]:
        """Every record of ``name`` by type (the "" type, if present, only marks existence)."""
        node = self._names.get(_norm(name), {})
        return {t: tuple(sorted(rd)) for t, rd in node.items() if t}

    def lookup(self, name: str, qtype: str) -> Answer:
        n = _norm(name)
        qt = qtype.upper()
        node = self._names.get(n)
        zone = self.zone_of(n)
        if node is None:
            return Answer(NXDOMAIN if zone else REFUSED, (), n, qt, "", zone)
        found = node.get(qt) if qt else None  # the "" type only marks existence
        if found:
            return Answer(NOERROR, tuple(sorted(found)), n, qt, "", zone)
        cname = node.get("CNAME")
        if not cname or qt == "CNAME":
            return Answer(NOERROR, (), n, qt, "", zone)
        target = next(iter(cname))
        chain, records = self._follow(n, target, qt)
        return Answer(NOERROR, records, n, qt, target, zone, chain)

    def _follow(
        self, name: str, target: str, qtype: str
    ) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
        """The CNAME links from ``name`` (whose alias is ``target``) while they
        stay in our zones, at most :data:`MAX_CHAIN` and no loop; and the records
        of type ``qtype`` of the last target reached."""
        chain = [(name, target)]
        seen = {name}
        while True:
            t = _norm(target)
            node = self._names.get(t) if self.zone_of(t) else None
            if node is None or t in seen:
                return tuple(chain), ()
            found = node.get(qtype) if qtype else None
            if found:
                return tuple(chain), tuple(sorted(found))
            cname = node.get("CNAME")
            if not cname or len(chain) >= MAX_CHAIN:
                return tuple(chain), ()
            seen.add(t)
            target = next(iter(cname))
            chain.append((t, target))

    def lookup_labels(self, labels: Sequence[str], qtype: str) -> Answer:
        """:meth:`lookup` for a name given as labels (see :func:`wire_labels`): a
        label holding a dot never matches, so only the labels after the last such
        label can reach one of our zones (the name is then NXDOMAIN in it)."""
        dotted = [i for i, label in enumerate(labels) if "." in label]
        if not dotted:
            return self.lookup(".".join(labels), qtype)
        zone = self.zone_of(".".join(labels[dotted[-1] + 1 :]))
        return Answer(NXDOMAIN if zone else REFUSED, (), _escaped(labels), qtype.upper(), "", zone)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Zone):
            return NotImplemented
        return (
            self.domain == other.domain
            and self.zones == other.zones
            and self._names == other._names
        )

    __hash__ = None  # type: ignore[assignment]  # equality by content, mutable-looking

    def __repr__(self) -> str:
        return f"Zone({self.domain!r}, revision={self.revision}, names={len(self._names)})"


def records(state: ClusterState) -> Zone:
    """The full zone of ``state`` (computed from scratch)."""
    return Zone.build(state)


# A few zones per live state object, so that many queries on one state build it once.
_CACHE: OrderedDict[int, tuple[weakref.ref[ClusterState], Zone]] = OrderedDict()
_CACHE_SIZE = 8


def zone_for(state: ClusterState) -> Zone:
    """The zone of ``state``, cached per state object."""
    key = id(state)
    hit = _CACHE.get(key)
    if hit is not None and hit[0]() is state:
        return hit[1]
    zone = Zone.build(state)
    _CACHE[key] = (weakref.ref(state), zone)
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return zone


def lookup(zone_or_state: Zone | ClusterState, name: str, qtype: str) -> Answer:
    """One query for a fully qualified name (a trailing dot is optional)."""
    zone = zone_or_state if isinstance(zone_or_state, Zone) else zone_for(zone_or_state)
    return zone.lookup(name, qtype)


def resolve(
    state: ClusterState | Zone, query: str, qtype: str, from_pod: Pod | None = None
) -> Answer:
    """``query`` as ``from_pod``'s resolver resolves it (glibc's search rules, see
    :func:`search_names`), or as a fully qualified name without ``from_pod``.

    A name with records of the type (or a CNAME) ends the search; other answers
    go on to the next name (the search names are all ours). When nothing
    answers, the result is the as-is name's answer if that was tried first, else
    an empty NOERROR if some name existed, else the last answer.
    """
    zone = state if isinstance(state, Zone) else zone_for(state)
    if from_pod is None:
        return zone.lookup(query, qtype)
    names = search_names(query, search_path(from_pod.namespace, zone.domain))
    as_is_first = len(names) > 1 and names[0] == query
    first: Answer | None = None
    nodata: Answer | None = None
    last = Answer(NXDOMAIN, (), _norm(query), qtype.upper())
    for i, name in enumerate(names):
        ans = zone.lookup(name, qtype)
        if ans.rcode == NOERROR and (ans.records or ans.cname):
            return ans
        if i == 0 and as_is_first:
            first = ans
        elif ans.rcode == NOERROR:
            nodata = nodata or ans
        last = ans
    if first is not None:
        return first
    return nodata or last
