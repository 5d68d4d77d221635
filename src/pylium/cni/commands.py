"""The six CNI commands, each forwarding to the node's agent.

Each takes the validated environment and configuration and returns what goes to stdout (a
dict, or None for no output); failures are raised as `pylium.cni.errors` classes.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from pylium import paths
from pylium.agent.client import AgentClient, AgentError, AgentUnreachable
from pylium.cni.config import NetConf, decode, version_of
from pylium.cni.delete_queue import queue_delete
from pylium.cni.env import CniEnv
from pylium.cni.errors import (
    AgentFailure,
    CniError,
    IncompatibleVersion,
    InvalidConfig,
    PluginUnavailable,
    TryAgainLater,
    UnknownContainer,
)
from pylium.cni.result import build_result
from pylium.cni.versions import LATEST, SUPPORTED_VERSIONS, at_least, from_internal

Output = dict[str, Any] | None


def cmd_version(stdin: bytes) -> Output:
    """The versions this plugin speaks, echoing the request's cniVersion when it is one of
    them (spec), else the latest. Never fails: libcni treats a failing VERSION as 0.1.0."""
    try:
        requested = version_of(decode(stdin))
    except CniError:
        requested = LATEST
    version = requested if requested in SUPPORTED_VERSIONS else LATEST
    return {"cniVersion": version, "supportedVersions": list(SUPPORTED_VERSIONS)}


def cmd_add(env: CniEnv, conf: NetConf, agent: AgentClient) -> Output:
    """Ask the agent for the endpoint, then answer its result in the requested version.

    The agent rolls back its own partial work; if the plugin fails after the agent
    succeeded, it deletes the endpoint again so a failed ADD leaves nothing behind.
    """
    if not os.path.exists(env.netns):
        raise UnknownContainer("network namespace does not exist", f"CNI_NETNS={env.netns}")
    if env.args.get("IP"):
        print("pylium-cni: CNI_ARGS IP= ignored: the agent assigns addresses", file=sys.stderr)
    try:
        endpoint = agent.create_endpoint(
            env.container_id,
            env.ifname,
            env.netns,
            pod_name=env.args.get("K8S_POD_NAME", ""),
            pod_namespace=env.args.get("K8S_POD_NAMESPACE", ""),
            mtu=conf.mtu,
            mac=env.args.get("MAC") or None,
        )
    except AgentUnreachable as exc:
        _rollback(env, agent)  # a timeout may leave a half-done endpoint behind
        raise TryAgainLater(
            exc.msg,
            f"{exc.details}; start pylium-agent for this node (it serves {conf.agent_socket}) "
            "and retry, or fix agentSocket in the network configuration",
        ) from None
    except AgentError as exc:
        raise _failure(exc) from None
    try:
        result = build_result(dict(endpoint), env.netns, conf.dns, conf.prev_result)
    except (KeyError, TypeError, ValueError) as exc:
        _rollback(env, agent)
        raise CniError("the agent answered a malformed endpoint", repr(exc)) from None
    return from_internal(result, conf.cni_version)


def cmd_del(env: CniEnv, conf: NetConf, agent: AgentClient) -> Output:
    """Delete the endpoint; idempotent, needs no netns, queued when the agent is away."""
    try:
        agent.delete_attachment(env.container_id, env.ifname)
    except AgentUnreachable as exc:
        queued = queue_delete(
            paths.delete_queue_dir(conf.agent_socket), env.container_id, env.ifname, env.netns
        )
        print(f"pylium-cni: {exc}; DEL queued in {queued}", file=sys.stderr)
    except AgentError as exc:
        raise _failure(exc) from None
    return None


def cmd_check(env: CniEnv, conf: NetConf, agent: AgentClient) -> Output:
    """Check that the endpoint of the cached ADD result is still in place."""
    if not at_least(conf.cni_version, "0.4.0"):
        raise IncompatibleVersion(
            "config version does not allow CHECK", f"cniVersion {conf.cni_version} < 0.4.0"
        )
    if conf.prev_result is None:
        raise InvalidConfig("required prevResult missing")
    if not os.path.exists(env.netns):
        raise UnknownContainer("network namespace does not exist", f"CNI_NETNS={env.netns}")
    try:
        endpoint = agent.find_endpoint(env.container_id, env.ifname)
        if endpoint is None:
            raise UnknownContainer(
                "no endpoint for this attachment",
                f"containerID={env.container_id} ifname={env.ifname}",
            )
        addresses = {ip.get("address", "").split("/")[0] for ip in conf.prev_result["ips"]}
        if endpoint.get("ipv4") not in addresses:
            raise CniError(
                "prevResult does not hold the endpoint's address",
                f"endpoint has {endpoint.get('ipv4')}, prevResult has {sorted(addresses)}",
            )
        agent.check_endpoint(int(endpoint["id"]), env.netns)
    except AgentError as exc:
        raise _failure(exc) from None
    return None


def cmd_status(conf: NetConf, agent: AgentClient) -> Output:
    """0 when the agent is ready to serve ADDs, else code 50."""
    _require_1_1(conf, "STATUS")
    try:
        health = agent.healthz()
    except AgentUnreachable as exc:
        raise PluginUnavailable(exc.msg, exc.details) from None
    except AgentError as exc:
        raise PluginUnavailable(f"pylium agent not ready: {exc.msg}", exc.details) from None
    ipam = dict(health.get("ipam") or {})
    if ipam.get("available") == 0:
        raise PluginUnavailable("no free pod address", f"pool {ipam.get('cidr')} is full")
    return None


def cmd_gc(conf: NetConf, agent: AgentClient) -> Output:
    """Remove every endpoint not among the runtime's valid attachments."""
    _require_1_1(conf, "GC")
    valid = _valid_attachments(conf.raw)
    try:
        removed = agent.gc_endpoints(valid)
    except AgentError as exc:
        raise _failure(exc) from None
    for endpoint in removed:
        print(
            f"pylium-cni: GC removed {endpoint.get('containerID')}/{endpoint.get('ifname')}",
            file=sys.stderr,
        )
    return None


def _require_1_1(conf: NetConf, command: str) -> None:
    if not at_least(conf.cni_version, "1.1.0"):
        raise IncompatibleVersion(
            f"config version does not allow {command}", f"cniVersion {conf.cni_version} < 1.1.0"
        )


def _valid_attachments(raw: dict[str, Any]) -> list[tuple[str, str]]:
    """`cni.dev/valid-attachments`, else the 1.1.0 tag's `cni.dev/attachments`.

    Absent both, GC fails rather than treat every endpoint as stale.
    """
    key = (
        "cni.dev/valid-attachments" if "cni.dev/valid-attachments" in raw else "cni.dev/attachments"
    )
    items = raw.get(key)
    if not isinstance(items, list):
        raise InvalidConfig("missing cni.dev/valid-attachments", f"{key}={items!r}")
    valid = []
    for item in items:
        if not (
            isinstance(item, dict)
            and isinstance(item.get("containerID"), str)
            and isinstance(item.get("ifname"), str)
        ):
            raise InvalidConfig(f"invalid {key} entry", repr(item))
        valid.append((item["containerID"], item["ifname"]))
    return valid


def _failure(exc: AgentError) -> CniError:
    """The agent's error as a CNI error; its code is CNI-compatible by contract
    (unreachable is 11, try again later)."""
    return AgentFailure(exc.code, exc.msg, exc.details)


def _rollback(env: CniEnv, agent: AgentClient) -> None:
    """Best effort: undo an ADD the agent may have completed."""
    try:
        agent.delete_attachment(env.container_id, env.ifname)
    except AgentError as exc:
        print(f"pylium-cni: rollback of ADD failed: {exc}", file=sys.stderr)
