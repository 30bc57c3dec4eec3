"""The address tree of the nat dispatch (pure): a linear list of ``-d host`` rules
turned into a few hops of ``-d prefix -j SVCNET-D?-...`` chains.

A list of rules that each match one destination address (``-d ip/32`` or ``/128``)
costs a packet one rule per entry before the one it matches (and all of them when
none does): at 10,000 services the last ClusterIP paid ~10,000 rule evaluations, a
packet to no service all of them. :func:`dispatch_tree` splits the addresses by
the next bits after their common prefix (a path-compressed trie: bits that every
address shares cost no hop; at most ``bits`` of them, the fewest that leave every
part within a leaf), each part with more than one address becoming a chain reached
by one ``-d prefix/len -j CHAIN`` rule, recursively until a part has at most
``leaf`` addresses; then its rules are written as they were. A packet meets at most
``2**bits`` jump rules per level and ``leaf`` addresses' rules at the end: three or
four levels at 10,000 addresses with the defaults, whatever the addresses.

Why the packet's fate is unchanged: the groups of one chain are disjoint prefixes,
so of the rules a packet could match (those whose ``-d`` holds its destination)
exactly the same ones are met, in the same order: a group's rules keep their
relative order, a jump is ``-j`` (not ``-g``), so a rule inside that RETURNs (or a
chain that runs off its end) continues in the calling chain just after the jump,
where the next rules it could match were in the flat list too (rules of disjoint
prefixes cannot match). The rules given must not end the calling chain by RETURN
themselves (that would now end only the tree chain): svcnet's frontend and
``has no such port`` rules jump to per-port or mark chains, never RETURN.

Chain names hash the family, the tree's kind and the prefix, so a change of one
service rewrites only the chains on its address's path (a partial sync compares
the shared chains one by one).
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Sequence

from svcnet.model import IPFamily

#: chain name prefixes: the frontend tree (before SVCNET-NODEPORTS) and the tree of
#: proxied ClusterIPs' "no such port" rules (after it)
FRONTENDS = "SVCNET-DS-"
CLUSTER_IPS = "SVCNET-DM-"
TREE_PREFIXES = (FRONTENDS, CLUSTER_IPS)
#: the defaults: 16-way chains, at most 16 addresses' rules in one chain
BITS = 4
LEAF = 16


def rule_host(spec: str) -> str:
    """The address of a rule spec starting ``-d ip/len`` (svcnet's dispatch rules)."""
    if not spec.startswith("-d "):
        raise ValueError(f"not a -d rule: {spec!r}")
    return spec[3:].split(" ", 1)[0].split("/", 1)[0]


def tree_chain(prefix: str, family: IPFamily, net: str) -> str:
    """The name of the tree chain of ``net`` (26 characters: iptables allows 28)."""
    digest = hashlib.sha256(f"{family.value} {prefix} {net}".encode()).hexdigest()
    return prefix + digest[:16].upper()


def dispatch_tree(
    rules: Sequence[tuple[str, str]],
    family: IPFamily,
    prefix: str,
    *,
    leaf: int = LEAF,
    bits: int = BITS,
) -> tuple[list[str], dict[str, list[str]]]:
    """``rules`` ((host address, rule spec), in chain order) as a tree: the rules
    for the calling chain (jumps, and the rules of groups of one address) and the
    tree chains (name -> rule specs). At most ``leaf`` addresses: unchanged."""
    if leaf < 1 or bits < 1:
        raise ValueError(f"leaf ({leaf}) and bits ({bits}) must be at least 1")
    width = 128 if family is IPFamily.IPv6 else 32
    address = ipaddress.IPv6Address if family is IPFamily.IPv6 else ipaddress.IPv4Address
    # by family: ip_network() would take a small IPv6 integer (::/1) for IPv4
    network = ipaddress.IPv6Network if family is IPFamily.IPv6 else ipaddress.IPv4Network
    specs: dict[int, list[tuple[int, str]]] = {}  # address -> (position, spec)
    for i, (ip, spec) in enumerate(rules):
        specs.setdefault(int(address(ip)), []).append((i, spec))
    chains: dict[str, list[str]] = {}

    def written(addrs: list[int]) -> list[str]:
        """The rules of these addresses, in the order given."""
        if len(addrs) == 1:
            return [spec for _i, spec in specs[addrs[0]]]
        return [spec for _i, spec in sorted(x for a in addrs for x in specs[a])]

    def build(addrs: list[int]) -> list[str]:
        """``addrs``: sorted, distinct."""
        if len(addrs) <= leaf:
            return written(addrs)
        common = width - (addrs[0] ^ addrs[-1]).bit_length()
        most = min(bits, width - common)
        # the finest split once (sorted: a part is a run), then the fewest bits
        # that leave no part above a leaf: a group of 64 becomes 4 leaves of 16,
        # not 16 chains of 4
        fine: dict[int, list[int]] = {}
        low = width - common - most
        for a in addrs:
            fine.setdefault(a >> low, []).append(a)
        for step in range(1, most + 1):
            sizes: dict[int, int] = {}
            for key, run in fine.items():
                k = key >> (most - step)
                sizes[k] = sizes.get(k, 0) + len(run)
            if max(sizes.values()) <= leaf:
                break
        shift = width - common - step
        merged: dict[int, list[int]] = {}
        for key, run in fine.items():  # in ascending key order
            merged.setdefault(key >> (most - step), []).extend(run)
        parts = list(merged.values())
        out: list[str] = []
        for part in parts:
            if len(part) == 1:
                out += written(part)  # one address: no hop for it
                continue
            net = str(network((part[0] >> shift << shift, common + step)))
            name = tree_chain(prefix, family, net)
            chains[name] = build(part)
            out.append(f"-d {net} -j {name}")
        return out

    top = build(sorted(specs))
    return top, chains


def tree_names(
    hosts: Iterable[str], family: IPFamily, prefix: str, *, leaf: int = LEAF, bits: int = BITS
) -> list[str]:
    """The chains :func:`dispatch_tree` makes for rules of these addresses (their
    order and number do not matter), without the rules."""
    _top, chains = dispatch_tree(
        [(h, "") for h in dict.fromkeys(hosts)], family, prefix, leaf=leaf, bits=bits
    )
    return list(chains)
