"""svcnet audit (pure): kube-proxy's iptables layout, rendered here from the documented
layout (../shared/KUBE-PROXY-FACTS.md §2.1, not kube-proxy's code) for the plan of a
node, read back and compared with the reference: agreement except the documented
differences; damaged rules (a missing KUBE-SEP jump, a wrong DNAT port, a missing
masquerade mark) reported with the rules that decided them; svcnet's own iptables
and nftables layouts (rendered by the backends) with no disagreement.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import pathlib
import re
from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from svcnet.audit import BY_DESIGN, Report, audit
from svcnet.audit.readers import Layout, LayoutError, detect_layout, reader
from svcnet.cli.audit import node_probes, run_audit
from svcnet.cli.dns import _state_from_files
from svcnet.cli.main import cli
from svcnet.errors import SvcnetError
from svcnet.model import IPFamily
from svcnet.plan import Action, EndpointSet, FrontendKind, Plan, PortPlan, ServiceRef, compile
from svcnet.state import Apply, ClusterState
from svcnet.testing import strategies as sst

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "audit" / "cluster.yaml"
V4, V6 = IPFamily.IPv4, IPFamily.IPv6
MASQ_BIT = "0x4000"


# -- kube-proxy's iptables layout, from the documentation ------------------------------


def _hash(text: str) -> str:
    """base32(sha256(text))[:16], as the layout names its per-port chains."""
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


def _host(ip: str) -> str:
    return f"{ip}/{32 if ipaddress.ip_address(ip).version == 4 else 128}"


def _ep(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def proxied_ports(plan: Plan, family: IPFamily) -> Iterator[tuple[ServiceRef, PortPlan]]:
    """Every port of ``family`` of the services kube-proxy handles, in name order."""
    for ref in sorted(plan.services, key=lambda r: (r.namespace, r.name)):
        svc = plan.services[ref]
        if svc.proxied:
            yield from ((ref, port) for port in svc.ports if port.family is family)


class KubeProxyIptables:
    """kube-proxy's iptables-mode tables for one node and family, as save text."""

    def __init__(self, state: ClusterState, node: str, family: IPFamily) -> None:
        self.state, self.node, self.family = state, node, family
        self.plan = compile(state, node)
        self.cidrs = [c for c in state.config.cluster_cidrs if (":" in c) == (family is V6)]
        self.nat: dict[str, list[str]] = {
            c: []
            for c in (
                "PREROUTING",
                "INPUT",
                "OUTPUT",
                "POSTROUTING",
                "KUBE-SERVICES",
                "KUBE-NODEPORTS",
                "KUBE-POSTROUTING",
                "KUBE-MARK-MASQ",
            )
        }
        self.filter: dict[str, list[str]] = {
            c: []
            for c in (
                "INPUT",
                "FORWARD",
                "OUTPUT",
                "KUBE-SERVICES",
                "KUBE-EXTERNAL-SERVICES",
                "KUBE-NODEPORTS",
                "KUBE-PROXY-FIREWALL",
                "KUBE-FORWARD",
                "KUBE-FIREWALL",
            )
        }
        self._base()
        for ref, port in proxied_ports(self.plan, family):
            self._port(f"{ref.namespace}/{ref.name}:{port.name}", port)
        loopback = "! -d ::1/128 " if family is V6 else ""
        self.nat["KUBE-SERVICES"].append(
            '-m comment --comment "kubernetes service nodeports; NOTE: this must be the last '
            f'rule in this chain" {loopback}-m addrtype --dst-type LOCAL -j KUBE-NODEPORTS'
        )

    def _base(self) -> None:
        nat, flt = self.nat, self.filter
        for hook in ("PREROUTING", "OUTPUT"):
            nat[hook].append('-m comment --comment "kubernetes service portals" -j KUBE-SERVICES')
        nat["POSTROUTING"].append(
            '-m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING'
        )
        nat["KUBE-MARK-MASQ"].append(f"-j MARK --or-mark {MASQ_BIT}")
        nat["KUBE-POSTROUTING"] += [
            f"-m mark ! --mark {MASQ_BIT}/{MASQ_BIT} -j RETURN",
            f"-j MARK --xor-mark {MASQ_BIT}",
            '-m comment --comment "kubernetes service traffic requiring SNAT" '
            "-j MASQUERADE --random-fully",
        ]
        new = "-m conntrack --ctstate NEW"
        fw = (
            f'{new} -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL'
        )
        ext = (
            f'{new} -m comment --comment "kubernetes externally-visible service portals" '
            "-j KUBE-EXTERNAL-SERVICES"
        )
        svcs = f'{new} -m comment --comment "kubernetes service portals" -j KUBE-SERVICES'
        flt["INPUT"] += [
            fw,
            '-m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS',
            ext,
        ]
        flt["FORWARD"] += [
            fw,
            '-m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD',
            svcs,
            ext,
        ]
        flt["OUTPUT"] += [fw, svcs]
        if self.family is V4:  # localhostNodePorts: the martian guard of route_localnet
            flt["INPUT"].append("-j KUBE-FIREWALL")
            flt["OUTPUT"].append("-j KUBE-FIREWALL")
            flt["KUBE-FIREWALL"].append(
                '-d 127.0.0.0/8 ! -s 127.0.0.0/8 -m comment --comment "block incoming '
                'localnet connections" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP'
            )
        flt["KUBE-FORWARD"] += [
            "-m conntrack --ctstate INVALID -j DROP",
            '-m comment --comment "kubernetes forwarding rules" '
            f"-m mark --mark {MASQ_BIT}/{MASQ_BIT} -j ACCEPT",
            '-m comment --comment "kubernetes forwarding conntrack rule" '
            "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        ]

    def _chain(self, name: str) -> list[str]:
        return self.nat.setdefault(name, [])

    def _cascade(self, chain: str, label: str, proto: str, eps: list[str], port: PortPlan) -> None:
        rules = self._chain(chain)
        seps = [f"KUBE-SEP-{_hash(label + proto + e)}" for e in eps]
        if port.affinity_timeout is not None:
            for sep, e in zip(seps, eps, strict=True):
                rules.append(
                    f'-m comment --comment "{label} -> {e}" -m recent --name {sep} '
                    f"--mask 255.255.255.255 --rsource --rcheck --seconds "
                    f"{port.affinity_timeout} --reap -j {sep}"
                )
        for i, (sep, e) in enumerate(zip(seps, eps, strict=True)):
            stat = ""
            if i < len(eps) - 1:
                stat = f"-m statistic --mode random --probability {1 / (len(eps) - i):0.10f} "
            rules.append(f'-m comment --comment "{label} -> {e}" {stat}-j {sep}')
            sep_rules = self._chain(sep)
            if sep_rules:
                continue  # already written (for the other set)
            ip = e.rpartition(":")[0].strip("[]")
            recent = ""
            if port.affinity_timeout is not None:
                recent = f"-m recent --set --name {sep} --mask 255.255.255.255 --rsource "
            sep_rules += [
                f'-s {_host(ip)} -m comment --comment "{label}" -j KUBE-MARK-MASQ',
                f'-p {proto} -m comment --comment "{label}" {recent}'
                f"-m {proto} -j DNAT --to-destination {e}",
            ]

    def _port(self, label: str, port: PortPlan) -> None:
        proto = port.protocol.value.lower()
        h = _hash(label + proto)
        cluster = [_ep(e.ip, e.port) for e in port.cluster_endpoints]
        local = [_ep(e.ip, e.port) for e in port.local_endpoints]
        itp_local = port.internal_from_pod.endpoints is EndpointSet.LOCAL or (
            port.internal_from_pod.action is Action.DROP
        )
        etp_local = port.external_from_external.endpoints is EndpointSet.LOCAL or (
            port.external_from_external.action is Action.DROP
        )
        has_endpoints = bool(cluster or local)
        internal = local if itp_local else cluster
        external = local if etp_local else cluster
        svc_chain, svl_chain = f"KUBE-SVC-{h}", f"KUBE-SVL-{h}"
        internal_chain = svl_chain if itp_local else svc_chain
        nobody = (
            f'-m comment --comment "{label} has no endpoints" -j REJECT'
            if not has_endpoints
            else f'-m comment --comment "{label} has no local endpoints" -j DROP'
        )
        match = f"-p {proto} -m {proto} --dport"
        fronts = sorted(port.frontends, key=lambda f: (f.kind.value, f.ip, f.port))
        # the internal chain: masquerade off-cluster sources, then the endpoints
        cips = [f for f in fronts if f.kind is FrontendKind.CLUSTER_IP]
        if internal:
            rules = self._chain(internal_chain)
            for f in cips:
                src = "" if self.state.config.masquerade_all else f"! -s {self.cidrs[0]} "
                rules.append(
                    f"{src}-d {_host(f.ip)} -p {proto} "
                    f'-m comment --comment "{label} cluster IP" -m {proto} --dport {f.port} '
                    "-j KUBE-MARK-MASQ"
                )
        if cluster:
            self._cascade(svc_chain, label, proto, cluster, port)
        if local:
            self._cascade(svl_chain, label, proto, local, port)
        ext_chain, fw_chain = f"KUBE-EXT-{h}", f"KUBE-FW-{h}"
        externals = [f for f in fronts if f.kind is not FrontendKind.CLUSTER_IP]
        if externals and has_endpoints:
            rules = self._chain(ext_chain)
            if not etp_local:
                rules.append(
                    f'-m comment --comment "masquerade traffic for {label} external '
                    'destinations" -j KUBE-MARK-MASQ'
                )
                rules.append(f"-j {svc_chain}")
            else:
                rules += [
                    f'-s {c} -m comment --comment "pod traffic for {label} external '
                    f'destinations" -j {svc_chain}'
                    for c in self.cidrs
                ]
                rules.append(
                    f'-m comment --comment "masquerade LOCAL traffic for {label} external '
                    'destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ'
                )
                rules.append(
                    f'-m comment --comment "route LOCAL traffic for {label} external '
                    f'destinations" -m addrtype --src-type LOCAL -j {svc_chain}'
                )
                if local:
                    rules.append(f"-j {svl_chain}")
        if port.source_ranges and has_endpoints:
            self._chain(fw_chain).extend(
                f'-s {r} -m comment --comment "{label} loadbalancer IP" -j {ext_chain}'
                for r in port.source_ranges
            )
        services, nodeports = self.nat["KUBE-SERVICES"], self.nat["KUBE-NODEPORTS"]
        for f in fronts:
            if f.kind is FrontendKind.CLUSTER_IP:
                if internal:
                    services.append(
                        f'-d {_host(f.ip)} -m comment --comment "{label} cluster IP" '
                        f"{match} {f.port} -j {internal_chain}"
                    )
                else:
                    self.filter["KUBE-SERVICES"].append(
                        f"-d {_host(f.ip)} {match} {f.port} {nobody}"
                    )
                continue
            if f.kind is FrontendKind.NODE_PORT:
                if has_endpoints:
                    nodeports.append(
                        f'-m comment --comment "{label}" {match} {f.port} -j {ext_chain}'
                    )
                if not external:
                    self.filter["KUBE-EXTERNAL-SERVICES"].append(
                        f"-m addrtype --dst-type LOCAL {match} {f.port} {nobody}"
                    )
                continue
            firewalled = f.kind is FrontendKind.LOAD_BALANCER and bool(port.source_ranges)
            if has_endpoints:
                target = fw_chain if firewalled else ext_chain
                services.append(
                    f'-d {_host(f.ip)} -m comment --comment "{label} external IP" '
                    f"{match} {f.port} -j {target}"
                )
            if firewalled:
                self.filter["KUBE-PROXY-FIREWALL"].append(
                    f'-d {_host(f.ip)} -m comment --comment "{label} traffic not accepted by '
                    f'{fw_chain}" {match} {f.port} -j DROP'
                )
            if not external:
                self.filter["KUBE-EXTERNAL-SERVICES"].append(
                    f"-d {_host(f.ip)} {match} {f.port} {nobody}"
                )

    def save(self) -> str:
        """The tables as iptables-save prints them (and iptables-restore takes them)."""
        out = []
        for name, chains in (("nat", self.nat), ("filter", self.filter)):
            out.append(f"*{name}")
            for chain in chains:
                builtin = chain.isupper() and not chain.startswith("KUBE-")
                out.append(f":{chain} {'ACCEPT' if builtin else '-'} [0:0]")
            for chain, rules in chains.items():
                out += [f"-A {chain} {r}" for r in rules]
            out.append("COMMIT")
        return "\n".join(out) + "\n"


def kube_saves(state: ClusterState, node: str) -> dict[IPFamily, str]:
    """kube-proxy's iptables tables of ``node`` for each family the cluster has."""
    families = {V6 if ":" in c else V4 for c in state.config.service_cidrs}
    return {f: KubeProxyIptables(state, node, f).save() for f in sorted(families, key=str)}


def kube_audit(state: ClusterState, node: str, saves: dict[IPFamily, str]) -> Report:
    return run_audit(state, node, Layout.KUBE_PROXY_IPTABLES, saves, None)


# -- tests -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def state() -> ClusterState:
    return _state_from_files([str(FIXTURE)])


def test_kube_proxy_layout_agrees_but_for_documented_differences(state: ClusterState) -> None:
    for node in ("node-a", "node-b"):
        saves = kube_saves(state, node)
        assert detect_layout(saves.values()) is Layout.KUBE_PROXY_IPTABLES
        report = kube_audit(state, node, saves)
        assert report.ok, report.text()
        assert report.agree > 100
        keys = {f.by_design.key for f in report.findings if f.by_design is not None}
        # the fixture meets every documented iptables-mode difference
        assert keys == {e.key for e in BY_DESIGN if e.mode == "kube-proxy-iptables"}, keys


def test_other_tools_rules_are_not_walked(state: ClusterState) -> None:
    """A node's tables hold other tools' rules too (a container runtime's, a CNI's),
    with options the interpreter does not know: kube-proxy's part is audited alone."""
    text = kube_saves(state, "node-a")[V4]
    text = text.replace(
        "*filter\n",
        "*filter\n:DOCKER - [0:0]\n"
        "-A FORWARD -o docker0 -j DOCKER\n"
        "-A FORWARD -i docker0 ! -o docker0 -j ACCEPT\n"
        "-A DOCKER -d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 "
        "-j ACCEPT\n",
        1,
    )
    assert "-i docker0" in text
    report = kube_audit(state, "node-a", {V4: text})
    assert report.ok, report.text()
    assert not any("cannot be evaluated" in f.rules for f in report.findings)


def _damage(text: str, pattern: str, replace: str | None) -> str:
    """``text`` with the first line matching ``pattern`` removed (``replace`` None)
    or substituted."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if re.search(pattern, line):
            if replace is None:
                del lines[i]
            else:
                lines[i] = re.sub(pattern, replace, line)
            return "\n".join(lines) + "\n"
    raise AssertionError(f"no line matches {pattern!r}")


def _failures(state: ClusterState, text: str) -> Report:
    report = kube_audit(state, "node-a", {V4: text})
    assert not report.ok
    return report


def test_a_missing_sep_jump_is_reported_with_its_rules(state: ClusterState) -> None:
    text = kube_saves(state, "node-a")[V4]
    # web's http port: drop the cascade's first jump (10.244.1.10 goes missing)
    damaged = _damage(
        text,
        r'^-A KUBE-SVC-\w+ -m comment --comment "default/web:http -> '
        r'10\.244\.1\.10:8080" -m statistic',
        None,
    )
    report = _failures(state, damaged)
    bad = report.failures
    assert all(f.probe.dst_port == 80 and f.probe.dst_ip == "10.96.0.10" for f in bad)
    one = bad[0]
    assert "10.244.1.10:8080" in one.reference and "10.244.1.10:8080" not in one.rules
    assert any("KUBE-SERVICES" in t and "default/web:http cluster IP" in t for t in one.trace)
    assert any(t.startswith("nat: -A KUBE-SVC-") for t in one.trace)
    assert any("DNAT --to-destination 10.244.2.1" in t for t in one.trace)


def test_a_wrong_dnat_port_is_reported_with_its_rules(state: ClusterState) -> None:
    text = kube_saves(state, "node-a")[V4]
    damaged = _damage(text, r"(-j DNAT --to-destination 10\.244\.2\.11:)8080$", r"\g<1>9090")
    bad = _failures(state, damaged).failures
    assert bad
    for f in bad:
        assert "10.244.2.11:9090" in f.rules and "10.244.2.11:8080" in f.reference
        assert any("--to-destination 10.244.2.11:9090" in t for t in f.trace)


def test_a_missing_masquerade_mark_is_reported_with_its_rules(state: ClusterState) -> None:
    text = kube_saves(state, "node-a")[V4]
    # web-lb's external chain no longer marks for masquerade (ETP Cluster)
    damaged = _damage(
        text, r'^-A KUBE-EXT-\w+ -m comment --comment "masquerade traffic for default/web-lb', None
    )
    bad = _failures(state, damaged).failures
    assert bad
    for f in bad:
        assert f.probe.dst_port in (80, 30081)
        assert f.reference.count(" masq ") > f.rules.count(" masq ")
        assert any("KUBE-EXT-" in t for t in f.trace)
        assert not any("KUBE-MARK-MASQ" in t for t in f.trace if "KUBE-EXT-" in t)


def test_report_json_and_text(state: ClusterState) -> None:
    text = kube_saves(state, "node-a")[V4]
    damaged = _damage(text, r"(-j DNAT --to-destination 10\.244\.2\.11:)8080$", r"\g<1>9090")
    report = kube_audit(state, "node-a", {V4: damaged})
    doc = report.to_json()
    assert doc["disagree"] == len(report.failures) > 0
    assert doc["differ_by_design"] == len(report.findings) - len(report.failures) > 0
    assert doc["probes"] == report.agree + len(report.findings)
    first = next(f for f in doc["findings"] if f["by_design"] is None)
    assert set(first["probe"]) == {
        "source_kind",
        "source_ip",
        "node",
        "dst_ip",
        "dst_port",
        "protocol",
    }
    assert first["trace"]
    shown = report.text()
    assert "DISAGREES" in shown and "decided by:" in shown and "differs by design" in shown


def test_cli_from_files(state: ClusterState, tmp_path: pathlib.Path) -> None:
    good = tmp_path / "good.save"
    good.write_text(kube_saves(state, "node-a")[V4])
    runner = CliRunner()
    ok = runner.invoke(
        cli, ["audit", "--node", "node-a", "--iptables-save", str(good), "-f", str(FIXTURE)]
    )
    assert ok.exit_code == 0, ok.output
    assert "0 disagree" in ok.output and "differs by design (kube-proxy-iptables" in ok.output
    bad = tmp_path / "bad.save"
    bad.write_text(
        _damage(good.read_text(), r"(-j DNAT --to-destination 10\.244\.2\.11:)8080$", r"\g<1>9")
    )
    out = runner.invoke(
        cli,
        [
            "audit",
            "--node",
            "node-a",
            "--iptables-save",
            str(bad),
            "-f",
            str(FIXTURE),
            "-o",
            "json",
        ],
    )
    assert out.exit_code == 1, out.output
    doc = json.loads(out.output)
    assert doc["layout"] == "kube-proxy-iptables" and doc["disagree"] > 0


def test_cli_refuses_what_it_cannot_read(tmp_path: pathlib.Path) -> None:
    empty = tmp_path / "empty.save"
    empty.write_text("*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n")
    out = CliRunner().invoke(
        cli, ["audit", "--node", "node-a", "--iptables-save", str(empty), "-f", str(FIXTURE)]
    )
    assert out.exit_code == 1 and "no known layout" in out.output
    with pytest.raises(LayoutError, match="no table kube-proxy"):
        reader(Layout.KUBE_PROXY_NFTABLES, nft_json='{"nftables": []}')


def draw_state(data: st.DataObject) -> ClusterState | None:
    """A generated cluster (None: refused as Kubernetes would refuse it)."""
    config = data.draw(sst.configs())
    try:
        return ClusterState.empty(config).step(Apply(tuple(data.draw(sst.cluster_objects(config)))))
    except SvcnetError:
        return None


@settings(
    max_examples=12,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.data())
def test_generated_clusters_agree_but_for_documented_differences(data: st.DataObject) -> None:
    state = draw_state(data)
    if state is None:
        return  # refused as Kubernetes would: nothing to audit
    for node in sorted(state.nodes)[:1]:
        report = audit(
            state,
            node,
            reader(
                Layout.KUBE_PROXY_IPTABLES,
                iptables=kube_saves(state, node),
                local=state.nodes[node].addresses,
            ),
            node_probes(state, node),
        )
        assert report.ok, report.text()
