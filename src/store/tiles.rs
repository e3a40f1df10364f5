//! The Merkle tree on disk as C2SP tlog-tiles (contract section 4), under
//! `DIR/tlog`: built by the checkpointer as records become durable, made
//! durable before the checkpoint that needs them, and read back (through a
//! small cache) for inclusion and consistency proofs, so that neither the
//! server nor a restart holds or rebuilds the tree.
//!
//! The tiles a checkpoint needs are made durable together by one `syncfs`
//! of the file system before the checkpoint is signed (hundreds of tiles a
//! second at full rate: one journal commit instead of one per file); a
//! tile beyond the latest checkpoint may be torn by a crash, so it is
//! neither served nor read, and is written again. Full tiles covered by a
//! checkpoint never change. A partial tile
//! (`.p/<W>`) is written for each checkpoint that needs it; the partials of
//! a tile are deleted once the full tile exists (tlog-tiles allows it; a
//! client falls back to the full tile). Widths only grow within a tile, so
//! at most 255 partials of a tile ever exist.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::layout::Layout;
use crate::event::Hash;
use crate::log::merkle::{CompactRange, NodeSource};
use crate::log::tiles::{self, TileId, TileKind, TILE_HEIGHT, TILE_WIDTH};

/// The path of a tile file.
pub fn tile_path(layout: &Layout, tile: &TileId) -> PathBuf {
    layout.tlog().join(tile.path())
}

/// Writes a tile file under its final name, replacing what is there. It
/// is made durable by the caller's `syncfs`, once for many files; until
/// then a crash may leave it empty or short, which is harmless: tiles
/// beyond the latest checkpoint are neither served nor read back, and they
/// are written again as the records they cover are tiled again.
fn write_tile_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().expect("a tile path has a directory");
    match std::fs::write(path, bytes) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)?;
            std::fs::write(path, bytes)
        }
        other => other,
    }
}

/// Builds tiles as leaves arrive; owned by the checkpointer.
pub struct TileWriter {
    layout: Layout,
    range: CompactRange,
    /// The hashes of the current (incomplete) tile of each level.
    partial: Vec<Vec<Hash>>,
    /// The current (incomplete) entry bundle, and how many entries it holds.
    bundle: Vec<u8>,
    bundle_entries: u16,
    /// Full tiles completed since the last [`TileWriter::sync`].
    pending: Vec<(TileId, Vec<u8>)>,
    /// Widths of partial files written, per tile.
    partials_written: HashMap<(TileKind, u64), Vec<u16>>,
}

impl TileWriter {
    /// An empty tree.
    pub fn new(layout: &Layout) -> TileWriter {
        TileWriter {
            layout: layout.clone(),
            range: CompactRange::new(),
            partial: Vec::new(),
            bundle: Vec::new(),
            bundle_entries: 0,
            pending: Vec::new(),
            partials_written: HashMap::new(),
        }
    }

    /// The tree of `size` leaves whose tiles were synced (for its
    /// checkpoint), read back from disk. Fails when a tile it needs is
    /// missing or damaged (the caller rebuilds from the log).
    pub fn resume(layout: &Layout, size: u64) -> std::io::Result<TileWriter> {
        let reader = TileReader::new(layout, 16);
        let range = CompactRange::from_source(&reader.at(size), size)?;
        let mut w = TileWriter::new(layout);
        w.range = range;
        for tile in tiles::partial_tiles(size) {
            // Served already: never written again (in place).
            w.partials_written
                .entry((tile.kind, tile.index))
                .or_default()
                .push(tile.width);
            let bytes = std::fs::read(tile_path(layout, &tile))?;
            match tile.kind {
                TileKind::Hash(level) => {
                    let hashes = tiles::hashes(&bytes)
                        .filter(|h| h.len() == usize::from(tile.width))
                        .ok_or_else(|| bad_tile(layout, &tile))?;
                    w.level(level).extend(hashes);
                }
                TileKind::Entries => {
                    let n = tiles::entries(&bytes).map(|e| e.len()).unwrap_or(0);
                    if n != usize::from(tile.width) {
                        return Err(bad_tile(layout, &tile));
                    }
                    w.bundle = bytes;
                    w.bundle_entries = tile.width;
                }
            }
        }
        Ok(w)
    }

    fn level(&mut self, level: u8) -> &mut Vec<Hash> {
        let l = usize::from(level);
        if self.partial.len() <= l {
            self.partial.resize_with(l + 1, Vec::new);
        }
        &mut self.partial[l]
    }

    /// Leaves so far.
    pub fn size(&self) -> u64 {
        self.range.size()
    }

    /// The root of the tree so far.
    pub fn root(&self) -> Hash {
        self.range.root()
    }

    /// Appends a leaf (the hash of `entry`, a receipt body's JCS bytes).
    pub fn push(&mut self, leaf: Hash, entry: &[u8]) {
        let index = self.range.size();
        let mut stored = Vec::new();
        self.range.push_with(leaf, |level, node_index, hash| {
            if level.is_multiple_of(TILE_HEIGHT) {
                stored.push(((level / TILE_HEIGHT) as u8, node_index, *hash));
            }
        });
        for (tile_level, node_index, hash) in stored {
            let hashes = self.level(tile_level);
            hashes.push(hash);
            if hashes.len() as u64 == TILE_WIDTH {
                let bytes: Vec<u8> = hashes.drain(..).flatten().collect();
                let id = TileId {
                    kind: TileKind::Hash(tile_level),
                    index: node_index / TILE_WIDTH,
                    width: TILE_WIDTH as u16,
                };
                self.pending.push((id, bytes));
            }
        }
        tiles::push_entry(&mut self.bundle, entry);
        self.bundle_entries += 1;
        if u64::from(self.bundle_entries) == TILE_WIDTH {
            let id = TileId {
                kind: TileKind::Entries,
                index: index / TILE_WIDTH,
                width: TILE_WIDTH as u16,
            };
            self.pending.push((id, std::mem::take(&mut self.bundle)));
            self.bundle_entries = 0;
        }
    }

    /// Writes every full tile completed since the last sync and the partial
    /// tiles of the current size, then makes them durable with one
    /// `syncfs`: after it returns, a checkpoint of [`TileWriter::size`] may
    /// be published. Deletes the partials of tiles that are now full.
    pub fn sync(&mut self) -> std::io::Result<()> {
        let size = self.size();
        let mut now_full = Vec::new();
        for (id, bytes) in std::mem::take(&mut self.pending) {
            write_tile_file(&tile_path(&self.layout, &id), &bytes)?;
            now_full.push(id);
        }
        for id in tiles::partial_tiles(size) {
            let written = self
                .partials_written
                .entry((id.kind, id.index))
                .or_default();
            if written.contains(&id.width) {
                continue;
            }
            let bytes = match id.kind {
                TileKind::Hash(level) => self.partial[usize::from(level)]
                    .iter()
                    .flatten()
                    .copied()
                    .collect(),
                TileKind::Entries => self.bundle.clone(),
            };
            write_tile_file(&tile_path(&self.layout, &id), &bytes)?;
            written.push(id.width);
        }
        let tlog = std::fs::File::open(self.layout.tlog())?;
        rustix::fs::syncfs(&tlog)?;
        for id in now_full {
            for w in self
                .partials_written
                .remove(&(id.kind, id.index))
                .unwrap_or_default()
            {
                let _ = std::fs::remove_file(tile_path(&self.layout, &TileId { width: w, ..id }));
            }
        }
        Ok(())
    }
}

fn bad_tile(layout: &Layout, tile: &TileId) -> std::io::Error {
    std::io::Error::other(format!(
        "the tile {} does not hold what its name says",
        layout.relative(&tile_path(layout, tile))
    ))
}

/// Reads hash tiles (through a small cache of decoded tiles).
pub struct TileReader {
    layout: Layout,
    cache: Mutex<Cache>,
}

struct Cache {
    capacity: usize,
    tick: u64,
    tiles: HashMap<TileId, (Arc<Vec<Hash>>, u64)>,
}

impl TileReader {
    /// A reader keeping at most `capacity` tiles (8 KiB each) in memory.
    pub fn new(layout: &Layout, capacity: usize) -> TileReader {
        TileReader {
            layout: layout.clone(),
            cache: Mutex::new(Cache {
                capacity: capacity.max(1),
                tick: 0,
                tiles: HashMap::new(),
            }),
        }
    }

    /// The tree of `size` leaves (whose tiles are durable), as a source of
    /// nodes for proofs and roots.
    pub fn at(&self, size: u64) -> TreeAt<'_> {
        TreeAt { reader: self, size }
    }

    fn hashes(&self, tile: TileId) -> std::io::Result<Arc<Vec<Hash>>> {
        {
            let mut c = self
                .cache
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            c.tick += 1;
            let tick = c.tick;
            if let Some((h, t)) = c.tiles.get_mut(&tile) {
                *t = tick;
                return Ok(h.clone());
            }
        }
        let bytes = match std::fs::read(tile_path(&self.layout, &tile)) {
            Ok(b) => b,
            // A partial deleted once its full tile was written: the full
            // tile starts with the same hashes.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !tile.is_full() => {
                let mut b = std::fs::read(tile_path(&self.layout, &tile.full()))?;
                b.truncate(usize::from(tile.width) * 32);
                b
            }
            Err(e) => return Err(e),
        };
        let hashes = tiles::hashes(&bytes)
            .filter(|h| h.len() == usize::from(tile.width))
            .ok_or_else(|| bad_tile(&self.layout, &tile))?;
        let hashes = Arc::new(hashes);
        let mut c = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if c.tiles.len() >= c.capacity {
            if let Some(oldest) = c.tiles.iter().min_by_key(|(_, (_, t))| *t).map(|(k, _)| *k) {
                c.tiles.remove(&oldest);
            }
        }
        let tick = c.tick;
        c.tiles.insert(tile, (hashes.clone(), tick));
        Ok(hashes)
    }
}

/// The nodes of the tree of a given size, from its tiles.
pub struct TreeAt<'a> {
    reader: &'a TileReader,
    size: u64,
}

impl NodeSource for TreeAt<'_> {
    type Error = std::io::Error;

    fn node(&self, level: u32, index: u64) -> std::io::Result<Hash> {
        let at = tiles::locate(level, index);
        let span = tiles::span(at.tile_level).expect("a node within the tree has a span");
        let full_tiles = self.size / span / TILE_WIDTH;
        let width = if at.tile_index < full_tiles {
            TILE_WIDTH as u16
        } else {
            tiles::partial_width(at.tile_level, self.size)
        };
        let tile = TileId {
            kind: TileKind::Hash(at.tile_level),
            index: at.tile_index,
            width,
        };
        let hashes = self.reader.hashes(tile)?;
        let slice = hashes
            .get(at.offset..at.offset + at.count)
            .ok_or_else(|| bad_tile(&self.reader.layout, &tile))?;
        Ok(tiles::fold(slice))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::merkle::{inclusion_proof, leaf_hash, root, Tree};

    #[test]
    fn tiles_written_and_resumed_give_the_same_tree() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let mut w = TileWriter::new(&layout);
        let mut t = Tree::new();
        let sizes = [1u64, 255, 256, 257, 1000, 65_536 + 300];
        let mut next = 0u64;
        for &size in &sizes {
            while next < size {
                let entry = format!("entry-{next}");
                let leaf = leaf_hash(entry.as_bytes());
                w.push(leaf, entry.as_bytes());
                t.push(leaf);
                next += 1;
            }
            w.sync().unwrap();
            let reader = TileReader::new(&layout, 8);
            assert_eq!(
                root(&reader.at(size), size).unwrap(),
                t.root(size),
                "size {size}"
            );
            for i in [0, size / 2, size - 1] {
                assert_eq!(
                    inclusion_proof(&reader.at(size), i, size).unwrap(),
                    t.inclusion_proof(i, size),
                    "{i}/{size}"
                );
            }
            let resumed = TileWriter::resume(&layout, size).unwrap();
            assert_eq!(resumed.root(), t.root(size));
        }
        // Partials of full tiles are gone; the latest are there.
        assert!(!tile_path(
            &layout,
            &TileId {
                kind: TileKind::Hash(0),
                index: 0,
                width: 1
            }
        )
        .exists());
        assert!(tile_path(
            &layout,
            &TileId {
                kind: TileKind::Hash(0),
                index: 257,
                width: 44
            }
        )
        .exists());
        let bundle = std::fs::read(tile_path(
            &layout,
            &TileId {
                kind: TileKind::Entries,
                index: 1,
                width: 256,
            },
        ))
        .unwrap();
        assert_eq!(tiles::entries(&bundle).unwrap()[0], b"entry-256");
    }
}
