//! The Worker's side of lease mode: the leases this isolate holds, local decisions under them, and the `/lease` exchange that refreshes them, hands them back and carries outcomes.

use std::cell::RefCell;
use std::collections::HashMap;

use wasm_bindgen::JsValue;
use worker::*;

use crate::platform::object_stub;
use crate::policy::telemetry::tail;
use crate::policy::traffic::decision::{Outcome, Verdict};
use crate::policy::traffic::facts::{Needs, RequestFacts};
use crate::policy::traffic::lease::{Held, Lease, LeaseReply, LeaseRequest, Local};

thread_local! {
    /// The lease held per hostname.
    static HELD: RefCell<HashMap<String, Held>> = RefCell::new(HashMap::new());
    /// Leases to hand back at once (a newer config replaced them), per hostname.
    static URGENT: RefCell<HashMap<String, Vec<u64>>> = RefCell::new(HashMap::new());
}

/// What the Worker must read of a request for `host` under its lease: the affinity header's
/// name, whether geo steering needs `request.cf`, what the rules read. None: no lease held.
pub fn needs(host: &str) -> Option<Needs> {
    HELD.with(|h| h.borrow().get(host).map(|l| l.needs()))
}

/// Decides a request locally when this isolate holds a usable lease for `host`: the verdict,
/// and why (only while a tail listens). None: ask the object.
pub fn decide_local(host: &str, facts: &RequestFacts) -> Option<(Verdict, Option<String>)> {
    let now = Date::now().as_millis();
    let keyed = facts.affinity_header.is_some() || facts.client_ip.is_some();
    HELD.with(|h| {
        let mut h = h.borrow_mut();
        let held = h.get_mut(host)?;
        match held.decide(facts, now) {
            Local::AskObject => None,
            Local::Decided(verdict) => {
                let why = held.tailing.then(|| match &verdict {
                    Verdict::Route(route) => tail::why(held.cfg(), route, keyed),
                    Verdict::Reject(r) => tail::refused(&r.message),
                    Verdict::Answer(a) => tail::answered_by_rule(a),
                    Verdict::More(_) => String::new(),
                });
                Some((verdict, why))
            }
        }
    })
}

/// Does this isolate hold a lease for `host` (expired or not)?
pub fn holding(host: &str) -> bool {
    HELD.with(|h| h.borrow().contains_key(host))
}

/// Takes a lease (or its absence) that came with a reply to a request sent at `sent_ms`.
/// No lease while one is held: the service left lease mode, so the held one goes back.
pub fn adopt(host: &str, lease: Option<Lease>, sent_ms: u64) {
    let back = HELD.with(|h| {
        let mut h = h.borrow_mut();
        let Some(lease) = lease else {
            return h.remove(host).map(|mut old| {
                let mut ids = old.take_superseded();
                ids.push(old.id);
                ids
            });
        };
        let next = match Held::new(lease, sent_ms) {
            Ok(next) => next,
            Err(e) => {
                console_error!("lease for {host} refused: {e}");
                return None;
            }
        };
        match h.remove(host) {
            Some(old) => {
                let (held, back) = old.replaced_by(next, Date::now().as_millis());
                h.insert(host.to_string(), held);
                Some(back)
            }
            None => {
                h.insert(host.to_string(), next);
                None
            }
        }
    });
    if let Some(ids) = back.filter(|b| !b.is_empty()) {
        URGENT.with(|u| {
            u.borrow_mut()
                .entry(host.to_string())
                .or_default()
                .extend(ids)
        });
    }
}

/// Reads a lease that rode on a decision reply and adopts it (see [`adopt`]).
pub fn adopt_text(host: &str, text: Option<&str>, sent_ms: u64) {
    match text.map(serde_json::from_str::<Lease>) {
        Some(Ok(lease)) => adopt(host, Some(lease), sent_ms),
        Some(Err(e)) => console_error!("unreadable lease for {host}: {e}"),
        None => {
            if holding(host) {
                adopt(host, None, sent_ms);
            }
        }
    }
}

/// A backend failed in this isolate: out of its lease's traffic here for the rest of the lease.
pub fn eject(host: &str, url: &str) {
    HELD.with(|h| {
        if let Some(held) = h.borrow_mut().get_mut(host) {
            held.eject(url);
        }
    });
}

/// What a request in lease mode leaves to do in the background (see [`upkeep`]).
pub struct Upkeep {
    /// Leases to hand back at once: a newer config replaced them.
    pub hand_back: Option<Vec<u64>>,
    /// The lease is half way through: refresh it now, so requests seldom wait for the object.
    pub refresh: bool,
}

/// Takes the background work due for `host`'s lease after a request; the caller sends it
/// through [`exchange`] (with the successes it batched, for a refresh).
pub fn upkeep(host: &str) -> Upkeep {
    let hand_back = URGENT.with(|u| u.borrow_mut().remove(host));
    let now = Date::now().as_millis();
    let refresh = HELD.with(|h| {
        h.borrow_mut()
            .get_mut(host)
            .is_some_and(|l| l.start_refresh(now))
    });
    Upkeep { hand_back, refresh }
}

/// Reports outcomes through `/lease`, getting a fresh lease back (lease mode).
pub async fn report(env: &Env, host: &str, outcomes: Vec<Outcome>) {
    for o in outcomes.iter().filter(|o| o.failure.is_some()) {
        eject(host, &o.url);
    }
    exchange(env, host, outcomes, Vec::new(), true).await;
}

/// One `POST /lease`: outcomes, leases handed back, and (`want`) a fresh lease, adopted on return.
pub async fn exchange(
    env: &Env,
    host: &str,
    outcomes: Vec<Outcome>,
    mut returned: Vec<u64>,
    want: bool,
) {
    let sent_ms = Date::now().as_millis();
    let holding = HELD
        .with(|h| {
            let mut h = h.borrow_mut();
            let held = h.get_mut(host)?;
            returned.extend(held.take_superseded());
            Some(())
        })
        .is_some();
    let msg = LeaseRequest {
        host: host.to_string(),
        outcomes,
        returned,
        want,
        holding,
    };
    let reply = send(env, host, &msg).await;
    match reply {
        Ok(reply) if want => adopt(host, reply.lease, sent_ms),
        Ok(_) => {}
        Err(e) => {
            console_error!("lease exchange for {host} failed: {e}");
            HELD.with(|h| {
                if let Some(held) = h.borrow_mut().get_mut(host) {
                    held.refresh_failed();
                }
            });
        }
    }
}

async fn send(env: &Env, host: &str, msg: &LeaseRequest) -> Result<LeaseReply> {
    let body = serde_json::to_string(msg)?;
    let stub = object_stub(env, host)?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_body(Some(JsValue::from_str(&body)));
    let req = Request::new_with_init("https://balancer/lease", &init)?;
    let mut resp = stub.fetch_with_request(req).await?;
    if resp.status_code() != 200 {
        return Err(Error::RustError(format!(
            "lease route answered {}: {}",
            resp.status_code(),
            resp.text().await.unwrap_or_default()
        )));
    }
    resp.json().await
}
