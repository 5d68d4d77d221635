"""Entry point of the `pylium-cni` executable (stdlib only: it runs once per CNI call)."""

from __future__ import annotations

import json
import os
import sys

from pylium.cni.errors import IOFailure
from pylium.cni.plugin import run
from pylium.cni.versions import LATEST


def main() -> None:
    """Read stdin, run the command named by CNI_COMMAND, print the answer, exit with its code."""
    try:
        stdin = sys.stdin.buffer.read()
    except OSError as exc:
        print(json.dumps(IOFailure("error reading stdin", str(exc)).to_json(LATEST)))
        sys.exit(1)
    code, out = run(os.environ, stdin)
    sys.stdout.write(out)
    sys.stdout.flush()
    sys.exit(code)
