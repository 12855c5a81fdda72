//! The `Prober` Durable Object: one per (hostname, region), created with that region as its location hint; it runs the service's monitor on its own alarm and reports to the hostname's object.

use std::cell::RefCell;

use worker::*;

use crate::platform::object::probe::probe_backend;
use crate::platform::relay::HOST_HEADER;
use crate::platform::{error_response, object_stub, random_bytes};
use crate::policy::health::prober::{RegionProber, Report, Setup};
use crate::policy::health::regions::Region;
use crate::policy::rng::SplitMix64;

/// The binding of the probers' namespace.
pub const PROBER_BINDING: &str = "PROBER";
/// The hostname's object's route a report goes to.
pub const REPORT_PATH: &str = "/regions/report";
/// What a prober keeps: its setup and each backend's state in its region (JSON text).
const KEY_PROBER: &str = "prober";

/// The prober of `host` in `region`: named `<hostname>#<region>`, placed by the location hint
/// (Cloudflare applies a hint when the object is first created).
pub fn prober_stub(env: &Env, host: &str, region: Region) -> Result<Stub> {
    // `namespace.get(id, {locationHint})`.
    env.durable_object(PROBER_BINDING)?
        .id_from_name(&format!("{host}#{}", region.as_str()))?
        .get_stub_with_location_hint(region.as_str())
}

#[durable_object]
pub struct Prober {
    state: State,
    env: Env,
    /// None: not set up (new, or stopped).
    prober: RefCell<Option<RegionProber>>,
    rng: RefCell<SplitMix64>,
}

impl DurableObject for Prober {
    fn new(state: State, env: Env) -> Self {
        let random = random_bytes();
        let seed = u64::from_le_bytes(random[..8].try_into().unwrap_or_default());
        Self {
            state,
            env,
            prober: RefCell::new(None),
            rng: RefCell::new(SplitMix64(seed)),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        match (req.method(), req.path().as_str()) {
            // From the hostname's object: run this setup, the first round at once.
            (Method::Post, "/configure") => {
                let setup: Setup = match req.json().await {
                    Ok(s) => s,
                    Err(e) => return error_response(400, &format!("setup: {e}"), None),
                };
                self.load().await?;
                let next = match self.prober.borrow_mut().take() {
                    Some(mut p) => {
                        p.configure(setup);
                        p
                    }
                    None => RegionProber::new(setup),
                };
                *self.prober.borrow_mut() = Some(next);
                self.save().await?;
                self.state.storage().set_alarm(50).await?;
                Response::empty()
            }
            (Method::Post, "/stop") => {
                self.stop().await?;
                Response::empty()
            }
            _ => error_response(404, "unknown prober route", None),
        }
    }

    async fn alarm(&self) -> Result<Response> {
        self.load().await?;
        // Alarms are at-least-once: a round more is harmless, and a stopped prober does nothing.
        let Some(mut prober) = self.prober.borrow().clone() else {
            return Response::empty();
        };
        let now = Date::now().as_millis();
        let due = prober.take_due(now, &mut *self.rng.borrow_mut());
        let monitor = prober.setup.region_monitor();
        let probes = due
            .iter()
            .map(|(url, path)| probe_backend(url, &monitor, path.as_deref()));
        let results = futures_util::future::join_all(probes).await;
        let now = Date::now().as_millis();
        let mut flipped = false;
        for r in &results {
            flipped |= prober.apply(
                &r.url,
                r.ok,
                r.latency_ms,
                r.error.clone(),
                r.discovered_path.clone(),
                now,
            );
        }
        let report = prober.report(flipped, now);
        // Stopped or set up anew while probing: that newer word wins.
        match &*self.prober.borrow() {
            Some(p) if p.setup == prober.setup => {}
            _ => return Response::empty(),
        }
        *self.prober.borrow_mut() = Some(prober.clone());
        if flipped {
            self.save().await?;
        }
        if let Some(report) = report {
            if self.send(&prober.setup.hostname, &report).await? == 410 {
                // The hostname's object no longer probes from this region.
                self.stop().await?;
                return Response::empty();
            }
        }
        if let Some(at) = prober.next_due(Date::now().as_millis()) {
            let delay = at.saturating_sub(Date::now().as_millis()).max(50);
            self.state.storage().set_alarm(delay as i64).await?;
        }
        Response::empty()
    }
}

impl Prober {
    /// The stored setup and states, once per lifetime.
    async fn load(&self) -> Result<()> {
        if self.prober.borrow().is_some() {
            return Ok(());
        }
        let text: Option<String> = self.state.storage().get(KEY_PROBER).await?;
        if let Some(p) = text.and_then(|t| serde_json::from_str::<RegionProber>(&t).ok()) {
            *self.prober.borrow_mut() = Some(p);
        }
        Ok(())
    }

    async fn save(&self) -> Result<()> {
        let text = match &*self.prober.borrow() {
            Some(p) => serde_json::to_string(p)?,
            None => return Ok(()),
        };
        self.state.storage().put(KEY_PROBER, text).await
    }

    /// No more probes: the alarm and everything stored go.
    async fn stop(&self) -> Result<()> {
        *self.prober.borrow_mut() = None;
        self.state.storage().delete_alarm().await?;
        self.state.storage().delete_all().await
    }

    /// Sends a report to the hostname's object; its status (410: stop probing).
    async fn send(&self, host: &str, report: &Report) -> Result<u16> {
        let headers = Headers::new();
        headers.set(HOST_HEADER, host)?;
        headers.set("content-type", "application/json")?;
        let mut init = RequestInit::new();
        init.with_method(Method::Post)
            .with_headers(headers)
            .with_body(Some(serde_json::to_string(report)?.into()));
        let req = Request::new_with_init(&format!("https://balancer{REPORT_PATH}"), &init)?;
        match object_stub(&self.env, host)?.fetch_with_request(req).await {
            Ok(resp) => Ok(resp.status_code()),
            Err(e) => {
                // The next report (an interval later at the latest) carries the whole view again.
                console_error!("{host}: report from a prober not delivered: {e}");
                Ok(0)
            }
        }
    }
}
