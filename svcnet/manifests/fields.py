"""Field-level rules and typed access for manifests (pure).

The API server's syntax rules (DNS-1123/1035 names, label keys and values, IANA
service names) and :class:`Doc`, which reads one document's fields with types
checked, every failure naming the object and the field path.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn, TypeVar

from svcnet.errors import ValidationError
from svcnet.model import IPFamily, Labels, norm_ip

_E = TypeVar("_E", bound=enum.Enum)


# ---------------------------------------------------------------- syntax rules

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_QUALIFIED = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_IANA = re.compile(r"[-a-z0-9]+")
_ALNUM_ENDS = "and must start and end with an alphanumeric character"


def _rule(max_len: int, pattern: str, message: str) -> Callable[[str], str | None]:
    """A check returning the first problem with a value, or None."""
    regex = re.compile(pattern)

    def error(value: str) -> str | None:
        if len(value) > max_len:
            return f"must be no more than {max_len} characters"
        return None if regex.fullmatch(value) else message

    return error


dns1123_label_error = _rule(
    63,
    _LABEL,
    "a lowercase RFC 1123 label must consist of lower case "
    f"alphanumeric characters or '-', {_ALNUM_ENDS}",
)
dns1123_subdomain_error = _rule(
    253,
    rf"{_LABEL}(\.{_LABEL})*",
    "a lowercase RFC 1123 subdomain "
    f"must consist of lower case alphanumeric characters, '-' or '.', "
    f"{_ALNUM_ENDS}",
)
dns1035_label_error = _rule(
    63,
    r"[a-z]([-a-z0-9]*[a-z0-9])?",
    "a DNS-1035 label must consist of "
    "lower case alphanumeric characters or '-', start with an alphabetic "
    "character, and end with an alphanumeric character",
)
label_value_error = _rule(
    63,
    rf"({_QUALIFIED.pattern})?",
    "a valid label must be an empty "
    f"string or consist of alphanumeric characters, '-', '_' or '.', "
    f"{_ALNUM_ENDS}",
)


def iana_svc_name_error(value: str) -> str | None:
    if len(value) > 15:
        return "must be no more than 15 characters"
    if not _IANA.fullmatch(value):
        return "must contain only lower case alphanumeric characters or '-' (a-z, 0-9, -)"
    if "--" in value:
        return "must not contain consecutive hyphens"
    if not re.search("[a-z]", value):
        return "must contain at least one letter (a-z)"
    if value.startswith("-") or value.endswith("-"):
        return "must not begin or end with a hyphen"
    return None


def label_key_error(key: str) -> str | None:
    prefix, slash, name = key.rpartition("/")
    if slash:
        if not prefix:
            return "prefix part must be non-empty"
        err = dns1123_subdomain_error(prefix)
        if err:
            return "prefix part " + err
    if not name:
        return "name part must be non-empty"
    if len(name) > 63:
        return "name part must be no more than 63 characters"
    if not _QUALIFIED.fullmatch(name):
        return f"name part must consist of alphanumeric characters, '-', '_' or '.', {_ALNUM_ENDS}"
    return None


# ---------------------------------------------------------------- typed access


class Doc:
    """Typed access to one document; every failure names the object and the field."""

    def __init__(self, obj: str) -> None:
        self.obj = obj

    def fail(self, path: str, message: str, *, value: Any = NotImplemented) -> NoReturn:
        """Refuse the object at ``path``; ``value``, when given, is the offending
        value, shown as the API server shows it (``Invalid value: V``)."""
        raise ValidationError(self.obj, path, message, value=value)

    def mapping(self, value: Any, path: str) -> Mapping[str, Any]:
        if value is None:
            return {}
        # type(...) is dict first: the abstract-class check costs ~10x more.
        if type(value) is not dict and not isinstance(value, Mapping):
            self.fail(path, f"expected a mapping, got {type_name(value)}")
        for k in value:
            if not isinstance(k, str):
                self.fail(path, f"keys must be strings, got {type_name(k)} {k!r}")
        return value

    def seq(self, value: Any, path: str) -> Sequence[Any]:
        """A list (as given: callers only read it) or another sequence (copied)."""
        if value is None:
            return ()
        if type(value) is list:
            return value
        if isinstance(value, str | bytes) or not isinstance(value, Sequence):
            self.fail(path, f"expected a list, got {type_name(value)}")
        return list(value)

    def items(self, value: Any, path: str) -> list[tuple[str, Mapping[str, Any]]]:
        """A list of mappings, each with its path."""
        return [
            (f"{path}[{i}]", self.mapping(v, f"{path}[{i}]"))
            for i, v in enumerate(self.seq(value, path))
        ]

    def text(self, value: Any, path: str) -> str:
        if value is None:
            return ""
        if not isinstance(value, str):
            self.fail(path, f"expected a string, got {type_name(value)}")
        return value

    def integer(self, value: Any, path: str) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(path, f"expected an integer, got {type_name(value)}")
        return value

    def port(self, value: Any, path: str, *, zero_unset: bool = False) -> int | None:
        n = self.integer(value, path)
        if n is None or (zero_unset and n == 0):
            return None
        if not 1 <= n <= 65535:
            self.fail(path, f"{n}: must be between 1 and 65535, inclusive")
        return n

    def flag(self, value: Any, path: str, default: bool) -> bool:
        if value is None:
            return default
        if not isinstance(value, bool):
            self.fail(path, f"expected true or false, got {type_name(value)}")
        return value

    def choice(self, cls: type[_E], value: Any, path: str, default: _E) -> _E:
        if value is None:
            return default
        text = self.text(value, path)
        if not text:
            return default
        member = _members(cls).get(text)
        if member is not None:
            return member
        allowed = ", ".join(repr(m.value) for m in cls)
        self.fail(path, f"unsupported value {text!r}: supported values: {allowed}")

    def check(self, path: str, value: str, error: str | None) -> str:
        if error:
            self.fail(path, f"invalid value {value!r}: {error}")
        return value

    def ip(self, value: Any, path: str) -> str:
        text = self.text(value, path)
        try:
            if "%" in text:
                raise ValueError(text)
            return norm_ip(text)
        except ValueError:
            self.fail(path, f"{text!r}: must be a valid IP address")

    def cidr(self, value: Any, path: str) -> str:
        text = self.text(value, path).strip()
        try:
            if "%" in text or "/" not in text:
                raise ValueError(text)
            return str(ipaddress.ip_network(text, strict=False))
        except ValueError:
            self.fail(path, f"{text!r}: must be a valid CIDR (e.g. 10.0.0.0/8 or 2001:db8::/64)")

    def labels(self, value: Any, path: str) -> Labels:
        m = self.mapping(value, path)
        if not m:
            return _NO_LABELS
        out: dict[str, str] = {}
        for k, v in m.items():
            self.check(path, k, label_key_error(k))
            out[k] = self.text(v, f"{path}[{k}]")
            self.check(f"{path}[{k}]", out[k], label_value_error(out[k]))
        # What Labels.of makes of it (the keys and values are already strings).
        return Labels(tuple(sorted(out.items())))

    def dual_stack(self, addresses: Sequence[str], path: str, what: str) -> None:
        if len(addresses) > 2:
            self.fail(path, f"may only hold up to 2 values, got {len(addresses)}")
        if len(addresses) == 2 and parse_family(addresses[0]) is parse_family(addresses[1]):
            self.fail(path, f"may specify no more than one {what} for each IP family")


_NO_LABELS = Labels()
_MEMBERS: dict[type[enum.Enum], dict[Any, Any]] = {}


def _members(cls: type[_E]) -> dict[Any, _E]:
    """``cls``'s members by value (enum member lookups through ``.value`` are slow)."""
    found = _MEMBERS.get(cls)
    if found is None:
        found = _MEMBERS[cls] = {m.value: m for m in cls}
    return found


def type_name(value: Any) -> str:
    names = {
        dict: "mapping",
        list: "list",
        str: "string",
        bool: "boolean",
        int: "integer",
        float: "number",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)


def parse_family(value: str) -> IPFamily:
    return IPFamily.of(value) if "/" not in value else IPFamily.of_network(value)
