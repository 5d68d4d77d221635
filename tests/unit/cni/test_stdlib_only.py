"""pylium-cni runs once per CNI call, so it must import nothing outside the standard library."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("pyroute2", "pydantic", "aiohttp", "click", "rich", "yaml")


def test_plugin_imports_only_stdlib():
    code = "import json, sys, pylium.cni.main; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True).stdout
    modules = json.loads(out)
    assert "pylium.cni.commands" in modules  # the whole plugin was imported
    assert [m for m in modules if m.split(".")[0] in HEAVY] == []
    ours = {m.split(".")[1] for m in modules if m.startswith("pylium.") and "." in m}
    assert ours <= {"cni", "agent", "paths"}, ours
