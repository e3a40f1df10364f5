#!/usr/bin/env bash
# Checks schemas/openapi.json against a running Vigil with Schemathesis
# (property-based requests to every operation; every check, with the
# exceptions tests/py/schemathesis.toml gives and explains). Fixed seed and
# 50 examples an operation: about a minute on a 2-core machine.
#
# Environment:
#   VIGIL_URL     the server, e.g. http://127.0.0.1:7070
#   VIGIL_TOKEN   a token with role admin (e.g. DIR/admin.token)
#   SCHEMATHESIS  the schemathesis executable, version 4.32.5
#                 (pip install 'schemathesis==4.32.5')
#
# Before the run it checks that the event, receipt, posture and OCSF schemas
# embedded in openapi.json are the files in schemas/ (drift). It signs in
# once (POST /v1/session) for the operations that take the session cookie.
# Exits non-zero on any failure; the server should be one started for the
# test (the run registers agents and keys, suspends, signs out ...).
set -euo pipefail

: "${VIGIL_URL:?set VIGIL_URL to the server, e.g. http://127.0.0.1:7070}"
: "${VIGIL_TOKEN:?set VIGIL_TOKEN to a token with role admin}"
: "${SCHEMATHESIS:?set SCHEMATHESIS to the schemathesis executable (4.32.5)}"

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
spec="$root/schemas/openapi.json"
config="$here/schemathesis.toml"
url=${VIGIL_URL%/}
want=4.32.5

version=$("$SCHEMATHESIS" --version 2>&1 || true)
if [[ "$version" != *" $want" ]]; then
    echo "schemathesis_run.sh: $SCHEMATHESIS is \"$version\"; the seed and expectations are for $want: pip install 'schemathesis==$want'" >&2
    exit 2
fi

# The schemas the document embeds must be the files in schemas/: the same
# JSON without $schema and $id, their "#/$defs/..." references pointed at
# "#/components/schemas/<Name>/$defs/...".
python3 - "$root/schemas" <<'EOF'
import json, sys
root = sys.argv[1]
doc = json.load(open(f"{root}/openapi.json"))
copies = {
    "Event": "vigil.event.v1.schema.json",
    "Receipt": "vigil.receipt.v1.schema.json",
    "Posture": "vigil.posture.v1.schema.json",
    "OcsfDetectionFinding": "ocsf/detection_finding.schema.json",
}
def embedded(name, schema):
    prefix = f"#/components/schemas/{name}/$defs/"
    def walk(v):
        if isinstance(v, dict):
            return {k: x.replace("#/$defs/", prefix) if k == "$ref" and isinstance(x, str) else walk(x)
                    for k, x in v.items() if k not in ("$schema", "$id")}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return v
    return walk(schema)
stale = [f"components.schemas.{name} (schemas/{path})" for name, path in copies.items()
         if doc["components"]["schemas"].get(name) != embedded(name, json.load(open(f"{root}/{path}")))]
if stale:
    sys.exit("schemas/openapi.json embeds stale copies of: " + ", ".join(stale)
             + "; copy each file in again without $schema and $id, with \"#/$defs/\" references"
             + " pointed at \"#/components/schemas/<Name>/$defs/\"")
EOF

# A session (cookie and CSRF token) for the operations that take one.
session=$(python3 - "$url" <<'EOF'
import json, os, re, sys, urllib.request
req = urllib.request.Request(sys.argv[1] + "/v1/session", method="POST",
                             data=json.dumps({"token": os.environ["VIGIL_TOKEN"]}).encode(),
                             headers={"Content-Type": "application/json"})
try:
    with urllib.request.urlopen(req, timeout=10) as r:
        cookie = re.search(r"vigil_session=([0-9a-f]+)", r.headers["Set-Cookie"]).group(1)
        print(cookie, json.load(r)["csrf"])
except Exception as e:
    sys.exit(f"schemathesis_run.sh: signing in at {sys.argv[1]}/v1/session failed: {e}")
EOF
) || exit 2
read -r VIGIL_SESSION VIGIL_CSRF <<<"$session"
export VIGIL_TOKEN VIGIL_SESSION VIGIL_CSRF

# Schemathesis and Hypothesis write state into the working directory.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

"$SCHEMATHESIS" --config-file "$config" run "$spec" --url "$url" --no-color
