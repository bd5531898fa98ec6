#!/usr/bin/env python3
"""Turns the raw output of scripts/bench.sh into JSON lines, and JSON lines into one table.

  summarize.py record --kind KIND --section S --contender C --variant V --rep N --raw FILE [...]
      parse FILE (the tool's stdout) and, when FILE.before / FILE.after exist (INFO cpu and
      INFO commandstats of the private Redis around the run), the Redis counters; print one
      JSON line.
  summarize.py table RESULTS.jsonl [...]
      medians over repetitions, ratios between contenders of the same run, one Markdown table.
  summarize.py brief JSON
      one short line for a progress log.
  summarize.py monitor FILE DECISIONS
      count the commands a client sent in a `redis-cli monitor` capture (script-internal
      commands are tagged `lua` there and are not round trips).

Kinds: tollgate (`tollgate bench --json`), jsonline (node / python peers), rb (redis-benchmark
--csv), wrk (wrk --latency), rustpeers (rust-peers RESULT line), criterion (a CRITERION_HOME
folder), accuracy (several JSON lines whose `allowed` add up).

Standard library only.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import statistics
import sys
from pathlib import Path


# ------------------------------------------------------------------ parsing tool output
def json_lines(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return out


def parse_tollgate(text: str) -> dict:
    rec = json_lines(text)[-1]
    return {
        "rps": rec["rps"],
        "p50_ms": rec.get("p50_ms"),
        "p99_ms": rec.get("p99_ms"),
        "decisions": rec.get("decisions"),
        "allowed": rec.get("allowed"),
        "rejected": rec.get("rejected"),
        "errors": rec.get("errors", 0),
        "degraded": rec.get("degraded", 0),
        "tool_round_trips": rec.get("redis_calls_per_decision"),
    }


def parse_jsonline(text: str) -> dict:
    rec = json_lines(text)[-1]
    out = {"rps": rec["rps"], "p50_ms": rec.get("p50_ms"), "p99_ms": rec.get("p99_ms")}
    if "calls" in rec:
        out["decisions"] = rec["calls"]
    if "rejected_frac" in rec:
        out["rejected_frac"] = rec["rejected_frac"]
    return out


def parse_rb(text: str, requests: int | None) -> dict:
    rows = [r for r in csv.DictReader(io.StringIO(text[text.find('"test"'):]))]
    if not rows:
        raise ValueError("no redis-benchmark CSV row")
    r = rows[-1]
    return {
        "rps": float(r["rps"]),
        "p50_ms": float(r["p50_latency_ms"]),
        "p99_ms": float(r["p99_latency_ms"]),
        "decisions": requests,
    }


def wrk_ms(value: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", value.strip())
    if not m:
        raise ValueError(f"wrk latency {value!r}")
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]
    return float(m.group(1)) * scale


def parse_wrk(text: str) -> dict:
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    if not rps:
        raise ValueError("no Requests/sec in wrk output")
    lat = dict(re.findall(r"^\s+(50|99)(?:\.000)?%\s+(\S+)", text, re.M))
    total = re.search(r"^\s+(\d+) requests in", text, re.M)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return {
        "rps": float(rps.group(1)),
        "p50_ms": wrk_ms(lat["50"]) if "50" in lat else None,
        "p99_ms": wrk_ms(lat["99"]) if "99" in lat else None,
        "decisions": int(total.group(1)) if total else None,
        "errors": (int(non2xx.group(1)) if non2xx else 0)
        + (sum(int(x) for x in errors.groups()) if errors else 0),
    }


def parse_rustpeers(text: str) -> dict:
    for line in text.splitlines():
        f = line.split("\t")
        if f[0] == "RESULT" and len(f) >= 16:
            return {
                "rps": float(f[7]),
                "p50_ms": float(f[8]) / 1e3,
                "p99_ms": float(f[9]) / 1e3,
                "decisions": int(f[3]),
                "allowed": int(f[11]),
                "expected_allowed": int(f[12]),
                "errors": int(f[13]),
                "peer_redis_cpu_us": float(f[14]),
            }
    raise ValueError("no RESULT line")


def parse_criterion(folder: Path) -> list[dict]:
    """One record per benchmark of a CRITERION_HOME folder: the median time per iteration."""
    out = []
    for est in sorted(folder.glob("**/new/estimates.json")):
        bench = est.parent.parent
        ns = json.loads(est.read_text())["median"]["point_estimate"]
        meta = json.loads((est.parent / "benchmark.json").read_text())
        out.append({"variant": meta.get("function_id") or bench.name, "group": meta.get("group_id"),
                    "ns_per_op": ns, "rps": 1e9 / ns})
    return out


def parse_accuracy(text: str) -> dict:
    recs = json_lines(text)
    return {"allowed": sum(r["allowed"] for r in recs), "processes": len(recs),
            "attempts": sum(r.get("decisions", r.get("attempts", 0)) for r in recs),
            "errors": sum(r.get("errors", 0) for r in recs)}


# ------------------------------------------------------------------ Redis counters
def info_fields(text: str) -> tuple[dict, dict]:
    """(INFO cpu fields, commandstats as {command: {calls, usec}})."""
    cpu, stats = {}, {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("cmdstat_"):
            name, fields = line[len("cmdstat_"):].split(":", 1)
            kv = dict(f.split("=", 1) for f in fields.split(","))
            stats[name] = {"calls": int(kv.get("calls", 0)), "usec": int(kv.get("usec", 0))}
        elif ":" in line and not line.startswith("#"):
            k, v = line.split(":", 1)
            cpu[k] = v
    return cpu, stats


def redis_deltas(before: str, after: str, decisions: int | None) -> dict:
    (c0, s0), (c1, s1) = info_fields(before), info_fields(after)
    cpu_s = sum(float(c1.get(k, 0)) - float(c0.get(k, 0)) for k in ("used_cpu_sys", "used_cpu_user"))
    delta = {n: {k: s1[n][k] - s0.get(n, {}).get(k, 0) for k in ("calls", "usec")} for n in s1}
    scripts = [delta[n] for n in ("evalsha", "eval", "fcall") if n in delta]
    calls = sum(d["calls"] for d in scripts)
    out = {"redis_cpu_s": cpu_s}
    if calls:
        out["script_calls"] = calls
        out["script_usec_per_call"] = sum(d["usec"] for d in scripts) / calls
    if decisions:
        out["redis_cpu_us_per_decision"] = cpu_s * 1e6 / decisions
        # Commands the clients sent, as far as commandstats can tell: INFO is this script's own.
        if calls:
            out["script_calls_per_decision"] = calls / decisions
    return out


# ------------------------------------------------------------------ record
def record(a) -> None:
    raw = Path(a.raw)
    base = {"section": a.section, "contender": a.contender, "variant": a.variant, "rep": a.rep}
    if a.rc:
        base["rc"] = a.rc
    if a.kind == "criterion":
        for r in parse_criterion(raw):
            print(json.dumps({**base, **r, "variant": f"{a.variant} {r['variant']}".strip()}))
        return
    text = raw.read_text(errors="replace")
    parsers = {
        "tollgate": parse_tollgate,
        "jsonline": parse_jsonline,
        "rb": lambda t: parse_rb(t, a.requests),
        "wrk": parse_wrk,
        "rustpeers": parse_rustpeers,
        "accuracy": parse_accuracy,
    }
    rec = {**base, **parsers[a.kind](text)}
    if a.requests and not rec.get("decisions"):
        rec["decisions"] = a.requests
    cpu = Path(f"{raw}.cpu")
    if cpu.exists() and rec.get("decisions"):
        # server ticks before, after, ticks per second, client user and system seconds
        f = cpu.read_text().split()
        if len(f) >= 3:
            rec["server_cpu_us_per_decision"] = (float(f[1]) - float(f[0])) / float(f[2]) * 1e6 / rec["decisions"]
        if len(f) >= 5:
            rec["client_cpu_us_per_decision"] = (float(f[3]) + float(f[4])) * 1e6 / rec["decisions"]
    before, after = Path(f"{raw}.before"), Path(f"{raw}.after")
    if before.exists() and after.exists():
        rec.update(redis_deltas(before.read_text(), after.read_text(), rec.get("decisions")))
    for k, v in a.extra or []:
        rec[k] = json.loads(v) if re.fullmatch(r"-?[\d.]+|true|false", v) else v
    print(json.dumps(rec))


# ------------------------------------------------------------------ monitor
def monitor(a) -> None:
    """Commands per decision from a MONITOR capture: client commands by name, script ones apart."""
    client, inside = {}, {}
    for line in Path(a.file).read_text(errors="replace").splitlines():
        m = re.match(r"^[\d.]+ \[\d+ ([^\]]+)\] \"([^\"]+)\"", line)
        if not m:
            continue
        who, cmd = m.group(1), m.group(2).lower()
        bucket = inside if who == "lua" else client
        bucket[cmd] = bucket.get(cmd, 0) + 1
    decisions = a.decisions
    print(json.dumps({
        "section": a.section, "contender": a.contender, "variant": a.variant, "rep": a.rep,
        "decisions": decisions,
        "evalsha_per_decision": client.get("evalsha", 0) / decisions,
        "client_commands": client, "script_commands": inside,
        "script_commands_per_decision": sum(inside.values()) / decisions,
    }))


# ------------------------------------------------------------------ table
def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, digits=0):
    if v is None:
        return "-"
    if isinstance(v, float) and digits:
        return f"{v:,.{digits}f}"
    return f"{v:,.0f}"


def table(paths: list[str]) -> str:
    recs = [json.loads(l) for p in paths for l in Path(p).read_text().splitlines() if l.strip()]
    groups: dict[tuple, list[dict]] = {}
    for r in recs:
        groups.setdefault((r["section"], r["contender"], r["variant"]), []).append(r)
    by_rep: dict[tuple, dict[int, dict]] = {k: {r["rep"]: r for r in v} for k, v in groups.items()}

    def ratio_to(key, ref):
        """Median over repetitions of rps(key) / rps(ref), both from the same repetition."""
        a, b = by_rep.get(key, {}), by_rep.get(ref, {})
        vals = [a[n]["rps"] / b[n]["rps"] for n in a if n in b and b[n].get("rps")]
        return med(vals), len(vals)

    lines = [
        "| section | contender | variant | decisions/s (median) | p50 ms | p99 ms | ratio (same runs) | Redis CPU µs/decision | script µs/call | runs: decisions/s | notes |",
        "|---|---|---|---:|---:|---:|---|---:|---:|---|---|",
    ]
    for key, rs in groups.items():
        section, who, variant = key
        if "evalsha_per_decision" in rs[0] or "instructions_per_decision" in rs[0]:
            continue
        if "allowed" in rs[0] and "rps" not in rs[0]:
            continue
        rps = [r.get("rps") for r in rs]
        ratio = ""
        ref = rs[0].get("ratio_to")
        if ref:
            for one in ref.split(";"):
                sec, con, var, label = one.split("|")
                m, n = ratio_to(key, (sec, con, var))
                if m is not None:
                    ratio += f"{m:.2f} × {label} ({n})<br>"
        notes = []
        errors = sum(r.get("errors") or 0 for r in rs)
        if errors:
            notes.append(f"{errors} errors")
        if any(r.get("rc") for r in rs):
            notes.append("exit codes " + ",".join(str(r.get("rc", 0)) for r in rs))
        rej = med([r.get("rejected_frac") if "rejected_frac" in r else
                   (r["rejected"] / r["decisions"] if r.get("rejected") is not None and r.get("decisions") else None)
                   for r in rs])
        if rej is not None:
            notes.append(f"rejected {rej:.0%}")
        allowed = [r.get("allowed") for r in rs if r.get("allowed") is not None]
        if allowed and (rej or 0) > 0:
            notes.append("allowed " + ",".join(str(x) for x in allowed))
        rt = med([r.get("tool_round_trips") for r in rs])
        if rt is not None:
            notes.append(f"{rt:.3f} Redis commands/decision")
        scpu = med([r.get("server_cpu_us_per_decision") for r in rs])
        if scpu is not None:
            notes.append(f"server CPU {scpu:.2f} µs/decision, client {med([r.get('client_cpu_us_per_decision') for r in rs]):.2f}")
        if "ns_per_op" in rs[0]:
            notes.append(f"{med([r['ns_per_op'] for r in rs]):.0f} ns/op")
        if rs[0].get("note"):
            notes.append(rs[0]["note"])
        lines.append(
            f"| {section} | {who} | {variant} | {fmt(med(rps))} | {fmt(med([r.get('p50_ms') for r in rs]), 3)} | "
            f"{fmt(med([r.get('p99_ms') for r in rs]), 3)} | {ratio.removesuffix('<br>') or '-'} | "
            f"{fmt(med([r.get('redis_cpu_us_per_decision') for r in rs]), 1)} | "
            f"{fmt(med([r.get('script_usec_per_call') for r in rs]), 2)} | "
            f"{', '.join(fmt(x) for x in rps)} | {'; '.join(notes)} |"
        )
    extra = []
    for key, rs in groups.items():
        if "evalsha_per_decision" in rs[0]:
            r = rs[-1]
            extra.append(f"- {key[1]} {key[2]}: {r['evalsha_per_decision']:.4f} EVALSHA per decision over "
                         f"{r['decisions']} decisions (MONITOR); other client commands "
                         f"{ {k: v for k, v in r['client_commands'].items() if k != 'evalsha'} }; inside the "
                         f"script per decision {r['script_commands_per_decision']:.2f} {r['script_commands']}")
        elif "allowed" in rs[0] and "rps" not in rs[0]:
            extra.append(f"- {key[1]} {key[2]}: allowed " + ", ".join(str(r['allowed']) for r in rs)
                         + f" (ideal {rs[0].get('ideal', '?')}; {rs[0].get('processes')} processes, "
                         f"{rs[0].get('attempts')} attempts; errors {sum(r.get('errors', 0) for r in rs)})")
    return "\n".join(lines) + ("\n\n" + "\n".join(extra) if extra else "") + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("--kind", required=True,
                   choices=["tollgate", "jsonline", "rb", "wrk", "rustpeers", "criterion", "accuracy"])
    for f in ("section", "contender", "variant", "raw"):
        r.add_argument(f"--{f}", required=True)
    r.add_argument("--rep", type=int, required=True)
    r.add_argument("--rc", type=int, default=0)
    r.add_argument("--requests", type=int)
    r.add_argument("--extra", nargs=2, action="append", metavar=("KEY", "VALUE"))
    t = sub.add_parser("table")
    t.add_argument("files", nargs="+")
    b = sub.add_parser("brief")
    b.add_argument("json")
    m = sub.add_parser("monitor")
    m.add_argument("file")
    m.add_argument("decisions", type=int)
    for f in ("section", "contender", "variant"):
        m.add_argument(f"--{f}", required=True)
    m.add_argument("--rep", type=int, default=1)
    a = ap.parse_args()
    if a.cmd == "record":
        record(a)
    elif a.cmd == "brief":
        r = json.loads(a.json)
        if "evalsha_per_decision" in r:
            print(f"{r['variant']}: {r['evalsha_per_decision']:.4f} EVALSHA per decision")
        else:
            print(f"{r['rps']:,.0f}/s" if "rps" in r else f"allowed {r.get('allowed')}")
    elif a.cmd == "monitor":
        monitor(a)
    else:
        sys.stdout.write(table(a.files))


if __name__ == "__main__":
    main()
