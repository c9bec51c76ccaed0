"""Dependency audit for `make audit`: pip-audit over the installed environment, its JSON report judged here.

Exit 1 on any known vulnerability. A dependency that pip-audit could not check (vulnerability service
unreachable, or the package index answering 404 for a version's JSON) is listed as NOT AUDITED and does
not fail the build, because that says nothing about the dependency; pip-audit itself prints "No known
vulnerabilities found" in that case, which is why its exit status alone is not trusted.

    python .ci/audit.py                  # run pip-audit (bounded by --timeout) and judge its report
    python .ci/audit.py --report r.json  # judge a report pip-audit already wrote (--format json)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

VULNERABLE, CLEAN, BROKEN = 1, 0, 2
EDITABLE = "distribution marked as editable"  # this project itself, installed with pip install -e


def verdict(report: dict[str, Any]) -> tuple[int, list[str]]:
    """(exit status, lines to print) for a pip-audit JSON report. Pure."""
    deps = [d for d in report.get("dependencies", []) if not d.get("skip_reason", "").startswith(EDITABLE)]
    vulnerable = [d for d in deps if d.get("vulns")]
    skipped = [d for d in deps if "skip_reason" in d]
    audited = len(deps) - len(skipped)
    lines = []
    for dep in vulnerable:
        for v in dep["vulns"]:
            fixes = ", ".join(v.get("fix_versions", [])) or "no fixed version"
            lines.append(f"VULNERABLE: {dep['name']} {dep['version']}: {v['id']} (fixed in {fixes})")
    if skipped:
        reasons = sorted({d["skip_reason"].split(":")[0] for d in skipped})
        lines.append(f"NOT AUDITED: {len(skipped)} of {len(deps)} dependencies could not be checked "
                     f"({'; '.join(reasons)}), e.g. {', '.join(d['name'] for d in skipped[:5])}")
    if vulnerable:
        lines.append(f"audit FAILED: {len(vulnerable)} of {audited} audited dependencies have known vulnerabilities")
        return VULNERABLE, lines
    lines.append(f"audit: {audited} of {len(deps)} dependencies checked, no known vulnerabilities among them")
    return CLEAN, lines


def run_pip_audit(timeout_s: float) -> tuple[dict[str, Any] | None, str]:
    """pip-audit's JSON report of this interpreter's environment (editable installs, i.e. this project,
    skipped), or None and why when it produced none."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.json"
        command = [sys.executable, "-m", "pip_audit", "--progress-spinner", "off", "--skip-editable",
                   "--timeout", "15", "--format", "json", "--output", str(out)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None, f"pip-audit did not finish within {timeout_s:g} s"
        if out.exists() and out.stat().st_size:
            return json.loads(out.read_text()), ""
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"pip-audit exited {done.returncode} without a report: {last}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--report", type=Path, help="judge this pip-audit JSON report instead of running pip-audit")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds pip-audit may take")
    args = p.parse_args(argv)
    if args.report is not None:
        report: dict[str, Any] | None = json.loads(args.report.read_text())
    else:
        try:
            import pip_audit  # noqa: F401
        except ImportError:
            print("audit BROKEN: pip-audit is not installed here (it is in the 'test' extra: pip install -e '.[test]')")
            return BROKEN
        report, why = run_pip_audit(args.timeout)
        if report is None:
            print(f"NOT AUDITED: {why}")
            return CLEAN
    code, lines = verdict(report)
    print("\n".join(lines))
    return code


if __name__ == "__main__":
    sys.exit(main())
