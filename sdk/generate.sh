#!/usr/bin/env bash
# Regenerates the SDKs under sdk/ from proto/ (the public contracts: ingest, insights, admin)
# with pinned generators: TypeScript with protoc-gen-es through buf (sdk/typescript's
# package-lock.json), Python with grpcio-tools and mypy-protobuf for the type stubs
# (sdk/python/requirements-dev.txt). Also installs what the SDKs' own tests need.
#
#   sdk/generate.sh          regenerate in place
#   sdk/generate.sh --check  regenerate into a scratch folder and fail on any difference
#
# Generated files are never edited by hand; CI runs the check.
set -euo pipefail
cd "$(dirname "$0")/.."

out=.
if [ "${1:-}" = "--check" ]; then
  out="$(mktemp -d)"
  trap 'rm -rf "$out"' EXIT
fi

(cd sdk/typescript && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
sdk/typescript/node_modules/.bin/buf generate proto --template sdk/buf.gen.yaml \
  --exclude-path proto/beacon/pipeline --output "$out"

python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
  -r sdk/python/requirements-dev.txt
rm -rf "$out/sdk/python/src/beacon"
mkdir -p "$out/sdk/python/src"
python3 -m grpc_tools.protoc -Iproto \
  --python_out="$out/sdk/python/src" --mypy_out="quiet:$out/sdk/python/src" \
  --grpc_python_out="$out/sdk/python/src" --mypy_grpc_out="quiet:$out/sdk/python/src" \
  proto/beacon/ingest/v1/ingest.proto proto/beacon/insights/v1/insights.proto \
  proto/beacon/admin/v1/admin.proto

if [ "$out" != . ]; then
  for generated in sdk/typescript/src/gen sdk/python/src/beacon; do
    if ! diff -r -x __pycache__ "$generated" "$out/$generated"; then
      echo "$generated differs from what proto/ generates: run sdk/generate.sh and commit" >&2
      exit 1
    fi
  done
  echo "SDKs: generated code matches proto/"
fi
