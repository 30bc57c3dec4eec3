"""Names as Kubernetes makes them, deterministic from the state.

* The pod template hash: Kubernetes hashes the template with FNV-1a (32 bits),
  adding the collision count, and writes the number's decimal text through
  ``SafeEncodeString`` (each character mapped into a 27-character alphabet without
  vowels). svcnet hashes the template's manifest (canonical JSON) the same way, so
  the hash has the same shape (``7d9b8c6f5``), though not Kubernetes' value.
* A generated pod name is ``<ReplicaSet name>-<5 characters>`` (the prefix cut to
  58 characters, as the API server's name generator does). Kubernetes picks the 5
  characters at random; here they come from a SHA-256 of the ReplicaSet, the state
  revision and a counter, so replaying the same events gives the same names.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Container

from svcnet.manifests import to_manifest
from svcnet.model import Pod, PodTemplate

__all__ = ["ALPHANUMS", "MAX_GENERATED_PREFIX", "pod_name", "safe_encode", "template_hash"]

ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' utilrand alphabet
MAX_GENERATED_PREFIX = 58  # 63 - 5 random characters
_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193


def fnv32a(data: bytes) -> int:
    """FNV-1a, 32 bits."""
    h = _FNV_OFFSET
    for b in data:
        h = ((h ^ b) * _FNV_PRIME) & 0xFFFFFFFF
    return h


def safe_encode(text: str) -> str:
    """Kubernetes' ``SafeEncodeString``: each byte mapped into :data:`ALPHANUMS`."""
    return "".join(ALPHANUMS[b % len(ALPHANUMS)] for b in text.encode())


def template_pod(template: PodTemplate, namespace: str = "", name: str = "template") -> Pod:
    """A pod with the template's fields (no owner, status or logical times)."""
    return Pod(
        namespace=namespace,
        name=name,
        labels=template.labels,
        annotations=template.annotations,
        ports=template.ports,
        node_name=template.node_name,
        node_selector=template.node_selector,
        host_network=template.host_network,
        hostname=template.hostname,
        subdomain=template.subdomain,
        readiness_probe=template.readiness_probe,
    )


def template_hash(template: PodTemplate, collisions: int = 0) -> str:
    """The ``pod-template-hash`` of a Deployment's template."""
    manifest = to_manifest(template_pod(template))
    data = {"metadata": manifest["metadata"], "spec": manifest["spec"]}
    data["metadata"].pop("name", None)
    raw = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    if collisions:
        raw += collisions.to_bytes(4, "little")
    return safe_encode(str(fnv32a(raw)))


def pod_name(prefix: str, seed: str, taken: Container[str]) -> str:
    """``prefix`` (cut to 58 characters) and 5 characters derived from ``seed``,
    not in ``taken``."""
    base = prefix[:MAX_GENERATED_PREFIX]
    attempt = 0
    while True:
        digest = hashlib.sha256(f"{seed}/{attempt}".encode()).digest()
        name = base + "".join(ALPHANUMS[b % len(ALPHANUMS)] for b in digest[:5])
        if name not in taken:
            return name
        attempt += 1
