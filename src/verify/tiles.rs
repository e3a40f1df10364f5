//! Checks the tiles on disk against the tree the walk computes: every
//! stored hash of every tile a checkpoint needs, and every entry of every
//! entry bundle. An edited tile is found here (the server never trusts a
//! tile over the records either: proofs from a bad tile do not verify).

use std::collections::HashMap;

use crate::event::Hash;
use crate::log::tiles::{self, TileId, TileKind, TILE_HEIGHT, TILE_WIDTH};
use crate::store::layout::Layout;
use crate::store::tiles::tile_path;

/// How a tile disagrees with the log (tiles are named relative to the
/// data directory).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TileError {
    /// The tile (and the full tile standing for it) cannot be read.
    #[error("{tile}: {why}")]
    Unreadable {
        /// The tile.
        tile: String,
        /// The reading error.
        why: String,
    },
    /// The tile holds another number of items than its width.
    #[error("{tile} holds {found} items, not {width}")]
    Width {
        /// The tile.
        tile: String,
        /// Items found.
        found: usize,
        /// Its width.
        width: u16,
    },
    /// An item differs from the one the log gives.
    #[error("{tile} differs from the log at position {position}")]
    Differs {
        /// The tile.
        tile: String,
        /// The item's position in it.
        position: u64,
    },
}

/// Compares tiles with the walk's nodes, up to the latest checkpoint.
pub struct TileCheck {
    layout: Layout,
    /// Tiles are checked for the tree of this size (the latest checkpoint).
    size: u64,
    /// The tile being compared at each level (and entry bundles).
    open: HashMap<TileKind, (u64, Vec<Vec<u8>>)>,
    /// Tiles compared.
    pub checked: u64,
}

impl TileCheck {
    /// A check of the tiles the checkpoint of `size` leaves needs.
    pub fn new(layout: &Layout, size: u64) -> TileCheck {
        TileCheck {
            layout: layout.clone(),
            size,
            open: HashMap::new(),
            checked: 0,
        }
    }

    /// The tile holding stored item `index` of `kind` in the tree of
    /// `self.size`, if that tree has it.
    fn tile_for(&self, kind: TileKind, index: u64) -> Option<TileId> {
        let level = match kind {
            TileKind::Hash(l) => l,
            TileKind::Entries => 0,
        };
        let span = tiles::span(level)?;
        let stored = self.size / span;
        if index >= stored {
            return None;
        }
        let tile = index / TILE_WIDTH;
        let width = if tile < stored / TILE_WIDTH {
            TILE_WIDTH as u16
        } else {
            (stored % TILE_WIDTH) as u16
        };
        Some(TileId {
            kind,
            index: tile,
            width,
        })
    }

    /// Compares one stored item (a hash at tile level `kind`, or an entry)
    /// with the tile that should hold it.
    fn compare(&mut self, kind: TileKind, index: u64, want: &[u8]) -> Result<(), TileError> {
        let Some(tile) = self.tile_for(kind, index) else {
            return Ok(());
        };
        let stale = self.open.get(&kind).is_none_or(|(t, _)| *t != tile.index);
        if stale {
            let (path, bytes) = self.read_tile(&tile)?;
            let mut items: Vec<Vec<u8>> = match kind {
                TileKind::Hash(_) => tiles::hashes(&bytes)
                    .unwrap_or_default()
                    .iter()
                    .map(|h| h.to_vec())
                    .collect(),
                TileKind::Entries => tiles::entries(&bytes)
                    .unwrap_or_default()
                    .iter()
                    .map(|e| e.to_vec())
                    .collect(),
            };
            if path != tile_path(&self.layout, &tile) {
                // The full tile stands for a partial deleted after it.
                items.truncate(usize::from(tile.width));
            }
            if items.len() != usize::from(tile.width) {
                return Err(TileError::Width {
                    tile: self.layout.relative(&path),
                    found: items.len(),
                    width: tile.width,
                });
            }
            self.open.insert(kind, (tile.index, items));
            self.checked += 1;
        }
        let (_, items) = &self.open[&kind];
        if items[(index % TILE_WIDTH) as usize] != want {
            return Err(TileError::Differs {
                tile: self.layout.relative(&tile_path(&self.layout, &tile)),
                position: index % TILE_WIDTH,
            });
        }
        Ok(())
    }

    /// The bytes of `tile`, or of its full tile when `tile` is a partial
    /// the writer deleted once the full tile was durable (a crash can
    /// leave the latest checkpoint older than that full tile).
    fn read_tile(&self, tile: &TileId) -> Result<(std::path::PathBuf, Vec<u8>), TileError> {
        let path = tile_path(&self.layout, tile);
        let unreadable = |e: std::io::Error| TileError::Unreadable {
            tile: self.layout.relative(&path),
            why: e.to_string(),
        };
        match std::fs::read(&path) {
            Ok(bytes) => Ok((path, bytes)),
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound && tile.width < TILE_WIDTH as u16 =>
            {
                let full = TileId {
                    width: TILE_WIDTH as u16,
                    ..*tile
                };
                let full_path = tile_path(&self.layout, &full);
                std::fs::read(&full_path)
                    .map(|bytes| (full_path, bytes))
                    .map_err(|_| unreadable(e))
            }
            Err(e) => Err(unreadable(e)),
        }
    }

    /// Called for each tree node the walk completes.
    pub fn node(&mut self, level: u32, index: u64, hash: &Hash) -> Result<(), TileError> {
        if level.is_multiple_of(TILE_HEIGHT) {
            self.compare(TileKind::Hash((level / TILE_HEIGHT) as u8), index, hash)?;
        }
        Ok(())
    }

    /// Called for each record's entry (its receipt body).
    pub fn entry(&mut self, index: u64, body: &[u8]) -> Result<(), TileError> {
        self.compare(TileKind::Entries, index, body)
    }
}
