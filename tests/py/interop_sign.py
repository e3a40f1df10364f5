#!/usr/bin/env python3
"""Sign vigil.event/v1 events without any Vigil code, to test interoperability.

Usage:
    python3 tests/py/interop_sign.py --seed-hex HEX --agent AGENT --kid KID \
        --count N [--jwks-out FILE] [--start-time 2026-11-25T10:00:00.000Z]

Prints N signed events as NDJSON on stdout. Signing follows CONTRACT.md
section 1 using only off-the-shelf libraries: the signature is Ed25519
(`cryptography`) over RFC 8785 JCS (`rfc8785`) of the event without its
`signature` member, encoded as base64url without padding.

Each line is printed the way a forwarder might pass it on: members in a
shuffled order, alternately compact and with json.dumps' default spacing,
alternately raw UTF-8 and \\u-escaped. None of that may change the
signature's validity. The `attributes` exercise JCS edge cases (number
formatting, -0, non-ASCII, UTF-16 key order).

With --jwks-out, the public key is written as a JWKS Vigil can load. The
public JWK is also printed on stderr.

Exit status: 0 done; 2 usage error or missing Python package.
"""

import argparse
import base64
import json
import os
import random
import re
import sys
from datetime import datetime, timedelta, timezone

try:
    import rfc8785
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
except ImportError as e:
    print(f"interop_sign: missing Python package ({e.name}): "
          "pip install cryptography rfc8785", file=sys.stderr)
    sys.exit(2)

ID = re.compile(r"[A-Za-z0-9._:@#/+=-]{1,128}", re.ASCII)
TIME = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?Z", re.ASCII)

# (action, resource template, sensitivity) cycled through by event number.
ACTIONS = [
    ("hr.lookup_employee", "hris://employees/E{n:04d}", "medium"),
    ("db.query", "postgres://hr/employees?row={n}", "low"),
    ("llm.chat", "llm://models/chat-large", "low"),
]


def b64url(data):
    """base64url without padding (RFC 4648 section 5), as the contract uses."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def format_time(t):
    """YYYY-MM-DDTHH:MM:SS.sssZ in UTC, the form Vigil writes."""
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def parse_time(text):
    """Parse an event time (literal Z, up to 9 fractional digits) to UTC."""
    m = TIME.fullmatch(text)
    if not m:
        raise ValueError(f"{text!r} is not like 2026-11-25T10:00:00.000Z")
    t = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    micros = int((m.group(2) or "0").ljust(9, "0")[:6])
    return t + timedelta(microseconds=micros)


def uuid7(t):
    """A UUIDv7 string built by hand: 48-bit Unix time in ms, version 7,
    12 random bits, variant 0b10, 62 random bits (RFC 9562 section 5.7)."""
    ms = int(t.timestamp() * 1000) & ((1 << 48) - 1)
    rand = int.from_bytes(os.urandom(10), "big")
    rand_a = rand >> 68 & 0xFFF
    rand_b = rand & ((1 << 62) - 1)
    value = ms << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def edge_case_attributes(i):
    """Attributes whose canonical form is easy to get wrong."""
    return {
        "text": "Zo\u00eb \u2013 \u6771\u4eac \U0001F600",  # "Zoë – 東京 😀"
        "ratio": 1.5,
        "huge": 1e21,        # JCS: 1e+21 (ECMAScript Number-to-String)
        "tiny": 1e-7,        # JCS: 1e-7
        "negative_zero": -0.0,  # JCS: 0
        # JCS sorts keys by UTF-16 code units, not code points or UTF-8
        # bytes: U+1F600 is the surrogate pair D83D DE00, so it sorts before
        # U+FB01 in JCS but after it in UTF-8. U+20AC sorts first either way.
        "utf16_order": {"\ufb01": "ligature", "\U0001F600": "grin", "\u20ac": "euro", "a": i},
        "empty": [],
        "yes": True,
        "no": False,
        "nothing": None,
    }


def make_event(i, start, agent, kid):
    """Event number i, without its signature."""
    occurred = start + timedelta(seconds=i)
    action, resource, sensitivity = ACTIONS[i % len(ACTIONS)]
    return {
        "spec": "vigil.event/v1",
        "event_id": uuid7(occurred),
        "occurred_at": format_time(occurred),
        "agent_id": agent,
        "key_id": kid,
        "correlation_id": f"py-corr-{i // 3}",
        "action": action,
        "principal": "interop.user@corp.example",
        "resource": resource.format(n=1000 + i),
        "sensitivity": sensitivity,
        "outcome": "denied" if i % 7 == 6 else "success",
        "bytes": 512 * (i + 1),
        "attributes": edge_case_attributes(i),
    }


def sign(event, key):
    """The event with its signature: Ed25519 over JCS(event)."""
    signed = dict(event)
    signed["signature"] = b64url(key.sign(rfc8785.dumps(event)))
    return signed


def forwarder_line(event, i, rng):
    """One NDJSON line with shuffled members and varying whitespace/escaping."""
    def shuffled(obj):
        if isinstance(obj, dict):
            items = [(k, shuffled(v)) for k, v in obj.items()]
            rng.shuffle(items)
            return dict(items)
        if isinstance(obj, list):
            return [shuffled(v) for v in obj]
        return obj

    separators = (",", ":") if i % 2 == 0 else None  # None: ", " and ": "
    return json.dumps(shuffled(event), separators=separators, ensure_ascii=i % 3 == 2)


def public_jwk(key, agent, kid):
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return {
        "kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64url(raw),
        "agent_id": agent, "role": "interop", "owner": "interop@example", "status": "active",
    }


def parse_args():
    p = argparse.ArgumentParser(
        description="Sign vigil.event/v1 events with rfc8785 + cryptography.")
    p.add_argument("--seed-hex", required=True, metavar="HEX",
                   help="32-byte Ed25519 seed as 64 hex digits")
    p.add_argument("--agent", required=True, metavar="AGENT",
                   help="agent_id of the events and the key")
    p.add_argument("--kid", required=True, metavar="KID",
                   help="key_id of the events, kid of the key")
    p.add_argument("--count", required=True, type=int, metavar="N",
                   help="number of events to print")
    p.add_argument("--jwks-out", metavar="FILE",
                   help="write the public key as a JWKS here")
    p.add_argument("--start-time", metavar="TIME",
                   help="occurred_at of the first event, like 2026-11-25T10:00:00.000Z "
                        "(default: now, UTC); each next event is one second later")
    args = p.parse_args()
    try:
        args.seed = bytes.fromhex(args.seed_hex)
    except ValueError:
        args.seed = b""
    if len(args.seed) != 32:
        p.error("--seed-hex must be exactly 64 hex digits (a 32-byte seed)")
    for flag, value in (("--agent", args.agent), ("--kid", args.kid)):
        if not ID.fullmatch(value):
            p.error(f"{flag} must be 1-128 characters from [A-Za-z0-9._:@#/+=-]")
    if args.agent == "vigil":
        p.error("--agent vigil is reserved for the pipeline")
    if args.count < 0:
        p.error("--count must be 0 or more")
    if args.start_time is None:
        args.start = datetime.now(timezone.utc)
    else:
        try:
            args.start = parse_time(args.start_time)
        except ValueError as e:
            p.error(f"--start-time: {e}")
    return args


def main():
    args = parse_args()  # exits 2 on a usage error
    key = Ed25519PrivateKey.from_private_bytes(args.seed)
    jwk = public_jwk(key, args.agent, args.kid)
    if args.jwks_out:
        try:
            with open(args.jwks_out, "w", encoding="utf-8") as f:
                json.dump({"keys": [jwk]}, f, indent=2)
                f.write("\n")
        except OSError as e:
            print(f"interop_sign: cannot write {args.jwks_out}: {e}", file=sys.stderr)
            return 2
    print(f"interop_sign: public JWK {json.dumps(jwk)}", file=sys.stderr)

    rng = random.Random()
    out = sys.stdout.buffer
    for i in range(args.count):
        event = sign(make_event(i, args.start, args.agent, args.kid), key)
        out.write(forwarder_line(event, i, rng).encode("utf-8") + b"\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
