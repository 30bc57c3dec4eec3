"""svcnet: Kubernetes Service networking as a library.

A pure core (manifests -> immutable cluster state -> per-node rule plan) and
interchangeable data planes (memory, nftables, iptables) that install a plan,
read it back from the kernel and answer what happens to a packet.

The names in ``__all__`` and the modules listed in ``docs/reference/api.md`` are
the public API, versioned with :data:`__version__`; everything else is internal.
"""

from typing import TYPE_CHECKING, Any

from svcnet._version import __version__

if TYPE_CHECKING:  # the names are imported on first use (see __getattr__)
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

# name -> the module that defines it: ``import svcnet.errors`` (what the ``svcnet``
# command runs first) no longer imports the backends, the compiler and the oracle
_LAZY = {
    **dict.fromkeys(("Backend", "Capabilities", "available_backends", "load_backend"), "backend"),
    **dict.fromkeys(
        (
            "BackendError",
            "ConflictError",
            "ManifestError",
            "NotFoundError",
            "SvcnetError",
            "ValidationError",
        ),
        "errors",
    ),
    **dict.fromkeys(("load", "parse_object", "to_manifest"), "manifests"),
    "ClusterConfig": "model",
    **dict.fromkeys(("Changes", "Plan", "compile", "update"), "plan"),
    **dict.fromkeys(("Outcome", "Probe", "SourceKind", "Verdict"), "probe"),
    "evaluate": "semantics",
    **dict.fromkeys(("Apply", "ClusterState", "Configure", "Delete", "step"), "state"),
}


def __getattr__(name: str) -> Any:
    """The public names, imported from their modules on first use (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'svcnet' has no attribute {name!r}")
    from svcnet._deprecation import resolve  # (imports a module by name; not deprecated)

    value = resolve(f"svcnet.{module}:{name}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


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
