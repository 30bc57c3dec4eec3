"""I/O driver 2: python-iptables (libiptc), legacy tables only.

It executes the same ``iptables-restore`` texts the restore driver feeds to the
tools, line by line, on a libiptc handle opened with ``autocommit=False``, and
commits once per table: libiptc replaces the whole table in one setsockopt, so
each table changes atomically (a failure before the commit changes nothing).

libiptc opens its socket in the calling thread's network namespace, so every
call runs inside :func:`svcnet.kernel.entered`, which switches the thread into
the node's namespace with ``setns(2)`` and back again afterwards.
"""

from __future__ import annotations

import atexit
import ipaddress
import json
import os
import shlex
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from svcnet.errors import BackendError, BackendErrorKind
from svcnet.kernel import entered, has_net_admin
from svcnet.model import IPFamily

from .readback import BUILTIN, PREFIX, Ruleset, Table, build
from .restore import check_netns

FLAGS = frozenset({"--rcheck", "--set", "--reap", "--rsource", "--random-fully", "--random"})


def _iptc() -> Any:
    try:
        import iptc
    except Exception as e:  # ImportError, or XTablesError when libxtables is missing
        raise BackendError(
            BackendErrorKind.UNSUPPORTED, f"python-iptables (iptc) cannot be loaded: {e}"
        ) from e
    return iptc


def _set(ext: Any, opt: str, value: str) -> None:
    ext.set_parameter(opt[2:], value)


def split(line: str) -> list[str]:
    """A restore line's words (shlex only when it quotes something: shlex is slow)."""
    return shlex.split(line) if '"' in line or "'" in line else line.split()


#: (family, rule spec) -> the rule's ready-made entry buffer (what libiptc copies in).
#: Building a rule through python-iptables costs about a millisecond (every option
#: goes through xtables' parser, and ``append_rule`` saves and re-parses them all);
#: a partial sync re-appends the whole dispatch chains, so buffers are reused.
_ENTRIES: dict[tuple[IPFamily, str], Any] = {}
_ENTRIES_MAX = 1 << 18


def entry(iptc: Any, family: IPFamily, spec: str) -> Any:
    """The libiptc entry buffer for a rule spec, built once and then reused."""
    key = (family, spec)
    buf = _ENTRIES.get(key)
    if buf is None:
        rule = build_rule(iptc, family, split(spec))
        for ext in (*rule.matches, rule.target):
            if ext is not None and ext._module:
                ext._final_check()  # what append_rule's final_check ends with, without
                # its save-and-re-parse of every option
        buf = rule.rule
        if not buf:
            raise ValueError(f"invalid rule {spec!r}")
        if len(_ENTRIES) >= _ENTRIES_MAX:
            _ENTRIES.clear()
        _ENTRIES[key] = buf
    return buf


def build_rule(iptc: Any, family: IPFamily, argv: list[str]) -> Any:
    """An iptc Rule from an iptables rule spec (what follows ``-A CHAIN``)."""
    rule = iptc.Rule6() if family is IPFamily.IPv6 else iptc.Rule()
    ext: Any = None
    i = 0
    neg = ""
    while i < len(argv):
        tok = argv[i]
        nxt = argv[i + 1] if i + 1 < len(argv) else ""
        if tok == "!":
            neg = "!"
            i += 1
            continue
        if tok == "-s":
            rule.src = neg + nxt
        elif tok == "-d":
            rule.dst = neg + nxt
        elif tok == "-p":
            rule.protocol = neg + nxt
        elif tok == "-m":
            ext = rule.create_match(nxt)
        elif tok == "-j":
            ext = rule.create_target(nxt)
        elif tok in FLAGS:
            _set(ext, tok, neg)
            i += 1
            neg = ""
            continue
        elif tok.startswith("--") and ext is not None:
            _set(ext, tok, neg + nxt)
        else:
            raise ValueError(f"cannot build a libiptc rule from {' '.join(argv)!r} at {tok!r}")
        neg = ""
        i += 2
    return rule


def _prefix(addr: str) -> str | None:
    neg = addr.startswith("!")
    addr = addr.lstrip("!")
    host, _, mask = addr.partition("/")
    if mask and not mask.isdigit():
        bits = bin(int(ipaddress.ip_address(mask))).count("1")
        addr = f"{host}/{bits}"
    if ipaddress.ip_network(addr, strict=False).prefixlen == 0:
        return None
    return ("!" if neg else "") + addr


def rule_argv(rule: Any) -> list[str]:
    """A libiptc rule as an iptables rule spec, as iptables-save would print it."""
    argv: list[str] = []
    for flag, value in (("-s", rule.src), ("-d", rule.dst)):
        spec = _prefix(value)
        if spec is not None:
            argv += ["!", flag, spec[1:]] if spec.startswith("!") else [flag, spec]
    if rule.protocol and rule.protocol not in ("ip", "all", "0"):
        argv += ["-p", rule.protocol]
    for m in rule.matches:
        argv += ["-m", m.name]
        argv += _params(m.get_all_parameters())
    target = rule.target
    if target is not None and target.name:
        argv += ["-j", target.name]
        try:
            params = target.get_all_parameters()
        except Exception:  # standard targets (a chain, ACCEPT, RETURN) have no options
            params = {}
        argv += _params(params)
    return argv


def _params(params: Mapping[str, list[str]]) -> list[str]:
    out: list[str] = []
    for key, values in params.items():
        vals = list(values)
        if vals and vals[0] == "!":
            out += ["!", f"--{key}", *vals[1:]]
        else:
            out += [f"--{key}", *vals]
    return out


class LibiptcDriver:
    """Programs and reads one namespace's legacy tables through libiptc."""

    name = "iptc"
    variant = "legacy"

    def __init__(self, netns: str | None) -> None:
        self.netns = netns

    def check(self) -> None:
        if not has_net_admin():
            raise BackendError(
                BackendErrorKind.PERMISSION, "iptables needs CAP_NET_ADMIN (run as root)"
            )
        check_netns(self.netns)
        _iptc()

    def _table(self, iptc: Any, family: IPFamily, name: str) -> Any:
        """The table's handle, freshly opened in the current (node's) namespace.

        python-iptables caches one Table object per name and family and consults
        every table of the family when a rule jumps to a chain (``is_chain``); so
        every table of the family is opened once, non-autocommitting (dropping a
        handle then never commits it, and no handle is ever freed under a rule
        being built). Only ``name`` is re-read here: the others merely answer
        ``is_chain`` for jump targets, which always live in the table at hand.
        """
        cls = iptc.Table6 if family is IPFamily.IPv6 else iptc.Table
        for other in cls.ALL:
            if other in cls._cache:
                cls._cache[other].autocommit = False
                continue
            try:
                cls(other, autocommit=False)
                cls.existing_table_names[other] = True
            except iptc.IPTCError:
                cls.existing_table_names[other] = False
        t = cls(name, autocommit=False)
        t.refresh()
        return t

    # python-iptables registers an xtables extension shared by both families
    # (libxt_DNAT, libxt_MASQUERADE: their init is libxt_NAT_init, which it does
    # not find) for the first family that loads it only; so IPv4 runs in this
    # process and IPv6 in one long-lived worker process (shared by every driver
    # of this process; it does the same setns dance per request).

    def _read_family(
        self, family: IPFamily
    ) -> dict[str, tuple[list[str], list[tuple[str, list[str]]]]]:
        iptc = _iptc()
        out: dict[str, tuple[list[str], list[tuple[str, list[str]]]]] = {}
        with entered(self.netns):
            for name in ("nat", "filter"):
                t = self._table(iptc, family, name)
                own: list[str] = []
                rules: list[tuple[str, list[str]]] = []
                for chain in t.chains:
                    if chain.name.startswith(PREFIX):
                        own.append(chain.name)
                    elif chain.name not in BUILTIN:
                        continue
                    rules += [(chain.name, rule_argv(r)) for r in chain.rules]
                out[name] = (own, rules)
        return out

    def _apply_family(self, family: IPFamily, texts: list[tuple[str, str]]) -> None:
        iptc = _iptc()
        for name, text in texts:
            with entered(self.netns):
                t = self._table(iptc, family, name)
                try:
                    self._execute(iptc, t, family, text)
                    t.commit()
                finally:
                    t.refresh()  # drop whatever was not committed

    def read(self, families: Iterable[IPFamily] = tuple(IPFamily)) -> Ruleset:
        tables: dict[tuple[IPFamily, str], Table] = {}
        wanted = set(families)
        try:
            parts = {}
            if IPFamily.IPv4 in wanted:
                parts[IPFamily.IPv4] = self._read_family(IPFamily.IPv4)
            if IPFamily.IPv6 in wanted:
                parts[IPFamily.IPv6] = WORKER.call({"op": "read", "netns": self.netns})
        except BackendError:
            raise
        except Exception as e:
            raise BackendError(BackendErrorKind.REFUSED, f"libiptc read failed: {e}") from e
        for family, per_table in parts.items():
            for name, (own, rules) in per_table.items():
                tables[(family, name)] = build(family, name, [(c, list(a)) for c, a in rules], own)
        return Ruleset(tables)

    def save_text(self, family: IPFamily, table: str | None = None) -> str:
        """svcnet's part of the tables, as iptables-save lines (for humans and tests)."""
        rs = self.read()
        lines = []
        for (fam, name), t in rs.tables.items():
            if fam is family and (table is None or name == table):
                lines.append(f"*{name}")
                for rules in t.chains.values():
                    lines += [r.text for r in rules]
        return "\n".join(lines)

    def apply(self, texts: Mapping[tuple[IPFamily, str], str]) -> None:
        v4 = [(t, text) for (f, t), text in texts.items() if f is IPFamily.IPv4]
        v6 = [(t, text) for (f, t), text in texts.items() if f is IPFamily.IPv6]
        try:
            if v4:
                self._apply_family(IPFamily.IPv4, v4)
        except BackendError:
            raise
        except Exception as e:
            raise BackendError(
                BackendErrorKind.REFUSED, f"libiptc IPv4 transaction failed: {e}"
            ) from e
        if v6:
            WORKER.call({"op": "apply", "netns": self.netns, "texts": v6})

    def _execute(self, iptc: Any, t: Any, family: IPFamily, text: str) -> None:
        for line in text.splitlines():
            if not line or line.startswith(("#", "*")) or line == "COMMIT":
                continue
            if line.startswith(":"):
                chain = line[1:].split()[0]
                if t.is_chain(chain):
                    t.flush_entries(chain)
                else:
                    t.create_chain(chain)
                continue
            op, chain, rest = [*line.split(" ", 2), "", ""][:3]
            if op == "-A":
                t.append_entry(chain, entry(iptc, family, rest))
            elif op == "-I":
                pos, spec = rest.split(" ", 1)
                t.insert_entry(chain, entry(iptc, family, spec), int(pos) - 1)
            elif op == "-D":
                iptc.Chain(t, chain).delete_rule(build_rule(iptc, family, split(rest)))
            elif op == "-X":
                t.delete_chain(chain)
            else:
                raise ValueError(f"unsupported restore line {line!r}")

    def close(self) -> None:
        pass


class Worker:
    """The IPv6 worker process: started on first use, then one JSON line per request.

    A request names its namespace, so every driver of this process shares it. When
    it dies (or answers nonsense) it is restarted on the next request.
    """

    def __init__(self) -> None:
        self._proc: subprocess.Popen[str] | None = None
        self._stderr: Any = None
        self._lock = threading.Lock()

    def _start(self) -> subprocess.Popen[str]:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - lives with the worker
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "svcnet_iptables.libiptc"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        return self._proc

    def _died(self) -> str:
        self.stop()
        try:
            self._stderr.seek(0)
            return str(self._stderr.read()).strip()[-500:]
        except (OSError, ValueError):
            return ""

    def call(self, request: dict[str, Any]) -> Any:
        with self._lock:
            proc = self._start()
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write(json.dumps(request) + "\n")
                proc.stdin.flush()
                line = proc.stdout.readline()
                reply = json.loads(line)
            except (OSError, ValueError) as e:
                raise BackendError(
                    BackendErrorKind.REFUSED, f"libiptc IPv6 worker failed: {self._died()}"
                ) from e
        if "error" in reply:
            raise BackendError(BackendErrorKind(reply["kind"]), reply["error"]) from RuntimeError(
                reply.get("native", "")
            )
        return reply["result"]

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            assert proc.stdin is not None
            proc.stdin.close()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:  # pragma: no cover
                proc.kill()
                proc.wait()


WORKER = Worker()
atexit.register(WORKER.stop)


def _handle(request: dict[str, Any]) -> dict[str, Any]:
    driver = LibiptcDriver(request["netns"])
    try:
        if request["op"] == "read":
            return {"result": driver._read_family(IPFamily.IPv6)}
        try:
            driver._apply_family(IPFamily.IPv6, [tuple(x) for x in request["texts"]])
        except BackendError:
            raise
        except Exception as e:
            raise BackendError(
                BackendErrorKind.REFUSED, f"libiptc IPv6 transaction failed: {e}"
            ) from e
        return {"result": None}
    except BackendError as e:
        return {
            "error": str(e).split(": ", 1)[-1],
            "kind": e.kind.value,
            "native": repr(e.__cause__),
        }


def _serve() -> None:
    """The IPv6 worker: one JSON request per stdin line, one JSON reply line each."""
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything libxtables prints goes to stderr, never into a reply
    for line in sys.stdin:
        if line.strip():
            out.write(json.dumps(_handle(json.loads(line))) + "\n")
            out.flush()


if __name__ == "__main__":
    _serve()
