#!/usr/bin/env python3
"""Writes plano.json, the Grafana dashboard, from the panel list below.

Edit this file, run `python3 deploy/grafana/generate.py`, commit both. scripts/check-deploy.sh
fails when plano.json differs from what this prints, and parses every query with promtool.
"""
import json
import sys
from pathlib import Path

DS = {"type": "prometheus", "uid": "${datasource}"}
JOB = 'job=~"$job"'
RATE = "$__rate_interval"


def q(expr, legend):
    return {"expr": expr, "legendFormat": legend}


def quantiles(metric, by, extra=""):
    sel = f"{JOB}{extra}"
    return [
        q(f"histogram_quantile(0.5, sum by ({by}, le) (rate({metric}_bucket{{{sel}}}[{RATE}])))",
          f"p50 {{{{{by.split(',')[0].strip()}}}}}"),
        q(f"histogram_quantile(0.99, sum by ({by}, le) (rate({metric}_bucket{{{sel}}}[{RATE}])))",
          f"p99 {{{{{by.split(',')[0].strip()}}}}}"),
    ]


# (title, unit, description, targets, width); rows start with a ("row", title) entry.
PANELS = [
    ("row", "Traffic"),
    ("Requests per second", "reqps",
     "HTTP requests answered, by binary and status class.",
     [q(f'sum by (job, status_class) (rate(plano_http_requests_total{{{JOB}, status_class!=""}}[{RATE}]))', "{{job}} {{status_class}}")], 12),
    ("Request duration p50 / p99", "s",
     "Until the handler returned (streams: until headers).",
     quantiles("plano_http_request_duration_seconds", "job"), 12),
    ("Active requests (edge)", "short", "Requests in flight on the edge.",
     [q(f"sum by (job) (plano_active_requests{{{JOB}}})", "{{job}}")], 8),
    ("Proxy overhead p50 / p99", "s",
     "Time inside the proxy, excluding upstream waits.",
     quantiles("plano_overhead_seconds", "job"), 16),
    ("row", "LLM providers"),
    ("Time to first token p50 / p99", "s",
     "Streams: request received to first upstream event, by provider.",
     quantiles("plano_llm_time_to_first_token_seconds", "provider"), 12),
    ("Upstream attempt duration p99", "s",
     "Each attempt until headers (streams: first event), by provider.",
     [q(f"histogram_quantile(0.99, sum by (provider, le) (rate(plano_llm_upstream_duration_seconds_bucket{{{JOB}}}[{RATE}])))", "{{provider}}")], 12),
    ("Tokens per minute", "short", "As reported by providers, by model and kind.",
     [q(f"sum by (model, kind) (rate(plano_llm_tokens_total{{{JOB}}}[{RATE}])) * 60", "{{model}} {{kind}}")], 12),
    ("Upstream errors by provider", "reqps", "Failed attempts by provider and outcome.",
     [q(f'sum by (provider, outcome) (rate(plano_llm_upstream_requests_total{{{JOB}, outcome!="success"}}[{RATE}]))', "{{provider}} {{outcome}}")], 12),
    ("Upstream error ratio", "percentunit",
     "Share of attempts failing for provider reasons (5xx, 429, timeout, connect, protocol).",
     [q(f'sum by (provider) (rate(plano_llm_upstream_requests_total{{{JOB}, outcome=~"http_5xx|http_429|timeout|connect_error|credentials_error|protocol_error"}}[{RATE}])) / sum by (provider) (rate(plano_llm_upstream_requests_total{{{JOB}, outcome!="circuit_open"}}[{RATE}]))', "{{provider}}")], 8),
    ("Retries", "reqps", "Retries on the same provider, by reason.",
     [q(f"sum by (provider, reason) (rate(plano_llm_retries_total{{{JOB}}}[{RATE}]))", "{{provider}} {{reason}}")], 8),
    ("Failovers", "reqps", "Moves to the next fallback.",
     [q(f"sum by (from, to) (rate(plano_llm_failovers_total{{{JOB}}}[{RATE}]))", "{{from}} → {{to}}")], 8),
    ("row", "Health and limits"),
    ("Egress seen by the edge", "short", "plano_peer_up: 1 while the egress reports SERVING.",
     [q(f'min by (instance) (plano_peer_up{{{JOB}, peer="egress"}})', "{{instance}}")], 6),
    ("Targets up", "short", "Prometheus scrape health of each admin port.",
     [q(f"up{{{JOB}}}", "{{job}} {{instance}}")], 6),
    ("Open circuits", "short", "1 while the egress skips a provider.",
     [q(f"max by (provider) (plano_llm_circuit_open{{{JOB}}})", "{{provider}}")], 6),
    ("Certificate days left", "d", "Per TLS listener; alert below 14 days.",
     [q(f"(plano_tls_certificate_expiry_timestamp_seconds{{{JOB}}} - time()) / 86400", "{{listener}}")], 6),
    ("Rate-limit rejections", "reqps", "429s from configured limits, by model and kind.",
     [q(f"sum by (model, kind) (rate(plano_ratelimit_rejections_total{{{JOB}}}[{RATE}]))", "{{model}} {{kind}}")], 8),
    ("Rate-limit storage errors", "reqps", "Checks that could not reach Redis, by policy.",
     [q(f"sum by (policy) (rate(plano_ratelimit_backend_errors_total{{{JOB}}}[{RATE}]))", "fail {{policy}}")], 8),
    ("Config reloads", "short", "Reload attempts in the interval, by outcome.",
     [q(f"sum by (job, outcome) (increase(plano_config_reloads_total{{{JOB}}}[{RATE}]))", "{{job}} {{outcome}}")], 8),
]


def build():
    panels, x, y, row_h, pid = [], 0, 0, 0, 1
    for p in PANELS:
        if p[0] == "row":
            if x:
                y += row_h
                x, row_h = 0, 0
            panels.append({"id": pid, "type": "row", "title": p[1], "collapsed": False,
                           "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
            pid, y = pid + 1, y + 1
            continue
        title, unit, desc, targets, w = p
        h = 8
        if x + w > 24:
            x, y, row_h = 0, y + row_h, 0
        stat = unit in ("d",) or title in ("Egress seen by the edge", "Targets up", "Open circuits")
        panels.append({
            "id": pid,
            "type": "stat" if stat else "timeseries",
            "title": title,
            "description": desc,
            "datasource": DS,
            "gridPos": {"h": h, "w": w, "x": x, "y": y},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}}
            if not stat else {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                              "colorMode": "value", "graphMode": "none"},
            "targets": [dict(t, datasource=DS, refId=chr(ord("A") + i)) for i, t in enumerate(targets)],
        })
        pid += 1
        x += w
        row_h = max(row_h, h)
        if x >= 24:
            x, y, row_h = 0, y + row_h, 0
    return {
        "uid": "plano",
        "title": "Plano",
        "description": "plano-edge and plano-egress: traffic, latency, LLM providers, health, limits.",
        "tags": ["plano", "llm"],
        "timezone": "",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource",
             "query": "prometheus", "current": {}, "hide": 0},
            {"name": "job", "label": "Job", "type": "query", "datasource": DS,
             "query": {"query": "label_values(plano_build_info, job)", "refId": "job"},
             "definition": "label_values(plano_build_info, job)",
             "includeAll": True, "multi": True, "allValue": ".*", "current": {}, "refresh": 2,
             "sort": 1, "hide": 0},
        ]},
        "annotations": {"list": []},
        "panels": panels,
    }


def render():
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    out = Path(__file__).with_name("plano.json")
    if sys.argv[1:] == ["--print"]:
        sys.stdout.write(render())
    else:
        out.write_text(render())
