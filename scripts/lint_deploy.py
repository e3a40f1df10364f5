"""Consistency checks of deploy/ that no off-the-shelf linter makes.

Run by scripts/lint-deploy.sh with the Python of its lint environment
(PyYAML comes with yamllint). It checks that:

- the TOML files parse: deploy/vigil.example.toml, deploy/compose/vigil.toml
  and the vigil.toml inside deploy/kubernetes/configmap.yaml;
- those configurations use only keys Vigil knows (the fields of the
  configuration structs in src/config.rs, plus every key, set or commented
  out, in deploy/vigil.example.toml): Vigil refuses unknown keys at start;
- every file a configuration or a flag names (tokens, JWKS, log key, Kafka
  TLS files, the configuration itself) is provided by a mount, and the data
  directory is the persistent volume;
- ports, probes, Services, selectors, the PodDisruptionBudget, the image
  name in kustomization.yaml, the UID and the stop timings agree across the
  Dockerfile, the manifests and compose.yaml.

Prints one line per problem and exits 1 if there is any.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path, PurePosixPath

import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
PROBLEMS: list[str] = []

# Tables whose keys are free-form (passed through, or maps of names).
FREE_FORM = {"kafka.librdkafka", "vault.lease_prefixes"}
# Configuration structs in src/config.rs and the table each one reads.
STRUCT_TABLES = {
    "ServerConfig": "server",
    "TokenConfig": "tokens",
    "KeysConfig": "keys",
    "KafkaConfig": "kafka",
    "DetectionConfig": "detection",
    "QueryConfig": "query",
}


def problem(where: Path | str, what: str) -> None:
    where = where.relative_to(ROOT) if isinstance(where, Path) else where
    PROBLEMS.append(f"{where}: {what}")


def rel(p: Path) -> str:
    return str(p.relative_to(ROOT))


def load_yaml_docs(path: Path) -> list[dict]:
    try:
        with path.open(encoding="utf-8") as f:
            return [d for d in yaml.safe_load_all(f) if d is not None]
    except (OSError, yaml.YAMLError) as e:
        problem(path, f"cannot read: {e}")
        return []


def parse_toml(text: str, where: str) -> dict | None:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        problem(where, f"not valid TOML: {e}")
        return None


# ---------------------------------------------------------------- TOML keys


def known_keys() -> set[str]:
    """Dotted key paths Vigil accepts, e.g. "server.listen", "tokens.name"."""
    keys: set[str] = set()
    src = (ROOT / "src" / "config.rs").read_text(encoding="utf-8")
    for struct, table in STRUCT_TABLES.items():
        m = re.search(r"pub struct " + struct + r" \{(.*?)\n\}", src, re.S)
        if not m:
            print(f"lint_deploy: note: struct {struct} not found in src/config.rs; "
                  f"[{table}] keys are taken from vigil.example.toml alone")
            continue
        for field in re.findall(r"^\s*pub (\w+):", m.group(1), re.M):
            keys.add(f"{table}.{field}")
    # Every key in the example, set or commented out ("# key = value").
    table = ""
    example = (DEPLOY / "vigil.example.toml").read_text(encoding="utf-8")
    for line in example.splitlines():
        s = line.strip()
        if s.startswith("#"):
            s = s.lstrip("#").strip()
        m = re.fullmatch(r"\[\[?([\w.]+)\]\]?", s)
        if m:
            table = m.group(1)
            keys.add(table)
            continue
        m = re.match(r'"?([\w.-]+)"?\s*=', s)
        if m and table:
            keys.add(f"{table}.{m.group(1)}")
    return keys


def check_keys(cfg: dict, known: set[str], where: str, prefix: str = "") -> None:
    for k, v in cfg.items():
        path = f"{prefix}{k}"
        if path in FREE_FORM:
            continue
        if isinstance(v, dict):
            if path not in known:
                problem(where, f"unknown table [{path}]")
                continue
            check_keys(v, known, where, path + ".")
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            if path not in known:
                problem(where, f"unknown table [[{path}]]")
                continue
            for x in v:
                check_keys(x, known, where, path + ".")
        elif path not in known:
            problem(where, f"unknown key {path!r} (Vigil refuses unknown keys)")


def port_of(addr: str) -> int:
    return int(addr.rsplit(":", 1)[1])


def files_named(cfg: dict) -> list[tuple[str, str]]:
    """(what, path) of every file a configuration names."""
    out = []
    for t in cfg.get("tokens", []):
        if "token_file" in t:
            out.append((f"token {t.get('name')!r}", t["token_file"]))
    for j in cfg.get("keys", {}).get("jwks", []):
        if not j.startswith(("https://", "http://")):
            out.append(("[keys] jwks", j))
    for k, v in cfg.get("kafka", {}).get("librdkafka", {}).items():
        if k.endswith(".location"):
            out.append((f"[kafka.librdkafka] {k}", v))
    if "log_key_file" in cfg.get("server", {}):
        out.append(("[server] log_key_file", cfg["server"]["log_key_file"]))
    return out


# --------------------------------------------------------------- Kubernetes


def flag(args: list[str], name: str) -> str | None:
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def check_kubernetes(known: set[str]) -> None:
    kust_path = K8S / "kustomization.yaml"
    kust = (load_yaml_docs(kust_path) or [{}])[0]
    resources = kust.get("resources", [])
    for r in resources:
        if not (K8S / r).is_file():
            problem(kust_path, f"resource {r} does not exist")
    for f in sorted(K8S.glob("*.yaml")):
        if f.name != "kustomization.yaml" and not f.name.endswith(".example.yaml") \
                and f.name not in resources:
            problem(kust_path, f"{f.name} is not listed in resources (or name it *.example.yaml)")

    objs: dict[tuple[str, str], dict] = {}
    for f in sorted(K8S.glob("*.yaml")):
        if f.name == "kustomization.yaml":
            continue
        for d in load_yaml_docs(f):
            objs[(d.get("kind", ""), d.get("metadata", {}).get("name", ""))] = d

    sts = next((o for (k, _), o in objs.items() if k == "StatefulSet"), None)
    if sts is None:
        problem(K8S, "no StatefulSet")
        return
    where = "deploy/kubernetes/statefulset.yaml"
    spec = sts["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"].get("labels", {})
    if spec["selector"].get("matchLabels", {}).items() - labels.items():
        problem(where, "selector does not match the pod template's labels")
    containers = {c["name"]: c for c in pod["containers"]}
    c = containers.get("vigil")
    if c is None:
        problem(where, "no container named vigil")
        return

    # Image name agrees with kustomization.yaml's images.
    image_name = c["image"].rsplit(":", 1)[0]
    names = [i.get("name") for i in kust.get("images", [])]
    if names and image_name not in names:
        problem(kust_path, f"images names {names} do not include the container's image {image_name}")

    # Services and PDB select the pods; the headless Service governs the set.
    headless = objs.get(("Service", spec.get("serviceName", "")))
    if headless is None or headless["spec"].get("clusterIP") != "None":
        problem(where, f"serviceName {spec.get('serviceName')!r} is not a headless Service here")
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    for (kind, name), o in objs.items():
        sel = None
        if kind == "Service":
            sel = o["spec"].get("selector", {})
            for p in o["spec"].get("ports", []):
                if isinstance(p.get("targetPort"), str) and p["targetPort"] not in ports:
                    problem(f"Service {name}", f"targetPort {p['targetPort']!r} is no container port")
        elif kind == "PodDisruptionBudget":
            sel = o["spec"].get("selector", {}).get("matchLabels", {})
        if sel is not None and (not sel or sel.items() - labels.items()):
            problem(f"{kind} {name}", "selector does not match the StatefulSet's pods")

    # The configuration the pod reads.
    args = c.get("args", [])
    cm = objs.get(("ConfigMap", "vigil-config"))
    cfg = None
    if cm is None or "vigil.toml" not in cm.get("data", {}):
        problem(where, "no ConfigMap vigil-config with a vigil.toml")
    else:
        cfg = parse_toml(cm["data"]["vigil.toml"], "deploy/kubernetes/configmap.yaml (vigil.toml)")
    keys_cm = objs.get(("ConfigMap", "vigil-agent-keys"))
    if keys_cm is not None:
        for k, v in keys_cm.get("data", {}).items():
            try:
                if not isinstance(json.loads(v).get("keys"), list):
                    raise ValueError('no "keys" array')
            except (ValueError, AttributeError) as e:
                problem("deploy/kubernetes/agent-keys.yaml", f"{k} is not a JWKS: {e}")

    # Files each mount provides (projected/secret items from the objects or
    # from secret.example.yaml, configMap keys from the ConfigMaps).
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    claim_names = {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])}
    provided: set[str] = set()
    dirs: dict[str, str] = {}

    def keys_of(kind: str, name: str, items: list | None, label: str) -> list[str]:
        if items:
            obj = objs.get((kind, name))
            if obj is not None:
                have = set(obj.get("data", {})) | set(obj.get("stringData", {}))
                for it in items:
                    if it["key"] not in have:
                        problem(where, f"{label} item {it['key']!r} is not in {kind} {name}")
            return [it["path"] for it in items]
        obj = objs.get((kind, name))
        if obj is None:
            problem(where, f"{label}: {kind} {name} is not defined in deploy/kubernetes")
            return []
        return list(obj.get("data", {})) + list(obj.get("stringData", {}))

    for m in c.get("volumeMounts", []):
        vol = volumes.get(m["name"])
        mount = m["mountPath"]
        if vol is None and m["name"] not in claim_names:
            problem(where, f"volumeMount {m['name']!r} has no volume")
            continue
        if vol is None:
            dirs[mount] = "claim"
            continue
        files: list[str] = []
        if "configMap" in vol:
            files = keys_of("ConfigMap", vol["configMap"]["name"], vol["configMap"].get("items"), m["name"])
        elif "secret" in vol:
            files = keys_of("Secret", vol["secret"]["secretName"], vol["secret"].get("items"), m["name"])
        elif "projected" in vol:
            for s in vol["projected"]["sources"]:
                for kind, key in (("Secret", "secret"), ("ConfigMap", "configMap")):
                    if key in s:
                        files += keys_of(kind, s[key]["name"], s[key].get("items"), m["name"])
        else:
            dirs[mount] = next(iter(k for k in vol if k != "name"), "?")
        if "subPath" in m:
            if m["subPath"] in files:
                provided.add(mount)
            else:
                problem(where, f"subPath {m['subPath']!r} of {m['name']!r} is not in its volume")
        else:
            provided.update(str(PurePosixPath(mount) / f) for f in files)

    def need(what: str, path: str) -> None:
        if path not in provided:
            problem(where, f"{what} {path} is not provided by any volume mount")

    config_path = flag(args, "--config")
    if config_path is None:
        problem(where, "the container args have no --config")
    else:
        need("--config", config_path)
    log_key = flag(args, "--log-key")
    if log_key:
        need("--log-key", log_key)
    origin = flag(args, "--origin")
    if origin and not re.fullmatch(r"[^\s+]+", origin.replace("$(POD_NAME)", "x")):
        problem(where, f"--origin {origin!r} is not a valid origin (no spaces, no '+')")
    env = {e["name"] for e in c.get("env", [])}
    for var in re.findall(r"\$\((\w+)\)", " ".join(args)):
        if var not in env:
            problem(where, f"args use $({var}) but env does not define {var}")

    if cfg is not None:
        check_keys(cfg, known, "deploy/kubernetes/configmap.yaml (vigil.toml)")
        for what, path in files_named(cfg):
            need(what, path)
        server = cfg.get("server", {})
        data = server.get("data", "./vigil-data")
        if dirs.get(data) != "claim":
            problem(where, f"[server] data {data} is not the mount of a volumeClaimTemplate")
        listen = server.get("listen", "127.0.0.1:7070")
        if listen.startswith("127.") or listen.startswith("[::1]"):
            problem(where, f"[server] listen {listen} is loopback: probes and Services cannot reach it")
        if ports.get("http") != port_of(listen):
            problem(where, f"container port http {ports.get('http')} is not [server] listen's {listen}")
        ann = spec["template"]["metadata"].get("annotations", {})
        if ann.get("prometheus.io/scrape") == "true":
            ml = server.get("metrics_listen")
            if ml is None:
                problem(where, "scraped without a token, but [server] metrics_listen is not set")
            elif str(port_of(ml)) != ann.get("prometheus.io/port") or ports.get("metrics") != port_of(ml):
                problem(where, f"prometheus.io/port, container port metrics and metrics_listen {ml} differ")
        drain = server.get("drain_timeout_s", 20)
        grace = pod.get("terminationGracePeriodSeconds", 30)
        pre = c.get("lifecycle", {}).get("preStop", {})
        pause = 0
        if "exec" in pre and pre["exec"]["command"][0].endswith("sleep"):
            pause = int(pre["exec"]["command"][1])
        elif "sleep" in pre:
            pause = int(pre["sleep"]["seconds"])
        if grace < pause + drain + 5:
            problem(where, f"terminationGracePeriodSeconds {grace} leaves under 5 s after the preStop "
                           f"pause ({pause} s) and drain_timeout_s ({drain} s)")

    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        p = c.get(probe, {}).get("httpGet")
        if p is None:
            problem(where, f"no {probe} httpGet")
        elif isinstance(p["port"], str) and p["port"] not in ports:
            problem(where, f"{probe} port {p['port']!r} is no container port")

    uid = dockerfile_uid()
    sc = pod.get("securityContext", {})
    for k in ("runAsUser", "runAsGroup", "fsGroup"):
        if uid is not None and sc.get(k) != uid:
            problem(where, f"securityContext {k} {sc.get(k)} is not the image's USER {uid}")


def dockerfile_uid() -> int | None:
    users = re.findall(r"^USER\s+(\d+)", (DEPLOY / "Dockerfile").read_text(encoding="utf-8"), re.M)
    if not users:
        problem(DEPLOY / "Dockerfile", "no numeric USER")
        return None
    return int(users[-1])


# ------------------------------------------------------------------ compose


def seconds(v: str | int) -> float:
    if isinstance(v, (int, float)):
        return float(v)
    total = 0.0
    for n, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", v):
        total += float(n) * {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6}[unit]
    return total


def check_compose(known: set[str]) -> None:
    path = DEPLOY / "compose.yaml"
    docs = load_yaml_docs(path)
    if not docs:
        return
    compose = docs[0]
    services = compose.get("services", {})
    v = services.get("vigil")
    if v is None:
        problem(path, "no service vigil")
        return
    build = v.get("build", {})
    ctx = (DEPLOY / build.get("context", ".")).resolve()
    if not (ctx / build.get("dockerfile", "Dockerfile")).is_file():
        problem(path, "build.dockerfile does not exist under build.context")
    if not (ctx / ".dockerignore").is_file():
        problem(path, f"no .dockerignore in the build context {ctx}")
    mounts: dict[str, str] = {}
    named: set[str] = set()
    for m in v.get("volumes", []):
        src, target = m.split(":")[:2]
        if src.startswith((".", "/")):
            if not (DEPLOY / src).exists():
                problem(path, f"bind mount source {src} does not exist")
            mounts[target] = src
        else:
            named.add(target)
            if src not in (compose.get("volumes") or {}):
                problem(path, f"volume {src} is not declared under volumes")
    for s in v.get("secrets", []):
        name = s if isinstance(s, str) else s["source"]
        target = name if isinstance(s, str) else s.get("target", name)
        if name not in (compose.get("secrets") or {}):
            problem(path, f"secret {name} is not declared under secrets")
        mounts[str(PurePosixPath("/run/secrets") / target)] = f"secret {name}"
    config_path = flag(v.get("command", []), "--config") or "/etc/vigil/vigil.toml"
    if config_path not in mounts:
        problem(path, f"--config {config_path} is not mounted")
        return
    cfg_file = DEPLOY / mounts[config_path]
    if not cfg_file.is_file():
        return  # reported above
    cfg = parse_toml(cfg_file.read_text(encoding="utf-8"), rel(cfg_file))
    if cfg is None:
        return
    check_keys(cfg, known, rel(cfg_file))
    for what, p in files_named(cfg):
        if p not in mounts:
            problem(rel(cfg_file), f"{what} {p} is not mounted in compose.yaml's vigil service")
    server = cfg.get("server", {})
    if server.get("data", "./vigil-data") not in named:
        problem(path, f"[server] data {server.get('data')} is not a named volume of the vigil service")
    if not cfg.get("tokens"):
        problem(rel(cfg_file), "no [[tokens]]: Vigil refuses to listen on 0.0.0.0 without one")
    drain = server.get("drain_timeout_s", 20)
    grace = seconds(v.get("stop_grace_period", "10s"))
    if grace < drain + 5:
        problem(path, f"stop_grace_period {grace:g}s leaves under 5 s after drain_timeout_s ({drain} s)")
    published = {str(p).rsplit(":", 1)[-1] for p in v.get("ports", [])}
    if str(port_of(server.get("listen", "127.0.0.1:7070"))) not in published:
        problem(path, "[server] listen's port is not published")
    for b in cfg.get("kafka", {}).get("brokers", "").split(","):
        host = b.strip().rsplit(":", 1)[0]
        if host and host not in services:
            problem(rel(cfg_file), f"Kafka broker {b} is not a compose service")
        elif host and (v.get("depends_on", {}).get(host, {}).get("condition") != "service_healthy"):
            problem(path, f"vigil does not depend on {host} with condition service_healthy")


def main() -> int:
    known = known_keys()
    example = DEPLOY / "vigil.example.toml"
    parse_toml(example.read_text(encoding="utf-8"), rel(example))
    check_kubernetes(known)
    check_compose(known)
    for p in PROBLEMS:
        print(p)
    return 1 if PROBLEMS else 0


if __name__ == "__main__":
    sys.exit(main())
