//! C2SP tlog-tiles (contract section 4): tile paths, widths, and the tile
//! math, without I/O. Where the files live and how they are made durable
//! is [`crate::store::tiles`].
//!
//! A hash tile at level `L` holds up to 256 hashes of tree height `8 L`:
//! tile `N` of level `L` holds MTH(D[(N*256 + i) * 256^L .. (N*256 + i + 1) *
//! 256^L]) for `i` in 0..256. An entry bundle holds the same range's
//! entries (receipt bodies' JCS bytes), each as a big-endian u16 length and
//! the bytes. The rightmost tiles of a tree of size `s` are partial: level
//! `L`'s has `floor(s / 256^L) mod 256` hashes and is named `.p/<W>`.

use crate::event::Hash;
use crate::log::merkle::node_hash;

/// Hashes (or entries) in a full tile.
pub const TILE_WIDTH: u64 = 256;
/// Tree levels a tile spans.
pub const TILE_HEIGHT: u32 = 8;

/// Which kind of tile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TileKind {
    /// A hash tile at this tile level (0 = leaf hashes).
    Hash(u8),
    /// An entry bundle.
    Entries,
}

/// One tile: its kind, index within its level, and width (256 = full).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TileId {
    /// Hash tile level or entry bundle.
    pub kind: TileKind,
    /// Index within the level.
    pub index: u64,
    /// Hashes or entries in it (1..=256; 256 is a full tile).
    pub width: u16,
}

impl TileId {
    /// Whether the tile is full (never changes).
    pub fn is_full(&self) -> bool {
        u64::from(self.width) == TILE_WIDTH
    }

    /// Whether a tree of `size` leaves covers every node (or entry) the
    /// tile holds.
    pub fn covered_by(&self, size: u64) -> bool {
        let span = match self.kind {
            TileKind::Hash(level) => span(level),
            TileKind::Entries => Some(1),
        };
        let end = self
            .index
            .checked_mul(TILE_WIDTH)
            .and_then(|n| n.checked_add(u64::from(self.width)));
        match (span, end) {
            (Some(span), Some(end)) => end.checked_mul(span).is_some_and(|leaves| leaves <= size),
            _ => false,
        }
    }

    /// Its path under the log's prefix (`tile/0/x001/x234/067.p/5`).
    pub fn path(&self) -> String {
        let level = match self.kind {
            TileKind::Hash(l) => l.to_string(),
            TileKind::Entries => "entries".to_string(),
        };
        let mut p = format!("tile/{level}/{}", encode_index(self.index));
        if !self.is_full() {
            p.push_str(&format!(".p/{}", self.width));
        }
        p
    }

    /// The same tile, full.
    pub fn full(&self) -> TileId {
        TileId {
            width: TILE_WIDTH as u16,
            ..*self
        }
    }
}

/// `N` as zero-padded 3-digit path elements, all but the last prefixed
/// with `x` (1234067 -> `x001/x234/067`).
pub fn encode_index(mut n: u64) -> String {
    let mut groups = vec![format!("{:03}", n % 1000)];
    n /= 1000;
    while n > 0 {
        groups.push(format!("x{:03}", n % 1000));
        n /= 1000;
    }
    groups.reverse();
    groups.join("/")
}

/// Parses a tile path (after the prefix): `tile/<L>/<N>[.p/<W>]` or
/// `tile/entries/<N>[.p/<W>]`, refusing any non-canonical spelling.
pub fn parse_path(path: &str) -> Option<TileId> {
    let rest = path.strip_prefix("tile/")?;
    let (level, rest) = rest.split_once('/')?;
    let kind = match level {
        "entries" => TileKind::Entries,
        l => {
            let v: u8 = canonical_decimal(l)?.try_into().ok()?;
            if v > 63 {
                return None;
            }
            TileKind::Hash(v)
        }
    };
    let (index_part, width) = match rest.split_once(".p/") {
        Some((i, w)) => {
            let w = canonical_decimal(w)?;
            if !(1..TILE_WIDTH).contains(&w) {
                return None;
            }
            (i, w as u16)
        }
        None => (rest, TILE_WIDTH as u16),
    };
    let groups: Vec<&str> = index_part.split('/').collect();
    let mut index: u64 = 0;
    for (i, g) in groups.iter().enumerate() {
        let digits = if i + 1 < groups.len() {
            g.strip_prefix('x')?
        } else {
            g
        };
        if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        index = index.checked_mul(1000)?.checked_add(digits.parse().ok()?)?;
    }
    let id = TileId { kind, index, width };
    (id.path() == path).then_some(id)
}

fn canonical_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || (s.len() > 1 && s.starts_with('0')) || !s.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    s.parse().ok()
}

/// Leaves covered by one hash at tile level `level` (256^level).
pub fn span(level: u8) -> Option<u64> {
    TILE_WIDTH.checked_pow(u32::from(level))
}

/// The width of the partial tile at `level` for a tree of `size` (0 when
/// there is none).
pub fn partial_width(level: u8, size: u64) -> u16 {
    span(level).map_or(0, |s| ((size / s) % TILE_WIDTH) as u16)
}

/// Every tile a tree of `size` needs at its right edge that is not full:
/// the partial hash tile of each level, and the partial entry bundle.
pub fn partial_tiles(size: u64) -> Vec<TileId> {
    let mut out = Vec::new();
    for level in 0..=63u8 {
        let Some(s) = span(level) else { break };
        if s > size {
            break;
        }
        let width = partial_width(level, size);
        if width > 0 {
            let index = size / s / TILE_WIDTH;
            out.push(TileId {
                kind: TileKind::Hash(level),
                index,
                width,
            });
            if level == 0 {
                out.push(TileId {
                    kind: TileKind::Entries,
                    index,
                    width,
                });
            }
        }
    }
    out
}

/// Where a tree node lives in the tiles: the node at tree `level`,
/// `index` is the fold of `count` consecutive stored hashes of hash tile
/// `tile`, from position `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeInTile {
    /// The tile's level.
    pub tile_level: u8,
    /// The tile's index.
    pub tile_index: u64,
    /// First stored hash.
    pub offset: usize,
    /// Stored hashes to fold (a power of two, at most 128).
    pub count: usize,
}

/// Locates a tree node in the hash tiles.
pub fn locate(level: u32, index: u64) -> NodeInTile {
    let tile_level = (level / TILE_HEIGHT) as u8;
    let r = level % TILE_HEIGHT;
    let first = index << r;
    NodeInTile {
        tile_level,
        tile_index: first / TILE_WIDTH,
        offset: (first % TILE_WIDTH) as usize,
        count: 1 << r,
    }
}

/// The root of a perfect subtree over `hashes` (a power of two of them).
pub fn fold(hashes: &[Hash]) -> Hash {
    debug_assert!(hashes.len().is_power_of_two());
    let mut level: Vec<Hash> = hashes.to_vec();
    while level.len() > 1 {
        level = level
            .chunks_exact(2)
            .map(|p| node_hash(&p[0], &p[1]))
            .collect();
    }
    level[0]
}

/// Splits a hash tile's bytes into hashes (its length must be a multiple
/// of 32).
pub fn hashes(bytes: &[u8]) -> Option<Vec<Hash>> {
    if !bytes.len().is_multiple_of(32) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(32)
            .map(|c| c.try_into().expect("32 bytes"))
            .collect(),
    )
}

/// Appends one entry to a bundle: big-endian u16 length, then the bytes.
/// Receipt bodies are far below 64 KiB (their fields are bounded).
pub fn push_entry(bundle: &mut Vec<u8>, entry: &[u8]) {
    let len = u16::try_from(entry.len()).expect("a receipt body is under 64 KiB");
    bundle.extend_from_slice(&len.to_be_bytes());
    bundle.extend_from_slice(entry);
}

/// Splits an entry bundle into its entries.
pub fn entries(bundle: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    let mut rest = bundle;
    while !rest.is_empty() {
        let len = u16::from_be_bytes(rest.get(..2)?.try_into().ok()?) as usize;
        out.push(rest.get(2..2 + len)?);
        rest = &rest[2 + len..];
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::merkle::{leaf_hash, NodeSource, Tree};

    #[test]
    fn a_tile_is_covered_by_the_trees_that_hold_all_of_it() {
        let t = |kind, index, width| TileId { kind, index, width };
        // Level 0 tile 1 of width 10: leaves 256..266.
        assert!(t(TileKind::Hash(0), 1, 10).covered_by(266));
        assert!(!t(TileKind::Hash(0), 1, 10).covered_by(265));
        // Level 1 tile 0 of width 2: leaves 0..512.
        assert!(t(TileKind::Hash(1), 0, 2).covered_by(512));
        assert!(!t(TileKind::Hash(1), 0, 2).covered_by(511));
        assert!(t(TileKind::Entries, 0, 256).covered_by(256));
        assert!(!t(TileKind::Entries, 1, 1).covered_by(256));
        assert!(!t(TileKind::Hash(7), u64::MAX / 2, 256).covered_by(u64::MAX));
    }

    #[test]
    fn paths_follow_the_spec() {
        assert_eq!(encode_index(1_234_067), "x001/x234/067");
        assert_eq!(encode_index(0), "000");
        assert_eq!(encode_index(1000), "x001/000");
        let t = TileId {
            kind: TileKind::Hash(1),
            index: 1_234_067,
            width: 5,
        };
        assert_eq!(t.path(), "tile/1/x001/x234/067.p/5");
        assert_eq!(parse_path(&t.path()), Some(t));
        let e = TileId {
            kind: TileKind::Entries,
            index: 7,
            width: 256,
        };
        assert_eq!(e.path(), "tile/entries/007");
        assert_eq!(parse_path("tile/entries/007"), Some(e));
        for bad in [
            "tile/01/000",
            "tile/64/000",
            "tile/0/7",
            "tile/0/x000/007",
            "tile/0/001.p/0",
            "tile/0/001.p/256",
            "tile/0/001.p/05",
            "tile/0/001/",
            "tiles/0/000",
            "tile/0/../000",
        ] {
            assert_eq!(parse_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_spec_example_of_a_tree_of_70000() {
        let p = partial_tiles(70_000);
        let widths: Vec<(TileKind, u64, u16)> =
            p.iter().map(|t| (t.kind, t.index, t.width)).collect();
        assert_eq!(
            widths,
            [
                (TileKind::Hash(0), 273, 112),
                (TileKind::Entries, 273, 112),
                (TileKind::Hash(1), 1, 17),
                (TileKind::Hash(2), 0, 1)
            ]
        );
        assert_eq!(
            partial_tiles(256),
            [TileId {
                kind: TileKind::Hash(1),
                index: 0,
                width: 1
            }]
        );
        assert!(partial_tiles(0).is_empty());
    }

    #[test]
    fn nodes_fold_from_their_tile() {
        let mut t = Tree::new();
        for i in 0..(256 * 3) {
            t.push(leaf_hash(&u64::to_le_bytes(i)));
        }
        for (level, index) in [(0, 5), (3, 7), (7, 2), (8, 1), (9, 0)] {
            let at = locate(level, index);
            let base = at.tile_level as u32 * TILE_HEIGHT;
            let stored: Vec<Hash> = (0..at.count)
                .map(|i| {
                    t.node(base, at.tile_index * 256 + (at.offset + i) as u64)
                        .unwrap()
                })
                .collect();
            assert_eq!(
                fold(&stored),
                t.node(level, index).unwrap(),
                "{level}/{index}"
            );
        }
    }

    #[test]
    fn bundles_round_trip() {
        let mut b = Vec::new();
        push_entry(&mut b, b"one");
        push_entry(&mut b, b"");
        push_entry(&mut b, b"three");
        assert_eq!(entries(&b).unwrap(), [&b"one"[..], b"", b"three"]);
        assert!(entries(&b[..b.len() - 1]).is_none());
    }
}
