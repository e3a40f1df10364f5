#!/usr/bin/env python3
"""Independent C2SP tlog-tiles client, written only from the public specs.

This client checks a tiled transparency log without using any Vigil code, so
that it is an independent check of what Vigil serves. It follows:

* c2sp.org/tlog-tiles   -- tile and entry-bundle paths and contents;
* c2sp.org/tlog-checkpoint -- the checkpoint note body;
* c2sp.org/signed-note  -- note format, Ed25519 signatures, key IDs;
* RFC 9162 section 2.1  -- Merkle Tree Hash, inclusion proofs (2.1.3.1) and
  their verification (2.1.3.2).

Usage:
    python3 tests/py/tlog_client.py --source URL_OR_DIR --vkey VKEY \\
        [--inclusion INDEX ...] [--entries] [--json]

``--source`` is either an HTTP(S) base URL (``http://127.0.0.1:8080`` or
``http://host/some/prefix``) or a directory laid out exactly like the URL
space (``file:/path/to/dir``, ``file:///path/to/dir`` or a plain existing
directory path): ``<dir>/checkpoint``, ``<dir>/tile/0/000``,
``<dir>/tile/entries/001.p/17``, ... Both go through the same code path; only
the byte fetcher differs. This shows that a copy of the log's tile directory
can be served by any static file server.

``--vkey`` is a signed-note verifier key,
``<name>+<8 hex key ID>+base64(0x01 || 32-byte Ed25519 public key)``.

What is checked:

1. The checkpoint is a well-formed signed note, carries a valid Ed25519
   signature by the verifier key (signatures by other keys are ignored; a
   signature by the known key that fails to verify rejects the note), and its
   origin equals the key name.
2. Every tile of the tree of the checkpoint's size is fetched: all full tiles
   at every level, plus the partial ``.p/W`` tile at the right edge of every
   level where ``floor(size / 256**l) mod 256 > 0``. Sizes are checked
   (8192 bytes for a full tile, 32*W for a partial one).
3. The root hash of the tree is recomputed from the tiles alone (using the
   highest-level hashes available, i.e. only the top of the tile pyramid and
   the right edge) and compared with the checkpoint root.
4. Mutual consistency: every hash in every level-l tile (l >= 1) equals the
   Merkle Tree Hash of the 256 hashes of the corresponding full tile at level
   l-1. Together with 3 this binds every level-0 hash to the signed root.
5. With ``--entries``: every entry bundle (full ones and the partial one) is
   fetched and parsed (big-endian uint16 length-prefixed entries); the number
   of entries must match the bundle width, and each entry's leaf hash
   SHA-256(0x00 || entry) must equal the corresponding level-0 tile hash.
6. With ``--inclusion I``: an RFC 9162 inclusion proof for leaf I in the
   checkpoint's tree is built from the tiles (2.1.3.1 PATH) and verified with
   the iterative algorithm of RFC 9162 section 2.1.3.2 against the checkpoint
   root.

If a partial tile or bundle is not found, the client falls back to the full
tile and uses its first W hashes/entries, as tlog-tiles allows (logs MAY
delete a partial tile once the full one exists). Such fallbacks are listed in
``warnings``.

Output: a human-readable report, or with ``--json`` one JSON object:
``{"origin", "size", "root_hex", "tiles_fetched", "entries_checked",
"inclusion": [{"index", "ok", "proof_len"}], "ok", "errors"}``
plus the informational keys ``bundles_fetched`` and ``warnings``.
``tiles_fetched`` counts Merkle tree tiles (``tile/<L>/...``) only; entry
bundles are counted in ``bundles_fetched``.

Exit status:
    0  everything verified;
    1  a verification failed (bad signature, wrong root, inconsistent tiles,
       malformed or missing tile/bundle that the checkpoint requires, entry
       hash mismatch, inclusion proof failure or index >= tree size, ...);
    2  usage error (bad arguments, malformed --vkey, unknown source) or I/O
       error (checkpoint not retrievable, connection failure, HTTP status other
       than 200/404, unreadable file).

Only the Python standard library and ``cryptography`` (for Ed25519) are used.
"""

import argparse
import base64
import binascii
import gzip
import hashlib
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

try:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
except ImportError as e:  # pragma: no cover - environment problem
    print(f"tlog_client: missing Python package ({e.name}): pip install cryptography",
          file=sys.stderr)
    sys.exit(2)

HASH_SIZE = 32
TILE_WIDTH = 256
FULL_TILE_BYTES = TILE_WIDTH * HASH_SIZE  # 8192
EMPTY_ROOT = hashlib.sha256(b"").digest()
EM_DASH = "\u2014"
MAX_SIGNATURE_LINES = 100  # signed-note: MUST accept at least 16
MAX_CHECKPOINT_BYTES = 1 << 20


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------

class UsageError(Exception):
    """Bad command-line input (exit status 2)."""


class FetchError(Exception):
    """An I/O problem other than "not found" (exit status 2)."""


class NotFound(Exception):
    """The resource does not exist (HTTP 404 / no such file)."""


class VerificationError(Exception):
    """Something the log served does not verify (exit status 1)."""


# --------------------------------------------------------------------------
# RFC 9162 section 2.1 hashing
# --------------------------------------------------------------------------

def leaf_hash(entry: bytes) -> bytes:
    """RFC 9162 leaf hash: SHA-256(0x00 || entry)."""
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 interior node hash: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def largest_power_of_two_below(n: int) -> int:
    """The largest power of two k with k < n (n must be >= 2), as in RFC 9162."""
    if n < 2:
        raise ValueError("n must be >= 2")
    return 1 << ((n - 1).bit_length() - 1)


def mth_of_hashes(hashes) -> bytes:
    """Merkle Tree Hash of a list of already-computed leaf-level hashes.

    This is RFC 9162 MTH where the inputs are treated as the hashes of the
    leaves (so no 0x00 prefix is applied). For an empty list it returns
    SHA-256 of the empty string. Used for tiles: the MTH of the 256 hashes of
    a full level-(l-1) tile is one hash of a level-l tile.
    """
    n = len(hashes)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return hashes[0]
    k = largest_power_of_two_below(n)
    return node_hash(mth_of_hashes(hashes[:k]), mth_of_hashes(hashes[k:]))


def verify_inclusion(leaf_index: int, tree_size: int, leaf: bytes,
                     proof, root: bytes) -> bool:
    """Verify an inclusion proof with the algorithm of RFC 9162 section 2.1.3.2.

    `leaf` is the leaf hash, `proof` the inclusion path (list of 32-byte
    hashes), `root` the expected root hash of the tree of size `tree_size`.
    """
    if leaf_index >= tree_size or leaf_index < 0:
        return False
    fn = leaf_index
    sn = tree_size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            return False
        if (fn & 1) == 1 or fn == sn:
            r = node_hash(p, r)
            if (fn & 1) == 0:
                while not ((fn & 1) == 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


# --------------------------------------------------------------------------
# tlog-tiles paths
# --------------------------------------------------------------------------

def encode_index(n: int) -> str:
    """Encode a tile index as zero-padded 3-digit path elements.

    All elements but the last are prefixed with ``x``:
    1234067 -> ``x001/x234/067``, 0 -> ``000``, 1000 -> ``x001/000``.
    """
    if n < 0:
        raise ValueError("tile index must be non-negative")
    groups = []
    while True:
        groups.append(n % 1000)
        n //= 1000
        if n == 0:
            break
    groups.reverse()
    parts = ["x%03d" % g for g in groups[:-1]] + ["%03d" % groups[-1]]
    return "/".join(parts)


def tile_path(level, n: int, width: int = TILE_WIDTH) -> str:
    """Path of a tile relative to the prefix.

    `level` is an int for Merkle tree tiles or the string ``"entries"`` for
    entry bundles. `width` 256 means a full tile; 1..255 adds ``.p/<W>``.
    """
    if not 1 <= width <= TILE_WIDTH:
        raise ValueError("tile width must be in 1..256")
    path = "tile/%s/%s" % (level, encode_index(n))
    if width < TILE_WIDTH:
        path += ".p/%d" % width
    return path


def tiles_for_size(size: int):
    """Yield the (level, index, width) of every Merkle tree tile of a tree.

    Per tlog-tiles, level l has floor(size / 256**(l+1)) full tiles and, if
    floor(size / 256**l) mod 256 > 0, one partial tile of that width. Levels
    continue while floor(size / 256**l) > 0. Empty tiles are never listed.
    This is a generator, so an absurd size in a (signed) checkpoint fails at
    the first missing tile rather than by exhausting memory.
    """
    level = 0
    while size // (TILE_WIDTH ** level) > 0:
        hashes_at_level = size // (TILE_WIDTH ** level)
        full, width = divmod(hashes_at_level, TILE_WIDTH)
        for n in range(full):
            yield (level, n, TILE_WIDTH)
        if width:
            yield (level, full, width)
        level += 1


# --------------------------------------------------------------------------
# Sources: one interface, two byte fetchers
# --------------------------------------------------------------------------

class HTTPSource:
    """Fetch resources from ``<base URL>/<path>`` over HTTP(S).

    Sends ``Accept-Encoding: gzip, identity`` and transparently decodes a
    ``Content-Encoding: gzip`` answer. 404 raises NotFound; other failures
    raise FetchError.
    """

    def __init__(self, base_url: str, timeout: float = 30.0):
        self.base = base_url.rstrip("/")
        self.timeout = timeout

    def describe(self) -> str:
        return self.base

    def fetch(self, path: str) -> bytes:
        url = self.base + "/" + path
        req = urllib.request.Request(url, headers={
            "Accept-Encoding": "gzip, identity",
            "User-Agent": "vigil-independent-tlog-client/1",
        })
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                status = resp.status
                body = resp.read()
                encoding = (resp.headers.get("Content-Encoding") or "identity").strip().lower()
        except urllib.error.HTTPError as e:
            if e.code == 404:
                raise NotFound(url) from None
            raise FetchError("GET %s: HTTP %d" % (url, e.code)) from None
        except (urllib.error.URLError, OSError) as e:
            raise FetchError("GET %s: %s" % (url, e)) from None
        if status != 200:
            raise FetchError("GET %s: HTTP %d" % (url, status))
        if encoding in ("gzip", "x-gzip"):
            try:
                body = gzip.decompress(body)
            except (OSError, EOFError) as e:
                raise VerificationError("GET %s: bad gzip body: %s" % (url, e)) from None
        elif encoding not in ("identity", ""):
            raise FetchError("GET %s: unsupported Content-Encoding %r" % (url, encoding))
        return body


class DirectorySource:
    """Fetch resources from a directory laid out like the URL space.

    ``fetch("tile/0/x001/000")`` reads ``<dir>/tile/0/x001/000``. A missing
    file raises NotFound; other OS errors raise FetchError.
    """

    def __init__(self, directory: str):
        self.dir = directory

    def describe(self) -> str:
        return "file:" + self.dir

    def fetch(self, path: str) -> bytes:
        full = os.path.join(self.dir, *path.split("/"))
        try:
            with open(full, "rb") as f:
                return f.read()
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(full) from None
        except OSError as e:
            raise FetchError("read %s: %s" % (full, e)) from None


def open_source(spec: str):
    """Turn a --source argument into an HTTPSource or DirectorySource."""
    lower = spec.lower()
    if lower.startswith("http://") or lower.startswith("https://"):
        return HTTPSource(spec)
    if lower.startswith("file:"):
        parsed = urllib.parse.urlparse(spec)
        if spec[5:].startswith("//"):
            if parsed.netloc not in ("", "localhost"):
                raise UsageError("file: URL with a remote host is not supported: %s" % spec)
            directory = urllib.parse.unquote(parsed.path)
        else:
            directory = spec[5:]
    else:
        directory = spec
    if not os.path.isdir(directory):
        raise UsageError("source is neither an http(s) URL nor an existing directory: %s" % spec)
    return DirectorySource(directory)


# --------------------------------------------------------------------------
# Signed notes and checkpoints
# --------------------------------------------------------------------------

class VerifierKey:
    """A signed-note Ed25519 verifier key ``<name>+<hex id>+<b64(0x01||pk)>``."""

    def __init__(self, text: str):
        # The name cannot contain "+", but the base64 part can: split twice.
        parts = text.strip().split("+", 2)
        if len(parts) != 3:
            raise UsageError("verifier key must be <name>+<hex key ID>+<base64 key>")
        name, hex_id, b64 = parts
        if not name or any(ch.isspace() for ch in name):
            raise UsageError("verifier key name must be non-empty without spaces")
        if len(hex_id) != 8:
            raise UsageError("verifier key ID must be 8 hex digits")
        try:
            key_id = bytes.fromhex(hex_id)
            raw = base64.b64decode(b64, validate=True)
        except (ValueError, binascii.Error):
            raise UsageError("verifier key has bad hex or base64") from None
        if len(raw) != 33 or raw[0] != 0x01:
            raise UsageError("verifier key must be 0x01 followed by a 32-byte Ed25519 key")
        pub = raw[1:]
        expected = key_id_for(name, pub)
        if expected != key_id:
            raise UsageError("verifier key ID %s does not match its key (expected %s)"
                             % (hex_id, expected.hex()))
        self.name = name
        self.key_id = key_id
        self.public_key = Ed25519PublicKey.from_public_bytes(pub)


def key_id_for(name: str, public_key: bytes) -> bytes:
    """signed-note Ed25519 key ID: SHA-256(name || 0x0A || 0x01 || pk)[:4]."""
    return hashlib.sha256(name.encode("utf-8") + b"\n\x01" + public_key).digest()[:4]


def verify_note(data: bytes, vkey: VerifierKey) -> str:
    """Verify a signed note and return its text (including the final newline).

    Signature lines whose key name or key ID differ from `vkey` are ignored.
    At least one line must match; every matching line must verify.
    Raises VerificationError otherwise.
    """
    if len(data) > MAX_CHECKPOINT_BYTES:
        raise VerificationError("note is larger than %d bytes" % MAX_CHECKPOINT_BYTES)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise VerificationError("note is not valid UTF-8") from None
    if any(ord(ch) < 0x20 and ch != "\n" for ch in text):
        raise VerificationError("note contains ASCII control characters other than newline")
    if not text.endswith("\n"):
        raise VerificationError("note does not end with a newline")
    sep = text.rfind("\n\n")
    if sep < 0:
        raise VerificationError("note has no blank line before its signatures")
    body = text[:sep + 1]
    sig_lines = text[sep + 2:].split("\n")[:-1]
    if not sig_lines:
        raise VerificationError("note has no signature lines")
    if len(sig_lines) > MAX_SIGNATURE_LINES:
        raise VerificationError("note has too many signature lines")
    matched = 0
    for line in sig_lines:
        prefix = EM_DASH + " "
        if not line.startswith(prefix):
            raise VerificationError("malformed signature line: %r" % line)
        rest = line[len(prefix):].split(" ")
        if len(rest) != 2 or not rest[0] or not rest[1]:
            raise VerificationError("malformed signature line: %r" % line)
        name, b64 = rest
        try:
            sig = base64.b64decode(b64, validate=True)
        except binascii.Error:
            raise VerificationError("signature line has bad base64: %r" % line) from None
        if len(sig) < 5:
            raise VerificationError("signature too short in line: %r" % line)
        if name != vkey.name or sig[:4] != vkey.key_id:
            continue  # unknown key: MUST be ignored
        matched += 1
        if len(sig) != 4 + 64:
            raise VerificationError("signature by %s has wrong length" % name)
        try:
            vkey.public_key.verify(sig[4:], body.encode("utf-8"))
        except InvalidSignature:
            raise VerificationError("signature by %s+%s does not verify"
                                    % (name, vkey.key_id.hex())) from None
    if matched == 0:
        raise VerificationError("no signature by %s+%s on the note"
                                % (vkey.name, vkey.key_id.hex()))
    return body


def parse_checkpoint_body(body: str):
    """Parse a tlog-checkpoint note text into (origin, size, root, extensions)."""
    lines = body.split("\n")
    if lines[-1] != "":
        raise VerificationError("checkpoint text does not end with a newline")
    lines = lines[:-1]
    if len(lines) < 3:
        raise VerificationError("checkpoint has fewer than three lines")
    if any(line == "" for line in lines):
        raise VerificationError("checkpoint has an empty line in its text")
    origin, size_s, root_s = lines[0], lines[1], lines[2]
    if not size_s.isdigit() or not size_s.isascii() or (len(size_s) > 1 and size_s[0] == "0"):
        raise VerificationError("checkpoint size %r is not a canonical decimal" % size_s)
    size = int(size_s)
    try:
        root = base64.b64decode(root_s, validate=True)
    except binascii.Error:
        raise VerificationError("checkpoint root is not base64") from None
    if len(root) != HASH_SIZE or base64.b64encode(root).decode() != root_s:
        raise VerificationError("checkpoint root is not the base64 of 32 bytes")
    return origin, size, root, lines[3:]


# --------------------------------------------------------------------------
# The tiled tree
# --------------------------------------------------------------------------

class TiledTree:
    """The Merkle tree of one checkpoint size, as seen through its tiles.

    `tiles[(level, n)]` holds the list of hashes of that tile (256 for a full
    tile, W for the partial one). The tree is fully loaded by `load()`.
    """

    def __init__(self, source, size: int):
        self.source = source
        self.size = size
        self.tiles = {}
        self.tiles_fetched = 0
        self.bundles_fetched = 0
        self.warnings = []

    # -- fetching ---------------------------------------------------------

    def _fetch_with_fallback(self, level, n: int, width: int) -> tuple:
        """Fetch a tile or bundle; a missing partial one falls back to the full one.

        Returns (body, used_full_fallback).
        """
        path = tile_path(level, n, width)
        try:
            return self.source.fetch(path), False
        except NotFound:
            if width == TILE_WIDTH:
                raise VerificationError("required resource missing: %s" % path) from None
        full_path = tile_path(level, n)
        try:
            body = self.source.fetch(full_path)
        except NotFound:
            raise VerificationError("required resource missing: %s (and no full %s)"
                                    % (path, full_path)) from None
        self.warnings.append("%s missing; used the first %d of full %s" % (path, width, full_path))
        return body, True

    def load(self):
        """Fetch every Merkle tree tile of the tree and check their lengths."""
        for level, n, width in tiles_for_size(self.size):
            body, fell_back = self._fetch_with_fallback(level, n, width)
            self.tiles_fetched += 1
            expected = FULL_TILE_BYTES if (fell_back or width == TILE_WIDTH) else width * HASH_SIZE
            if len(body) != expected:
                raise VerificationError("%s has %d bytes, expected %d"
                                        % (tile_path(level, n, width), len(body), expected))
            self.tiles[(level, n)] = [body[i * HASH_SIZE:(i + 1) * HASH_SIZE]
                                      for i in range(width)]

    def fetch_bundle(self, n: int, width: int):
        """Fetch and parse entry bundle n of the given width; return its entries."""
        body, fell_back = self._fetch_with_fallback("entries", n, width)
        self.bundles_fetched += 1
        entries = parse_bundle(body, tile_path("entries", n, width))
        want = TILE_WIDTH if fell_back else width
        if len(entries) != want:
            raise VerificationError("%s holds %d entries, expected %d"
                                    % (tile_path("entries", n, width), len(entries), want))
        return entries[:width]

    # -- hashes -----------------------------------------------------------

    def level_hash(self, level: int, k: int) -> bytes:
        """MTH(D[k*256**level : (k+1)*256**level]) read from a tile."""
        tile = self.tiles.get((level, k // TILE_WIDTH))
        if tile is None or k % TILE_WIDTH >= len(tile):
            raise KeyError((level, k))
        return tile[k % TILE_WIDTH]

    def subtree_hash(self, lo: int, hi: int) -> bytes:
        """MTH(D[lo:hi]) for 0 <= lo < hi <= size, computed from tiles only.

        Follows the RFC 9162 recursion (split at the largest power of two
        below the range size) but stops as soon as the range is exactly one
        hash of some tile level, preferring the highest level. Only ranges
        that arise from that recursion (aligned as in RFC 9162) are asked for.
        """
        n = hi - lo
        if n <= 0 or lo < 0 or hi > self.size:
            raise ValueError("bad range [%d, %d)" % (lo, hi))
        level, unit = 0, 1
        while unit * TILE_WIDTH <= n:
            level, unit = level + 1, unit * TILE_WIDTH
        if n == unit and lo % unit == 0:
            # Exactly one hash at `level` (for n == 1, a level-0 leaf hash).
            return self.level_hash(level, lo // unit)
        k = largest_power_of_two_below(n)
        return node_hash(self.subtree_hash(lo, lo + k), self.subtree_hash(lo + k, hi))

    def root(self) -> bytes:
        """Root hash of the tree of this size (SHA-256("") for size 0)."""
        if self.size == 0:
            return EMPTY_ROOT
        return self.subtree_hash(0, self.size)

    def inclusion_proof(self, m: int):
        """RFC 9162 section 2.1.3.1 PATH(m, D[0:size]) computed from tiles."""
        if not 0 <= m < self.size:
            raise ValueError("leaf index out of range")
        path = []
        lo, hi = 0, self.size
        # Walk down from the root, collecting siblings; PATH lists them
        # bottom-up, so prepend.
        while hi - lo > 1:
            k = largest_power_of_two_below(hi - lo)
            if m < lo + k:
                path.insert(0, self.subtree_hash(lo + k, hi))
                hi = lo + k
            else:
                path.insert(0, self.subtree_hash(lo, lo + k))
                lo = lo + k
        return path

    def consistency_errors(self):
        """Check each hash of each level>=1 tile against the MTH of the tile below."""
        errors = []
        for (level, n), hashes in sorted(self.tiles.items()):
            if level == 0:
                continue
            for i, h in enumerate(hashes):
                child = self.tiles.get((level - 1, n * TILE_WIDTH + i))
                if child is None or len(child) != TILE_WIDTH:
                    errors.append("tile %s hash %d: full child tile %s not loaded"
                                  % (tile_path(level, n, len(hashes)), i,
                                     tile_path(level - 1, n * TILE_WIDTH + i)))
                    continue
                if mth_of_hashes(child) != h:
                    errors.append("tile %s hash %d != MTH of %s"
                                  % (tile_path(level, n, len(hashes)), i,
                                     tile_path(level - 1, n * TILE_WIDTH + i)))
        return errors


def parse_bundle(body: bytes, what: str = "bundle"):
    """Split an entry bundle into its entries (big-endian uint16 length prefixes)."""
    entries = []
    pos = 0
    while pos < len(body):
        if pos + 2 > len(body):
            raise VerificationError("%s: truncated length prefix at byte %d" % (what, pos))
        length = int.from_bytes(body[pos:pos + 2], "big")
        pos += 2
        if pos + length > len(body):
            raise VerificationError("%s: truncated entry at byte %d" % (what, pos))
        entries.append(body[pos:pos + length])
        pos += length
    return entries


# --------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------

def run(source, vkey: VerifierKey, inclusion=(), check_entries=False):
    """Run every check; return the summary dict.

    Verification failures are collected in summary["errors"]. I/O problems
    raise FetchError; the caller maps them to exit status 2.
    """
    summary = {
        "origin": None, "size": None, "root_hex": None,
        "tiles_fetched": 0, "entries_checked": 0, "inclusion": [],
        "ok": False, "errors": [], "bundles_fetched": 0, "warnings": [],
    }
    errors = summary["errors"]
    try:
        raw = source.fetch("checkpoint")
    except NotFound:
        raise FetchError("checkpoint not found at %s" % source.describe()) from None

    try:
        body = verify_note(raw, vkey)
        origin, size, root, _ext = parse_checkpoint_body(body)
    except VerificationError as e:
        errors.append("checkpoint: %s" % e)
        return summary
    summary.update(origin=origin, size=size, root_hex=root.hex())
    if origin != vkey.name:
        errors.append("checkpoint origin %r differs from key name %r" % (origin, vkey.name))
        return summary

    tree = TiledTree(source, size)
    try:
        try:
            tree.load()
        except VerificationError as e:
            errors.append(str(e))
            return summary

        computed = tree.root()
        if computed != root:
            errors.append("root from tiles %s != checkpoint root %s" % (computed.hex(), root.hex()))
        errors.extend(tree.consistency_errors())

        if check_entries:
            full, width = divmod(size, TILE_WIDTH)
            bundles = [(n, TILE_WIDTH) for n in range(full)] + ([(full, width)] if width else [])
            for n, w in bundles:
                try:
                    entries = tree.fetch_bundle(n, w)
                except VerificationError as e:
                    errors.append(str(e))
                    continue
                tile = tree.tiles[(0, n)]
                for i, entry in enumerate(entries):
                    summary["entries_checked"] += 1
                    if leaf_hash(entry) != tile[i]:
                        errors.append("entry %d: leaf hash does not match level-0 tile %s"
                                      % (n * TILE_WIDTH + i, tile_path(0, n, w)))

        for index in inclusion:
            result = {"index": index, "ok": False, "proof_len": None}
            summary["inclusion"].append(result)
            if not 0 <= index < size:
                errors.append("inclusion %d: index not below tree size %d" % (index, size))
                continue
            proof = tree.inclusion_proof(index)
            leaf = tree.level_hash(0, index)
            result["proof_len"] = len(proof)
            result["ok"] = verify_inclusion(index, size, leaf, proof, root)
            if not result["ok"]:
                errors.append("inclusion %d: proof does not verify against the checkpoint root"
                              % index)
    finally:
        summary["tiles_fetched"] = tree.tiles_fetched
        summary["bundles_fetched"] = tree.bundles_fetched
        summary["warnings"] = tree.warnings

    summary["ok"] = not errors
    return summary


def print_human(summary, out=sys.stdout):
    """Print the summary as a short human-readable report."""
    print("origin:          %s" % summary["origin"], file=out)
    print("size:            %s" % summary["size"], file=out)
    print("root:            %s" % summary["root_hex"], file=out)
    print("tiles fetched:   %d" % summary["tiles_fetched"], file=out)
    print("bundles fetched: %d" % summary["bundles_fetched"], file=out)
    print("entries checked: %d" % summary["entries_checked"], file=out)
    for inc in summary["inclusion"]:
        print("inclusion %d: %s (proof length %s)"
              % (inc["index"], "ok" if inc["ok"] else "FAILED", inc["proof_len"]), file=out)
    for w in summary["warnings"]:
        print("warning: %s" % w, file=out)
    for e in summary["errors"]:
        print("error: %s" % e, file=out)
    print("RESULT: %s" % ("OK" if summary["ok"] else "FAILED"), file=out)


def non_negative_int(text: str) -> int:
    """argparse type for a leaf index."""
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError("not an integer: %r" % text) from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be non-negative: %r" % text)
    return value


def main(argv=None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        description="Independent C2SP tlog-tiles client: verify a checkpoint and its tiles.")
    parser.add_argument("--source", required=True,
                        help="http(s) base URL, or directory (file:PATH, file:///PATH or PATH)")
    parser.add_argument("--vkey", required=True,
                        help="signed-note verifier key <name>+<hex id>+<base64>")
    parser.add_argument("--inclusion", type=non_negative_int, nargs="+", action="extend",
                        default=[], metavar="INDEX",
                        help="build and verify an RFC 9162 inclusion proof for these leaves")
    parser.add_argument("--entries", action="store_true",
                        help="also fetch every entry bundle and check leaf hashes")
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    args = parser.parse_args(argv)

    try:
        vkey = VerifierKey(args.vkey)
        source = open_source(args.source)
    except UsageError as e:
        print("tlog_client: %s" % e, file=sys.stderr)
        return 2

    try:
        summary = run(source, vkey, inclusion=args.inclusion, check_entries=args.entries)
    except FetchError as e:
        if args.json:
            print(json.dumps({"origin": None, "size": None, "root_hex": None,
                              "tiles_fetched": 0, "entries_checked": 0, "inclusion": [],
                              "ok": False, "errors": ["I/O: %s" % e],
                              "bundles_fetched": 0, "warnings": []}))
        print("tlog_client: I/O error: %s" % e, file=sys.stderr)
        return 2

    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_human(summary)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
