//! The Balancer's D1 writer: it adds up rollups from every outcome and answer tally, holds the request-log rows the edge hands it, and writes both to D1 from its alarm, once a minute, within the deployment's daily budget.

use std::collections::BTreeMap;

use wasm_bindgen::JsValue;
use worker::*;

use super::Balancer;
use crate::platform::error_response;
use crate::platform::store::rollups::{self, Write};
use crate::platform::store::usage;
use crate::policy::telemetry::answers::Answered;
use crate::policy::telemetry::budget::{self, State};
use crate::policy::telemetry::record::LogRow;
use crate::policy::traffic::decision::Outcome;

/// Rows the edge handed over and D1 has not taken yet, one key each (`logq:<ms><seq>`).
pub(super) const LOGQ_PREFIX: &str = "logq:";
/// The object's rollups not yet written (a JSON text), stored with its counters.
pub(super) const KEY_ROLLUP: &str = "rollup";
/// Kept rows wait this long for others to share their write.
const LOG_FLUSH_MS: u64 = 1000;
/// A closed minute waits this long for outcomes batched just before its end.
const CLOSE_GRACE_MS: u64 = 2000;
/// Rows per `POST /log` and per write.
const MAX_ROWS_PER_MESSAGE: usize = 100;
const MAX_LOGS_PER_WRITE: usize = 500;
/// A failed write is tried again after 5 s, doubling up to 5 minutes.
const BACKOFF_MIN_MS: u64 = 5_000;
const BACKOFF_MAX_MS: u64 = 300_000;

/// What the D1 writer knows between writes.
#[derive(Default)]
pub(super) struct D1State {
    /// Request-log rows held in storage.
    pub logq: usize,
    pub seq: u64,
    /// No write before this (backoff after a failure).
    pub retry_at: u64,
    pub backoff_ms: u64,
    /// The deployment's budget state, from the last ledger update.
    pub budget: State,
    /// Why the last write failed (None: it worked, or none was tried).
    pub error: Option<String>,
    /// Rows this object wrote that the day's ledger does not have yet.
    pub unledgered: u64,
    /// Something was counted or held since the last write (an early write has work to do).
    pub changed: bool,
}

impl Balancer {
    /// Counts reported outcomes in the open minute.
    pub(super) fn roll_outcomes(&self, now: u64, outcomes: &[Outcome]) {
        self.d1.borrow_mut().changed = true;
        let mut r = self.rollup.borrow_mut();
        for o in outcomes {
            r.record_outcome(now, o);
        }
    }

    pub(super) fn roll_answered(&self, now: u64, answered: &[Answered]) {
        self.d1.borrow_mut().changed = true;
        self.rollup.borrow_mut().record_answered(now, answered);
    }

    /// Keeps sampled successes in the open minute, up to the service's per-minute cap; none once
    /// the day's budget nears its end.
    pub(super) fn roll_samples(&self, now: u64, samples: Vec<LogRow>) {
        if samples.is_empty() || self.d1.borrow().budget != State::Ok {
            return;
        }
        let (host, cap) = match &*self.service.borrow() {
            Some(super::Service::Ready(f)) => (
                f.cfg().hostname.to_string(),
                f.cfg().logging.max_success_rows_per_minute as usize,
            ),
            _ => return,
        };
        self.d1.borrow_mut().changed = true;
        let mut r = self.rollup.borrow_mut();
        for mut row in samples {
            row.hostname.clone_from(&host);
            if !r.record_sample(now, row, cap) {
                break;
            }
        }
        self.metrics_dirty.set(true);
    }

    /// `POST /log`: rows the edge must not lose. Stored before the answer, so the edge answers
    /// its client only once the row is safe; written to D1 by the alarm, shared by all rows then.
    pub(super) async fn keep_rows(&self, req: &mut Request) -> Result<Response> {
        let rows: Vec<LogRow> = match req.json().await {
            Ok(r) => r,
            Err(e) => return error_response(400, &format!("malformed log rows: {e}"), None),
        };
        if rows.len() > MAX_ROWS_PER_MESSAGE {
            return error_response(
                400,
                &format!("log rows: at most {MAX_ROWS_PER_MESSAGE} a message"),
                None,
            );
        }
        // Only the edge talks to this object, and each hostname has its own: the rows name it.
        if let Some(first) = rows.first() {
            self.ensure_loaded(&first.hostname).await?;
        }
        let host = self.host.borrow().clone().unwrap_or_default();
        let now = Self::now();
        let entries = js_sys::Object::new();
        for mut row in rows {
            row.hostname.clone_from(&host);
            let seq = {
                let mut d = self.d1.borrow_mut();
                d.seq += 1;
                d.logq += 1;
                d.changed = true;
                d.seq
            };
            let key = format!("{LOGQ_PREFIX}{now:013}{seq:06}");
            js_sys::Reflect::set(&entries, &key.into(), &serde_json::to_string(&row)?.into())?;
        }
        self.state.storage().put_multiple_raw(entries).await?;
        let soon = now + LOG_FLUSH_MS;
        let known = *self.alarm_at.borrow();
        if known.is_none_or(|at| at > soon) {
            self.set_alarm_in(LOG_FLUSH_MS).await?;
        }
        Response::empty().map(|r| r.with_status(204))
    }

    /// When the writer wants the alarm (None: nothing to write, no minute open).
    pub(super) fn d1_due_at(&self, now: u64) -> Option<u64> {
        let d = self.d1.borrow();
        let r = self.rollup.borrow();
        let want = if d.logq > 0 || r.pending() {
            Some(now)
        } else {
            r.closes_at().map(|t| t + CLOSE_GRACE_MS)
        };
        want.map(|w| w.max(d.retry_at))
    }

    /// `POST /flush`: writes now what the admin API is about to read, the open minute included
    /// (written again, whole, when it closes). Nothing is written when nothing changed since the
    /// last write, so a console that polls costs no rows while traffic is idle.
    pub(super) async fn flush_now(&self) -> Result<Response> {
        if self.d1.borrow().changed {
            self.write_d1(true).await?;
        }
        Response::from_json(&self.d1_view())
    }

    /// Writes closed minutes (and with `open`, the open one), hours and held log rows in one D1
    /// batch, then adds what it wrote to the day's ledger. A failure keeps everything for the
    /// next try (the rollup upserts write whole values, so a repeat counts nothing twice).
    pub(super) async fn write_d1(&self, open: bool) -> Result<()> {
        let now = Self::now();
        if !open && now < self.d1.borrow().retry_at {
            return Ok(());
        }
        let logq = self.d1.borrow().logq;
        let mut keys = Vec::new();
        let mut logs = Vec::new();
        if logq > 0 {
            let listed = self
                .state
                .storage()
                .list_with_options(
                    ListOptions::new()
                        .prefix(LOGQ_PREFIX)
                        .limit(MAX_LOGS_PER_WRITE),
                )
                .await?;
            for entry in listed.entries() {
                let pair: js_sys::Array = entry?.into();
                let key = pair.get(0).as_string().unwrap_or_default();
                // A row that cannot be read back is dropped rather than blocking the rest.
                if let Some(row) = pair
                    .get(1)
                    .as_string()
                    .and_then(|t| serde_json::from_str::<LogRow>(&t).ok())
                {
                    logs.push(row);
                }
                keys.push(key);
            }
            if keys.len() < MAX_LOGS_PER_WRITE {
                // Everything held was listed: the count is exact again.
                self.d1.borrow_mut().logq = keys.len();
            }
        }
        let closed = {
            let mut r = self.rollup.borrow_mut();
            r.roll(now);
            r.closed.len()
        };
        let (minutes, hours) = if open {
            self.rollup.borrow_mut().with_open(now)
        } else {
            match self.rollup.borrow_mut().batch(now) {
                Some(b) => (b.minutes.to_vec(), b.hours.to_vec()),
                None => (Vec::new(), Vec::new()),
            }
        };
        if minutes.is_empty() && keys.is_empty() {
            return Ok(());
        }
        let state = self.d1.borrow().budget;
        let skipped = if state == State::Exhausted {
            std::mem::take(&mut logs).len()
        } else {
            0
        };
        let host = self.host.borrow().clone().unwrap_or_default();
        let w = Write {
            host: &host,
            minutes: &minutes,
            hours: &hours,
            samples: state == State::Ok,
            logs: &logs,
        };
        match rollups::write(&self.env, &w).await {
            Ok(written) => {
                self.rollup.borrow_mut().written(closed);
                if !keys.is_empty() {
                    self.state.storage().delete_multiple(keys.clone()).await?;
                    let mut d = self.d1.borrow_mut();
                    d.logq = d.logq.saturating_sub(keys.len());
                }
                let total: u64 = written.iter().map(|(_, n)| n).sum();
                {
                    let mut m = self.metrics.borrow_mut();
                    for (table, n) in &written {
                        *m.d1_rows_written.entry(table.to_string()).or_default() += n;
                    }
                    m.log_rows_skipped += skipped as u64;
                }
                {
                    let mut d = self.d1.borrow_mut();
                    d.error = None;
                    d.backoff_ms = 0;
                    d.retry_at = 0;
                    d.unledgered += total;
                    // Only a write with the open minute leaves nothing unwritten.
                    d.changed &= !open;
                }
                self.metrics_dirty.set(true);
                self.ledger(now).await;
            }
            Err(e) => {
                console_error!("D1 write for {host} failed (kept for the next try): {e}");
                let mut d = self.d1.borrow_mut();
                d.error = Some(e.to_string());
                d.backoff_ms = (d.backoff_ms * 2).clamp(BACKOFF_MIN_MS, BACKOFF_MAX_MS);
                d.retry_at = now + d.backoff_ms;
            }
        }
        self.save_metrics(true).await
    }

    /// Adds this object's unledgered rows to the day's count and reads the budget state back.
    async fn ledger(&self, now: u64) {
        let rows = self.d1.borrow().unledgered;
        let budget = usage::daily_budget(&self.env);
        match usage::add_usage(&self.env, &budget::day_of(now), rows).await {
            Ok((total, own)) => {
                let mut d = self.d1.borrow_mut();
                // The ledger's own write is counted on the next one.
                d.unledgered = own;
                d.budget = budget::state(total, budget);
                let mut m = self.metrics.borrow_mut();
                *m.d1_rows_written.entry("d1_usage".into()).or_default() += own;
            }
            Err(e) => console_error!("D1 usage ledger not updated: {e}"),
        }
    }

    /// The writer's state for the status view.
    pub(super) fn d1_view(&self) -> serde_json::Value {
        let d = self.d1.borrow();
        let r = self.rollup.borrow();
        let written: BTreeMap<String, u64> = self.metrics.borrow().d1_rows_written.clone();
        serde_json::json!({
            "held_log_rows": d.logq,
            "pending_minutes": r.closed.len(),
            "dropped_minutes": r.dropped_minutes,
            "budget": d.budget,
            "last_error": d.error,
            "rows_written": written,
        })
    }

    /// Counts held rows after a restart (one listing per object lifetime).
    pub(super) async fn load_d1(&self) -> Result<()> {
        let listed = self
            .state
            .storage()
            .list_with_options(ListOptions::new().prefix(LOGQ_PREFIX))
            .await?;
        self.d1.borrow_mut().logq = listed.size() as usize;
        let text: Option<String> = self.state.storage().get(KEY_ROLLUP).await?;
        if let Some(r) = text.and_then(|t| serde_json::from_str(&t).ok()) {
            *self.rollup.borrow_mut() = r;
        }
        Ok(())
    }

    /// The rollups' text for storage, stored with the counters.
    pub(super) fn rollup_text(&self) -> Result<JsValue> {
        Ok(serde_json::to_string(&*self.rollup.borrow())?.into())
    }
}
