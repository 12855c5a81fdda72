//! The Balancer's config storage: each change written in one transaction (all of it or nothing), history one version per key.

use worker::*;

use super::{
    Balancer, HistoryEntry, StoredConfig, HISTORY_LEN, KEY_AFFINITY, KEY_AUDIT, KEY_CONFIG,
    KEY_DELETED, KEY_HOST, KEY_OUTBOX, KEY_WATCH,
};

/// Before per-version keys the whole history was one value, which outgrew a storage value.
const KEY_LEGACY_HISTORY: &str = "history";
/// One key per kept version: `history:` and the version zero-padded, so keys sort by version.
const HISTORY_PREFIX: &str = "history:";

pub(super) fn history_key(version: u64) -> String {
    format!("{HISTORY_PREFIX}{version:020}")
}

/// Everything one config change stores. Written in one transaction: when it fails nothing of it
/// is stored, and the caller changes nothing in memory either.
#[derive(Default)]
pub(super) struct ConfigWrite {
    pub config: Option<StoredConfig>,
    pub history: Option<HistoryEntry>,
    pub host: Option<String>,
    pub outbox: Option<String>,
    pub audit: Option<String>,
    pub affinity_key: Option<Vec<u8>>,
    /// The change watch as it stands after this change (JSON text).
    pub watch: Option<String>,
    /// Some(true) marks the service deleted (DEFAULT_BACKENDS does not bring it back); Some(false) clears that.
    pub deleted: Option<bool>,
    pub delete: Vec<String>,
    /// Test only (`FB_TEST_OVERSIZE_WRITE`): the write also stores a value too large for storage,
    /// so storage refuses the transaction the way it refuses any write.
    pub oversize: bool,
}

impl ConfigWrite {
    pub(super) async fn run(self, storage: Storage) -> Result<()> {
        storage
            .transaction(move |t| async move {
                if let Some(c) = &self.config {
                    t.put(KEY_CONFIG, c).await?;
                }
                if let Some(h) = &self.history {
                    t.put(&history_key(h.version), h).await?;
                }
                if let Some(h) = &self.host {
                    t.put(KEY_HOST, h).await?;
                }
                if let Some(o) = &self.outbox {
                    t.put(KEY_OUTBOX, o).await?;
                }
                if let Some(a) = &self.audit {
                    t.put(KEY_AUDIT, a).await?;
                }
                if let Some(w) = &self.watch {
                    t.put(KEY_WATCH, w).await?;
                }
                if let Some(k) = &self.affinity_key {
                    t.put(KEY_AFFINITY, k).await?;
                }
                match self.deleted {
                    Some(true) => t.put(KEY_DELETED, true).await?,
                    Some(false) => {
                        t.delete(KEY_DELETED).await?;
                    }
                    None => {}
                }
                if !self.delete.is_empty() {
                    t.delete_multiple(self.delete.clone()).await?;
                }
                if self.oversize {
                    t.put("test:oversize", "x".repeat(3 << 20)).await?;
                }
                Ok(())
            })
            .await
    }
}

impl Balancer {
    /// The newest `limit` kept versions, oldest first.
    async fn history_entries(&self, limit: usize) -> Result<Vec<HistoryEntry>> {
        let found = self
            .state
            .storage()
            .list_with_options(
                ListOptions::new()
                    .prefix(HISTORY_PREFIX)
                    .reverse(true)
                    .limit(limit),
            )
            .await?;
        let mut entries = Vec::new();
        for value in found.values() {
            match serde_wasm_bindgen::from_value::<HistoryEntry>(value?) {
                Ok(h) => entries.push(h),
                // One unreadable version must not hide the others.
                Err(e) => console_error!("a stored config version is unreadable: {e}"),
            }
        }
        entries.reverse();
        Ok(entries)
    }

    /// The kept versions (at most HISTORY_LEN), oldest first.
    pub(super) async fn load_history(&self) -> Result<Vec<HistoryEntry>> {
        self.history_entries(HISTORY_LEN).await
    }

    /// The version a deleted or never-configured service would continue from.
    pub(super) async fn stored_version(&self) -> Result<u64> {
        Ok(self
            .history_entries(1)
            .await?
            .last()
            .map_or(0, |h| h.version))
    }

    /// Moves a history stored as one value (objects written before per-version keys) to one key
    /// per version, once. A failure is logged and retried in the next lifetime.
    pub(super) async fn migrate_history(&self) {
        let storage = self.state.storage();
        let old: Vec<HistoryEntry> = match storage.get(KEY_LEGACY_HISTORY).await {
            Ok(Some(h)) => h,
            Ok(None) => return,
            Err(e) => {
                console_error!("the stored config history could not be read for migration: {e}");
                return;
            }
        };
        let keep = old.len().saturating_sub(HISTORY_LEN);
        let moved = storage
            .transaction(move |t| async move {
                for h in &old[keep..] {
                    t.put(&history_key(h.version), h).await?;
                }
                t.delete(KEY_LEGACY_HISTORY).await?;
                Ok(())
            })
            .await;
        if let Err(e) = moved {
            console_error!("the stored config history could not be migrated: {e}");
        }
    }
}
