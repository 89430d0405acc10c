"""Prepares scripts/check-alerts' promtool run, from the files of kubernetes/monitoring/:

  rules   the PrometheusRule's spec.groups, as the plain rules file celestial.rules.yaml that the
          unit tests name (the PrometheusRule stays the one source of the rules);
  queries every query of the Grafana dashboard, Grafana's variables replaced by plain values, as
          recording rules in dashboard.rules.yaml, so that `promtool check rules` parses them too;
  cases   a check of the unit tests themselves: every alert has a case where it fires (expected
          alerts listed) and one where it does not (none expected), and no case names an alert
          that does not exist (promtool would expect nothing of it and pass).

Use: check_alerts.py RULE DASHBOARD TESTS_DIR OUT_DIR  (the unit tests are copied to OUT_DIR too).
"""

import json
import re
import shutil
import sys
from pathlib import Path

import yaml

# What Grafana puts in place of its variables, for parsing only: a rate window for the interval
# variables, a plain label value for the dashboard's own ($namespace).
GRAFANA_INTERVAL = re.compile(r"\$__\w+|\$\{__\w+\}")
GRAFANA_VARIABLE = re.compile(r"\$\{\w+\}|\$\w+")


def one_document(path: Path, kind: str) -> dict:
    doc = yaml.safe_load(path.read_text())
    if not isinstance(doc, dict) or doc.get("kind") != kind:
        sys.exit(f"check-alerts: {path} is not one {kind}")
    return doc


def rule_groups(rule: dict) -> list:
    groups = rule.get("spec", {}).get("groups")
    if not groups:
        sys.exit("check-alerts: the PrometheusRule has no spec.groups")
    return groups


def dashboard_queries(configmap: dict) -> list[dict]:
    """One recording rule per panel target of every dashboard JSON in the ConfigMap."""
    rules = []
    for key, text in configmap.get("data", {}).items():
        dashboard = json.loads(text)
        for panel in dashboard.get("panels", []):
            for target in panel.get("targets", []):
                expr = GRAFANA_INTERVAL.sub("5m", target["expr"])
                expr = GRAFANA_VARIABLE.sub("check", expr)
                record = f"dashboard:panel_{panel['id']}_{target['refId']}"
                rules.append({"record": record, "expr": expr, "labels": {"dashboard": key}})
    if not rules:
        sys.exit("check-alerts: the dashboard ConfigMap has no queries")
    return rules


def case_problems(alerts: set[str], tests_dir: Path) -> list[str]:
    fires, silent, problems = set(), set(), []
    for path in sorted(tests_dir.glob("*.yaml")):
        for test in yaml.safe_load(path.read_text()).get("tests", []):
            for case in test.get("alert_rule_test", []):
                name = case["alertname"]
                if name not in alerts:
                    problems.append(f"{path.name} ({test['name']}): no alert {name}")
                (fires if case.get("exp_alerts") else silent).add(name)
    for name in sorted(alerts - fires):
        problems.append(f"{name}: no unit test where it fires")
    for name in sorted(alerts - silent):
        problems.append(f"{name}: no unit test where it does not fire")
    return problems


def main() -> None:
    rule_path, dashboard_path, tests_dir, out = map(Path, sys.argv[1:5])
    groups = rule_groups(one_document(rule_path, "PrometheusRule"))
    dump = {"sort_keys": False, "width": 1000}
    (out / "celestial.rules.yaml").write_text(yaml.safe_dump({"groups": groups}, **dump))
    queries = dashboard_queries(one_document(dashboard_path, "ConfigMap"))
    group = {"name": "dashboard-queries", "rules": queries}
    (out / "dashboard.rules.yaml").write_text(yaml.safe_dump({"groups": [group]}, **dump))
    for test in tests_dir.glob("*.yaml"):
        shutil.copy(test, out / test.name)
    alerts = {r["alert"] for g in groups for r in g["rules"] if "alert" in r}
    problems = case_problems(alerts, tests_dir)
    for p in problems:
        print(f"check-alerts: {p}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"check-alerts: {len(alerts)} alerts, each with firing and silent cases; {len(queries)} dashboard queries")


if __name__ == "__main__":
    main()
