#!/usr/bin/env python3
"""Self-test for tests/py/tlog_client.py; needs no Vigil server and no cargo.

Run:
    python3 tests/py/test_tlog_client.py

It builds tiled logs on disk in a temporary directory with a small tile
writer of its own (written separately from the client: it computes the tree
bottom-up, level by level, and the root with the "pair adjacent nodes, carry
the odd one up" formulation of the RFC 9162 tree rather than the client's
top-down recursion), signs checkpoints with fresh Ed25519 keys, and runs the
client on them. It covers:

* tile index path encoding (1234067 -> x001/x234/067, 0 -> 000,
  1000 -> x001/000, and agreement with the writer's encoder on many values);
* the tile set of the spec's examples (size 70000: 273 full level-0 tiles, a
  partial of width 112, one full level-1 tile, a partial level-1 of width 17,
  a partial level-2 of width 1; size 256: one full level-0 tile and a partial
  level-1 tile of width 1);
* known answers from tests/data/contract-v1.json: the "merkle" roots for
  0..9 leaves and every inclusion path, reproduced from tiles by the client;
  the "log" checkpoints for sizes 4 and 7 re-created byte for byte by the
  writer from the contract's key seed and verified by the client with the
  contract's verifier key; the inclusion path inside "tlog_proof_index_3";
* end-to-end client runs (directory source, with --entries and --inclusion)
  for sizes 0, 1, 255, 256, 257, 65536+300 and 70000;
* tampering: one flipped byte in a full level-0 tile, in an entry bundle, in
  a full level-1 tile, in partial tiles, and in the checkpoint makes the
  client exit 1; wrong or foreign keys, a missing tile, unknown extra
  signatures, malformed keys and missing sources give the documented results;
* the partial-tile fallback to a full tile;
* HTTP sources: the same directory served by a stdlib static file server,
  once plainly and once gzip-encoding every answer (checking that the client
  asked with Accept-Encoding: gzip, identity).

Exit status 0 when all assertions pass.
"""

import base64
import contextlib
import gzip
import hashlib
import http.server
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

HERE = os.path.dirname(os.path.abspath(__file__))
CLIENT = os.path.join(HERE, "tlog_client.py")
CONTRACT = os.path.join(HERE, "..", "data", "contract-v1.json")
sys.path.insert(0, HERE)
import tlog_client as client  # noqa: E402


# --------------------------------------------------------------------------
# Independent reference implementation (writer side)
# --------------------------------------------------------------------------

def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def ref_leaf(entry: bytes) -> bytes:
    """Leaf hash, RFC 9162: SHA-256(0x00 || entry)."""
    return sha256(b"\x00" + entry)


def ref_root_of_nodes(nodes) -> bytes:
    """RFC 9162 MTH of already-hashed nodes, computed bottom-up.

    Pair adjacent nodes left to right; an unpaired last node is carried up
    unchanged. This builds the same tree as the RFC's "split at the largest
    power of two" recursion, but by a different route.
    """
    if not nodes:
        return sha256(b"")
    layer = list(nodes)
    while len(layer) > 1:
        nxt = [sha256(b"\x01" + layer[i] + layer[i + 1]) for i in range(0, len(layer) - 1, 2)]
        if len(layer) % 2:
            nxt.append(layer[-1])
        layer = nxt
    return layer[0]


def ref_encode_index(n: int) -> str:
    """Tile index path encoding, done with string slicing."""
    digits = str(n)
    digits = digits.zfill(-(-len(digits) // 3) * 3)
    chunks = [digits[i:i + 3] for i in range(0, len(digits), 3)]
    return "/".join(["x" + c for c in chunks[:-1]] + [chunks[-1]])


def ref_tile_file(directory, level, n, width):
    rel = "tile/%s/%s" % (level, ref_encode_index(n))
    if width != 256:
        rel += ".p/%d" % width
    return os.path.join(directory, *rel.split("/"))


def write_file(path, data: bytes):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


class Signer:
    """An Ed25519 signed-note signer for key name `name`."""

    def __init__(self, name, private_key=None):
        self.name = name
        self.sk = private_key or Ed25519PrivateKey.generate()
        self.pk = self.sk.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.key_id = sha256(name.encode() + b"\x0a\x01" + self.pk)[:4]

    def vkey(self) -> str:
        return "%s+%s+%s" % (self.name, self.key_id.hex(),
                             base64.b64encode(b"\x01" + self.pk).decode())

    def signature_line(self, text: str) -> str:
        sig = self.sk.sign(text.encode())
        return "\u2014 %s %s\n" % (self.name, base64.b64encode(self.key_id + sig).decode())

    def sign(self, text: str) -> str:
        return text + "\n" + self.signature_line(text)


def checkpoint_text(origin, size, root) -> str:
    return "%s\n%d\n%s\n" % (origin, size, base64.b64encode(root).decode())


def write_tiled_log(directory, entries, signer, origin=None):
    """Write entry bundles, all Merkle tiles and a signed checkpoint.

    Returns the root hash. Layout: <dir>/checkpoint, <dir>/tile/<L>/<N>[.p/<W>],
    <dir>/tile/entries/<N>[.p/<W>].
    """
    origin = origin or signer.name
    for start in range(0, len(entries), 256):
        chunk = entries[start:start + 256]
        blob = b"".join(len(e).to_bytes(2, "big") + e for e in chunk)
        write_file(ref_tile_file(directory, "entries", start // 256, len(chunk)), blob)
    hashes = [ref_leaf(e) for e in entries]
    level = 0
    while hashes:
        for start in range(0, len(hashes), 256):
            chunk = hashes[start:start + 256]
            write_file(ref_tile_file(directory, level, start // 256, len(chunk)), b"".join(chunk))
        full = len(hashes) - len(hashes) % 256
        hashes = [ref_root_of_nodes(hashes[i:i + 256]) for i in range(0, full, 256)]
        level += 1
    root = ref_root_of_nodes([ref_leaf(e) for e in entries])
    write_file(os.path.join(directory, "checkpoint"),
               signer.sign(checkpoint_text(origin, len(entries), root)).encode())
    return root


def make_entries(count, seed=0):
    """Deterministic entries of varied lengths, including empty ones."""
    out = []
    for i in range(count):
        if i % 97 == 5:
            out.append(b"")
        elif i % 131 == 7:
            out.append(b"long-%d-%d-" % (seed, i) + bytes(range(256)) * 4)
        else:
            out.append(b"entry %d/%d" % (seed, i))
    return out


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------

def run_in_process(*args):
    """Run tlog_client.main() in this process; return (status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = client.main(list(args))
        except SystemExit as e:  # argparse usage errors
            status = e.code
    return status, out.getvalue(), err.getvalue()


def run_subprocess(*args):
    """Run the client as a separate program; return (status, stdout, stderr)."""
    p = subprocess.run([sys.executable, CLIENT] + list(args), capture_output=True, text=True,
                       timeout=120)
    return p.returncode, p.stdout, p.stderr


def check(directory, vkey, *extra, expect=0, runner=run_in_process, source=None):
    """Run the client with --json on `directory`; assert the exit status; return summary."""
    src = source or ("file:" + directory)
    status, out, err = runner("--source", src, "--vkey", vkey, "--json", *extra)
    assert status == expect, "exit %r, expected %r\nstdout: %s\nstderr: %s" % (
        status, expect, out[-3000:], err[-3000:])
    summary = json.loads(out) if out.strip() else None
    if summary is not None:
        assert summary["ok"] == (expect == 0), summary
    return summary


@contextlib.contextmanager
def flipped(path, offset=0):
    """Flip one bit of one byte of `path` for the duration of the block."""
    with open(path, "rb") as f:
        original = f.read()
    data = bytearray(original)
    data[offset] ^= 0x01
    with open(path, "wb") as f:
        f.write(data)
    try:
        yield
    finally:
        with open(path, "wb") as f:
            f.write(original)


@contextlib.contextmanager
def replaced(path, data: bytes):
    """Replace a file's content (or remove the file if data is None) temporarily."""
    with open(path, "rb") as f:
        original = f.read()
    if data is None:
        os.remove(path)
    else:
        with open(path, "wb") as f:
            f.write(data)
    try:
        yield
    finally:
        with open(path, "wb") as f:
            f.write(original)


def tiles_on_disk(directory):
    """Relative paths of all Merkle tiles (not bundles) under <dir>/tile."""
    out = []
    base = os.path.join(directory, "tile")
    for root, _dirs, files in os.walk(base):
        for name in files:
            rel = os.path.relpath(os.path.join(root, name), directory).replace(os.sep, "/")
            if not rel.startswith("tile/entries/"):
                out.append(rel)
    return sorted(out)


# --------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------

def test_path_encoding():
    assert client.encode_index(1234067) == "x001/x234/067"
    assert client.encode_index(0) == "000"
    assert client.encode_index(1000) == "x001/000"
    assert client.encode_index(999) == "999"
    assert client.encode_index(1000000) == "x001/x000/000"
    for n in list(range(0, 3000)) + [10 ** k + d for k in range(3, 13) for d in (-1, 0, 1)]:
        assert client.encode_index(n) == ref_encode_index(n), n
    assert client.tile_path(0, 1234067) == "tile/0/x001/x234/067"
    assert client.tile_path(2, 1000, 17) == "tile/2/x001/000.p/17"
    assert client.tile_path("entries", 5, 255) == "tile/entries/005.p/255"


def test_tile_sets():
    tiles = list(client.tiles_for_size(70000))
    by_level = {}
    for level, n, width in tiles:
        by_level.setdefault(level, []).append((n, width))
    assert sorted(by_level) == [0, 1, 2]
    assert sum(1 for _n, w in by_level[0] if w == 256) == 273
    assert [(n, w) for n, w in by_level[0] if w != 256] == [(273, 112)]
    assert by_level[1] == [(0, 256), (1, 17)]
    assert by_level[2] == [(0, 1)]
    assert list(client.tiles_for_size(256)) == [(0, 0, 256), (1, 0, 1)]
    assert list(client.tiles_for_size(0)) == []
    assert list(client.tiles_for_size(1)) == [(0, 0, 1)]
    assert list(client.tiles_for_size(65536)) == (
        [(0, n, 256) for n in range(256)] + [(1, 0, 256), (2, 0, 1)])


def test_contract_merkle(tmp):
    contract = json.load(open(CONTRACT))
    m = contract["merkle"]
    data = [x.encode() for x in m["leaf_data"]]
    for entry, want in zip(data, m["leaf_hashes"]):
        assert client.leaf_hash(entry).hex() == want
        assert ref_leaf(entry).hex() == want
    signer = Signer("kat.example/merkle")
    trees = {}
    for size_s, want_root in m["roots"].items():
        size = int(size_s)
        d = os.path.join(tmp, "kat-merkle-%d" % size)
        assert write_tiled_log(d, data[:size], signer).hex() == want_root
        assert client.mth_of_hashes([ref_leaf(e) for e in data[:size]]).hex() == want_root
        tree = client.TiledTree(client.DirectorySource(d), size)
        tree.load()
        assert tree.root().hex() == want_root, size
        trees[size] = tree
        summary = check(d, signer.vkey(), "--entries", *(
            ["--inclusion"] + [str(i) for i in range(size)] if size else []))
        assert summary["root_hex"] == want_root
        assert summary["entries_checked"] == size
    assert len(m["inclusion"]) > 0
    for case in m["inclusion"]:
        index, size = case["index"], case["size"]
        tree = trees[size]
        proof = tree.inclusion_proof(index)
        assert [p.hex() for p in proof] == case["path"], case
        root = bytes.fromhex(m["roots"][str(size)])
        leaf = bytes.fromhex(m["leaf_hashes"][index])
        assert client.verify_inclusion(index, size, leaf, proof, root)
        # Negative checks of the 2.1.3.2 verifier.
        assert not client.verify_inclusion(index, size, leaf, proof + [leaf], root)
        assert not client.verify_inclusion(size, size, leaf, proof, root)
        if proof:
            bad = [bytes([proof[0][0] ^ 1]) + proof[0][1:]] + proof[1:]
            assert not client.verify_inclusion(index, size, leaf, bad, root)
            assert not client.verify_inclusion(index, size, leaf, proof[:-1], root)
        wrong_leaf = bytes.fromhex(m["leaf_hashes"][(index + 1) % len(m["leaf_hashes"])])
        assert not client.verify_inclusion(index, size, wrong_leaf, proof, root)


def test_contract_log(tmp):
    contract = json.load(open(CONTRACT))
    log = contract["log"]
    seed = bytes.fromhex(log["log_key_seed_hex"])
    signer = Signer(log["origin"], Ed25519PrivateKey.from_private_bytes(seed))
    assert signer.vkey() == log["verifier_key"]
    assert signer.key_id.hex() == log["key_id_hex"]
    entries = [e["body_jcs"].encode() for e in log["entries"]]
    for e, rec in zip(entries, log["entries"]):
        assert client.leaf_hash(e).hex() == rec["leaf_hash"]
    for size, key in ((4, "checkpoint_4"), (7, "checkpoint_7")):
        d = os.path.join(tmp, "kat-log-%d" % size)
        write_tiled_log(d, entries[:size], signer)
        with open(os.path.join(d, "checkpoint"), encoding="utf-8") as f:
            assert f.read() == log[key], "writer's checkpoint differs from contract %s" % key
        # Verify the contract's own bytes with the contract's verifier key.
        body = client.verify_note(log[key].encode(), client.VerifierKey(log["verifier_key"]))
        origin, csize, root, ext = client.parse_checkpoint_body(body)
        assert (origin, csize, ext) == (log["origin"], size, [])
        summary = check(d, log["verifier_key"], "--entries", "--inclusion",
                        *[str(i) for i in range(size)])
        assert summary["root_hex"] == root.hex()
        assert all(r["ok"] for r in summary["inclusion"])
    # tlog-proof for index 3 in the size-7 tree: the lines after "index 3"
    # up to the blank line are the inclusion path.
    lines = log["tlog_proof_index_3"].split("\n")
    at = lines.index("index 3")
    path = []
    for line in lines[at + 1:]:
        if not line:
            break
        path.append(base64.b64decode(line))
    tree = client.TiledTree(client.DirectorySource(os.path.join(tmp, "kat-log-7")), 7)
    tree.load()
    assert tree.inclusion_proof(3) == path


def test_sizes(tmp):
    """End-to-end runs for the sizes of the brief; returns the 70000 log dir."""
    signer = Signer("example.test/sizes")
    expected_tiles = {0: 0, 1: 1, 255: 1, 256: 2, 257: 3, 65836: 257 + 1 + 1 + 1 + 1,
                      70000: 273 + 1 + 1 + 1 + 1}
    dirs = {}
    for size in (0, 1, 255, 256, 257, 65536 + 300, 70000):
        d = os.path.join(tmp, "log-%d" % size)
        entries = make_entries(size, seed=size)
        root = write_tiled_log(d, entries, signer)
        if size == 0:
            assert root == hashlib.sha256(b"").digest()
        assert len(tiles_on_disk(d)) == expected_tiles[size], (size, len(tiles_on_disk(d)))
        incl = sorted({0, size // 2, size - 1, 255, 256, 65535, 65536, 69999} & set(range(size)))
        extra = ["--inclusion"] + [str(i) for i in incl] if incl else []
        summary = check(d, signer.vkey(), "--entries", *extra)
        assert summary["origin"] == signer.name
        assert summary["size"] == size
        assert summary["root_hex"] == root.hex()
        assert summary["tiles_fetched"] == expected_tiles[size]
        assert summary["entries_checked"] == size
        assert summary["bundles_fetched"] == -(-size // 256)
        assert [r["index"] for r in summary["inclusion"]] == incl
        assert all(r["ok"] for r in summary["inclusion"])
        assert summary["warnings"] == []
        dirs[size] = (d, signer)
    # The spec's example layout for 70000, as file names.
    names = tiles_on_disk(dirs[70000][0])
    assert "tile/0/273.p/112" in names and "tile/0/272" in names
    assert "tile/1/000" in names and "tile/1/001.p/17" in names and "tile/2/000.p/1" in names
    # Size 0 over a subprocess (real CLI), and the human-readable output.
    d0, s0 = dirs[0]
    summary = check(d0, s0.vkey(), "--entries", runner=run_subprocess)
    assert summary["root_hex"] == hashlib.sha256(b"").hexdigest()
    assert summary["tiles_fetched"] == 0
    check(d0, s0.vkey(), "--inclusion", "0", expect=1)
    status, out, _ = run_subprocess("--source", dirs[257][0], "--vkey", s0.vkey())
    assert status == 0 and "RESULT: OK" in out, out
    return dirs


def test_tampering(dirs):
    d, signer = dirs[70000]
    vkey = signer.vkey()
    cases = [
        # (file, offset, extra args, why)
        ("tile/0/000", 5, [], "full level-0 tile: caught by level-1 consistency"),
        ("tile/0/100", 8191, [], "last byte of a full level-0 tile"),
        ("tile/1/000", 100, [], "full level-1 tile: caught by level-1/level-0 consistency"),
        ("tile/0/273.p/112", 0, [], "partial level-0 tile: root mismatch"),
        ("tile/1/001.p/17", 31, [], "partial level-1 tile: root and consistency"),
        ("tile/2/000.p/1", 0, [], "partial level-2 tile: root mismatch"),
        ("tile/entries/005", 10, ["--entries"], "full entry bundle"),
        ("tile/entries/273.p/112", 2, ["--entries"], "partial entry bundle"),
        ("tile/entries/000", 0, ["--entries"], "bundle length prefix"),
    ]
    for rel, offset, extra, why in cases:
        path = os.path.join(d, *rel.split("/"))
        with flipped(path, offset):
            summary = check(d, vkey, *extra, expect=1)
            assert summary["errors"], why
    # Through the real CLI, too.
    with flipped(os.path.join(d, "tile", "0", "000"), 0):
        check(d, vkey, expect=1, runner=run_subprocess)
    # Without --entries a bundle is not read, so a corrupt bundle goes unnoticed.
    with flipped(os.path.join(d, "tile", "entries", "005"), 10):
        check(d, vkey, expect=0)
    # A truncated tile and a missing tile.
    tile = os.path.join(d, "tile", "0", "007")
    with replaced(tile, open(tile, "rb").read()[:-1]):
        check(d, vkey, expect=1)
    with replaced(tile, None):
        summary = check(d, vkey, expect=1)
        assert any("missing" in e for e in summary["errors"]), summary
    # A bundle with a trailing byte.
    bundle = os.path.join(d, "tile", "entries", "003")
    with replaced(bundle, open(bundle, "rb").read() + b"\x00"):
        check(d, vkey, "--entries", expect=1)
    # Checkpoint tampering: any byte of the body breaks the signature.
    cp = os.path.join(d, "checkpoint")
    original = open(cp, "rb").read()
    for offset in (0, original.index(b"\n") + 1, original.index(b"\n\n") - 1):
        with flipped(cp, offset):
            check(d, vkey, expect=1)
    # A validly signed checkpoint whose root is not this tree's (the root of
    # the 65836-entry log claimed at size 70000) fails the root check.
    d2, _ = dirs[65836]
    other_root = open(os.path.join(d2, "checkpoint"), encoding="utf-8").read().split("\n")[2]
    forged = signer.sign("%s\n70000\n%s\n" % (signer.name, other_root)).encode()
    with replaced(cp, forged):
        summary = check(d, vkey, expect=1)
        assert any("root" in e for e in summary["errors"]), summary


def test_checkpoint_keys(tmp, dirs):
    d, signer = dirs[257]
    cp = os.path.join(d, "checkpoint")
    original = open(cp, encoding="utf-8").read()
    body = original[:original.rindex("\n\n") + 1]
    # Verifier keys whose base64 contains "+" (the name cannot) must parse.
    for i in range(64):
        s = Signer("plus.example/%d" % i)
        if "+" in s.vkey().split("+", 2)[2]:
            assert client.VerifierKey(s.vkey()).key_id == s.key_id
            break
    else:
        raise AssertionError("no key with '+' in its base64 found")
    # A different key with the same name: its ID differs, so the only
    # signature is from an unknown key -> rejected.
    check(d, Signer(signer.name).vkey(), expect=1)
    # A key with another name: origin mismatch / no signature by that key.
    other = Signer("other.example/log")
    check(d, other.vkey(), expect=1)
    # Extra signatures by unknown keys are ignored, in any order.
    cosigned = body + "\n" + other.signature_line(body) + signer.signature_line(body)
    with replaced(cp, cosigned.encode()):
        check(d, signer.vkey(), expect=0)
    # Same name and key ID but a bad signature -> rejected.
    sig_line = signer.signature_line(body)
    raw = bytearray(base64.b64decode(sig_line.split(" ")[2]))
    raw[10] ^= 1
    bad = body + "\n\u2014 %s %s\n" % (signer.name, base64.b64encode(bytes(raw)).decode())
    with replaced(cp, bad.encode()):
        check(d, signer.vkey(), expect=1)
    # Origin must equal the key name even when the key signed it.
    wrong_origin = signer.sign(body.replace(signer.name, "elsewhere.example/log", 1))
    with replaced(cp, wrong_origin.encode()):
        summary = check(d, signer.vkey(), expect=1)
        assert any("origin" in e for e in summary["errors"]), summary
    # A validly signed but absurd size fails at the first missing tile.
    with replaced(cp, signer.sign(body.replace("\n257\n", "\n%d\n" % 2 ** 62, 1)).encode()):
        summary = check(d, signer.vkey(), expect=1)
        assert any("missing" in e for e in summary["errors"]), summary
    # Non-canonical size, missing trailing newline, control characters.
    lines = body.split("\n")
    for text in ("%s\n0%s\n%s\n" % (lines[0], lines[1], lines[2]),
                 "%s\n%s\n%s\n\n" % (lines[0], lines[1], lines[2])):
        with replaced(cp, signer.sign(text).encode()):
            check(d, signer.vkey(), expect=1)
    with replaced(cp, original.rstrip("\n").encode()):
        check(d, signer.vkey(), expect=1)
    with replaced(cp, signer.sign(body.replace("\n", "\r\n", 1)).encode()):
        check(d, signer.vkey(), expect=1)
    # Usage and I/O errors -> exit 2.
    status, _, _ = run_in_process("--source", d, "--vkey", "not-a-key")
    assert status == 2
    vk = signer.vkey()
    name, kid, b64 = vk.split("+", 2)
    status, _, _ = run_in_process("--source", d, "--vkey", "%s+%s+%s" % (name, "00000000", b64))
    assert status == 2
    status, _, _ = run_in_process("--source", os.path.join(tmp, "does-not-exist"), "--vkey", vk)
    assert status == 2
    status, _, _ = run_in_process("--source", d, "--vkey", vk, "--inclusion", "-1")
    assert status == 2
    empty = os.path.join(tmp, "empty-dir")
    os.makedirs(empty)
    status, out, _ = run_subprocess("--source", "file://" + empty, "--vkey", vk, "--json")
    assert status == 2 and json.loads(out)["ok"] is False
    # Inclusion index beyond the tree.
    check(d, vk, "--inclusion", "257", expect=1)


def test_partial_fallback(tmp):
    """A missing partial tile/bundle is replaced by the first W of the full one."""
    signer = Signer("example.test/fallback")
    entries = make_entries(512, seed=9)
    small = os.path.join(tmp, "fb-300")
    big = os.path.join(tmp, "fb-512")
    write_tiled_log(small, entries[:300], signer)
    write_tiled_log(big, entries, signer)
    for kind in ("0", "entries"):
        os.remove(os.path.join(small, "tile", kind, "001.p", "44"))
        shutil.copy(os.path.join(big, "tile", kind, "001"), os.path.join(small, "tile", kind, "001"))
    summary = check(small, signer.vkey(), "--entries", "--inclusion", "299", "256")
    assert len(summary["warnings"]) == 2, summary
    assert summary["entries_checked"] == 300
    # A full tile that does not extend the partial one is caught.
    with flipped(os.path.join(small, "tile", "0", "001"), 32 * 10):
        check(small, signer.vkey(), expect=1)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class _GzipHandler(_QuietHandler):
    """Serves files gzip-encoded when the client accepts gzip; records headers."""
    seen_accept = []

    def do_GET(self):
        self.seen_accept.append(self.headers.get("Accept-Encoding", ""))
        path = self.translate_path(self.path)
        if not os.path.isfile(path):
            self.send_error(404)
            return
        with open(path, "rb") as f:
            data = f.read()
        accepted = [t.split(";")[0].strip() for t in self.headers.get("Accept-Encoding", "").split(",")]
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if "gzip" in accepted:
            data = gzip.compress(data)
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@contextlib.contextmanager
def serve(directory, handler):
    def factory(*args, **kwargs):
        return handler(*args, directory=directory, **kwargs)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), factory)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield "http://127.0.0.1:%d" % server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_http(dirs):
    d, signer = dirs[65836]
    with serve(d, _GzipHandler) as url:
        _GzipHandler.seen_accept.clear()
        summary = check(d, signer.vkey(), "--inclusion", "65835", "3", source=url + "/")
        assert summary["tiles_fetched"] == 261 and summary["inclusion"][1]["proof_len"] == 17
        assert _GzipHandler.seen_accept and all(
            a == "gzip, identity" for a in _GzipHandler.seen_accept), _GzipHandler.seen_accept
    d, signer = dirs[257]
    with serve(d, _GzipHandler) as url:
        summary = check(d, signer.vkey(), "--entries", source=url)
        assert summary["entries_checked"] == 257 and summary["bundles_fetched"] == 2
        with flipped(os.path.join(d, "tile", "entries", "000"), 7):
            check(d, signer.vkey(), "--entries", expect=1, source=url)
        with replaced(os.path.join(d, "tile", "0", "001.p", "1"), None):
            check(d, signer.vkey(), expect=1, source=url)
    with serve(d, _QuietHandler) as url:
        summary = check(d, signer.vkey(), "--entries", "--inclusion", "256",
                        source=url, runner=run_subprocess)
        assert summary["root_hex"] and summary["entries_checked"] == 257
    # Nothing listening -> I/O error, exit 2.
    with serve(d, _QuietHandler) as url:
        pass
    status, _, _ = run_in_process("--source", url, "--vkey", signer.vkey())
    assert status == 2


def main():
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="tlog-client-test-") as tmp:
        steps = [
            ("path encoding", lambda: test_path_encoding()),
            ("tile sets", lambda: test_tile_sets()),
            ("contract merkle KATs", lambda: test_contract_merkle(tmp)),
            ("contract log KATs", lambda: test_contract_log(tmp)),
        ]
        for name, fn in steps:
            fn()
            print("ok  %-28s %.2fs" % (name, time.time() - started))
        dirs = test_sizes(tmp)
        print("ok  %-28s %.2fs" % ("sizes 0..70000", time.time() - started))
        for name, fn in [
            ("tampering", lambda: test_tampering(dirs)),
            ("checkpoint keys", lambda: test_checkpoint_keys(tmp, dirs)),
            ("partial fallback", lambda: test_partial_fallback(tmp)),
            ("http sources", lambda: test_http(dirs)),
        ]:
            fn()
            print("ok  %-28s %.2fs" % (name, time.time() - started))
    print("all tlog_client self-tests passed in %.1fs" % (time.time() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
