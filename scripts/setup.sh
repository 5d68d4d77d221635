#!/usr/bin/env bash
# Idempotent set-up of everything pylium needs on a Debian 12 machine (run as root):
# Debian packages, a virtual environment with pinned Python packages, and the clang build of bpf/.
# Each step checks first and does nothing when its work is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  clang llvm libbpf-dev libbpf1 bpftool linux-libc-dev libc6-dev gcc-multilib make
  iproute2 nftables iptables conntrack ethtool tcpdump procps psmisc util-linux
  etcd-server podman runc containernetworking-plugins busybox-static
  iperf3 hyperfine prometheus chromium
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
# Reinstall only when the lock file or the project metadata changed since the last install.
stamp=.venv/.pylium-installed
want=$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing pinned Python packages"
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.lock
  .venv/bin/pip install -q --disable-pip-version-check --no-build-isolation --no-deps -e .
  echo "$want" > "$stamp"
fi

# Hubble's gRPC API: Python modules + typed stubs generated from the .proto files (not committed).
protos=src/pylium/hubble/proto
if [ ! -f "$protos/observer_pb2_grpc.pyi" ] || [ -n "$(find "$protos" -name '*.proto' -newer "$protos/observer_pb2_grpc.pyi")" ]; then
  .venv/bin/python -m grpc_tools.protoc -I src --python_out=src --grpc_python_out=src \
    --plugin=protoc-gen-mypy=.venv/bin/protoc-gen-mypy --mypy_out=src \
    --plugin=protoc-gen-mypy_grpc=.venv/bin/protoc-gen-mypy_grpc --mypy_grpc_out=src "$protos"/*.proto
fi

# The eBPF datapath: compiled objects land in src/pylium/datapath/bpf/ (package data, not committed).
if [ -f bpf/Makefile ]; then
  make -s -C bpf
fi

# bpffs for pinned maps and links.
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
echo "setup: done"
