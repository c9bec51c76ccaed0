"""The dependency audit (.ci/audit.py) fails on a known vulnerability and never counts an unchecked
dependency as clean; judged on pip-audit JSON reports written by hand."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / ".ci" / "audit.py"
_spec = importlib.util.spec_from_file_location("ci_audit", SCRIPT)
assert _spec is not None and _spec.loader is not None
audit = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(audit)

VULN = {"name": "jinja2", "version": "2.10", "vulns": [
    {"id": "PYSEC-2019-217", "fix_versions": ["2.10.1"], "aliases": ["CVE-2019-10906"], "description": "sandbox escape"}]}
CLEAN = {"name": "numpy", "version": "2.4.6", "vulns": []}
SKIPPED = {"name": "orjson", "skip_reason": "Dependency not found on PyPI and could not be audited: orjson (3.11.0)"}
SELF = {"name": "gateway", "skip_reason": "distribution marked as editable"}


def report(*deps: dict[str, Any]) -> dict[str, Any]:
    return {"dependencies": list(deps), "fixes": []}


class TestVerdict:
    def test_a_known_vulnerability_fails_and_is_named(self) -> None:
        """One vulnerable dependency makes the audit fail, naming it, the advisory and the fixed version."""
        code, lines = audit.verdict(report(CLEAN, VULN))
        assert code == 1
        assert "VULNERABLE: jinja2 2.10: PYSEC-2019-217 (fixed in 2.10.1)" in lines

    def test_unchecked_dependencies_are_reported_not_counted_clean(self) -> None:
        """Dependencies pip-audit skipped are listed as NOT AUDITED and not counted as checked."""
        code, lines = audit.verdict(report(CLEAN, SKIPPED, SELF))
        assert code == 0
        assert lines[0].startswith("NOT AUDITED: 1 of 2 dependencies could not be checked")
        assert "orjson" in lines[0]
        assert lines[-1] == "audit: 1 of 2 dependencies checked, no known vulnerabilities among them"

    def test_skipped_dependencies_do_not_hide_a_vulnerability(self) -> None:
        """A report with both skipped and vulnerable dependencies still fails."""
        code, _ = audit.verdict(report(SKIPPED, VULN))
        assert code == 1


@pytest.mark.parametrize(("deps", "status"), [((VULN, CLEAN), 1), ((CLEAN, SKIPPED, SELF), 0)])
def test_exit_status_of_the_make_step(tmp_path: Path, deps: tuple[dict[str, Any], ...], status: int) -> None:
    """`python .ci/audit.py --report FILE` exits 1 on a vulnerability, which stops `make test`."""
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report(*deps)))
    done = subprocess.run([sys.executable, str(SCRIPT), "--report", str(path)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == status, done.stdout + done.stderr
