"""``svcnet audit``: a node's rules, read as laid out by kube-proxy or by svcnet,
checked probe by probe against the reference (:mod:`svcnet.semantics`).

:func:`audit` compares; :mod:`svcnet.audit.readers` reads each layout (the
backends' readers and interpreters, extended for kube-proxy's layout);
:data:`BY_DESIGN` is the one table of places where a kube-proxy mode differs from
the reference on purpose (reported, not failed). Pure: the CLI
(:mod:`svcnet.cli.audit`) reads the rules and the objects.
"""

from svcnet.audit.core import Answerer, Finding, Report, audit, same
from svcnet.audit.design import BY_DESIGN, ByDesign, by_design

__all__ = ["BY_DESIGN", "Answerer", "ByDesign", "Finding", "Report", "audit", "by_design", "same"]
