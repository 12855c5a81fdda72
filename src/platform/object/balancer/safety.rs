//! The Balancer's change watch: what clients got after a config change, and the automatic rollback of a change that plainly made things worse.

use worker::*;

use super::{Balancer, Change};
use crate::policy::control::audit::Actor;
use crate::policy::control::config::{self, ServiceConfig};
use crate::policy::control::watch::{Tally, Verdict, Watch};
use crate::policy::telemetry::answers::Answered;

impl Balancer {
    /// Adds what a Worker's clients got to the recent window and the watch. A change found
    /// plainly worse is rolled back by the alarm, armed now: no decision waits for a rollback.
    pub(super) async fn watch_answered(&self, answered: &[Answered]) -> Result<()> {
        let now = Self::now();
        let verdict = {
            let mut safety = self.safety.borrow_mut();
            for a in answered {
                safety.record(now, Tally::of(a.code, u64::from(a.count)));
            }
            safety.verdict(now)
        };
        let soon = self.alarm_at.borrow().is_some_and(|at| at <= now + 100);
        if verdict == Verdict::RollBack && !soon {
            self.set_alarm_in(0).await?;
        }
        Ok(())
    }

    /// From the alarm: ends a watch whose window passed, or rolls back a change found worse.
    pub(super) async fn watch_round(&self) -> Result<()> {
        let now = Self::now();
        let verdict = self.safety.borrow().verdict(now);
        let ended = match verdict {
            Verdict::Idle | Verdict::Watching => return Ok(()),
            Verdict::Kept | Verdict::RollBack => self.safety.borrow_mut().end(),
        };
        let current = self.current().map(|(v, _, _)| v);
        match ended {
            Some(w) if verdict == Verdict::RollBack && current == Some(w.version) => {
                self.roll_back_automatically(&w).await
            }
            _ => self.save_watch().await,
        }
    }

    async fn save_watch(&self) -> Result<()> {
        let text = serde_json::to_string(&*self.safety.borrow())?;
        self.state.storage().put(super::KEY_WATCH, text).await
    }

    /// Stores the watched change's previous version as a new version, by `flowbalance`, with
    /// the `config.auto_rolled_back` event and an audit entry, like any config change (the
    /// lease fence included). The commit starts no watch: a rollback is never rolled back.
    async fn roll_back_automatically(&self, w: &Watch) -> Result<()> {
        let host = self.host.borrow().clone().unwrap_or_default();
        let Some(cfg) = self.restorable(w.previous).await? else {
            console_error!(
                "{host}: version {} made things worse but version {} cannot be restored: {}",
                w.version,
                w.previous,
                w.summary()
            );
            return self.save_watch().await;
        };
        let change = Change {
            actor: Actor::flowbalance(),
            action: "config.auto_rolled_back",
            summary: w.summary(),
        };
        let resp = self
            .commit(cfg, 200, change, Some(w.previous), Some(w))
            .await?;
        if resp.status_code() == 200 {
            console_log!("{host}: {}", w.summary());
        } else {
            console_error!(
                "{host}: automatic rollback of version {} not stored (status {})",
                w.version,
                resp.status_code()
            );
        }
        Ok(())
    }

    /// The config of a kept `version` (0: the deployed config), checked as a rollback checks it.
    async fn restorable(&self, version: u64) -> Result<Option<ServiceConfig>> {
        let host = self.host.borrow().clone().unwrap_or_default();
        let value = if version == 0 {
            match self.deployed(&host) {
                Some(d) => d.to_value(),
                None => return Ok(None),
            }
        } else {
            let history = self.load_history().await?;
            match history.into_iter().find(|h| h.version == version) {
                Some(h) => h.config,
                None => return Ok(None),
            }
        };
        Ok(config::parse_service(&value, "", &self.deployment(&host).await).ok())
    }

    /// The change being watched, for the status view: version, seconds left, both error rates.
    pub(super) fn watch_view(&self, now: u64) -> serde_json::Value {
        let safety = self.safety.borrow();
        let Some(w) = &safety.watch else {
            return serde_json::Value::Null;
        };
        let rates = |t: Tally| {
            serde_json::json!({
                "requests": t.requests,
                "errors": t.errors,
                "error_rate": (t.error_pct() * 10.0).round() / 10.0,
            })
        };
        serde_json::json!({
            "version": w.version,
            "previous_version": w.previous,
            "started_ms": w.started_ms,
            "judged_from_ms": w.judged_from_ms,
            "until_ms": w.until_ms,
            "seconds_left": w.until_ms.saturating_sub(now).div_ceil(1000),
            "before": rates(w.baseline),
            "after": rates(w.after),
            "max_error_rate_increase": w.max_increase,
            "min_requests": w.min_requests,
        })
    }
}
