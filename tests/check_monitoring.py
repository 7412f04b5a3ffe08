#!/usr/bin/python3
"""Checks that the Grafana dashboard and the Prometheus rules refer only to
metrics a running mod-server exports and to recording rules that exist.

With PROMETHEUS_URL, also runs every dashboard query and every recording
rule through that Prometheus (which scrapes the server under load) and
requires each to return data.

Usage: check_monitoring.py METRICS_PAGE RULES_YAML DASHBOARD_JSON [PROMETHEUS_URL]
METRICS_PAGE is a /metrics scrape of a real server (text format).
"""
import json
import re
import sys
import urllib.parse
import urllib.request


def query(base, expr):
    url = base + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as r:
        reply = json.loads(r.read().decode())
    if reply.get("status") != "success":
        return None
    return reply["data"]["result"]

SUFFIXES = ("_bucket", "_sum", "_count")


def exported_families(page):
    return {line.split()[2] for line in page.splitlines() if line.startswith("# TYPE ")}


def recording_rules(rules_text):
    return set(re.findall(r"^\s*-?\s*record:\s*(\S+)", rules_text, re.M))


def rule_exprs(rules_text):
    # The rules file is YAML; expressions are either on the expr: line or an indented block after "expr: |".
    exprs, block, indent = [], None, None
    for line in rules_text.splitlines():
        if block is not None:
            if line.strip() and (len(line) - len(line.lstrip())) > indent:
                block.append(line.strip())
                continue
            exprs.append(" ".join(block))
            block = None
        m = re.match(r"^(\s*)expr:\s*(.*)$", line)
        if m:
            if m.group(2).strip() == "|":
                block, indent = [], len(m.group(1))
            else:
                exprs.append(m.group(2))
    if block:
        exprs.append(" ".join(block))
    return exprs


def names_in(expr):
    return set(re.findall(r"\bmodserve[_:][A-Za-z0-9_:]*", expr))


def main():
    page, rules_text = open(sys.argv[1]).read(), open(sys.argv[2]).read()
    dashboard = json.load(open(sys.argv[3]))
    families, records = exported_families(page), recording_rules(rules_text)
    problems = []

    def check(where, expr):
        for name in names_in(expr):
            if ":" in name:
                if name not in records:
                    problems.append(f"{where}: recording rule {name} is not defined")
                continue
            base = name
            for s in SUFFIXES:
                if base.endswith(s) and base[: -len(s)] in families:
                    base = base[: -len(s)]
            if base not in families:
                problems.append(f"{where}: metric {name} is not exported by mod-server")

    exprs = rule_exprs(rules_text)
    if len(exprs) < 10:
        problems.append(f"rules: found only {len(exprs)} expressions")
    for e in exprs:
        check("rules", e)
    ids = set()
    for p in dashboard["panels"]:
        if p["id"] in ids:
            problems.append(f"dashboard: duplicate panel id {p['id']}")
        ids.add(p["id"])
        if not p.get("targets"):
            problems.append(f"dashboard panel {p['title']!r}: no queries")
        for t in p.get("targets", []):
            check(f"dashboard panel {p['title']!r}", t["expr"])
    for name in ("modserve_layer_tokens_total", "modserve_queue_requests", "modserve_kv_cache_usage_ratio"):
        if name not in families:
            problems.append(f"server: {name} is missing from /metrics")
    if len(sys.argv) > 4:
        base = sys.argv[4]
        queries = [(f"recording rule", r) for r in sorted(records)]
        for p in dashboard["panels"]:
            for t in p["targets"]:
                queries.append((f"dashboard panel {p['title']!r}", t["expr"].replace("$job", ".*").replace("$instance", ".*")))
        empty = 0
        for where, expr in queries:
            result = query(base, expr)
            if not result:
                empty += 1
                problems.append(f"{where}: no data from Prometheus for {expr}")
        print(f"ran {len(queries)} queries through Prometheus: {len(queries) - empty} returned data")
    for line in problems:
        print("FAIL:", line)
    print(f"checked {len(exprs)} rule expressions and {sum(len(p['targets']) for p in dashboard['panels'])} dashboard "
          f"queries against {len(families)} exported metrics and {len(records)} recording rules")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
