"""The one assertion every CLI error test makes: exit 1, one `error:` line on stderr, no traceback."""

from __future__ import annotations


def assert_one_line_error(result, *fragments: str) -> str:
    """`result` from click's CliRunner; each fragment must appear in the error line, which is returned."""
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]
