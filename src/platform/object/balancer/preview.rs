//! The Balancer's config preview: a draft validated as a write would be, its new backends probed once, the request log's recent requests replayed under it; nothing stored.

use worker::*;

use super::Balancer;
use crate::platform::object::probe::probe_backend;
use crate::platform::store::{requestlog, usage};
use crate::policy::traffic::preview::{
    self, Current, NOTHING_TO_REPLAY, REPLAY_ROWS, REPLAY_WINDOW_MS,
};

impl Balancer {
    /// `POST /config/preview`: what saving `body` would do to recent traffic. The request log
    /// being unreadable is a warning, not a failure: the rest of the preview still holds.
    pub(super) async fn preview_config(&self, body: serde_json::Value) -> Result<Response> {
        let Some((version, cfg, records)) = self.current() else {
            return self.status();
        };
        let draft = match self.draft(body).await? {
            Ok(d) => d,
            Err(refused) => return Ok(refused),
        };
        let host = cfg.hostname.to_string();
        // What this object still holds (the open minute's samples, kept rows) goes to D1 first,
        // so the newest requests are replayed too; if it cannot, the read below says so.
        if self.d1.borrow().changed {
            if let Err(e) = self.write_d1(true).await {
                console_error!("{host}: config preview could not write the held log rows: {e}");
            }
        }
        let now = Self::now();
        let (rows, unread) = match requestlog::recent(
            &self.env,
            &host,
            now.saturating_sub(REPLAY_WINDOW_MS),
            REPLAY_ROWS,
        )
        .await
        {
            Ok(rows) => (rows, None),
            Err(e) => {
                let reason = usage::reason(&e);
                console_error!("{host}: config preview could not read the request log: {reason}");
                (
                    Vec::new(),
                    Some(format!(
                        "the request log could not be read (D1 refused the query: {reason}): no requests were replayed"
                    )),
                )
            }
        };
        let new: Vec<String> = draft
            .all_backends()
            .iter()
            .map(|b| b.url.to_string())
            .filter(|url| !records.iter().any(|r| &r.url == url))
            .collect();
        let probes = new
            .iter()
            .map(|url| probe_backend(url, &draft.health, None));
        let unanswered: Vec<(String, String)> = futures_util::future::join_all(probes)
            .await
            .into_iter()
            .filter(|r| !r.ok)
            .map(|r| {
                let why = r.error.clone().unwrap_or_else(|| match r.status {
                    Some(s) => format!("answered {s}"),
                    None => "no answer".to_string(),
                });
                (r.url, why)
            })
            .collect();
        let secret = self.secret();
        let current = Current {
            cfg: &cfg,
            records: &records,
            secret: &secret,
            now_ms: now,
        };
        let mut p = preview::preview(&current, &draft, &rows, &unanswered);
        if let Some(unread) = unread {
            p.warnings.retain(|w| w != NOTHING_TO_REPLAY);
            p.warnings.insert(0, unread);
        }
        let mut answer = serde_json::to_value(&p)?;
        answer["hostname"] = host.into();
        answer["version"] = version.into();
        Response::from_json(&answer)
    }
}
