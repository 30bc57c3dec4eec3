"""Service DNS: records and resolution (pure, :mod:`svcnet.dns.records`); the server
(I/O, :mod:`svcnet.dns.server`).
"""

from __future__ import annotations

from svcnet.dns.records import (
    MAX_CHAIN,
    NDOTS,
    NOERROR,
    NXDOMAIN,
    REFUSED,
    SCHEMA_VERSION,
    Answer,
    NsName,
    Record,
    Zone,
    dashed,
    lookup,
    records,
    resolve,
    reverse_name,
    reverse_zones,
    search_names,
    search_path,
    service_records,
    wire_labels,
    zone_for,
)

__all__ = [
    "MAX_CHAIN",
    "NDOTS",
    "NOERROR",
    "NXDOMAIN",
    "REFUSED",
    "SCHEMA_VERSION",
    "Answer",
    "NsName",
    "Record",
    "Zone",
    "dashed",
    "lookup",
    "records",
    "resolve",
    "reverse_name",
    "reverse_zones",
    "search_names",
    "search_path",
    "service_records",
    "wire_labels",
    "zone_for",
]
