"""Checks that PromQL expressions use only series a real tollgate exports.

    promql_series.py --metrics FILE [--metrics FILE ...] SOURCE ...

A SOURCE is a Grafana dashboard (.json: every panel target's `expr` and every query variable) or
a Prometheus rules file (.yml: every rule's `expr`). Each expression is parsed with a real PromQL
parser, and each vector selector in it must name a series present in one of the `--metrics`
files (Prometheus text scraped from running servers), with label matchers that can match:
an `=` matcher's value must occur on that series, other matchers need the label to exist, and
`by (...)` / `without (...)` labels must exist on a series inside the aggregation. `instance` and
`job` are added by Prometheus at scrape time and always accepted. Prints one line per source
and exits 1 with every problem listed.
"""

import argparse
import json
import re
import sys

import promql_parser as promql
import yaml

SCRAPE_LABELS = {"instance", "job"}
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
# Grafana's interval macros stand where PromQL expects a duration.
GRAFANA_DURATION = re.compile(r"\$\{?__(rate_interval|interval|range)\}?")
LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*$", re.S)


def read_exposition(paths):
    """Series name -> list of label dicts, from Prometheus text files."""
    series = {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                head = line.rsplit(" ", 1)[0]
                name, _, labels = head.partition("{")
                series.setdefault(name, []).append(dict(LABEL.findall(labels)))
    return series


class Checker:
    def __init__(self, series):
        self.series = series
        self.problems = []
        self.selectors = 0

    def labels_of(self, name):
        return {label for labels in self.series.get(name, []) for label in labels}

    def check_selector(self, where, selector):
        self.selectors += 1
        name = selector.name
        if not name:
            self.problems.append(f"{where}: a selector without a metric name")
            return set()
        if name not in self.series:
            self.problems.append(f"{where}: {name} is not exported by tollgate")
            return set()
        known = self.labels_of(name)
        for matcher in selector.matchers.matchers:
            if matcher.name in SCRAPE_LABELS:
                continue
            if matcher.name not in known:
                self.problems.append(f"{where}: {name} has no label {matcher.name}")
            elif matcher.op == promql.MatchOp.Equal and "$" not in matcher.value:
                values = {labels.get(matcher.name) for labels in self.series[name]}
                if matcher.value not in values:
                    self.problems.append(
                        f"{where}: no {name} series has {matcher.name}=\"{matcher.value}\""
                        f" (exported: {sorted(v for v in values if v is not None)})"
                    )
        return known | SCRAPE_LABELS

    def check_node(self, where, node):
        """Check `node` and everything under it; returns the labels its selectors carry."""
        if isinstance(node, promql.VectorSelector):
            return self.check_selector(where, node)
        if isinstance(node, promql.MatrixSelector):
            return self.check_selector(where, node.vector_selector)
        if isinstance(node, promql.AggregateExpr):
            labels = self.check_node(where, node.expr)
            if node.param is not None:
                self.check_node(where, node.param)
            if node.modifier is not None:
                for label in node.modifier.labels:
                    if label not in labels:
                        self.problems.append(f"{where}: grouping by {label}, which no series inside has")
            return labels
        if isinstance(node, promql.BinaryExpr):
            return self.check_node(where, node.lhs) | self.check_node(where, node.rhs)
        if isinstance(node, promql.Call):
            labels = set()
            for arg in node.args:
                labels |= self.check_node(where, arg)
            return labels
        if isinstance(node, (promql.ParenExpr, promql.UnaryExpr, promql.SubqueryExpr)):
            return self.check_node(where, node.expr)
        return set()  # number and string literals

    def check_expr(self, where, expr):
        try:
            node = promql.parse(GRAFANA_DURATION.sub("5m", expr))
        except Exception as error:  # the parser raises a bare exception type per message
            self.problems.append(f"{where}: does not parse: {error}")
            return set()
        return self.check_node(where, node)

    def check_label_values(self, where, query):
        match = LABEL_VALUES.match(query)
        if not match:
            self.problems.append(f"{where}: variable query is not label_values(selector, label): {query}")
            return
        labels = self.check_expr(where, match.group(1))
        if match.group(2) not in labels:
            self.problems.append(f"{where}: {match.group(1)} has no label {match.group(2)}")


def dashboard_exprs(path):
    with open(path, encoding="utf-8") as f:
        dashboard = json.load(f)
    exprs, variables = [], []

    def walk(panels):
        for panel in panels:
            for target in panel.get("targets", []):
                exprs.append((f"{path}: panel {panel.get('title')!r}", target["expr"]))
            walk(panel.get("panels", []))

    walk(dashboard.get("panels", []))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]
            query = query["query"] if isinstance(query, dict) else query
            variables.append((f"{path}: variable {variable['name']!r}", query))
    return exprs, variables


def rules_exprs(path):
    with open(path, encoding="utf-8") as f:
        rules = yaml.safe_load(f)
    return [
        (f"{path}: {rule.get('alert') or rule.get('record')}", rule["expr"])
        for group in rules["groups"]
        for rule in group["rules"]
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--metrics", action="append", required=True)
    parser.add_argument("sources", nargs="+")
    args = parser.parse_args()

    checker = Checker(read_exposition(args.metrics))
    for source in args.sources:
        if source.endswith(".json"):
            exprs, variables = dashboard_exprs(source)
        else:
            exprs, variables = rules_exprs(source), []
        before = checker.selectors
        for where, expr in exprs:
            checker.check_expr(where, expr)
        for where, query in variables:
            checker.check_label_values(where, query)
        print(f"{source}: {len(exprs)} expressions, {len(variables)} variables, "
              f"{checker.selectors - before} selectors")
    for problem in checker.problems:
        print(f"problem: {problem}")
    return 1 if checker.problems else 0


if __name__ == "__main__":
    sys.exit(main())
