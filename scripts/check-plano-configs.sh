#!/usr/bin/env bash
# Run `--check` of both binaries over every configuration file a katanemo/plano checkout
# ships (demos, CLI templates, docs includes, tests), each first validated against Plano's
# own schema (`config/plano_config_schema.yaml`, python jsonschema + pyyaml in a venv).
# Prints a table; exits 1 if a schema-valid config fails `--check` on either binary.
#
#   scripts/check-plano-configs.sh <path-to-katanemo-plano-checkout>
#
# Candidates: every *.yaml / *.yml with a top-level `version:`, `listeners:`,
# `model_providers:` or `llm_providers:` key (docker-compose, Helm and k8s manifests
# skipped). `$VAR` references get a placeholder value when unset, as `planoai up` would
# need them set. Binaries: target/debug (built here) unless PLANO_BIN_DIR names a directory
# holding plano-egress and plano-edge. CI cannot reach GitHub, so this is run by hand;
# the last result is in docs/providers.md.
set -euo pipefail

if [[ $# -ne 1 || ! -f "$1/config/plano_config_schema.yaml" ]]; then
    echo "usage: $0 <path-to-katanemo-plano-checkout>" >&2
    exit 2
fi
plano_dir=$(cd "$1" && pwd)
repo=$(cd "$(dirname "$0")/.." && pwd)

if [[ -n "${PLANO_BIN_DIR:-}" ]]; then
    bin_dir=$(cd "$PLANO_BIN_DIR" && pwd)
else
    (cd "$repo" && cargo build --quiet --bins -p plano-egress -p plano-edge)
    bin_dir="$repo/target/debug"
fi

venv=${PLANO_CHECK_VENV:-${TMPDIR:-/tmp}/plano-config-check-venv}
if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet jsonschema pyyaml
fi

exec "$venv/bin/python" - "$plano_dir" "$bin_dir" <<'PY'
import os, re, subprocess, sys, tempfile
from pathlib import Path

import jsonschema
import yaml

plano, bins = Path(sys.argv[1]), Path(sys.argv[2])
schema = yaml.safe_load((plano / "config/plano_config_schema.yaml").read_text())
validator = jsonschema.Draft7Validator(schema)
TOP = re.compile(r"^(version|listeners|model_providers|llm_providers):", re.M)
SKIP = ("node_modules", ".github", "docker-compose", "helm", "/k8s/")
VAR = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")


def candidates():
    for p in sorted(plano.rglob("*")):
        rel = str(p.relative_to(plano))
        if p.suffix not in (".yaml", ".yml") or not p.is_file():
            continue
        if any(s in "/" + rel for s in SKIP):
            continue
        try:
            text = p.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        if TOP.search(text):
            yield rel, text


def schema_result(text):
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        return False, f"not YAML: {str(e).splitlines()[0]}"
    if not isinstance(doc, dict):
        return False, "not a mapping"
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
    if errors:
        e = errors[0]
        where = ".".join(str(x) for x in e.path) or "(top)"
        return False, f"{where}: {e.message[:80]}"
    return True, ""


def check(binary, path, env):
    r = subprocess.run([str(bins / binary), "--check", "--config", str(path)],
                       capture_output=True, text=True, env=env, timeout=60,
                       cwd=path.parent)
    out = (r.stderr.strip() or r.stdout.strip()).splitlines()
    first_error = next((l for l in out if "error" in l.lower()), out[0] if out else "")
    return r.returncode == 0, first_error[:160]


rows, bad = [], 0
for rel, text in candidates():
    valid, why = schema_result(text)
    env = dict(os.environ)
    for name in set(VAR.findall(text)):
        env.setdefault(name, f"placeholder-{name.lower()}")
    path = plano / rel
    egress_ok, egress_msg = check("plano-egress", path, env)
    edge_ok, edge_msg = check("plano-edge", path, env)
    note = why if not valid else ""
    if valid and not (egress_ok and edge_ok):
        bad += 1
        note = egress_msg if not egress_ok else edge_msg
    elif not valid and not (egress_ok and edge_ok):
        note = f"{why} | ours: {egress_msg if not egress_ok else edge_msg}"
    rows.append((rel, "valid" if valid else "INVALID",
                 "ok" if egress_ok else "FAIL", "ok" if edge_ok else "FAIL", note))

width = max(len(r[0]) for r in rows)
print(f"{'file':<{width}}  schema   egress edge  note")
for rel, s, eg, ed, note in rows:
    print(f"{rel:<{width}}  {s:<8} {eg:<6} {ed:<5} {note}")
valid_rows = [r for r in rows if r[1] == "valid"]
passed = sum(1 for r in valid_rows if r[2] == "ok" and r[3] == "ok")
print(f"\n{len(rows)} files, {len(valid_rows)} valid under Plano's schema, "
      f"{passed} of those pass --check on both binaries; "
      f"{sum(1 for r in rows if r[2] == 'ok' and r[3] == 'ok')} pass overall")
sys.exit(1 if bad else 0)
PY
