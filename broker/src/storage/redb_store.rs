//! The built-in store: one redb file, `DIR/tern.redb` (why redb: `docs/storage.md`).
//!
//! Every commit the broker marks durable is one `fdatasync` (redb's `Durability::Immediate`), and
//! every page checksum is verified when the file is opened, so a torn or damaged file is refused
//! rather than read as valid data.

use std::fs;
use std::path::{Path, PathBuf};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::store::{Store, StoreError, Table, Visit, Write};

/// The store's file within `storage.dir`.
pub const FILE_NAME: &str = "tern.redb";

/// redb's page cache. Its default, 1 GiB, kept every page read at start in memory (905 MiB of RSS
/// after reading back 1,000,000 queued messages); after the start the store is mostly written, and
/// the pages a commit touches are the recent ones.
const CACHE_BYTES: usize = 64 << 20;

type Bytes = TableDefinition<'static, &'static [u8], &'static [u8]>;

fn definition(table: Table) -> Bytes {
    TableDefinition::new(table.name())
}

/// The broker's state in one redb file.
pub struct RedbStore {
    /// `None` after a failed commit: redb refuses every write after an I/O error (a full disk)
    /// until the file is opened again, which also repairs what the failed commit left. The next
    /// commit opens it.
    db: Option<redb::Database>,
    path: PathBuf,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .finish()
    }
}

impl RedbStore {
    /// Opens (or creates) the store in `dir`, checking every page first. A file that fails the
    /// check is refused: the error names it.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, true)
    }

    /// Opens the store without checking every page first (`tern-broker storage repair`, which
    /// reads every value and checks its checksum instead).
    pub fn open_for_repair(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, false)
    }

    fn open_with(dir: &Path, check: bool) -> Result<Self, StoreError> {
        create_private_dir(dir).map_err(|error| io_error(dir, &error))?;
        let path = dir.join(FILE_NAME);
        let mut builder = redb::Builder::new();
        builder.set_check_integrity_on_open(check);
        builder.set_cache_size(CACHE_BYTES);
        let db = builder
            .create(&path)
            .map_err(|error| database_error(&path, error))?;
        // Every table exists from the start, so that reads never meet a missing one.
        let tx = db.begin_write().map_err(other)?;
        for table in Table::ALL {
            tx.open_table(definition(table)).map_err(other)?;
        }
        tx.commit().map_err(|error| commit_error(&path, error))?;
        Ok(Self { db: Some(db), path })
    }

    /// The open database, opened again after a failed commit.
    fn database(&mut self) -> Result<&redb::Database, StoreError> {
        if self.db.is_none() {
            let db = redb::Builder::new()
                .set_cache_size(CACHE_BYTES)
                .create(&self.path)
                .map_err(|error| database_error(&self.path, error))?;
            tracing::info!(path = %self.path.display(), "storage: the store is open again after a failed commit");
            self.db = Some(db);
        }
        self.db
            .as_ref()
            .ok_or_else(|| StoreError::Other("the store is not open".into()))
    }

    fn try_commit(&mut self, writes: &[Write], durable: bool) -> Result<(), StoreError> {
        let path = self.path.clone();
        let mut tx = self.database()?.begin_write().map_err(other)?;
        tx.set_durability(if durable {
            redb::Durability::Immediate
        } else {
            redb::Durability::None
        })
        .map_err(other)?;
        {
            let mut tables = Vec::with_capacity(Table::ALL.len());
            for table in Table::ALL {
                tables.push(tx.open_table(definition(table)).map_err(other)?);
            }
            let index = |table: Table| Table::ALL.iter().position(|t| *t == table).unwrap_or(0);
            for write in writes {
                match write {
                    Write::Put { table, key, value } => {
                        tables[index(*table)]
                            .insert(key.as_slice(), value.as_slice())
                            .map_err(|error| storage_error(&path, error))?;
                    }
                    Write::Delete { table, key } => {
                        tables[index(*table)]
                            .remove(key.as_slice())
                            .map_err(|error| storage_error(&path, error))?;
                    }
                    Write::DeletePrefix { table, prefix } => {
                        let table = &mut tables[index(*table)];
                        let result = match successor(prefix) {
                            Some(end) => {
                                table.retain_in(prefix.as_slice()..end.as_slice(), |_, _| false)
                            }
                            None => table.retain_in(prefix.as_slice().., |_, _| false),
                        };
                        result.map_err(|error| storage_error(&path, error))?;
                    }
                }
            }
        }
        tx.commit().map_err(|error| commit_error(&path, error))
    }

    /// Checks every page of a store that is not open (`tern-broker storage check`): `Ok(true)`
    /// when it is intact, `Ok(false)` when it was not closed cleanly and had to be repaired.
    pub fn check(dir: &Path) -> Result<bool, StoreError> {
        let path = dir.join(FILE_NAME);
        let mut db = redb::Database::open(&path).map_err(|error| database_error(&path, error))?;
        db.check_integrity()
            .map_err(|error| database_error(&path, error))
    }

    /// Rewrites the file compactly, giving free pages back to the file system (`tern-broker
    /// storage compact`).
    pub fn compact(dir: &Path) -> Result<bool, StoreError> {
        let path = dir.join(FILE_NAME);
        let mut db = redb::Database::open(&path).map_err(|error| database_error(&path, error))?;
        db.compact(redb::CompactionMode::default())
            .map_err(|error| StoreError::Other(format!("{}: {error}", path.display())))
    }
}

impl Store for RedbStore {
    fn commit(&mut self, writes: &[Write], durable: bool) -> Result<(), StoreError> {
        let result = self.try_commit(writes, durable);
        if result.is_err() {
            // Closed now, opened again by the next commit (see `RedbStore::db`).
            self.db = None;
        }
        result
    }

    fn scan(&mut self, table: Table, visit: &mut Visit<'_>) -> Result<(), StoreError> {
        let path = self.path.clone();
        let tx = self.database()?.begin_read().map_err(other)?;
        let read = tx.open_table(definition(table)).map_err(other)?;
        for entry in read.iter().map_err(|error| storage_error(&path, error))? {
            let (key, value) = entry.map_err(|error| storage_error(&path, error))?;
            visit(key.value(), value.value())?;
        }
        Ok(())
    }

    fn size(&self) -> Option<u64> {
        fs::metadata(&self.path).ok().map(|meta| meta.len())
    }

    fn close(self: Box<Self>) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Creates `dir` (and its parents) readable by the broker's user only, since the store holds
/// messages and wills; a directory that exists (a mounted volume) is left as it is.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// The smallest key above every key that starts with `prefix`; `None` when there is none.
fn successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn other(error: impl std::fmt::Display) -> StoreError {
    StoreError::Other(error.to_string())
}

fn io_error(path: &Path, error: &std::io::Error) -> StoreError {
    if error.raw_os_error() == Some(libc_enospc()) {
        StoreError::Full(format!("{}: {error}", path.display()))
    } else {
        StoreError::Other(format!("{}: {error}", path.display()))
    }
}

/// ENOSPC on Linux (and every platform Tern builds for).
const fn libc_enospc() -> i32 {
    28
}

fn storage_error(path: &Path, error: redb::StorageError) -> StoreError {
    match error {
        redb::StorageError::Io(io) => io_error(path, &io),
        redb::StorageError::Corrupted(what) => {
            StoreError::Corrupted(format!("{}: {what}", path.display()))
        }
        other => StoreError::Other(format!("{}: {other}", path.display())),
    }
}

fn database_error(path: &Path, error: redb::DatabaseError) -> StoreError {
    match error {
        redb::DatabaseError::Storage(storage) => storage_error(path, storage),
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Other(format!(
            "{}: already open in another process",
            path.display()
        )),
        other => StoreError::Corrupted(format!("{}: {other}", path.display())),
    }
}

fn commit_error(path: &Path, error: redb::CommitError) -> StoreError {
    match error {
        redb::CommitError::Storage(storage) => storage_error(path, storage),
        other => StoreError::Other(format!("{}: {other}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_covers_exactly_its_keys() {
        assert_eq!(successor(&[0, 0, 0, 1]), Some(vec![0, 0, 0, 2]));
        assert_eq!(successor(&[0, 0xFF]), Some(vec![1]));
        assert_eq!(successor(&[0xFF, 0xFF]), None);
    }
}
