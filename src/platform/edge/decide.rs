//! The decision source: where a request goes, decided under the lease this isolate holds for the hostname, or asked of the hostname's object.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use js_sys::futures::JsFuture;
use wasm_bindgen::JsValue;
use worker::*;

use crate::platform::edge::incoming::Incoming;
use crate::platform::edge::lease;
use crate::platform::edge::report::{take_answered, take_done, take_successes};
use crate::platform::now_ms;
use crate::policy::telemetry::tail;
use crate::policy::traffic::decision::{DecideRequest, Route, Verdict};
use crate::policy::traffic::facts::RequestFacts;
use crate::policy::traffic::rules::RuleNeeds;

/// Header names in `a` or `b`, each once.
fn merged(a: &[String], b: &[String]) -> Vec<String> {
    let mut all: Vec<String> = a.iter().chain(b).cloned().collect();
    all.sort();
    all.dedup();
    all
}

/// The answer of either source: the verdict, and why it was chosen (only while a tail listens).
pub struct Decision {
    pub verdict: Verdict,
    pub why: Option<String>,
    /// Decided here under a lease (the Worker counts what its own decisions did).
    pub local: bool,
}

thread_local! {
    /// The request header that keys header affinity, per hostname, as the last decision said.
    static AFFINITY_HEADER: RefCell<HashMap<String, String>> = RefCell::new(HashMap::new());
    /// Whether a hostname's decisions use the client's geography, as the last decision said
    /// (unknown: read it).
    static GEO: RefCell<HashMap<String, bool>> = RefCell::new(HashMap::new());
    /// What a hostname's traffic rules read of a request, as the object last said (unknown:
    /// method, path and query, which cost nothing to send; a rule on a header is learnt from
    /// the object's `More` answer).
    static RULES: RefCell<HashMap<String, Rc<RuleNeeds>>> = RefCell::new(HashMap::new());
}

/// What to send of a request to a hostname the object has not described yet.
fn unknown_rule_needs() -> Rc<RuleNeeds> {
    Rc::new(RuleNeeds {
        method: true,
        path: true,
        query: true,
        headers: Vec::new(),
    })
}

/// Where one request's decision comes from, and what it needs read of the request.
pub struct Source {
    /// This isolate holds a lease for the hostname: decide under it while it is usable.
    leased: bool,
    /// The name of the header that keys header affinity, if any.
    key_header: Option<String>,
    /// Whether the decision uses the client's geography.
    geo: bool,
    /// What the service's traffic rules read of the request.
    rules: Rc<RuleNeeds>,
}

impl Source {
    /// The source for a request to `host`: under a lease its config says what to read;
    /// otherwise as the object's last decision for this hostname said.
    pub fn of(host: &str) -> Self {
        match lease::needs(host) {
            Some(needs) => Self {
                leased: true,
                key_header: needs.affinity_header,
                geo: needs.geo,
                rules: needs.rules,
            },
            None => Self {
                leased: false,
                key_header: AFFINITY_HEADER.with(|a| a.borrow().get(host).cloned()),
                geo: GEO.with(|g| g.borrow().get(host).copied().unwrap_or(true)),
                rules: RULES
                    .with(|r| r.borrow().get(host).cloned())
                    .unwrap_or_else(unknown_rule_needs),
            },
        }
    }

    /// Reads what this source needs of the request.
    pub fn read(&self, req: &web_sys::Request) -> Incoming {
        Incoming::read(req, self.key_header.as_deref(), self.geo, &self.rules)
    }

    /// Decides where the request goes: under the lease when it can, else by asking the object.
    pub async fn decide(
        self,
        env: &Env,
        req: &web_sys::Request,
        incoming: &mut Incoming,
        host: &str,
    ) -> Result<Decision> {
        if self.leased {
            if let Some(decision) = under_lease(req, incoming, host) {
                return Ok(decision);
            }
        }
        ask_object(env, req, incoming, self.key_header, self.rules, host).await
    }
}

/// Decides locally under the lease this isolate holds for `host`. None: the lease cannot
/// decide this one (expired, or the config wants the object): ask the object.
fn under_lease(req: &web_sys::Request, incoming: &mut Incoming, host: &str) -> Option<Decision> {
    let facts = RequestFacts {
        client_ip: incoming.client_ip.clone(),
        country: incoming.country.clone(),
        continent: incoming.continent.clone(),
        cookies: incoming.cookies.clone(),
        affinity_header: incoming.affinity_key.clone(),
        streamed_body: incoming.streams_body(req),
        // Moved, not copied (this is per request); it goes back if the object must decide.
        line: incoming.line.take(),
    };
    // `More` cannot happen here (the lease said what to read), but if it did the object asks
    // for it properly.
    let decided = lease::decide_local(host, &facts)
        .filter(|(verdict, _)| !matches!(verdict, Verdict::More(_)));
    if decided.is_none() {
        incoming.line = facts.line;
    }
    decided.map(|(verdict, why)| Decision {
        verdict,
        why,
        local: true,
    })
}

/// Asks the hostname's Durable Object where this request goes. The message travels in the URL
/// query: a plain URL string is the cheapest request to build (no Headers, no body to stream and
/// await in the object). Batched success reports, finished tickets and answer tallies ride
/// along. The object says why it chose only while a tail listens.
async fn ask_object(
    env: &Env,
    req: &web_sys::Request,
    incoming: &mut Incoming,
    key_header: Option<String>,
    rules: Rc<RuleNeeds>,
    host: &str,
) -> Result<Decision> {
    let mut msg = DecideRequest {
        host: host.to_string(),
        client_ip: incoming.client_ip.clone(),
        // Kept on the incoming request too: the request log records it.
        country: incoming.country.clone(),
        continent: incoming.continent.take(),
        cookies: incoming.cookies.take(),
        affinity_key: incoming.affinity_key.take(),
        streamed_body: incoming.streams_body(req),
        successes: take_successes(host, false),
        done: take_done(host),
        answered: take_answered(host),
        line: incoming.line.take(),
    };
    let mut decision = ask(env, &msg).await?;
    // The service's rules read more of the request than was sent (a header they name, or this
    // isolate's first request since they changed): read it and ask once more.
    if let Verdict::More(more) = &decision.verdict {
        let wanted = RuleNeeds {
            headers: merged(&more.headers, &rules.headers),
            ..more.clone()
        };
        RULES.with(|r| {
            r.borrow_mut()
                .insert(host.to_string(), Rc::new(more.clone()))
        });
        let again = Incoming::read(req, key_header.as_deref(), incoming.geo, &wanted);
        msg.successes.clear();
        msg.answered.clear();
        msg.done.clear();
        msg.line = again.line;
        decision = ask(env, &msg).await?;
        if let Verdict::More(_) = decision.verdict {
            return Err(Error::RustError(format!(
                "the object of \"{host}\" asked twice for more of the request than was sent"
            )));
        }
    }
    // First request of this instance (or the first after a config change) for a hostname whose
    // decisions need what was not sent: the affinity header's value (its name was not known
    // yet) or the client's geography. Ask once more with it rather than let this client land on
    // an arbitrary backend.
    if let Verdict::Route(Route {
        affinity_header,
        geo,
        ticket,
        ..
    }) = &decision.verdict
    {
        let need_key = affinity_header.is_some() && key_header.is_none();
        let need_geo = *geo && !incoming.geo;
        let more = (need_key || need_geo)
            .then(|| Incoming::read(req, affinity_header.as_deref(), *geo, &rules))
            .filter(|more| need_geo || more.affinity_key.is_some());
        if let Some(more) = more {
            // Already applied by the first ask; the first ask's own ticket is given back, as
            // its route is dropped.
            msg.successes.clear();
            msg.answered.clear();
            msg.done = ticket.iter().copied().collect();
            msg.affinity_key = more.affinity_key;
            msg.country = more.country.clone();
            incoming.country = more.country;
            msg.continent = more.continent;
            decision = ask(env, &msg).await?;
        }
    }
    if let Verdict::Route(route) = &decision.verdict {
        // Header affinity: remember which request header keys this hostname's clients.
        AFFINITY_HEADER.with(|a| {
            let mut a = a.borrow_mut();
            match &route.affinity_header {
                Some(name) if a.get(host) != Some(name) => {
                    a.insert(host.to_string(), name.clone());
                }
                None if a.contains_key(host) => {
                    a.remove(host);
                }
                _ => {}
            }
        });
        // Traffic rules: read of the request only what they name (the reply says so only when
        // this request was read otherwise).
        if let Some(needs) = &route.rule_needs {
            RULES.with(|r| {
                r.borrow_mut().insert(host.to_string(), needs.clone());
            });
        }
        // Geo steering: read the client's geography only for hostnames that use it.
        GEO.with(|g| {
            if g.borrow().get(host) != Some(&route.geo) {
                g.borrow_mut().insert(host.to_string(), route.geo);
            }
        });
    }
    Ok(decision)
}

/// One decision round trip: the stub, the fetch and reading the reply's text are one call into
/// the runtime (workers-rs would wrap the reply and read it as a byte stream, chunk by chunk).
async fn ask(env: &Env, msg: &DecideRequest) -> Result<Decision> {
    // A lease that comes back counts from here (lease mode).
    let sent_ms = now_ms();
    let hint = crate::platform::store::registry::location_hint(env, &msg.host);
    let reply = JsFuture::from(fb_ask(
        env.as_ref(),
        &msg.host,
        &msg.to_query(),
        hint.map(|r| r.as_str()),
    ))
    .await?;
    let text = reply.as_string().unwrap_or_default();
    let (reply, leased) = crate::policy::traffic::lease::detach(&text);
    lease::adopt_text(&msg.host, leased, sent_ms);
    let (json, why) = tail::split_reply(reply);
    Ok(Decision {
        verdict: serde_json::from_str(json)?,
        why: why.map(str::to_string),
        local: false,
    })
}

#[wasm_bindgen::prelude::wasm_bindgen(inline_js = r#"
// The decide message to the hostname's object (created near `hint` if it does not exist yet)
// by RPC; resolves to the reply's text.
export function fb_ask(env, host, query, hint) {
  const ns = env.BALANCER;
  return ns
    .get(ns.idFromName(host), hint === undefined ? undefined : { locationHint: hint })
    .decide(query);
}
"#)]
extern "C" {
    /// `Promise<string>`: the object's reply to a decide message.
    fn fb_ask(env: &JsValue, host: &str, query: &str, hint: Option<&str>) -> js_sys::Promise;
}
