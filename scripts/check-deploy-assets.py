#!/usr/bin/env python3
"""Cross-checks between the deployment assets and the code (called by check-deploy.sh).

1. deploy/grafana/plano.json is exactly what deploy/grafana/generate.py writes.
2. Every dashboard query parses: they are written as recording rules into a temp file for
   `promtool check rules` (path given as the first argument).
3. Every `plano_*` metric the dashboard and alerts use is in plano-common/src/metrics.rs.
4. Every metric in metrics.rs has a row in docs/metrics.md.

Exits 1 with one line per problem.
"""
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
problems = []


def catalogue():
    text = (ROOT / "plano-common/src/metrics.rs").read_text()
    names = set(re.findall(r'"(plano_[a-z0-9_]+)"', text))
    if not names:
        problems.append("no metric names found in plano-common/src/metrics.rs")
    return names


def used_metrics(text):
    found = set()
    for name in re.findall(r"\bplano_[a-z0-9_]+", text):
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix):
                name = name[: -len(suffix)]
                break
        found.add(name)
    return found


def dashboard_exprs(dashboard):
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def main():
    rules_out = Path(sys.argv[1])
    known = catalogue()

    generated = subprocess.run(
        [sys.executable, str(ROOT / "deploy/grafana/generate.py"), "--print"],
        check=True, capture_output=True, text=True,
    ).stdout
    committed = (ROOT / "deploy/grafana/plano.json").read_text()
    if generated != committed:
        problems.append("deploy/grafana/plano.json is stale: run python3 deploy/grafana/generate.py")
    dashboard = json.loads(committed)

    ids = [p["id"] for p in dashboard["panels"]]
    if len(ids) != len(set(ids)):
        problems.append("dashboard: panel ids are not unique")

    rules = ["groups:", "  - name: dashboard-queries", "    rules:"]
    for i, (title, expr) in enumerate(dashboard_exprs(dashboard)):
        concrete = expr.replace("$__rate_interval", "5m").replace("$job", ".*")
        if "$" in concrete:
            problems.append(f"dashboard panel {title!r}: unknown variable in {expr}")
        rules.append(f"      - record: dashboard:query_{i}")
        rules.append(f"        expr: {json.dumps(concrete)}")
    rules_out.write_text("\n".join(rules) + "\n")

    alerts = (ROOT / "deploy/prometheus/alerts.yml").read_text()
    for source, names in (("dashboard", used_metrics(committed)), ("alerts.yml", used_metrics(alerts))):
        for name in sorted(names - known):
            problems.append(f"{source} uses {name}, which plano-common/src/metrics.rs does not define")

    docs = (ROOT / "docs/metrics.md").read_text()
    for name in sorted(known):
        if f"`{name}`" not in docs:
            problems.append(f"docs/metrics.md does not document {name}")

    for p in problems:
        print(f"check-deploy-assets: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
