#!/usr/bin/env python3
"""Check that the JSON examples in a Markdown file match Vigil's JSON Schemas.

Usage:
    python3 tests/py/validate_readme.py README.md [--vectors PATH]

An example is a fenced ```json block whose previous non-blank line is one of

    <!-- schema: event -->
    <!-- schema: receipt -->
    <!-- schema: posture -->

It is validated against schemas/vigil.event.v1.schema.json,
schemas/vigil.receipt.v1.schema.json or schemas/vigil.posture.v1.schema.json
(found relative to this script). One line is printed per example: `ok KIND
FILE:LINE`, or `FAIL KIND FILE:LINE: ...` with the first error. The file
must hold at least one example of each kind (of each kind named by --only,
when given).

With --vectors PATH (the contract's known-answer file, contract-v1.json) the
schemas are also checked against it: every events[*].event and
log.entries[*].event must be a valid event, every log.entries[*].body a valid
receipt (bare, and as served with leaf_hash and chain), every negative case
expected to be `rejected:schema` must be an INVALID event (this includes "time
with an offset instead of Z"), and every negative case refused only for a
key or signature reason must be a VALID event (the schema is not too strict).

Exit status: 0 all valid; 1 something invalid or missing; 2 usage error
(bad arguments, unreadable file, missing jsonschema package).
"""

import argparse
import functools
import json
import re
import sys
from pathlib import Path

try:
    from jsonschema import Draft202012Validator, ValidationError, validators
    from jsonschema.exceptions import best_match
except ImportError:
    print("validate_readme: the jsonschema package is missing: pip install jsonschema",
          file=sys.stderr)
    sys.exit(2)

SCHEMA_DIR = Path(__file__).resolve().parent.parent.parent / "schemas"
SCHEMA_FILES = {
    "event": "vigil.event.v1.schema.json",
    "receipt": "vigil.receipt.v1.schema.json",
    "posture": "vigil.posture.v1.schema.json",
    "ocsf_finding": "ocsf/detection_finding.schema.json",
    "ocsf_api_activity": "ocsf/api_activity.schema.json",
}
TAG = re.compile(r"^\s*<!--\s*schema:\s*(\S+)\s*-->\s*$")
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([^\s`]*)")

# Negative vectors refused for a reason the schema cannot see (keys,
# signatures): the event itself must be schema-valid.
NON_SCHEMA_VERDICTS = {
    "rejected:unknown_key", "rejected:bad_signature", "rejected:key_not_valid_yet",
    "rejected:key_expired", "rejected:key_revoked", "rejected:clock_skew",
    "rejected:agent_not_active", "rejected:conflict",
}


class UsageError(Exception):
    """Bad input from the caller: reported and answered with exit status 2."""


# --- Validation with JSON Schema (ECMA-262) regex semantics -----------------
#
# Python's `re` differs from ECMA-262 in two ways that matter for our
# patterns: `$` also matches before a trailing newline, and `\d` matches any
# Unicode digit. So "agent\n" would pass ^[...]{1,128}$ here but nowhere
# else. We translate `$` (outside character classes) to `\Z` and compile
# with re.ASCII so that this checker agrees with other validators.

@functools.lru_cache(maxsize=None)
def ecma_regex(pattern):
    out, i, in_class = [], 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            out.append(pattern[i:i + 2])
            i += 2
            continue
        if c == "[" and not in_class:
            in_class = True
        elif c == "]" and in_class:
            in_class = False
        elif c == "$" and not in_class:
            c = r"\Z"
        out.append(c)
        i += 1
    return re.compile("".join(out), re.ASCII)


def ecma_pattern(validator, pattern, instance, schema):
    if validator.is_type(instance, "string") and not ecma_regex(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


EcmaValidator = validators.extend(Draft202012Validator, {"pattern": ecma_pattern})


def load_validators():
    out = {}
    for kind, name in SCHEMA_FILES.items():
        path = SCHEMA_DIR / name
        try:
            schema = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise UsageError(f"cannot read schema {path}: {e}") from e
        Draft202012Validator.check_schema(schema)
        out[kind] = EcmaValidator(schema)
    return out


def first_error(validator, instance):
    """The most relevant error as one line, or None when the instance is valid."""
    err = best_match(validator.iter_errors(instance))
    if err is None:
        return None
    where = "/" + "/".join(str(p) for p in err.absolute_path)
    return f"at {where}: {err.message}"


def parse_strict_json(text):
    """Parse JSON, refusing what I-JSON refuses that Python would let through."""
    def no_duplicates(pairs):
        seen = {}
        for k, v in pairs:
            if k in seen:
                raise ValueError(f"duplicate member name {k!r}")
            seen[k] = v
        return seen

    def no_constants(name):
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, object_pairs_hook=no_duplicates, parse_constant=no_constants)


# --- Markdown examples ------------------------------------------------------

def find_examples(lines):
    """Yield (kind, line number of the opening fence, JSON text or None, problem)."""
    pending = None  # (kind, line number) of a tag waiting for its code block
    i = 0
    while i < len(lines):
        line = lines[i]
        tag = TAG.match(line)
        fence = FENCE.match(line)
        if tag:
            if pending:
                yield pending[0], pending[1], None, "tag not followed by a ```json block"
            pending = (tag.group(1), i + 1)
        elif fence:
            # Skip to the closing fence: same character, at least as long.
            marker, info = fence.group(1), fence.group(2).lower()
            start = i + 1
            j = start
            while j < len(lines) and not (
                lines[j].strip().startswith(marker[0] * len(marker))
                and set(lines[j].strip()) == {marker[0]}
            ):
                j += 1
            if pending:
                kind, _ = pending
                if info != "json":
                    yield kind, i + 1, None, f"tagged block is {info or 'untyped'}, not json"
                elif j >= len(lines):
                    yield kind, i + 1, None, "code block is not closed"
                else:
                    yield kind, i + 1, "\n".join(lines[start:j]), None
                pending = None
            i = j
        elif line.strip() and pending:
            yield pending[0], pending[1], None, "tag not followed by a ```json block"
            pending = None
        i += 1
    if pending:
        yield pending[0], pending[1], None, "tag not followed by a ```json block"


def check_markdown(path, checkers, required):
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read {path}: {e}") from e
    ok = True
    counts = {kind: 0 for kind in required}
    for kind, lineno, text, problem in find_examples(lines):
        where = f"{path}:{lineno}"
        if kind not in checkers:
            problem = f"unknown schema {kind!r} (use one of: {', '.join(checkers)})"
        elif problem is None:
            counts[kind] = counts.get(kind, 0) + 1
            try:
                problem = first_error(checkers[kind], parse_strict_json(text))
            except ValueError as e:
                problem = f"not valid JSON: {e}"
        if problem:
            ok = False
            print(f"FAIL {kind} {where}: {problem}")
        else:
            print(f"ok {kind} {where}")
    for kind, n in counts.items():
        if n == 0:
            ok = False
            print(f"FAIL {path}: no example tagged <!-- schema: {kind} -->")
    return ok


# --- Self-check against the contract's vectors --------------------------------

def check_vectors(path, checkers):
    try:
        vectors = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read vectors {path}: {e}") from e
    try:
        return _check_vectors(path, vectors, checkers)
    except (KeyError, TypeError, IndexError, ValueError) as e:
        raise UsageError(f"vectors {path} do not have the contract-v1.json layout: {e!r}") from e


def _check_vectors(path, vectors, checkers):
    ok = True

    def expect(kind, where, instance, valid):
        nonlocal ok
        problem = first_error(checkers[kind], instance)
        if valid and problem:
            ok = False
            print(f"FAIL {kind} {where}: {problem}")
        elif not valid and not problem:
            ok = False
            print(f"FAIL {kind} {where}: valid, but the vector says it must be refused")
        else:
            print(f"ok {kind} {where}" + ("" if valid else " (invalid, as expected)"))

    for i, e in enumerate(vectors["events"]):
        expect("event", f"{path}:events[{i}].event", e["event"], True)
    for i, e in enumerate(vectors["log"]["entries"]):
        expect("event", f"{path}:log.entries[{i}].event", e["event"], True)
        expect("receipt", f"{path}:log.entries[{i}].body", e["body"], True)
        served = dict(e["body"], leaf_hash=e["leaf_hash"], chain=e["chain"])
        expect("receipt", f"{path}:log.entries[{i}].body+leaf_hash+chain", served, True)

    saw_offset_case = False
    for i, n in enumerate(vectors["negative"]):
        where = f"{path}:negative[{i}] ({n['why']})"
        if n["expect"] == ["rejected:schema"]:
            saw_offset_case |= n["why"] == "time with an offset instead of Z"
            expect("event", where, json.loads(n["raw"]), False)
        elif set(n["expect"]) <= NON_SCHEMA_VERDICTS:
            expect("event", where, json.loads(n["raw"]), True)
    if not saw_offset_case:
        ok = False
        print(f"FAIL {path}: negative case 'time with an offset instead of Z' "
              "(expect rejected:schema) not found")
    return ok


def main():
    parser = argparse.ArgumentParser(
        description="Validate tagged JSON examples in a Markdown file against Vigil's schemas.")
    parser.add_argument("markdown", help="Markdown file, e.g. README.md")
    parser.add_argument("--vectors", metavar="PATH",
                        help="also self-check the schemas against contract-v1.json")
    parser.add_argument("--only", metavar="KINDS",
                        help="comma-separated kinds the file must hold (default: all)")
    args = parser.parse_args()  # exits 2 on a usage error
    try:
        checkers = load_validators()
        required = args.only.split(",") if args.only else list(checkers)
        unknown = [k for k in required if k not in checkers]
        if unknown:
            raise UsageError(f"unknown kinds in --only: {', '.join(unknown)}")
        ok = check_markdown(args.markdown, checkers, required)
        if args.vectors:
            ok = check_vectors(args.vectors, checkers) and ok
    except UsageError as e:
        print(f"validate_readme: {e}", file=sys.stderr)
        return 2
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
