"""Kubernetes manifests to model objects and back; errors name object, field and value.
"""

from __future__ import annotations

from svcnet.manifests.parse import (
    KUBELET_PORT,
    MAX_AFFINITY_TIMEOUT,
    dns1035_label_error,
    dns1123_label_error,
    dns1123_subdomain_error,
    iana_svc_name_error,
    label_key_error,
    label_value_error,
    load,
    parse_key,
    parse_object,
)
from svcnet.manifests.write import (
    API_VERSIONS,
    TERMINATING_SINCE,
    to_manifest,
)

__all__ = [
    "API_VERSIONS",
    "KUBELET_PORT",
    "MAX_AFFINITY_TIMEOUT",
    "TERMINATING_SINCE",
    "dns1035_label_error",
    "dns1123_label_error",
    "dns1123_subdomain_error",
    "iana_svc_name_error",
    "label_key_error",
    "label_value_error",
    "load",
    "parse_key",
    "parse_object",
    "to_manifest",
]
