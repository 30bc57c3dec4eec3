"""Every error svcnet raises, under one root: :class:`SvcnetError`.

User-input errors (bad manifests, conflicting allocations, unknown objects) also
subclass :class:`ValueError`, so callers that only know the standard library can
still catch them. Backend errors carry a :class:`BackendErrorKind` and keep the
native error (pyroute2, libnftables, iptc, a subprocess) as ``__cause__``.
"""

from __future__ import annotations

import enum
import json


class SvcnetError(Exception):
    """Root of every error svcnet raises on purpose."""


class ValidationError(SvcnetError, ValueError):
    """An object is invalid. ``obj`` names it (``Service default/web``), ``field``
    is the field path (``spec.ports[1].nodePort``) or ``""`` for the whole object.
    ``value``, when given, is the offending value, shown as the API server shows it
    (``Service default/web: spec.ports[0].nodePort: Invalid value: 30080: ...``;
    strings quoted); :attr:`has_value` tells whether one was given."""

    def __init__(
        self, obj: str, field: str, message: str, *, value: object = NotImplemented
    ) -> None:
        self.obj = obj
        self.field = field
        self.message = message
        self.value = value
        where = f"{obj}: {field}: " if field else f"{obj}: "
        if self.has_value:
            where += f"Invalid value: {shown_value(value)}: "
        super().__init__(where + message)

    @property
    def has_value(self) -> bool:
        return self.value is not NotImplemented


def shown_value(value: object) -> str:
    """A value as the API server's field errors show it: strings and lists JSON
    quoted (``"10.96.0.99"``, ``["a", "b"]``), numbers bare, None as ``null``."""
    if isinstance(value, tuple | list | str | bool) or value is None:
        return json.dumps(list(value) if isinstance(value, tuple) else value)
    return str(value)


class ConflictError(ValidationError):
    """An address or port asked for is already held by another object."""


class NotFoundError(SvcnetError, ValueError):
    """An object to delete or read does not exist."""

    def __init__(self, obj: str) -> None:
        self.obj = obj
        super().__init__(f"{obj} not found")


class ManifestError(SvcnetError, ValueError):
    """A document could not be read as a manifest (YAML syntax, wrong shape)."""


class ScenarioError(SvcnetError, ValueError):
    """A scenario file is malformed."""


class ProbeError(SvcnetError, ValueError):
    """A probe cannot be built from its source: a pod on no node, no address of
    the destination's family, no node to handle it."""


class BackendErrorKind(enum.Enum):
    NOT_FOUND = "not found"
    EXISTS = "exists"
    PERMISSION = "permission"
    UNSUPPORTED = "unsupported"
    REFUSED = "refused"  # the kernel refused a transaction
    STATE = "state"  # the backend was used out of order (apply before sync, ...)


class BackendError(SvcnetError):
    """A data plane could not do what was asked. The native error is ``__cause__``."""

    def __init__(self, kind: BackendErrorKind, message: str) -> None:
        self.kind = kind
        super().__init__(f"{kind.value}: {message}")


class BackendNotFound(SvcnetError, LookupError):
    """No backend of that name is installed."""


class StoreError(SvcnetError):
    """The CLI's store cannot be read or written (corrupt, too new, locked)."""
