//! openraft's own storage conformance suite, run against both stores.

use openraft::testing::{StoreBuilder, Suite};
use tempfile::TempDir;
use tern_raft_store::mem::{MemLogStore, MemStateMachine, MemStore};
use tern_raft_store::rocks::{self, RocksLogStore, RocksStateMachine};
use tern_raft_store::{StorageError, TypeConfig};

struct RocksBuilder;

impl StoreBuilder<TypeConfig, RocksLogStore, RocksStateMachine, TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(TempDir, RocksLogStore, RocksStateMachine), StorageError> {
        let dir = tempfile::tempdir().map_err(|e| openraft::StorageIOError::write(&e))?;
        let (log, sm) = rocks::open(dir.path()).map_err(|e| openraft::StorageIOError::write(&e))?;
        Ok((dir, log, sm))
    }
}

struct MemBuilder;

impl StoreBuilder<TypeConfig, MemLogStore, MemStateMachine> for MemBuilder {
    async fn build(&self) -> Result<((), MemLogStore, MemStateMachine), StorageError> {
        let (log, sm) = MemStore::new().open();
        Ok(((), log, sm))
    }
}

#[test]
fn rocksdb_store_passes_the_openraft_storage_suite() {
    // Goal: the RocksDB log store and state machine meet openraft's storage contract.
    Suite::test_all(RocksBuilder).expect("suite passes");
}

#[test]
fn memory_store_passes_the_openraft_storage_suite() {
    // Goal: the in-memory store the simulations use meets the same contract.
    Suite::test_all(MemBuilder).expect("suite passes");
}
