#!/usr/bin/env bash
# Runs every Vigil test, installing what the tests need first:
# Debian's strace (the fsync-before-acknowledgement trace), Python's
# cryptography, rfc8785 and jsonschema (the independent signer and the
# schema checks), and the Kafka-protocol broker tansu (built with cargo
# once, about 10 minutes, then reused from ~/.cargo/bin).
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

if ! command -v tansu >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/tansu" ] && [ -z "${TANSU_BIN:-}" ]; then
  echo "test.sh: installing the tansu broker (cargo install tansu --features dynostore; about 10 minutes, once)"
  cargo install tansu --features dynostore --locked --quiet
fi

cargo test --all-targets "$@"
