//! The Balancer's region probers (`activeHealthChecks.regions`): setting them up on load and on every config change, stopping removed ones, and applying their reports by quorum.

use std::rc::Rc;

use worker::*;

use super::{Balancer, Service};
use crate::platform::error_response;
use crate::platform::object::prober::prober_stub;
use crate::policy::control::config::BackendState;
use crate::policy::health::prober::{Report, Setup};
use crate::policy::health::regions::Region;
use crate::policy::health::transitions;
use crate::policy::telemetry::notify::Cause;

/// What one round of prober upkeep does: the setups to send, the regions to stop.
struct Upkeep {
    host: String,
    setups: Vec<Setup>,
    stop: Vec<Region>,
}

impl Balancer {
    /// The setup of each region the current config probes from (none without a service).
    fn setups(&self) -> (String, Vec<Setup>) {
        let service = self.service.borrow();
        let Some(Service::Ready(fleet)) = &*service else {
            return (self.host.borrow().clone().unwrap_or_default(), Vec::new());
        };
        let cfg = fleet.cfg();
        let backends: Vec<String> = cfg
            .all_backends()
            .iter()
            .filter(|b| b.state != BackendState::Disabled)
            .map(|b| b.url.to_string())
            .collect();
        let setups = cfg
            .health
            .probe_regions()
            .iter()
            .map(|&region| Setup {
                hostname: cfg.hostname.to_string(),
                region,
                monitor: cfg.health.clone(),
                backends: backends.clone(),
            })
            .collect();
        (cfg.hostname.to_string(), setups)
    }

    /// The regions probing now (for the next change to compare with).
    pub(super) fn probing_regions(&self) -> Vec<Region> {
        self.setups().1.iter().map(|s| s.region).collect()
    }

    /// Sends the current setup to every region's prober and stops those of `before` the config
    /// no longer probes from; awaited, so a config change has reached the probers when it is answered.
    pub(super) async fn update_probers(&self, before: &[Region]) {
        let upkeep = self.upkeep(before);
        run(self.env.clone(), upkeep, self.probers_gen.clone()).await;
    }

    /// After a load: the probers get the setup (they may have missed a change while this object
    /// was away), in the background so the request that loaded the service does not wait.
    pub(super) fn wake_probers(&self) {
        let upkeep = self.upkeep(&[]);
        if upkeep.setups.is_empty() {
            return;
        }
        js_sys::futures::spawn_local(run(self.env.clone(), upkeep, self.probers_gen.clone()));
    }

    fn upkeep(&self, before: &[Region]) -> Upkeep {
        let (host, setups) = self.setups();
        let stop = before
            .iter()
            .filter(|r| !setups.iter().any(|s| s.region == **r))
            .copied()
            .collect();
        Upkeep { host, setups, stop }
    }

    /// `POST /regions/report` from a region's prober: its view of every backend. 410 tells a
    /// prober this service no longer probes from its region (it stops itself).
    pub(super) async fn region_report(&self, req: &mut Request) -> Result<Response> {
        let report: Report = match req.json().await {
            Ok(r) => r,
            Err(e) => return error_response(400, &format!("malformed region report: {e}"), None),
        };
        let now = Self::now();
        let before = self.views();
        let (persist, events) = {
            let mut service = self.service.borrow_mut();
            let Some(Service::Ready(fleet)) = &mut *service else {
                return error_response(410, "this service is not configured", None);
            };
            if !fleet.cfg().health.probe_regions().contains(&report.region) {
                return error_response(410, "this service does not probe from this region", None);
            }
            let host = fleet.cfg().hostname.to_string();
            let marks = transitions::marks(fleet.records());
            let changes = fleet.apply_region_report(&report, now);
            let mut events: Vec<_> = changes
                .flips
                .iter()
                .map(|(url, up, error)| {
                    transitions::region_flip(&host, url, report.region, *up, error.as_deref(), now)
                })
                .collect();
            events.extend(transitions::diff(
                &host,
                &marks,
                fleet.records(),
                "quorum",
                now,
            ));
            (changes.persist, events)
        };
        {
            let mut counters = self.metrics.borrow_mut();
            for s in &report.backends {
                counters.record_probe(&s.url, s.up);
            }
        }
        self.metrics_dirty.set(true);
        self.observe(events, true).await;
        if persist {
            self.notice(before, Cause::Probe);
            self.persist_backends().await?;
            self.wake_for_deliveries().await?;
            // A quorum's verdict changes who is healthy: the DNS records follow at once.
            self.dns_soon().await?;
        }
        Response::empty().map(|r| r.with_status(204))
    }
}

/// Sends each setup and each stop, in parallel; a newer upkeep supersedes an older one still
/// running. A failure is logged: the prober gets the next change, and a prober that keeps
/// probing a region no longer wanted is told so (410) at its next report.
async fn run(env: Env, upkeep: Upkeep, gen: Rc<std::cell::Cell<u64>>) {
    let mine = gen.get() + 1;
    gen.set(mine);
    let host = &upkeep.host;
    let calls = upkeep
        .setups
        .iter()
        .map(|s| (s.region, "/configure", serde_json::to_string(s).ok()))
        .chain(upkeep.stop.iter().map(|&r| (r, "/stop", None)))
        .map(|(region, path, body)| {
            let env = &env;
            let gen = &gen;
            async move {
                if gen.get() != mine {
                    return;
                }
                if let Err(e) = call(env, host, region, path, body).await {
                    console_error!("{host}: prober {} {path}: {e}", region.as_str());
                }
            }
        });
    futures_util::future::join_all(calls).await;
}

async fn call(
    env: &Env,
    host: &str,
    region: Region,
    path: &str,
    body: Option<String>,
) -> Result<()> {
    let mut init = RequestInit::new();
    init.with_method(Method::Post);
    if let Some(b) = body {
        init.with_body(Some(b.into()));
    }
    let req = Request::new_with_init(&format!("https://prober{path}"), &init)?;
    let resp = prober_stub(env, host, region)?
        .fetch_with_request(req)
        .await?;
    match resp.status_code() {
        200..=299 => Ok(()),
        s => Err(Error::RustError(format!("answered {s}"))),
    }
}
