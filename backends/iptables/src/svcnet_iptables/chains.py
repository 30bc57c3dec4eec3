"""Reading one chain at a time, for the probes (I/O).

``iptables-nft -t TABLE -S CHAIN`` asks the kernel over netlink for that chain's
rules only: 9 ms for a service's chain of a 10,000-service table, where
``iptables-nft-save -t nat`` of the same table took minutes (measured on the
project's machine; see docs/performance.md). A probe's walk reaches a dozen
chains, so :class:`ListedChains` fetches each the first time the interpreter looks
it up. The tool runs in the node's namespace by forking from a thread that
entered it (:func:`svcnet.kernel.entered`), without ``ip netns exec``.

The legacy variant has no such shortcut: the kernel hands only the whole table
(one ``getsockopt(IPT_SO_GET_ENTRIES)`` of every rule, 81 MB and ~360 ms at
10,000 services), so ``iptables-legacy -S CHAIN`` costs as much as a whole
``iptables-legacy-save`` (~0.6 s against ~0.9 s); the backend reads the table
once per probe there (parsed lazily, :class:`svcnet_iptables.readback.Chains`).
"""

from __future__ import annotations

import subprocess

from svcnet.errors import BackendError, BackendErrorKind
from svcnet.kernel import entered
from svcnet.model import IPFamily

from .readback import LazyChains, Rule, Ruleset, Table, parse_listing

#: What the tools say (exit status 1) when the chain asked for does not exist;
#: iptables-nft 1.8.9 calls a missing chain "incompatible".
_MISSING = ("No chain/target/match by that name", "is incompatible", "does not exist")


def tool(variant: str, family: IPFamily) -> str:
    """The iptables binary of ``variant`` for ``family`` (``iptables-nft``...)."""
    base = "ip6tables" if family is IPFamily.IPv6 else "iptables"
    return f"{base}-{variant}"


class ChainLister:
    """Runs ``iptables-<variant> -t TABLE -S [CHAIN]`` in one namespace."""

    def __init__(self, netns: str | None, variant: str) -> None:
        self.netns = netns
        self.variant = variant
        self.calls = 0  # how many times the tool ran (for tests and benchmarks)

    def listing(self, family: IPFamily, table: str, chain: str | None = None) -> str | None:
        """The tool's ``-S`` output for ``chain`` (None: the whole table), or None
        when the chain does not exist."""
        exe = tool(self.variant, family)
        argv = [exe, "-t", table, "-S", *([chain] if chain else [])]
        self.calls += 1
        try:
            with entered(self.netns):
                proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        except FileNotFoundError as e:
            raise BackendError(BackendErrorKind.UNSUPPORTED, f"{exe} is not installed") from e
        except OSError as e:
            raise BackendError(BackendErrorKind.REFUSED, f"{' '.join(argv)}: {e}") from e
        if proc.returncode == 0:
            return proc.stdout
        err = proc.stderr.strip()
        if proc.returncode == 1 and chain and any(m in err for m in _MISSING):
            return None
        kind = BackendErrorKind.REFUSED
        if "Permission denied" in err:
            kind = BackendErrorKind.PERMISSION
        raise BackendError(kind, f"{' '.join(argv)} failed ({proc.returncode}): {err}")


class ListedChains(LazyChains):
    """One table's chains, each read from the kernel (``-S CHAIN``) the first time
    it is looked up and then kept (:class:`~svcnet_iptables.readback.LazyChains`).
    Iterating reads the whole table once."""

    def __init__(self, lister: ChainLister, family: IPFamily, table: str) -> None:
        super().__init__(family, table)
        self._lister = lister

    def _fetch(self, chain: str) -> tuple[Rule, ...] | None:
        text = self._lister.listing(self._family, self._name, chain)
        return None if text is None else parse_listing(text, self._family, self._name, chain)

    def _saved(self) -> str:
        text = self._lister.listing(self._family, self._name) or ""
        return f"*{self._name}\n{_declarations(text)}\nCOMMIT\n"


def _declarations(listing: str) -> str:
    """``-S`` output as save lines: ``-N X`` declares chain X (``:X``)."""
    out = []
    for line in listing.splitlines():
        if line.startswith("-N "):
            out.append(":" + line[3:].strip() + " - [0:0]")
        elif line.startswith("-A "):
            out.append(line)
    return "\n".join(out)


def listed_ruleset(lister: ChainLister, family: IPFamily, tables: tuple[str, ...]) -> Ruleset:
    """A ruleset of ``family`` whose chains are read one by one as they are looked up."""
    return Ruleset(
        {(family, name): Table(family, name, ListedChains(lister, family, name)) for name in tables}
    )


__all__ = ["ChainLister", "ListedChains", "listed_ruleset", "tool"]
