"""`pylium probe` arguments: POD DEST:PORT from a pod, DEST:PORT alone with --from-world; any
other shape is refused before a lab is looked up."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from pylium.cli.pods import probe_cmd


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["client"], "expected POD DEST:PORT"),
        (["--from-world", "client", "10.0.0.1:80"], "expected DEST:PORT only with --from-world"),
        (["--from-world", "10.0.0.1"], "expected DEST:PORT"),
        (["client", "10.0.0.1:0"], "expected DEST:PORT"),
    ],
)
def test_probe_refuses_misshapen_arguments(args: list[str], message: str) -> None:
    result = CliRunner().invoke(probe_cmd, args)
    assert result.exit_code == 2
    assert message in result.output
