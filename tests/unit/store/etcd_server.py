"""A throwaway single-member etcd on loopback (Debian's etcd-server) for the store tests."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import urllib.request
from pathlib import Path

from tests.support import wait_for

ETCD = shutil.which("etcd")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class EtcdServer:
    """One etcd process on random free client and peer ports, its data under `base`.

    `stop()` + `start()` restarts it on the same ports and data (its revisions survive).
    """

    def __init__(self, base: Path) -> None:
        self.base = base
        self.data_dir = base / "data"
        self.log_path = base / "etcd.log"
        self.client_port = free_port()
        self.peer_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> tuple[str, int]:
        return "127.0.0.1", self.client_port

    def url(self, root: str = "") -> str:
        """The store URL of this etcd, keys under `root`."""
        return f"etcd://127.0.0.1:{self.client_port}{root}"

    def start(self) -> None:
        """Start etcd and return once it has a leader and answers."""
        assert ETCD is not None and self.proc is None
        client = f"http://127.0.0.1:{self.client_port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    ETCD,
                    "--name=test",
                    f"--data-dir={self.data_dir}",
                    f"--listen-client-urls={client}",
                    f"--advertise-client-urls={client}",
                    f"--listen-peer-urls={peer}",
                    f"--initial-advertise-peer-urls={peer}",
                    f"--initial-cluster=test={peer}",
                    # A one-member cluster elects itself; short ticks make that quick, and an
                    # election timeout of 250 ms (not 50) keeps writes from timing out on a
                    # loaded 2-core machine.
                    "--heartbeat-interval=25",
                    "--election-timeout=250",
                    "--logger=zap",
                    "--log-level=warn",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        try:
            wait_for(self._healthy, timeout=20)
        except AssertionError as exc:
            self.stop()
            log_tail = self.log_path.read_text()[-2000:]
            raise AssertionError(f"etcd did not start ({exc}); its log:\n{log_tail}") from None

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"etcd exited with status {self.proc.returncode}")
        try:
            url = f"http://127.0.0.1:{self.client_port}/health"
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(json.load(response).get("health") == "true")
        except OSError:
            return False

    def stop(self) -> None:
        """Stop etcd (SIGTERM, then SIGKILL) and wait for it to exit."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
