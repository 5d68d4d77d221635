"""Field types shared by the object models: names, labels, ports, IP addresses and CIDRs.

Each is an `Annotated` type whose validator raises with a Kubernetes-style message.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_IANA_SVC_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


class Model(BaseModel):
    """Base of every model: validation only, unknown fields allowed (the store keeps the dict),
    no type coercion (a port given as "80" is an error, as in Kubernetes)."""

    model_config = ConfigDict(extra="allow", strict=True, populate_by_name=True)


def _dns1123_label(value: str) -> str:
    if len(value) > 63 or not _DNS1123_LABEL.match(value):
        raise ValueError(
            f'Invalid value: "{value}": a lowercase RFC 1123 label must consist of lower case'
            " alphanumeric characters or '-', start and end with an alphanumeric character,"
            " and be at most 63 characters"
        )
    return value


def _dns1123_subdomain(value: str) -> str:
    if len(value) > 253 or not _DNS1123_SUBDOMAIN.match(value):
        raise ValueError(
            f'Invalid value: "{value}": a lowercase RFC 1123 subdomain must consist of lower case'
            " alphanumeric characters, '-' or '.', start and end with an alphanumeric"
            " character, and be at most 253 characters"
        )
    return value


def _label_key(value: str) -> str:
    prefix, _, name = value.rpartition("/")
    if "/" in value and (not prefix or len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix)):
        raise ValueError(f'Invalid value: "{value}": the prefix must be a DNS-1123 subdomain')
    if len(name) > 63 or not _QUALIFIED_NAME.match(name):
        raise ValueError(
            f'Invalid value: "{value}": name part must consist of alphanumeric characters,'
            " '-', '_' or '.', start and end with an alphanumeric character, and be at most"
            " 63 characters"
        )
    return value


def _label_value(value: str) -> str:
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        raise ValueError(
            f'Invalid value: "{value}": a label value must be empty or consist of alphanumeric'
            " characters, '-', '_' or '.', start and end with an alphanumeric character, and"
            " be at most 63 characters"
        )
    return value


def _port(value: int) -> int:
    if not 1 <= value <= 65535:
        raise ValueError("must be between 1 and 65535")
    return value


def _port_name(value: str) -> str:
    if (
        len(value) > 15
        or not _IANA_SVC_NAME.match(value)
        or "--" in value
        or not any(c.isalpha() for c in value)
    ):
        raise ValueError(
            f'Invalid value: "{value}": a port name must be at most 15 lower case alphanumeric'
            " characters or '-', contain a letter, and not start, end or repeat with '-'"
        )
    return value


def _ip(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f'Invalid value: "{value}": must be a valid IP address') from None
    return value


def _cidr(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(
            f'Invalid value: "{value}": must be a valid CIDR, e.g. 10.0.0.0/24'
        ) from None
    if "/" not in value:
        raise ValueError(f'Invalid value: "{value}": must be a CIDR with a prefix length')
    return value


DNSLabel = Annotated[str, AfterValidator(_dns1123_label)]
DNSSubdomain = Annotated[str, AfterValidator(_dns1123_subdomain)]
LabelKey = Annotated[str, AfterValidator(_label_key)]
LabelValue = Annotated[str, AfterValidator(_label_value)]
Labels = dict[LabelKey, LabelValue]
Port = Annotated[int, AfterValidator(_port)]
PortName = Annotated[str, AfterValidator(_port_name)]
IntOrPortName = Port | PortName
IPAddress = Annotated[str, AfterValidator(_ip)]
CIDR = Annotated[str, AfterValidator(_cidr)]
Protocol = Literal["TCP", "UDP", "SCTP"]
