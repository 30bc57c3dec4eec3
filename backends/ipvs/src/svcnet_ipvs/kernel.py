"""The IPVS backend's I/O: IPVS and rtnetlink through pyroute2, inside the node's
network namespace (every socket is opened with the thread in the namespace, see
:func:`svcnet.kernel.setns.entered`)."""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable
from typing import Any

from svcnet.errors import BackendError, BackendErrorKind
from svcnet.kernel.setns import entered
from svcnet.model import IPFamily, Protocol
from svcnet_ipvs.interpret import FWD_MASQ, ObservedServer
from svcnet_ipvs.ops import Op, ServerKey, ours
from svcnet_ipvs.render import DUMMY, RealServer, VirtualServer

PERSISTENT = 0x1  # IP_VS_SVC_F_PERSISTENT
_AF = {IPFamily.IPv4: socket.AF_INET, IPFamily.IPv6: socket.AF_INET6}
_PROTO = {
    Protocol.TCP: socket.IPPROTO_TCP,
    Protocol.UDP: socket.IPPROTO_UDP,
    Protocol.SCTP: socket.IPPROTO_SCTP,
}
_IFA_F_NODAD = 0x02
_SCOPE_LINK = 253  # RT_SCOPE_LINK


def _pyroute2() -> Any:
    try:
        import pyroute2
    except ImportError as e:  # pragma: no cover - a dependency of the distribution
        raise BackendError(
            BackendErrorKind.UNSUPPORTED, f"the IPVS backend needs pyroute2: {e}"
        ) from e
    return pyroute2


def _refused(what: str, e: Exception) -> BackendError:
    code = getattr(e, "code", None)
    kind = BackendErrorKind.REFUSED
    if code in (errno.EPERM, errno.EACCES):
        kind = BackendErrorKind.PERMISSION
    return BackendError(kind, f"{what}: {e}")


class Kernel:
    """One namespace's IPVS table, dummy interface and sysctls."""

    def __init__(self, netns: str | None) -> None:
        self.netns = netns

    # -- availability ------------------------------------------------------------------
    def check_ipvs(self) -> None:
        """Raise ``BackendError(UNSUPPORTED)`` when this kernel has no IPVS (the generic
        netlink family ``IPVS`` is unknown): before the backend changes anything."""
        pr = _pyroute2()
        where = f"network namespace {self.netns}" if self.netns else "this network namespace"
        try:
            with entered(self.netns), pr.IPVS() as ipvs:
                ipvs.service("dump")
        except Exception as e:
            raise BackendError(
                BackendErrorKind.UNSUPPORTED,
                f"IPVS is not available in {where}: the kernel has no IPVS "
                f"(generic netlink family 'IPVS'; module ip_vs) ({type(e).__name__}: {e})",
            ) from e

    def sysctl(self, key: str, value: str) -> None:
        """Write ``/proc/sys/<key>`` (slashes) in the namespace."""
        try:
            with entered(self.netns), open(f"/proc/sys/{key}", "w", encoding="ascii") as f:
                f.write(value)
        except OSError as e:
            raise _refused(f"sysctl {key} = {value}", e) from e

    # -- virtual servers ---------------------------------------------------------------
    def servers(self) -> dict[ServerKey, ObservedServer]:
        """Every firewall-mark virtual server of svcnet's range, with its real servers."""
        pr = _pyroute2()
        out: dict[ServerKey, ObservedServer] = {}
        try:
            with entered(self.netns), pr.IPVS() as ipvs:
                for msg in ipvs.service("dump"):
                    svc = msg.get("IPVS_CMD_ATTR_SERVICE")
                    mark = svc.get("IPVS_SVC_ATTR_FWMARK") or 0
                    if not ours(mark):
                        continue
                    fam = (
                        IPFamily.IPv6
                        if svc.get("IPVS_SVC_ATTR_AF") == socket.AF_INET6
                        else IPFamily.IPv4
                    )
                    proto = {v: k for k, v in _PROTO.items()}.get(
                        svc.get("IPVS_SVC_ATTR_PROTOCOL"), Protocol.TCP
                    )
                    flags = svc.get("IPVS_SVC_ATTR_FLAGS") or {}
                    flag_bits = flags.get("flags", 0) if isinstance(flags, dict) else 0
                    timeout = svc.get("IPVS_SVC_ATTR_TIMEOUT") if flag_bits & PERSISTENT else None
                    dests: list[tuple[RealServer, int]] = []
                    key = pr.IPVSService(af=_AF[fam], fwmark=mark)
                    for d in ipvs.dest("dump", service=key):
                        a = d.get("IPVS_CMD_ATTR_DEST")
                        rs = RealServer(
                            str(a.get("IPVS_DEST_ATTR_ADDR")),
                            int(a.get("IPVS_DEST_ATTR_PORT")),
                            int(a.get("IPVS_DEST_ATTR_WEIGHT")),
                        )
                        dests.append((rs, int(a.get("IPVS_DEST_ATTR_FWD_METHOD")) & 0x7))
                    dests.sort()
                    vs = VirtualServer(
                        fam,
                        mark,
                        proto,
                        timeout,
                        tuple(r for r, _ in dests),
                        str(svc.get("IPVS_SVC_ATTR_SCHED_NAME")),
                    )
                    out[(fam, mark)] = ObservedServer(vs, tuple(m for _, m in dests))
        except BackendError:
            raise
        except Exception as e:
            raise _refused("reading the IPVS table", e) from e
        return out

    def run(self, ops: Iterable[Op]) -> None:
        """Send each operation (one netlink request each); stop at the first refusal."""
        pr = _pyroute2()
        with entered(self.netns), pr.IPVS() as ipvs:
            for op in ops:
                vs = op.server
                af = _AF[vs.family]
                try:
                    if op.dest is None:
                        if op.what == "delete":
                            ipvs.service("del", service=pr.IPVSService(af=af, fwmark=vs.fwmark))
                            continue
                        full = pr.IPVSService(
                            af=af,
                            fwmark=vs.fwmark,
                            protocol=_PROTO[vs.protocol],
                            sched_name=vs.scheduler,
                            flags={
                                "flags": PERSISTENT if vs.timeout is not None else 0,
                                "mask": 0xFFFF,
                            },
                            timeout=vs.timeout or 0,
                            # v6: a prefix length, host byte order (as ipvsadm sends it)
                            netmask="255.255.255.255" if af == socket.AF_INET else "128.0.0.0",
                        )
                        ipvs.service("add" if op.what == "add" else "set", service=full)
                        continue
                    key = pr.IPVSService(af=af, fwmark=vs.fwmark)
                    d = op.dest
                    dest = pr.IPVSDest(addr=d.ip, port=d.port, fwd_method=FWD_MASQ, weight=d.weight)
                    cmd = {"add": "add", "edit": "set", "delete": "del"}[op.what]
                    ipvs.dest(cmd, service=key, dest=dest)
                except Exception as e:
                    raise _refused(f"IPVS refused to {op}", e) from e

    # -- addresses ---------------------------------------------------------------------
    def addresses(self) -> tuple[frozenset[str], frozenset[str]]:
        """(the dummy interface's addresses but link-local ones, every address of the
        namespace)."""
        pr = _pyroute2()
        dummy: set[str] = set()
        local: set[str] = set()
        with entered(self.netns), pr.IPRoute() as ipr:
            links = ipr.link_lookup(ifname=DUMMY)
            for msg in ipr.get_addr():
                addr = str(msg.get("IFA_ADDRESS"))
                local.add(addr)
                # the kernel's own IPv6 link-local address is not svcnet's
                if links and msg["index"] == links[0] and msg.get("scope") != _SCOPE_LINK:
                    dummy.add(addr)
        return frozenset(dummy), frozenset(local)

    def set_addresses(self, wanted: frozenset[str]) -> None:
        """Create the dummy interface when missing; give it exactly ``wanted``."""
        pr = _pyroute2()
        have, _ = self.addresses()
        try:
            with entered(self.netns), pr.IPRoute() as ipr:
                links = ipr.link_lookup(ifname=DUMMY)
                if not links:
                    ipr.link("add", ifname=DUMMY, kind="dummy")
                    links = ipr.link_lookup(ifname=DUMMY)
                index = links[0]
                ipr.link("set", index=index, state="up")
                for ip in sorted(wanted - have):
                    v6 = ":" in ip
                    ipr.addr(
                        "add",
                        index=index,
                        address=ip,
                        prefixlen=128 if v6 else 32,
                        **({"flags": _IFA_F_NODAD} if v6 else {}),
                    )
                for ip in sorted(have - wanted):
                    ipr.addr("del", index=index, address=ip, prefixlen=128 if ":" in ip else 32)
        except Exception as e:
            raise _refused(f"the dummy interface {DUMMY}", e) from e

    def delete_dummy(self) -> None:
        pr = _pyroute2()
        with entered(self.netns), pr.IPRoute() as ipr:
            links = ipr.link_lookup(ifname=DUMMY)
            if links:
                ipr.link("del", index=links[0])
