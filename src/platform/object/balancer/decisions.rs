//! The Balancer's decisions and leases: the `decide` RPC method, `/lease`, `/report`, the fence a config change waits on, and the outcomes Workers report.

use worker::*;

use super::{Balancer, Service};
use crate::platform::error_response;
use crate::platform::store::registry::unknown_host;
use crate::policy::health::transitions;
use crate::policy::rng::Rng;
use crate::policy::telemetry::answers::Answered;
use crate::policy::telemetry::notify::Cause;
use crate::policy::telemetry::tail::{self, Line, RequestLine};
use crate::policy::traffic::decision::{DecideRequest, Outcome, ReportRequest, Verdict};
use crate::policy::traffic::facts::RequestFacts;
use crate::policy::traffic::lease::{self, LeaseBook, LeaseReply, LeaseRequest};

impl Balancer {
    /// A decide message (the text `DecideRequest::from_query` reads) to its reply body, or why the
    /// message is malformed. Workers send it by RPC (`decide` below).
    async fn decide(&self, query: &str) -> Result<std::result::Result<Vec<u8>, String>> {
        let msg = match DecideRequest::from_query(query) {
            Ok(m) => m,
            Err(e) => return Ok(Err(format!("malformed decide request: {e}"))),
        };
        let host = msg.host;
        self.ensure_loaded(&host).await?;
        let now = Self::now();
        // Completions, successes and client responses the Worker batched ride along.
        self.complete(&msg.done);
        self.record_answered(&msg.answered).await?;
        if !msg.successes.is_empty() {
            self.apply_outcomes(&msg.successes).await?;
        }
        let keyed = msg.affinity_key.is_some() || msg.client_ip.is_some();
        let facts = RequestFacts {
            line: msg.line,
            client_ip: msg.client_ip,
            country: msg.country,
            continent: msg.continent,
            cookies: msg.cookies,
            affinity_header: msg.affinity_key,
            streamed_body: msg.streamed_body,
        };
        let verdict = match &mut *self.service.borrow_mut() {
            Some(Service::Ready(fleet)) => fleet.decide(&facts, now),
            Some(Service::Missing(reject)) => Verdict::Reject(reject.clone()),
            None => Verdict::Reject(unknown_host(&host)),
        };
        if let Verdict::Reject(r) = &verdict {
            self.metrics.borrow_mut().record_reject(r.status);
            self.metrics_dirty.set(true);
        }
        let matched = verdict.rules_matched();
        if !matched.is_empty() {
            self.metrics
                .borrow_mut()
                .record_rule_hits(matched.iter().map(|r| (r.as_str(), 1)));
            self.metrics_dirty.set(true);
        }
        // While a tail listens, the reply also says why, so the edge reports the request's line.
        let why = match (&verdict, &*self.service.borrow()) {
            (Verdict::Route(route), Some(Service::Ready(fleet)))
                if self.tails.listening(&self.state) =>
            {
                Some(tail::why(fleet.cfg(), route, keyed))
            }
            (Verdict::Reject(r), _) if self.tails.listening(&self.state) => {
                Some(tail::refused(&r.message))
            }
            (Verdict::Answer(a), _) if self.tails.listening(&self.state) => {
                Some(tail::answered_by_rule(a))
            }
            _ => None,
        };
        self.watchdog(now).await?;
        self.save_metrics(false).await?;
        // In lease mode the Worker decides its next requests itself with this.
        let granted = self.grant(now, false);
        // A bare body: the Worker knows it is JSON, so no content-type header to build.
        Ok(Ok(lease::attach(
            tail::reply(serde_json::to_vec(&verdict)?, why.as_deref()),
            granted.as_ref(),
        )))
    }

    /// A lease on the current config (lease mode only), recorded in the book.
    fn grant(&self, now: u64, refresh: bool) -> Option<lease::Lease> {
        if !self.lease_mode() {
            return None;
        }
        let service = self.service.borrow();
        let Some(Service::Ready(fleet)) = &*service else {
            return None;
        };
        let offset = self.rng.borrow_mut().next_u64() >> 32;
        let tailing = self.tails.listening(&self.state);
        let mut book = self.leases.borrow_mut();
        let book = book.get_or_insert_with(|| LeaseBook::new(now, 0));
        lease::grant(fleet, book, now, refresh, offset, tailing)
    }

    /// `POST /lease`: outcomes and handed-back leases from a Worker in lease mode, and a fresh
    /// lease when it wants one (none when the service left lease mode or is gone).
    pub(super) async fn lease(&self, req: &mut Request) -> Result<Response> {
        let msg: LeaseRequest = match req.json().await {
            Ok(m) => m,
            Err(e) => return error_response(400, &format!("malformed lease request: {e}"), None),
        };
        self.ensure_loaded(&msg.host).await?;
        let now = Self::now();
        if let Some(book) = &mut *self.leases.borrow_mut() {
            book.hand_back(&msg.returned, now);
        }
        if !msg.outcomes.is_empty() {
            self.apply_outcomes(&msg.outcomes).await?;
        }
        self.watchdog(now).await?;
        let reply = LeaseReply {
            lease: if msg.want {
                self.grant(Self::now(), msg.holding)
            } else {
                None
            },
        };
        Response::from_json(&reply)
    }

    /// A config change waits here before it is answered: a new generation of leases starts
    /// now, and every lease granted under the old config must have expired or been handed
    /// back, so no request decided after the answer uses the old config.
    pub(super) async fn fence(&self) {
        let started = Self::now();
        if let Some(book) = &mut *self.leases.borrow_mut() {
            book.new_generation();
        }
        loop {
            let wait = match &mut *self.leases.borrow_mut() {
                Some(book) => book.fence_wait_ms(Self::now()),
                None => 0,
            };
            // Bounded by the longest lease (10 s): the book never waits on more than that.
            if wait == 0 || Self::now().saturating_sub(started) > 2 * lease::MAX_LEASE_MS {
                return;
            }
            // Hand-backs arrive as other requests meanwhile; look again soon.
            Delay::from(std::time::Duration::from_millis(wait.min(5))).await;
        }
    }

    /// Outcomes the Worker reports after its responses.
    pub(super) async fn report(&self, req: &mut Request) -> Result<Response> {
        let msg: ReportRequest = match req.json().await {
            Ok(m) => m,
            Err(e) => return error_response(400, &format!("malformed report: {e}"), None),
        };
        self.ensure_loaded(&msg.host).await?;
        self.complete(&msg.done);
        self.record_answered(&msg.answered).await?;
        if !msg.rule_hits.is_empty() {
            self.metrics
                .borrow_mut()
                .record_rule_hits(msg.rule_hits.iter().map(|(r, n)| (r.as_str(), *n)));
            self.metrics_dirty.set(true);
        }
        self.roll_samples(Self::now(), msg.samples);
        self.apply_outcomes(&msg.outcomes).await?;
        // After counting: a report may open the minute the alarm must write.
        self.watchdog(Self::now()).await?;
        Response::empty().map(|r| r.with_status(204))
    }

    /// Counts responses a Worker gave clients; stored with the other counters, not per message.
    /// The change watch sees them too.
    async fn record_answered(&self, answered: &[Answered]) -> Result<()> {
        if answered.is_empty() {
            return Ok(());
        }
        self.metrics.borrow_mut().record_answered(answered);
        self.roll_answered(Self::now(), answered);
        self.metrics_dirty.set(true);
        self.watch_answered(answered).await
    }

    /// Requests that finished no longer count as outstanding.
    fn complete(&self, done: &[u64]) {
        if done.is_empty() {
            return;
        }
        if let Some(Service::Ready(fleet)) = &mut *self.service.borrow_mut() {
            for &ticket in done {
                fleet.complete(ticket);
            }
        }
    }

    /// A finished request's line from the edge, for the tails.
    pub(super) async fn tail_line(&self, req: &mut Request) -> Result<Response> {
        let line: RequestLine = match req.json().await {
            Ok(l) => l,
            Err(e) => return error_response(400, &format!("malformed tail line: {e}"), None),
        };
        self.tails.broadcast(&self.state, &Line::Request(line));
        Response::empty().map(|r| r.with_status(204))
    }

    async fn apply_outcomes(&self, outcomes: &[Outcome]) -> Result<()> {
        let now = Self::now();
        let before = self.views();
        let (persist, reprobe, events) = {
            let mut service = self.service.borrow_mut();
            let Some(Service::Ready(fleet)) = &mut *service else {
                return Ok(());
            };
            let before = transitions::marks(fleet.records());
            let mut persist = false;
            let mut reprobe = false;
            self.roll_outcomes(now, outcomes);
            let mut counters = self.metrics.borrow_mut();
            for o in outcomes {
                counters.record_outcome(o);
                let c = fleet.report(o, now);
                persist |= c.persist;
                reprobe |= c.reprobe_soon;
            }
            let events = if persist {
                let host = fleet.cfg().hostname.to_string();
                transitions::diff(&host, &before, fleet.records(), "requests", now)
            } else {
                Vec::new()
            };
            (persist, reprobe, events)
        };
        self.metrics_dirty.set(true);
        self.observe(events, false).await;
        if persist {
            self.notice(before, Cause::Passive);
            self.persist_backends().await?;
            self.dns_soon().await?;
        }
        if reprobe {
            self.reprobe_soon(now).await?;
        }
        self.send_soon().await?;
        self.save_metrics(false).await
    }
}

/// The object's RPC methods (workerd RPC; the build makes the class extend `DurableObject`, which
/// workerd requires of a class it calls methods on).
#[wasm_bindgen::prelude::wasm_bindgen]
impl Balancer {
    /// `stub.decide(message)`: the decision for one request. RPC rather than `fetch`: no
    /// `Request`, `Response` or URL built and parsed on either side (5–8 % more throughput in
    /// per-request mode, docs/benchmarks.md). A malformed message rejects with why.
    #[wasm_bindgen(js_name = decide)]
    pub async fn rpc_decide(
        &self,
        message: String,
    ) -> std::result::Result<wasm_bindgen::JsValue, wasm_bindgen::JsValue> {
        self.count_request();
        self.test_delay().await;
        let reply = match self.decide(&message).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(malformed)) => return Err(js_sys::Error::new(&malformed).into()),
            Err(e) => return Err(js_sys::Error::new(&e.to_string()).into()),
        };
        String::from_utf8(reply)
            .map(|text| wasm_bindgen::JsValue::from_str(&text))
            .map_err(|e| js_sys::Error::new(&e.to_string()).into())
    }
}
