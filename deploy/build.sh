#!/usr/bin/env bash
# Build the plano binaries and copy them to one folder. The Dockerfile runs exactly this
# script, and CI runs it outside Docker, so the image build cannot rot unseen.
#
#   deploy/build.sh [--profile release|dev] [--out DIR] [--with-mock-llm]
#
# --profile   cargo profile (default release; CI uses dev, which reuses the test build)
# --out       where the binaries go (default deploy/out, git-ignored)
# --with-mock-llm   also build `mock-llm`, the keyless demo provider (compose demo image)
#
# After copying, each binary proves it runs: `--version`, and `--check` of the example
# configs in deploy/examples (which need no real API keys).
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
out=deploy/out
mock=0
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile="${2:?--profile needs a value}"; shift 2 ;;
    --out) out="${2:?--out needs a value}"; shift 2 ;;
    --with-mock-llm) mock=1; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$profile" in
  release|dev) ;;
  *) echo "build.sh: --profile is release or dev, not $profile" >&2; exit 2 ;;
esac

bins=(plano-egress plano-edge)
args=(build --locked --profile "$profile" -p plano-egress -p plano-edge
      --bin plano-egress --bin plano-edge)
if [ "$mock" = 1 ]; then
  bins+=(mock-llm)
  args+=(-p integration-tests --bin mock-llm)
fi

echo "--- cargo ${args[*]}"
cargo "${args[@]}"

# cargo's folder for the dev profile is called debug.
target_dir="${CARGO_TARGET_DIR:-target}"
profile_dir="$target_dir/$profile"
[ "$profile" = dev ] && profile_dir="$target_dir/debug"

mkdir -p "$out"
for b in "${bins[@]}"; do
  install -m 0755 "$profile_dir/$b" "$out/$b"
done

echo "--- smoke: the binaries run and accept the example configs"
"$out/plano-egress" --version
"$out/plano-edge" --version
# Placeholders only: --check substitutes variables but contacts nothing.
export OPENAI_API_KEY=sk-placeholder ANTHROPIC_API_KEY=sk-placeholder
export EDGE_API_KEY=placeholder PLANO_EGRESS_URL=http://egress.example:12000
export PLANO_EGRESS_HEALTH=http://egress.example:9902
for config in deploy/examples/*.yaml; do
  for b in plano-egress plano-edge; do
    if ! "$out/$b" --config "$config" --check >/dev/null; then
      echo "build.sh: $b --check $config failed" >&2
      exit 1
    fi
  done
done
echo "--- built ${bins[*]} ($profile) into $out"
