"""svcnet: Kubernetes Service networking as a library.

A pure core (manifests -> immutable cluster state -> per-node rule plan) and
interchangeable data planes (memory, nftables, iptables) that install a plan,
read it back from the kernel and answer what happens to a packet.

The names in ``__all__`` and the modules listed in ``docs/reference/api.md`` are
the public API, versioned with :data:`__version__`; everything else is internal.
"""

from svcnet._version import __version__
from svcnet.backend import Backend, Capabilities, available_backends, load_backend
from svcnet.errors import (
    BackendError,
    ConflictError,
    ManifestError,
    NotFoundError,
    SvcnetError,
    ValidationError,
)
from svcnet.manifests import load, parse_object, to_manifest
from svcnet.model import ClusterConfig
from svcnet.plan import Changes, Plan, compile, update
from svcnet.probe import Outcome, Probe, SourceKind, Verdict
from svcnet.semantics import evaluate
from svcnet.state import Apply, ClusterState, Configure, Delete, step

__all__ = [
    "Apply",
    "Backend",
    "BackendError",
    "Capabilities",
    "Changes",
    "ClusterConfig",
    "ClusterState",
    "Configure",
    "ConflictError",
    "Delete",
    "ManifestError",
    "NotFoundError",
    "Outcome",
    "Plan",
    "Probe",
    "SourceKind",
    "SvcnetError",
    "ValidationError",
    "Verdict",
    "__version__",
    "available_backends",
    "compile",
    "evaluate",
    "load",
    "load_backend",
    "parse_object",
    "step",
    "to_manifest",
    "update",
]
