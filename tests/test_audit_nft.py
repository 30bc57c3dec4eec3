"""svcnet audit (pure) of kube-proxy's nftables mode: the tables rendered here from the
documented layout (../shared/KUBE-PROXY-FACTS.md §2.2, not kube-proxy's code) as
``nft -j list ruleset`` JSON for the plan of a node, read back and compared with the
reference: agreement except the documented differences; damaged rules (a missing
endpoint element, a missing map element, a wrong DNAT port, a missing masquerade
mark) reported with the rules that decided them.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import pathlib
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from test_audit import FIXTURE, V4, V6, _hash, draw_state, proxied_ports

from svcnet.audit import BY_DESIGN, Report
from svcnet.audit.readers import Layout, detect_layout
from svcnet.cli.audit import run_audit
from svcnet.cli.dns import _state_from_files
from svcnet.cli.main import cli
from svcnet.model import IPFamily
from svcnet.plan import Action, EndpointSet, FrontendKind, PortPlan, compile
from svcnet.state import ClusterState

OTHER_PROXY = FIXTURE.parent / "other-proxy.yaml"
TABLE = "kube-proxy"
MASQ_BIT = 0x4000
LAYOUT = "kube-proxy-nftables"

# -- kube-proxy's nftables layout, from the documentation ------------------------------

Expr = dict[str, Any]


def _m(left: Any, right: Any, op: str = "==") -> Expr:
    return {"match": {"op": op, "left": left, "right": right}}


def _prefix(cidr: str) -> Expr:
    net = ipaddress.ip_network(cidr, strict=False)
    return {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}


def _goto(chain: str) -> Expr:
    return {"goto": {"target": chain}}


def _jump(chain: str) -> Expr:
    return {"jump": {"target": chain}}


L4PROTO: Expr = {"meta": {"key": "l4proto"}}
DPORT: Expr = {"payload": {"protocol": "th", "field": "dport"}}
MARK: Expr = {"meta": {"key": "mark"}}
CT_NEW = _m({"ct": {"key": "state"}}, "new", "in")


class KubeProxyNftables:
    """kube-proxy's nftables-mode table of one node and family, as nft JSON."""

    def __init__(self, state: ClusterState, node: str, family: IPFamily) -> None:
        self.state, self.node, self.family = state, node, family
        self.fam = "ip" if family is V4 else "ip6"
        self.addr_type = "ipv4_addr" if family is V4 else "ipv6_addr"
        self.plan = compile(state, node)
        self.cidrs = [c for c in state.config.cluster_cidrs if (":" in c) == (family is V6)]
        self.chains: dict[str, list[list[Expr]]] = {}
        self.base: dict[str, tuple[str, str, int]] = {}
        self.maps: dict[str, tuple[list[str], list[Any]]] = {
            n: ([self.addr_type, "inet_proto", "inet_service"], [])
            for n in ("service-ips", "no-endpoint-services", "firewall-ips")
        }
        for n in ("service-nodeports", "no-endpoint-nodeports"):
            self.maps[n] = (["inet_proto", "inet_service"], [])
        self.sets: dict[str, tuple[list[str], int | None]] = {}
        self.cluster_ips: list[str] = []
        self._base()
        for ref, port in proxied_ports(self.plan, family):
            proto = port.protocol.value.lower()
            self._port(f"{ref.namespace}/{ref.name}/{proto}/{port.name}", proto, port)

    def saddr(self) -> Expr:
        return {"payload": {"protocol": self.fam, "field": "saddr"}}

    def daddr(self) -> Expr:
        return {"payload": {"protocol": self.fam, "field": "daddr"}}

    def _chain(self, name: str) -> list[list[Expr]]:
        return self.chains.setdefault(name, [])

    def _base(self) -> None:
        hooks = [
            ("filter-prerouting-pre-dnat", "filter", "prerouting", -110, "firewall-check"),
            ("filter-output-pre-dnat", "filter", "output", -110, "firewall-check"),
            ("nat-prerouting", "nat", "prerouting", -100, "services"),
            ("nat-output", "nat", "output", -100, "services"),
            ("nat-postrouting", "nat", "postrouting", 100, "masquerading"),
            ("filter-input", "filter", "input", 0, ""),
            ("filter-forward", "filter", "forward", 0, ""),
            ("filter-output", "filter", "output", 0, ""),
        ]
        for name, kind, hook, prio, target in hooks:
            self.base[name] = (kind, hook, prio)
            rules = self._chain(name)
            if kind == "nat":
                rules.append([_jump(target)])
            elif target:
                rules.append([CT_NEW, _jump(target)])
        checks = {
            "filter-input": ("nodeport-endpoints-check", "service-endpoints-check"),
            "filter-forward": ("service-endpoints-check", "cluster-ips-check"),
            "filter-output": ("service-endpoints-check", "cluster-ips-check"),
        }
        for name, targets in checks.items():
            self.chains[name] += [[CT_NEW, _jump(t)] for t in targets]
        key = {"concat": [self.daddr(), L4PROTO, DPORT]}
        self._chain("firewall-check").append([{"vmap": {"key": key, "data": "@firewall-ips"}}])
        self._chain("service-endpoints-check").append(
            [{"vmap": {"key": key, "data": "@no-endpoint-services"}}]
        )
        primary = self.state.nodes[self.node].address(self.family)
        self.sets["nodeport-ips"] = ([self.addr_type], None)
        self.nodeport_ips = [primary] if primary else []
        np_key = {"concat": [L4PROTO, DPORT]}
        self._chain("nodeport-endpoints-check").append(
            [
                _m(self.daddr(), "@nodeport-ips"),
                {"vmap": {"key": np_key, "data": "@no-endpoint-nodeports"}},
            ]
        )
        self._chain("services").extend(
            [
                [{"vmap": {"key": key, "data": "@service-ips"}}],
                [
                    _m(self.daddr(), "@nodeport-ips"),
                    {"vmap": {"key": np_key, "data": "@service-nodeports"}},
                ],
            ]
        )
        cidrs = [c for c in self.state.config.service_cidrs if (":" in c) == (self.fam == "ip6")]
        self.sets["cluster-ips"] = ([self.addr_type], None)
        self._chain("cluster-ips-check").extend(
            [
                [_m(self.daddr(), "@cluster-ips"), {"reject": None}],
                *([_m(self.daddr(), _prefix(c)), {"drop": None}] for c in cidrs),
            ]
        )
        self._chain("mark-for-masquerade").append(
            [{"mangle": {"key": MARK, "value": {"|": [MARK, MASQ_BIT]}}}]
        )
        self._chain("masquerading").extend(
            [
                [_m({"&": [MARK, MASQ_BIT]}, 0), {"return": None}],
                [{"mangle": {"key": MARK, "value": {"^": [MARK, MASQ_BIT]}}}],
                [{"masquerade": {"flags": ["fully-random"]}}],
            ]
        )
        self._chain("reject-chain").append([{"reject": None}])

    def _endpoints(self, chain: str, label: str, proto: str, port: PortPlan, local: bool) -> None:
        eps = port.local_endpoints if local else port.cluster_endpoints
        rules = self._chain(chain)
        names = []
        for e in eps:
            full = f"{label}__{e.ip}/{e.port}"
            ep_chain, aff = (
                f"endpoint-{_hash(full)[:8]}-{full}",
                f"affinity-{_hash(full)[:8]}-{full}",
            )
            names.append(ep_chain)
            if port.affinity_timeout is not None:
                self.sets[aff] = ([self.addr_type], port.affinity_timeout)
                rules.append([_m(self.saddr(), f"@{aff}"), _goto(ep_chain)])
            if ep_chain in self.chains:
                continue
            body = self._chain(ep_chain)
            body.append([_m(self.saddr(), e.ip), _jump("mark-for-masquerade")])
            if port.affinity_timeout is not None:
                body.append([{"set": {"op": "update", "elem": self.saddr(), "set": f"@{aff}"}}])
            body.append(
                [
                    _m(L4PROTO, proto),
                    {"dnat": {"family": self.fam, "addr": e.ip, "port": e.port}},
                ]
            )
        gotos = [[i, _goto(n)] for i, n in enumerate(names)]
        rules.append(
            [
                {
                    "vmap": {
                        "key": {"numgen": {"mode": "random", "mod": len(names), "offset": 0}},
                        "data": {"set": gotos},
                    }
                }
            ]
        )

    def _port(self, label: str, proto: str, port: PortPlan) -> None:
        h = _hash(label)[:8]
        svc_chain, local_chain = f"service-{h}-{label}", f"local-{h}-{label}"
        ext_chain, fw_chain = f"external-{h}-{label}", f"firewall-{h}-{label}"
        itp_local = port.internal_from_pod.endpoints is EndpointSet.LOCAL or (
            port.internal_from_pod.action is Action.DROP
        )
        etp_local = port.external_from_external.endpoints is EndpointSet.LOCAL or (
            port.external_from_external.action is Action.DROP
        )
        cluster, local = port.cluster_endpoints, port.local_endpoints
        has_endpoints = bool(cluster or local)
        internal = local if itp_local else cluster
        external = local if etp_local else cluster
        internal_chain = local_chain if itp_local else svc_chain
        nobody: Expr = _goto("reject-chain") if not has_endpoints else {"drop": None}
        if cluster:
            self._endpoints(svc_chain, label, proto, port, local=False)
        if local:
            self._endpoints(local_chain, label, proto, port, local=True)
        fronts = sorted(port.frontends, key=lambda f: (f.kind.value, f.ip, f.port))
        externals = [f for f in fronts if f.kind is not FrontendKind.CLUSTER_IP]
        if externals and has_endpoints:
            rules = self._chain(ext_chain)
            if not etp_local:
                rules += [[_jump("mark-for-masquerade")], [_goto(svc_chain)]]
            else:
                rules += [[_m(self.saddr(), _prefix(c)), _goto(svc_chain)] for c in self.cidrs]
                local_src = _m({"fib": {"result": "type", "flags": ["saddr"]}}, "local")
                rules += [
                    [local_src, _jump("mark-for-masquerade")],
                    [local_src, _goto(svc_chain)],
                ]
                if local:
                    rules.append([_goto(local_chain)])
        if port.source_ranges:
            allowed = [_prefix(r) for r in port.source_ranges]
            node_ips = [ipaddress.ip_address(a) for a in self.state.nodes[self.node].addresses]
            if any(a in ipaddress.ip_network(r) for r in port.source_ranges for a in node_ips):
                allowed += [f.ip for f in fronts if f.kind is FrontendKind.LOAD_BALANCER]
            self._chain(fw_chain).append([_m(self.saddr(), {"set": allowed}, "!="), {"drop": None}])
        services, nodeports = self.maps["service-ips"][1], self.maps["service-nodeports"][1]
        no_eps, no_np = self.maps["no-endpoint-services"][1], self.maps["no-endpoint-nodeports"][1]
        for f in fronts:
            key = {"concat": [f.ip, proto, f.port]}
            if f.kind is FrontendKind.CLUSTER_IP:
                self.cluster_ips.append(f.ip)
                if internal:
                    src = (
                        []
                        if self.state.config.masquerade_all
                        else [_m(self.saddr(), _prefix(self.cidrs[0]), "!=")]
                    )
                    self.chains[internal_chain].insert(
                        0, [_m(self.daddr(), f.ip), *src, _jump("mark-for-masquerade")]
                    )
                    services.append([key, _goto(internal_chain)])
                else:
                    no_eps.append([key, nobody])
                continue
            if f.kind is FrontendKind.NODE_PORT:
                np_key = {"concat": [proto, f.port]}
                if any(e[0] == np_key for e in nodeports + no_np):
                    continue  # one element per port: the frontend on each node address
                if has_endpoints:
                    nodeports.append([np_key, _goto(ext_chain)])
                if not external:
                    no_np.append([np_key, nobody])
                continue
            if has_endpoints:
                services.append([key, _goto(ext_chain)])
            if f.kind is FrontendKind.LOAD_BALANCER and port.source_ranges:
                self.maps["firewall-ips"][1].append([key, _goto(fw_chain)])
            if not external:
                no_eps.append([key, nobody])

    def listing(self) -> dict[str, Any]:
        """The table as ``nft -j list ruleset`` prints it (and ``nft -j -f`` takes it)."""
        fam, t = self.fam, TABLE
        out: list[dict[str, Any]] = [{"table": {"family": fam, "name": t}}]
        for name in self.chains:
            chain: dict[str, Any] = {"family": fam, "table": t, "name": name}
            if name in self.base:
                kind, hook, prio = self.base[name]
                chain.update(type=kind, hook=hook, prio=prio, policy="accept")
            out.append({"chain": chain})
        for name, (types, timeout) in self.sets.items():
            body: dict[str, Any] = {"family": fam, "table": t, "name": name, "type": types[0]}
            if timeout is not None:
                body.update(flags=["timeout"], timeout=timeout)  # nft JSON input: no "dynamic"
            elems = {"cluster-ips": self.cluster_ips, "nodeport-ips": self.nodeport_ips}
            if elems.get(name):
                body["elem"] = sorted(set(elems[name]))
            out.append({"set": body})
        for name, (types, elems) in self.maps.items():
            body = {"family": fam, "table": t, "name": name, "type": types, "map": "verdict"}
            if elems:
                body["elem"] = elems
            out.append({"map": body})
        handle = 0
        for name, rules in self.chains.items():
            for exprs in rules:
                handle += 1
                out.append(
                    {"rule": {"family": fam, "table": t, "chain": name, "handle": handle,
                              "expr": exprs}}
                )  # fmt: skip
        return {"nftables": out}


def kube_nft(state: ClusterState, node: str) -> dict[str, Any]:
    """kube-proxy's nftables tables of ``node`` (each family the cluster has), as one
    ``nft -j list ruleset`` listing."""
    families = sorted({V6 if ":" in c else V4 for c in state.config.service_cidrs}, key=str)
    objs: list[Any] = []
    for f in families:
        objs += KubeProxyNftables(state, node, f).listing()["nftables"]
    return {"nftables": objs}


def nft_audit(state: ClusterState, node: str, listing: dict[str, Any]) -> Report:
    return run_audit(state, node, Layout.KUBE_PROXY_NFTABLES, {}, json.dumps(listing))


# -- damage ----------------------------------------------------------------------------


def rules_of(listing: dict[str, Any], chain_prefix: str) -> list[dict[str, Any]]:
    """The rules of the chains whose names start with ``chain_prefix``."""
    return [
        o["rule"]
        for o in listing["nftables"]
        if "rule" in o and o["rule"]["chain"].startswith(chain_prefix)
    ]


def map_of(listing: dict[str, Any], name: str) -> dict[str, Any]:
    return next(o["map"] for o in listing["nftables"] if o.get("map", {}).get("name") == name)


def damaged(listing: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    out = copy.deepcopy(listing)
    change(out)
    return out


def _find_vmap(rule: dict[str, Any]) -> dict[str, Any] | None:
    for e in rule["expr"]:
        if "vmap" in e and "numgen" in e["vmap"]["key"]:
            return e["vmap"]  # type: ignore[no-any-return]
    return None


def drop_endpoint(listing: dict[str, Any], chain_prefix: str, ep: str) -> None:
    """The numgen vmap of ``chain_prefix`` no longer goes to endpoint ``ep`` (its
    element gone, the modulus one less: as if written without it)."""
    for rule in rules_of(listing, chain_prefix):
        vmap = _find_vmap(rule)
        if vmap is None:
            continue
        keep = [e for e in vmap["data"]["set"] if not e[1]["goto"]["target"].endswith(ep)]
        assert len(keep) < len(vmap["data"]["set"]), f"no element for {ep}"
        vmap["data"]["set"] = [[i, e[1]] for i, e in enumerate(keep)]
        vmap["key"]["numgen"]["mod"] = len(keep)
        return
    raise AssertionError(f"no numgen vmap in {chain_prefix}")


# -- tests -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def state() -> ClusterState:
    return _state_from_files([str(FIXTURE)])


def chain_named(listing: dict[str, Any], kind: str, tail: str) -> str:
    """The full name of the ``kind`` chain (service, local, external, endpoint, ...)
    whose readable part is ``tail``."""
    for o in listing["nftables"]:
        name = o.get("chain", {}).get("name", "")
        if name.startswith(kind + "-") and name.endswith(tail):
            return str(name)
    raise AssertionError(f"no {kind} chain ending {tail}")


def test_kube_proxy_nft_layout_agrees_but_for_documented_differences(
    state: ClusterState,
) -> None:
    for node in ("node-a", "node-b"):
        listing = kube_nft(state, node)
        assert detect_layout((), json.dumps(listing)) is Layout.KUBE_PROXY_NFTABLES
        report = nft_audit(state, node, listing)
        assert report.ok, report.text()
        assert report.layout == LAYOUT and report.agree > 100
        # SEMANTICS.md is nftables mode: the fixture agrees probe by probe
        assert not report.findings, report.text()


def test_another_proxys_service_differs_by_design() -> None:
    state = _state_from_files([str(FIXTURE), str(OTHER_PROXY)])
    report = nft_audit(state, "node-a", kube_nft(state, "node-a"))
    assert report.ok, report.text()
    keys = {f.by_design.key for f in report.findings if f.by_design is not None}
    # every documented nftables-mode difference is met, and nothing else differs
    assert keys == {e.key for e in BY_DESIGN if e.mode == LAYOUT}, keys
    assert {f.probe.dst_ip for f in report.findings} == {"10.96.0.20"}
    assert all(any("cluster-ips-check" in t for t in f.trace) for f in report.findings)


def test_other_tables_are_not_walked(state: ClusterState) -> None:
    """A node's ruleset holds other tools' tables too: only kube-proxy's is audited."""
    listing = kube_nft(state, "node-a")
    listing["nftables"] += [
        {"table": {"family": "inet", "name": "cni"}},
        {"chain": {"family": "inet", "table": "cni", "name": "in", "type": "filter",
                   "hook": "input", "prio": 0, "policy": "drop"}},
    ]  # fmt: skip
    report = nft_audit(state, "node-a", listing)
    assert report.ok, report.text()


def _failures(state: ClusterState, listing: dict[str, Any]) -> Report:
    report = nft_audit(state, "node-a", listing)
    assert not report.ok
    return report


def test_a_missing_endpoint_jump_is_reported_with_its_rules(state: ClusterState) -> None:
    good = kube_nft(state, "node-a")
    svc = chain_named(good, "service", "default/web/tcp/http")
    bad = damaged(good, lambda doc: drop_endpoint(doc, svc, "__10.244.1.10/8080"))
    fails = _failures(state, bad).failures
    assert fails
    for f in fails:
        assert f.probe.dst_ip == "10.96.0.10" and f.probe.dst_port == 80
        assert "10.244.1.10:8080" in f.reference and "10.244.1.10:8080" not in f.rules
        assert any(t.startswith("ip services #") and svc in t for t in f.trace), f.trace
        assert any("dnat to 10.244.2.1" in t for t in f.trace)


def test_a_missing_numgen_element_is_reported_with_its_rules(state: ClusterState) -> None:
    """An element gone from the vmap but not the modulus: one branch in N falls
    through un-NATed; the finding names every branch's rules."""
    good = kube_nft(state, "node-a")
    svc = chain_named(good, "service", "default/web-lb/tcp/http")

    def cut(doc: dict[str, Any]) -> None:
        for rule in rules_of(doc, svc):
            vmap = _find_vmap(rule)
            if vmap is not None:
                vmap["data"]["set"] = vmap["data"]["set"][1:]

    fails = _failures(state, damaged(good, cut)).failures
    assert fails
    for f in fails:
        # the lost branch falls through un-NATed: delivered locally (a NodePort), or
        # rejected by cluster-ips-check (the ClusterIP), where the others DNAT
        assert "cannot be evaluated" in f.rules, f.rules
        assert "branches disagree" in f.rules or "some branches DNAT" in f.rules
        assert any(svc in t and "vmap" in t for t in f.trace), f.trace
        if f.probe.dst_ip == "10.96.0.12":
            assert any("cluster-ips-check" in t and "reject" in t for t in f.trace), f.trace


def test_a_missing_service_ips_element_is_reported_with_its_rules(state: ClusterState) -> None:
    good = kube_nft(state, "node-a")

    def cut(doc: dict[str, Any]) -> None:
        m = map_of(doc, "service-ips")
        m["elem"] = [e for e in m["elem"] if e[0]["concat"][0] != "10.96.0.12"]

    fails = _failures(state, damaged(good, cut)).failures
    assert fails
    for f in fails:
        assert f.probe.dst_ip == "10.96.0.12"
        assert f.rules == "reject" and "forward" in f.reference
        assert any("cluster-ips-check" in t and "reject" in t for t in f.trace), f.trace


def test_a_wrong_dnat_port_is_reported_with_its_rules(state: ClusterState) -> None:
    good = kube_nft(state, "node-a")

    def wrong(doc: dict[str, Any]) -> None:
        for rule in rules_of(doc, "endpoint-"):
            for e in rule["expr"]:
                if "dnat" in e and e["dnat"]["addr"] == "10.244.2.11" and e["dnat"]["port"] == 8080:
                    e["dnat"]["port"] = 9090

    fails = _failures(state, damaged(good, wrong)).failures
    assert fails
    for f in fails:
        assert "10.244.2.11:9090" in f.rules and "10.244.2.11:8080" in f.reference
        assert any("dnat to 10.244.2.11 . 9090" in t for t in f.trace), f.trace


def test_a_missing_masquerade_mark_is_reported_with_its_rules(state: ClusterState) -> None:
    good = kube_nft(state, "node-a")
    ext = chain_named(good, "external", "default/web-lb/tcp/http")

    def unmark(doc: dict[str, Any]) -> None:
        doc["nftables"] = [
            o
            for o in doc["nftables"]
            if not (
                "rule" in o
                and o["rule"]["chain"] == ext
                and o["rule"]["expr"] == [_jump("mark-for-masquerade")]
            )
        ]

    fails = _failures(state, damaged(good, unmark)).failures
    assert fails
    for f in fails:
        assert f.probe.dst_port in (80, 30081)
        assert f.reference.count(" masq ") > f.rules.count(" masq ")
        assert any(ext in t for t in f.trace), f.trace
        assert not any("mark set" in t for t in f.trace if ext in t)


def test_cli_from_a_json_file(state: ClusterState, tmp_path: pathlib.Path) -> None:
    good = tmp_path / "ruleset.json"
    good.write_text(json.dumps(kube_nft(state, "node-a")))
    runner = CliRunner()
    ok = runner.invoke(
        cli, ["audit", "--node", "node-a", "--nft-json", str(good), "-f", str(FIXTURE)]
    )
    assert ok.exit_code == 0, ok.output
    assert f"node node-a ({LAYOUT})" in ok.output and "0 disagree" in ok.output


_NO_HYPOTHESIS = """
import json, sys
from click.testing import CliRunner
from svcnet.cli.main import cli
runs = [CliRunner().invoke(cli, argv) for argv in (["audit", "--help"], sys.argv[1:])]
print(json.dumps({"codes": [r.exit_code for r in runs], "out": runs[1].output,
                  "loaded": sorted(m for m in sys.modules if m.split(".")[0] == "hypothesis")}))
"""


def test_audit_runs_without_hypothesis(state: ClusterState, tmp_path: pathlib.Path) -> None:
    """``svcnet audit`` lists its probes with svcnet.probes: no ``testing`` extra."""
    ruleset = tmp_path / "ruleset.json"
    ruleset.write_text(json.dumps(kube_nft(state, "node-a")))
    argv = ["audit", "--node", "node-a", "--nft-json", str(ruleset), "-f", str(FIXTURE)]
    proc = subprocess.run(
        [sys.executable, "-c", _NO_HYPOTHESIS, *argv],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["codes"] == [0, 0], doc["out"]
    assert "0 disagree" in doc["out"]
    assert doc["loaded"] == [], doc["loaded"]


@settings(
    max_examples=12,
    derandomize=True,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # a failure shows unshrunk: fast
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.data())
def test_generated_clusters_agree_but_for_documented_differences_nft(
    data: st.DataObject,
) -> None:
    state = draw_state(data)
    if state is None:
        return  # refused as Kubernetes would: nothing to audit
    for node in sorted(state.nodes)[:1]:
        report = nft_audit(state, node, kube_nft(state, node))
        assert report.ok, report.text()
