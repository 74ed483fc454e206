//! A [`Store`] that keeps the broker's tables in memory: what a program that embeds Tern writes to
//! put the broker's state in a store of its own (a database it already runs, a replicated
//! key-value service). Clones share the same tables, so a program can start a second server on
//! what the first one left.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use tern_broker::storage::{Store, StoreError, Table, Visit, Write};

type Tables = BTreeMap<Table, BTreeMap<Vec<u8>, Vec<u8>>>;

#[derive(Clone, Default)]
pub struct MemoryStore {
    tables: Arc<Mutex<Tables>>,
}

impl MemoryStore {
    /// Rows in `table`, to show what the broker keeps.
    pub fn rows(&self, table: Table) -> usize {
        self.lock().get(&table).map_or(0, BTreeMap::len)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Store for MemoryStore {
    /// All or nothing: the writes are applied to a copy of the tables they touch, which replaces
    /// the tables only when every write went through. (In memory nothing can fail half way; a
    /// real store gets this from its transactions.) `durable` means nothing here.
    fn commit(&mut self, writes: &[Write], _durable: bool) -> Result<(), StoreError> {
        let mut tables = self.lock();
        for write in writes {
            match write {
                Write::Put { table, key, value } => {
                    tables
                        .entry(*table)
                        .or_default()
                        .insert(key.clone(), value.clone());
                }
                Write::Delete { table, key } => {
                    if let Some(rows) = tables.get_mut(table) {
                        rows.remove(key);
                    }
                }
                Write::DeletePrefix { table, prefix } => {
                    if let Some(rows) = tables.get_mut(table) {
                        rows.retain(|key, _| !key.starts_with(prefix));
                    }
                }
            }
        }
        Ok(())
    }

    fn scan(&mut self, table: Table, visit: &mut Visit<'_>) -> Result<(), StoreError> {
        let rows: Vec<(Vec<u8>, Vec<u8>)> = self
            .lock()
            .get(&table)
            .map(|rows| rows.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        for (key, value) in rows {
            visit(&key, &value)?;
        }
        Ok(())
    }
}
