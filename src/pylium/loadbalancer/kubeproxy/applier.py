"""Loads generated rules into one network namespace: `iptables-restore --noflush` (plus the
jumps from the built-in chains, ensured with `-C`/`-I` as kube-proxy does) or `nft -f -`.
Commands run through `nsenter --net=` so the caller's own namespace is never touched, except
for the agent, which runs in the node's namespace already and applies there directly."""

from __future__ import annotations

import subprocess
from pathlib import Path

from pylium.loadbalancer.kubeproxy import iptables
from pylium.loadbalancer.kubeproxy.proxier import Mode


class ApplyError(RuntimeError):
    """The kernel refused the rules; the message carries the tool's stderr."""


class NetnsApplier:
    """Applies rules inside the namespace at `netns_path` (e.g. /var/run/netns/NAME).

    Args:
        netns_path: the namespace's file; None: the caller's own namespace.
        iptables_prefix: `iptables` or `iptables-legacy` style command prefix.
        timeout: seconds one load may take.
    """

    def __init__(
        self,
        netns_path: str | Path | None,
        iptables_prefix: str = "iptables",
        timeout: float = 60.0,
    ) -> None:
        self._timeout = timeout
        self._enter = ["nsenter", f"--net={netns_path}", "--"] if netns_path is not None else []
        self._ipt = iptables_prefix
        self._jumps_ensured = False

    def _run(self, args: list[str], stdin: str | None = None, check: bool = True) -> str:
        cmd = [*self._enter, *args]
        proc = subprocess.run(
            cmd, input=stdin, capture_output=True, text=True, timeout=self._timeout
        )
        if check and proc.returncode != 0:
            raise ApplyError(f"{' '.join(args)}: exit {proc.returncode}: {proc.stderr.strip()}")
        return proc.stdout if proc.returncode == 0 else ""

    def apply(self, mode: Mode, text: str) -> None:
        """Load `text`; raise ApplyError if the kernel refuses it."""
        if mode == Mode.NFTABLES:
            self._run(["nft", "-f", "-"], stdin=text)
            return
        self._run([f"{self._ipt}-restore", "--noflush"], stdin=text)
        if not self._jumps_ensured:
            for table, chain, rule in iptables.jump_rules():
                base = [self._ipt, "-w", "-t", table]
                probe = subprocess.run(
                    [*self._enter, *base, "-C", chain, *rule],
                    capture_output=True,
                )
                if probe.returncode != 0:
                    self._run([*base, "-I", chain, *rule])
            self._jumps_ensured = True

    def listing(self, mode: Mode) -> str:
        """What the kernel holds now: `nft list table ip kube-proxy` or `iptables-save`."""
        if mode == Mode.NFTABLES:
            return self._run(["nft", "list", "table", "ip", "kube-proxy"])
        return self._run([f"{self._ipt}-save"])
