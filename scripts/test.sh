#!/usr/bin/env bash
# Runs every Vigil test, installing what the tests need first:
# Debian's strace (the fsync-before-acknowledgement trace) and Python's
# cryptography, rfc8785 and jsonschema (the independent signer and the
# schema checks).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v strace >/dev/null 2>&1 || missing+=(strace)
command -v python3 >/dev/null 2>&1 || missing+=(python3 python3-pip)
if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "test.sh: please install: ${missing[*]}" >&2
    exit 2
  fi
fi
if ! python3 -c 'import cryptography, rfc8785, jsonschema' >/dev/null 2>&1; then
  echo "test.sh: installing Python test packages (tests/py/requirements.txt)"
  python3 -m pip install --quiet --disable-pip-version-check -r tests/py/requirements.txt
fi

cargo test --all-targets "$@"
