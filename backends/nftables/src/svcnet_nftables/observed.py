"""Read-back -> Plan (pure): what svcnet's nftables tables hold, as a plan for the node
(:meth:`svcnet.backend.Backend.observed_plan`).

What a packet meets decides every behavioural field:

- the settings' CIDRs: the ``cluster-cidrs`` and ``service-cidrs`` elements;
- a service's ClusterIPs and whether it is proxied: ``cluster-ips`` (reject) or
  ``foreign-ips`` (pass) elements;
- a port's frontends: its ``fe`` elements (address, protocol, port);
- its routes: where each frontend's verdict leads for each source kind — through a
  route chain's rules (``saddr @cluster-cidrs``, ``fib saddr type local``, the rest)
  to ``drop``, ``do-reject``, a forwarding chain's DNAT rule for the protocol (its
  endpoint map names the set, its ``numgen ... mod N`` the count, a mark rule the
  masquerade) or an affinity chain (a mark rule: masquerade; its ``numgen vmap``'s
  endpoint chains: the endpoints and, by the set they update, the timeout);
- its endpoints: the first N elements of the endpoint map of each set a route uses
  (through the affinity chain for affinity ports), the same for every frontend;
- its source ranges: the ``fw-allow`` elements of its LoadBalancer frontends listed
  in ``fw-frontends``.

What no packet shows comes from the annotations :mod:`.render` writes beside them
(element comments, inert elements; see its module doc), and only then: the node's
addresses, a port's name and index (the order of a service's ports and ClusterIPs),
a frontend's kind, a route no frontend of the port reaches or one forwarding to an
empty set (the rules reject), an affinity timeout no forwarding route shows, an
endpoint set no route uses, and which of the plan's overlapping CIDRs a collapsed
element stands for (only when the comment's entries collapse to that element).

Known limits: a port left with no frontend (every one lost to another service's
claim) has no element to be found by, so it is missing from the read-back plan; a
frontend whose comment was too long for nft is shown under a service named
``unannotated/<address>.<protocol>.<port>``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

import attrs

from svcnet.model import IPFamily, Protocol
from svcnet.plan import (
    DROP,
    REJECT,
    Action,
    EndpointSet,
    Frontend,
    FrontendKind,
    NodeSettings,
    Plan,
    PlanEndpoint,
    PortPlan,
    Route,
    ServicePlan,
    ServiceRef,
)
from svcnet_nftables import render
from svcnet_nftables.readback import Ruleset, SetDump, TableDump, atom

__all__ = ["observed_plan"]

_KINDS_BY_CODE = {code: kind for kind, code in render.KIND_CODES.items()}
_SETS = {s.value: s for s in EndpointSet}


def observed_plan(ruleset: Ruleset, node: str) -> Plan:
    """The plan ``ruleset`` (both families' ``svcnet`` tables) carries out on ``node``."""
    if ruleset.empty:
        return Plan(NodeSettings(node, (), (), ()))
    tables = [ruleset.tables[f] for f in ("ip", "ip6") if f in ruleset.tables]
    settings = NodeSettings(
        node,
        _ordered(e for t in tables for e in _indexed_ips(t.sets.get("node-ips"))),
        _ordered(e for t in tables for e in _cidrs(t.sets.get("cluster-cidrs"), indexed=True)),
        _ordered(e for t in tables for e in _cidrs(t.sets.get("service-cidrs"), indexed=True)),
    )
    ips: dict[ServiceRef, list[tuple[int | None, str]]] = {}
    proxied: dict[ServiceRef, bool] = {}
    ports: dict[ServiceRef, list[tuple[int, PortPlan]]] = {}
    for table in tables:
        for setname, is_proxied in (("cluster-ips", True), ("foreign-ips", False)):
            for raw, (key, _) in _pairs(table.sets.get(setname)):
                ref, index = _ref_index(_comment(raw), str(key))
                ips.setdefault(ref, []).append((index, str(key)))
                proxied[ref] = proxied.get(ref, False) or is_proxied
        for ref, index, port in _Ports(table).ports():
            ports.setdefault(ref, []).append((index, port))
            proxied.setdefault(ref, True)
    services = {
        ref: ServicePlan(
            ref,
            _ordered(ips.get(ref, ())),
            tuple(p for _, p in sorted(ports.get(ref, ()), key=lambda ip: ip[0])),
            proxied[ref],
        )
        for ref in proxied
    }
    return Plan(settings, services)


# -- elements and their comments ---------------------------------------------------


def _pairs(s: SetDump | None) -> list[tuple[Any, tuple[Any, Any]]]:
    """(raw element, (normalised key, data)) of every element of ``s``."""
    if s is None:
        return []
    return list(zip(s.raw, s.elements, strict=True))


def _comment(raw: Any) -> str | None:
    """The comment of a raw listed element (a map element's key side for maps)."""
    if isinstance(raw, list) and raw:
        raw = raw[0]
    if isinstance(raw, dict) and "elem" in raw:
        comment = raw["elem"].get("comment")
        return comment if isinstance(comment, str) else None
    return None


def _ref_index(comment: str | None, what: str) -> tuple[ServiceRef, int | None]:
    """``<ns>/<name> <index>`` -> (reference, index); unannotated: a made-up reference."""
    parts = (comment or "").split()
    if len(parts) >= 2 and "/" in parts[0] and parts[1].isdigit():
        namespace, _, name = parts[0].partition("/")
        return ServiceRef(namespace, name), int(parts[1])
    return ServiceRef("unannotated", what), None


def _ordered(entries: Iterable[tuple[int | None, str]]) -> tuple[str, ...]:
    """Entries by their plan index; those without one after them, IPv4 first."""
    items = list(entries)
    known = sorted((i, v) for i, v in items if i is not None)
    rest = sorted((v for i, v in items if i is None), key=lambda v: (":" in v, v))
    return tuple(dict.fromkeys([v for _, v in known] + rest))


def _indexed_ips(s: SetDump | None) -> list[tuple[int | None, str]]:
    out: list[tuple[int | None, str]] = []
    for raw, (key, _) in _pairs(s):
        c = _comment(raw)
        out.append((int(c) if c is not None and c.isdigit() else None, str(key)))
    return out


def _collapse(cidrs: Iterable[str]) -> list[str]:
    return render._collapse(cidrs)


def _cidrs(s: SetDump | None, *, indexed: bool) -> list[tuple[int | None, str]]:
    """The plan entries the elements of an interval set stand for: an element's
    comment entries (``[<index>:]<cidr>``) when they collapse to the element, else
    the element itself."""
    out: list[tuple[int | None, str]] = []
    for raw, (key, _) in _pairs(s):
        element = _net_text(key[-1] if isinstance(key, tuple) else key)
        out += _covered(_comment(raw), element, indexed=indexed)
    return out


def _net_text(value: Any) -> str:
    """An interval set element as a network (nft lists a full-length prefix as an address)."""
    try:
        return str(ipaddress.ip_network(str(value), strict=False))
    except ValueError:
        return str(value)


def _covered(comment: str | None, element: str, *, indexed: bool) -> list[tuple[int | None, str]]:
    entries: list[tuple[int | None, str]] = []
    for word in (comment or "").split():
        index, sep, cidr = word.partition(":") if indexed else ("", "", word)
        if indexed and (not sep or not index.isdigit()):
            return [(None, element)]
        entries.append((int(index) if indexed else None, cidr))
    try:
        if entries and _collapse(c for _, c in entries) == [element]:
            return entries
    except ValueError:
        pass
    return [(None, element)]


# -- ports -------------------------------------------------------------------------


@attrs.frozen
class _Seen:
    """What one verdict does to one kind of source."""

    route: Route
    count: int = 0  # a forwarding chain's N
    endpoints: tuple[PlanEndpoint, ...] | None = None  # an affinity chain's
    timeout: int | None = None  # an affinity chain's


_FALL = _Seen(REJECT)  # a verdict that leads nowhere: the ClusterIP rule rejects


@attrs.frozen
class _Fe:
    frontend: Frontend
    key: tuple[str, str, int]  # address, protocol, port as the maps key it
    seen: tuple[_Seen, _Seen, _Seen]  # pod, node, external


class _Ports:
    """The ports one family's table holds."""

    def __init__(self, table: TableDump) -> None:
        self.table = table
        self._followed: dict[tuple[Any, str, int], _Seen] = {}
        self.family = IPFamily.IPv4 if table.family == "ip" else IPFamily.IPv6
        # set -> frontend key -> bucket -> endpoint
        self.eps: dict[EndpointSet, dict[tuple[str, str, int], dict[int, PlanEndpoint]]] = {}
        for which in EndpointSet:
            per: dict[tuple[str, str, int], dict[int, PlanEndpoint]] = {}
            for proto in render.PROTOCOLS:
                for _raw, (key, data) in _pairs(table.sets.get(render.eps_map(which.value, proto))):
                    ip, p, port, bucket = key
                    per.setdefault((str(ip), str(p), int(port)), {})[int(bucket)] = PlanEndpoint(
                        str(data[0]), int(data[1])
                    )
            self.eps[which] = per
        self.guarded = {
            (str(k[0]), str(k[1]), int(k[2]))
            for _r, (k, _d) in _pairs(table.sets.get("fw-frontends"))
        }
        self.allowed: dict[tuple[str, str, int], list[str]] = {}
        for raw, (key, _) in _pairs(table.sets.get("fw-allow")):
            fkey = (str(key[0]), str(key[1]), int(key[2]))
            element = _net_text(key[3])
            self.allowed.setdefault(fkey, []).extend(
                c for _, c in _covered(_comment(raw), element, indexed=False)
            )

    def ports(self) -> list[tuple[ServiceRef, int, PortPlan]]:
        groups: dict[tuple[ServiceRef, int], tuple[list[str], list[_Fe]]] = {}
        for raw, (key, verdict) in _pairs(self.table.sets.get(render.FE_MAP)):
            ip, proto, number = str(key[0]), str(key[1]), int(key[2])
            fkey = (ip, proto, number)
            words = (_comment(raw) or "").split()
            ref, index = _ref_index(" ".join(words[:2]), f"{ip}.{proto}.{number}")
            if len(words) != 6 or index is None or words[3] not in _KINDS_BY_CODE:
                words = [str(ref), "0", "-", "C", "rrrrrr", "-"]
                index = 0
            kind = _KINDS_BY_CODE[words[3]]
            seen = tuple(self._follow(verdict, proto, i) for i in range(3))
            fe = _Fe(Frontend(kind, ip, number), fkey, seen)  # type: ignore[arg-type]
            groups.setdefault((ref, index), (words, []))[1].append(fe)
        return [
            (ref, index, self._port(words, fes)) for (ref, index), (words, fes) in groups.items()
        ]

    def _port(self, words: list[str], fes: list[_Fe]) -> PortPlan:
        _ref, _index, name, _kind, codes, timeout = words
        proto = fes[0].key[1]
        residue = _routes(codes)
        endpoints = {which: self._endpoints(which, fes) for which in EndpointSet}
        routes: list[Route] = []
        for external, offset in ((False, 0), (True, 3)):
            group = [f for f in fes if f.frontend.kind.external is external]
            wanted = tuple(residue[offset : offset + 3])
            options = [
                tuple(_resolve(s.route, r, endpoints) for s, r in zip(f.seen, wanted, strict=True))
                for f in group
            ]
            differing = [o for o in options if o != wanted]
            routes += list(differing[0] if differing else wanted)
        seen = [s for f in fes for s in f.seen if s.route.action is Action.FORWARD]
        if any(s.endpoints is not None for s in seen):
            affinity = next(s.timeout for s in seen if s.endpoints is not None)
        elif seen:
            affinity = None
        else:
            affinity = None if timeout == "-" else int(timeout)
        lbs = [f for f in fes if f.frontend.kind is FrontendKind.LOAD_BALANCER]
        ranges: set[str] = set()
        for i, f in enumerate(lbs):
            have = set(self.allowed.get(f.key, ())) if f.key in self.guarded else set()
            ranges = have if i == 0 else ranges & have
        return PortPlan.build(
            "" if name == "-" else name,
            self.family,
            Protocol(proto.upper()),
            (f.frontend for f in fes),
            endpoints[EndpointSet.CLUSTER],
            endpoints[EndpointSet.LOCAL],
            routes[0],
            routes[1],
            routes[2],
            routes[3],
            routes[4],
            routes[5],
            source_ranges=ranges,
            affinity_timeout=affinity,
        )

    def _endpoints(self, which: EndpointSet, fes: list[_Fe]) -> tuple[PlanEndpoint, ...]:
        """The endpoints of set ``which`` every frontend holds (those its routes reach:
        the first N buckets, or the affinity chain's)."""
        common: set[PlanEndpoint] | None = None
        for f in fes:
            buckets = self.eps[which].get(f.key, {})
            uses = [s for s in f.seen if s.route.endpoints is which]
            if any(s.endpoints is not None for s in uses):
                have = {e for s in uses if s.endpoints is not None for e in s.endpoints}
            elif uses:
                have = {buckets[i] for i in range(uses[0].count) if i in buckets}
            else:
                have = set(buckets.values())
            common = have if common is None else common & have
        return tuple(common or ())  # PortPlan.build sorts them

    # -- following verdicts ------------------------------------------------------
    def _rules(self, chain: str) -> list[list[Any]]:
        c = self.table.chains.get(chain)
        return [list(r.exprs) for r in c.rules] if c is not None else []

    def _follow(self, verdict: Any, proto: str, source: int) -> _Seen:
        """What ``verdict`` does to a source of kind ``source`` (0 pod, 1 node, 2 other);
        the same for every frontend with that verdict: worked out once per table."""
        memo = (verdict, proto, source)
        try:
            hit = self._followed.get(memo)
        except TypeError:  # not hashable: nothing svcnet writes
            return self._follow_once(verdict, proto, source)
        if hit is None:
            hit = self._followed[memo] = self._follow_once(verdict, proto, source)
        return hit

    def _follow_once(self, verdict: Any, proto: str, source: int) -> _Seen:
        if not isinstance(verdict, tuple) or not verdict:
            return _FALL
        if verdict[0] == "drop":
            return _Seen(DROP)
        if verdict[0] != "goto" or len(verdict) != 2:
            return _FALL
        chain = str(verdict[1])
        if chain == "do-reject":
            return _Seen(REJECT)
        if chain.startswith("fwd-"):
            return self._forward(chain, proto)
        if "rt_" in chain:
            return self._classify(chain, proto, source)
        if chain.startswith("aff."):
            return self._affinity(chain)
        return _FALL

    def _classify(self, chain: str, proto: str, source: int) -> _Seen:
        """A route chain: the rule for this source kind, or the chain's last rule."""
        default: Any = None
        pick: Any = None
        for exprs in self._rules(chain):
            matches = [e["match"] for e in exprs if isinstance(e, dict) and "match" in e]
            target = _verdict(exprs)
            if not matches:
                default = target if default is None else default
            elif any(m.get("right") == "@cluster-cidrs" for m in matches):
                pick = target if source == 0 and pick is None else pick
            elif any(isinstance(m.get("left"), dict) and "fib" in m["left"] for m in matches):
                pick = target if source == 1 and pick is None else pick
        chosen = pick if pick is not None else default
        if chosen is None or (chosen[0] == "goto" and "rt_" in str(chosen[1])):
            return _FALL
        return self._follow(chosen, proto, source)

    def _forward(self, chain: str, proto: str) -> _Seen:
        """A forwarding chain: its DNAT rule for ``proto``."""
        for exprs in self._rules(chain):
            for e in exprs:
                if not (isinstance(e, dict) and "dnat" in e):
                    continue
                addr = e["dnat"].get("addr")
                lookup = addr.get("map") if isinstance(addr, dict) else None
                if not isinstance(lookup, dict):
                    continue
                data = str(lookup.get("data", ""))
                if not data.startswith("@eps-") or not data.endswith(f"-{proto}"):
                    continue
                which = _SETS.get(data[len("@eps-") : -len(f"-{proto}")])
                count = _numgen_mod(lookup.get("key"))
                if which is None or count is None:
                    return _FALL
                masq = any(isinstance(x, dict) and "mangle" in x for x in exprs)
                return _Seen(Route(Action.FORWARD, which, masq), count=count)
        return _FALL

    def _affinity(self, chain: str) -> _Seen:
        """An affinity chain ``<port>.<set>[.masq]``: its pick among endpoint chains."""
        base = chain.removesuffix(".masq")
        which = _SETS.get(base.rpartition(".")[2])
        if which is None:
            return _FALL
        rules = self._rules(chain)
        masq = any(isinstance(x, dict) and "mangle" in x for exprs in rules for x in exprs)
        targets: list[str] = []
        for exprs in rules:
            for e in exprs:
                if isinstance(e, dict) and "vmap" in e:
                    for pair in e["vmap"].get("data", {}).get("set", ()):
                        v = atom(pair[1]) if isinstance(pair, list) and len(pair) == 2 else None
                        if isinstance(v, tuple) and len(v) == 2:
                            targets.append(str(v[1]))
        endpoints: list[PlanEndpoint] = []
        timeouts: set[int | None] = set()
        for target in targets:
            for exprs in self._rules(target):
                for e in exprs:
                    if isinstance(e, dict) and "dnat" in e:
                        body = e["dnat"]
                        endpoints.append(PlanEndpoint(str(atom(body["addr"])), int(body["port"])))
                    if isinstance(e, dict) and "set" in e and isinstance(e["set"], dict):
                        s = self.table.sets.get(str(e["set"].get("set", "")).lstrip("@"))
                        timeouts.add(s.timeout if s is not None else None)
        if not endpoints:
            return _FALL
        timeout = min((t for t in timeouts if t is not None), default=None)
        route = Route(Action.FORWARD, which, masq)
        return _Seen(route, count=len(endpoints), endpoints=tuple(endpoints), timeout=timeout)


def _verdict(exprs: list[Any]) -> Any:
    for e in reversed(exprs):
        if isinstance(e, dict) and len(e) == 1:
            ((k, body),) = e.items()
            if k == "drop":
                return ("drop",)
            if k in ("goto", "jump") and isinstance(body, dict):
                return ("goto", body.get("target"))
    return None


def _numgen_mod(key: Any) -> int | None:
    parts = key.get("concat", ()) if isinstance(key, dict) else ()
    for p in parts:
        if isinstance(p, dict) and "numgen" in p:
            return int(p["numgen"]["mod"])
    return None


def _routes(codes: str) -> list[Route]:
    """Route codes as :func:`render.plan_route_code` writes them."""
    out: list[Route] = []
    i = 0
    while i < len(codes) and len(out) < 6:
        c = codes[i]
        i += 1
        if c == "d":
            out.append(DROP)
        elif c in "cl":
            masq = i < len(codes) and codes[i] == "m"
            i += masq
            out.append(Route(Action.FORWARD, _SETS["cluster" if c == "c" else "local"], masq))
        else:
            out.append(REJECT)
    return out + [REJECT] * (6 - len(out))


def _resolve(seen: Route, planned: Route, endpoints: dict[EndpointSet, Any]) -> Route:
    """The route a frontend shows, or the annotated one when the rules cannot tell
    them apart (a forward to an empty set is a reject)."""
    if seen == planned:
        return seen
    if (
        seen == REJECT
        and planned.action is Action.FORWARD
        and planned.endpoints is not None
        and not endpoints[planned.endpoints]
    ):
        return planned
    return seen
