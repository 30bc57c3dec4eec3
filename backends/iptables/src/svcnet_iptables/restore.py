"""I/O driver 1: ``iptables-restore --noflush`` / ``iptables-save`` in the node's netns.

One ``*-restore`` run per table and family: each is one atomic transaction (legacy
replaces the table blob in one setsockopt; nft commits one batch). Rules are read
back with ``*-save``. Which variant (nft or legacy) is used is chosen as
kube-proxy's iptables wrapper does: the one that already holds more rules in the
namespace, else in the host's namespace (only read), else what ``iptables --version``
says; ``variant=`` forces it.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping

from svcnet.errors import BackendError, BackendErrorKind
from svcnet.kernel import has_net_admin
from svcnet.model import IPFamily

from .readback import Ruleset, Table, parse_save

VARIANTS = ("nft", "legacy")
_CHUNK = 1 << 18  # characters per write to a streaming restore
# How long iptables-legacy-restore waits for the host-wide xtables lock. It is also
# when the tool's alarm fires: 1.8.x arms alarm(wait) for the lock and never
# disarms it, and the signal interrupts a read of stdin that is waiting for input,
# which the tool takes for the end of its input ("COMMIT expected") - so a restore
# that is still reading a streamed text after 5 s (kube-proxy's "-w 5") fails.
# A minute covers the largest loads measured (50,000 services) with room to spare.
LOCK_WAIT = "60"


def netns_prefix(netns: str | None) -> list[str]:
    return ["ip", "netns", "exec", netns] if netns else []


def check_netns(netns: str | None) -> None:
    if netns is not None and not os.path.exists(f"/run/netns/{netns}"):
        raise BackendError(
            BackendErrorKind.NOT_FOUND, f"network namespace {netns!r} does not exist"
        )


def _binary(variant: str | None, family: IPFamily, tool: str) -> str:
    base = "ip6tables" if family is IPFamily.IPv6 else "iptables"
    suffix = f"-{tool}" if tool else ""
    if variant is None:
        return f"{base}{suffix}"
    return f"{base}-{variant}{suffix}"


def _run(argv: list[str], stdin: str | None = None, what: str = "") -> str:
    try:
        proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    except FileNotFoundError as e:
        raise BackendError(BackendErrorKind.UNSUPPORTED, f"{argv[0]} is not installed") from e
    except OSError as e:
        raise BackendError(BackendErrorKind.REFUSED, f"{what or argv[0]}: {e}") from e
    if proc.returncode != 0:
        raise _failed(what or " ".join(argv), argv, proc.returncode, proc.stdout, proc.stderr)
    return proc.stdout


def _failed(what: str, argv: list[str], code: int, stdout: str | None, stderr: str) -> BackendError:
    """The error for a tool that exited with ``code``: PERMISSION when it says so."""
    text = stderr.strip()
    kind = BackendErrorKind.REFUSED
    if "Permission denied" in text or "you must be root" in text:
        kind = BackendErrorKind.PERMISSION
    err = BackendError(kind, f"{what} failed ({code}): {text}")
    err.__cause__ = subprocess.CalledProcessError(code, argv, stdout, stderr)
    return err


def rule_counts(netns: str | None) -> dict[str, int]:
    """``-A`` lines per variant in ``netns`` (None: this process's namespace); read only."""
    counts: dict[str, int] = {}
    for variant in VARIANTS:
        total = 0
        for family in IPFamily:
            exe = _binary(variant, family, "save")
            if shutil.which(exe) is None:
                continue
            try:
                out = _run([*netns_prefix(netns), exe], what=exe)
            except BackendError:
                continue
            total += sum(1 for line in out.splitlines() if line.startswith("-A "))
        counts[variant] = total
    return counts


def detect_variant(netns: str | None) -> str:
    """nft or legacy, as kube-proxy's iptables wrapper picks it.

    The variant holding more rules wins: in the node's namespace, else (a fresh
    namespace holds none) in the host's, which is only read; a tie goes to what
    ``iptables --version`` says.
    """
    for where in (netns, None) if netns is not None else (None,):
        counts = rule_counts(where)
        if counts.get("legacy", 0) > counts.get("nft", 0):
            return "legacy"
        if counts.get("nft", 0) > counts.get("legacy", 0):
            return "nft"
    version = _run(["iptables", "--version"], what="iptables --version")
    return "legacy" if "legacy" in version else "nft"


class RestoreDriver:
    """Programs and reads one namespace with the ``*-restore`` / ``*-save`` tools."""

    name = "restore"

    def __init__(self, netns: str | None, variant: str | None = None) -> None:
        if variant is not None and variant not in VARIANTS:
            raise BackendError(
                BackendErrorKind.UNSUPPORTED, f"iptables variant {variant!r}: use nft or legacy"
            )
        self.netns = netns
        self._variant = variant

    @property
    def variant(self) -> str:
        if self._variant is None:
            self._variant = detect_variant(self.netns)
        return self._variant

    def check(self) -> None:
        if not has_net_admin():
            raise BackendError(
                BackendErrorKind.PERMISSION, "iptables needs CAP_NET_ADMIN (run as root)"
            )
        check_netns(self.netns)
        needed = ["ip"] if self.netns else []
        if self._variant is None and shutil.which("iptables") is None:
            raise BackendError(BackendErrorKind.UNSUPPORTED, "iptables is not installed")
        for family in IPFamily:
            for tool in ("restore", "save"):
                needed.append(_binary(self.variant, family, tool))
        missing = [exe for exe in needed if shutil.which(exe) is None]
        if missing:
            raise BackendError(
                BackendErrorKind.UNSUPPORTED, f"missing iptables binaries: {', '.join(missing)}"
            )

    def save_text(self, family: IPFamily, table: str | None = None) -> str:
        exe = _binary(self.variant, family, "save")
        argv = [*netns_prefix(self.netns), exe] + (["-t", table] if table else [])
        return _run(argv, what=exe)

    def read(self, families: Iterable[IPFamily] = tuple(IPFamily)) -> Ruleset:
        """svcnet's part of nat and filter: one ``*-save`` run per family asked for."""
        tables: dict[tuple[IPFamily, str], Table] = {}
        for family in families:
            parsed = parse_save(self.save_text(family), family)
            for table in ("nat", "filter"):
                if table in parsed:
                    tables[(family, table)] = parsed[table]
        return Ruleset(tables)

    def _restore_argv(self, family: IPFamily) -> tuple[str, list[str]]:
        exe = _binary(self.variant, family, "restore")
        extra = ["-w", LOCK_WAIT] if self.variant == "legacy" else []
        return exe, [*netns_prefix(self.netns), exe, "--noflush", *extra]

    def restore(self, family: IPFamily, text: str) -> None:
        exe, argv = self._restore_argv(family)
        _run(argv, stdin=text, what=exe)

    def apply(self, texts: Mapping[tuple[IPFamily, str], str]) -> None:
        for (family, _table), text in texts.items():
            self.restore(family, text)

    def apply_stream(self, streams: Mapping[tuple[IPFamily, str], Iterable[str]]) -> list[str]:
        """Like :meth:`apply`, feeding the first restore process (the big one: IPv4
        nat) while its text is still being produced, and rendering the other
        tables' texts while that process parses. Returns the texts written."""
        items = list(streams.items())
        if not items:
            return []
        rest: list[str] = []

        def render_rest() -> None:
            rest.extend("".join(chunks) for _key, chunks in items[1:])

        (family, _table), first = items[0]
        texts = [self.restore_stream(family, first, meanwhile=render_rest)]
        for ((family, _table), _chunks), text in zip(items[1:], rest, strict=True):
            self.restore(family, text)
            texts.append(text)
        return texts

    def restore_stream(
        self,
        family: IPFamily,
        chunks: Iterable[str],
        meanwhile: Callable[[], None] | None = None,
    ) -> str:
        """One atomic restore from ``chunks``, written by a thread while the caller
        goes on producing them. ``meanwhile`` runs once every chunk but the last is
        queued, before the last one (which holds ``COMMIT``). If producing a chunk
        or ``meanwhile`` raises, the process is killed before it can read
        ``COMMIT``: nothing changes."""
        exe, argv = self._restore_argv(family)
        written: list[str] = []
        with tempfile.TemporaryFile(mode="w+") as err:
            try:
                proc = subprocess.Popen(
                    argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err, text=True
                )
            except FileNotFoundError as e:
                kind = BackendErrorKind.UNSUPPORTED
                raise BackendError(kind, f"{argv[0]} is not installed") from e
            except OSError as e:
                raise BackendError(BackendErrorKind.REFUSED, f"{exe}: {e}") from e
            blocks: queue.SimpleQueue[str | None] = queue.SimpleQueue()
            writer = threading.Thread(target=_feed, args=(proc, blocks), daemon=True)
            writer.start()

            def send(block: str) -> None:
                written.append(block)
                blocks.put(block)

            try:
                pending: list[str] = []
                size = 0
                last: str | None = None
                for chunk in chunks:
                    if last is not None:
                        pending.append(last)
                        size += len(last)
                    last = chunk
                    if size >= _CHUNK:
                        send("".join(pending))
                        pending.clear()
                        size = 0
                if pending:
                    send("".join(pending))
                if meanwhile is not None:
                    meanwhile()
                if last is not None:
                    send(last)
            except BaseException:
                proc.kill()
                blocks.put(None)
                writer.join()
                proc.wait()
                raise
            blocks.put(None)
            writer.join()
            code = proc.wait()
            if code != 0:
                err.seek(0)
                raise _failed(exe, argv, code, None, err.read())
        return "".join(written)

    def close(self) -> None:
        pass


def _feed(proc: subprocess.Popen[str], blocks: queue.SimpleQueue[str | None]) -> None:
    """Write ``blocks`` to ``proc``'s stdin until None, then close it. A tool that
    stops reading (it failed, or was killed) ends the feeding; its exit status
    tells the caller what happened."""
    assert proc.stdin is not None
    try:
        while (block := blocks.get()) is not None:
            proc.stdin.write(block)
        proc.stdin.close()
    except (BrokenPipeError, ValueError, OSError):
        pass
