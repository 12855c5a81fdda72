//! The balanced request path, top to bottom: read the request, decide where it goes, forward it with failover, report what became of it.

use worker::*;

use crate::platform::edge::decide::{Decision, Source};
use crate::platform::edge::forward::{self, Forwarded, Outbound, HOP_HEADER};
use crate::platform::edge::report::{Reporter, Ruled};
use crate::platform::edge::websocket;
use crate::platform::{error_response, now_ms};
use crate::policy::telemetry::record::RequestRecord;
use crate::policy::traffic::decision::Verdict;
use crate::policy::traffic::forwarding::host_and_path;

/// Answers with the runtime's own Response: the backend's goes back untouched when nothing in
/// it changes (a workers-rs Response would be rebuilt on the way out).
pub async fn balance(
    req: web_sys::Request,
    env: &Env,
    ctx: &Context,
    host: &str,
) -> Result<web_sys::Response> {
    let report = Reporter { env, ctx, host };
    let source = Source::of(host);
    let mut incoming = source.read(&req);
    if incoming.hop {
        let path = host_and_path(&incoming.url).1.to_string();
        let asker = incoming.asker();
        report
            .refused(incoming.method, &path, asker, 508, None)
            .await;
        return error_response(
            508,
            &format!(
                "loop detected: this request for \"{host}\" was already forwarded by FlowBalance \
                 (it carries {HOP_HEADER}); a backend of \"{host}\" points back at the balancer"
            ),
            None,
        )
        .map(Into::into);
    }

    // Decide.
    let Decision {
        verdict,
        why,
        local,
    } = source.decide(env, &req, &mut incoming, host).await?;
    report.lease_upkeep();
    let asker = incoming.asker();
    let route = match verdict {
        Verdict::Route(route) => route,
        Verdict::Reject(r) => {
            let path = host_and_path(&incoming.url).1;
            report
                .refused(incoming.method, path, asker, r.status, why)
                .await;
            return error_response(r.status, &r.message, r.retry_after_s).map(Into::into);
        }
        Verdict::Answer(answer) => {
            let request = RequestRecord {
                ts_ms: now_ms(),
                method: incoming.method,
                path: host_and_path(&incoming.url).1.to_string(),
                status: answer.status,
                backend: None,
                attempts: 0,
                latency_ms: 0,
            };
            let counted: &[String] = if local { &answer.matched } else { &[] };
            report
                .rule_answered(request, asker, why, &answer.rule, counted, &answer.log)
                .await;
            return forward::rule_response(&answer);
        }
        Verdict::More(_) => {
            // `decide` asks again with what the object named; a second `More` is an error there.
            return error_response(502, "the decision asked for more of the request", None)
                .map(Into::into);
        }
    };

    // Forward.
    let log = route.log.clone();
    let out = Outbound::new(&req, &incoming, host, route.rules.as_ref()).await?;
    let decided_by = route.rules.as_ref().and_then(|e| e.decided_by.clone());
    let matched_here = match (&route.rules, local) {
        (Some(e), true) => e.matched.clone(),
        _ => Vec::new(),
    };
    let started = now_ms();
    let path = host_and_path(&incoming.url).1.to_string();
    let Forwarded {
        resp,
        backend,
        attempts,
        source,
        failed,
    } = if websocket::is_upgrade(incoming.upgrade.as_deref()) {
        websocket::forward(&report, out, route).await?
    } else {
        forward::forward(&report, out, route).await?
    };

    // Report.
    let request = RequestRecord {
        ts_ms: started,
        method: incoming.method,
        path,
        status: resp.status(),
        backend,
        attempts,
        latency_ms: now_ms().saturating_sub(started),
    };
    let rules = Ruled {
        decided_by: decided_by.as_deref(),
        counted_here: &matched_here,
    };
    report
        .answered(request, asker, source, failed, why, &log, rules)
        .await;
    Ok(resp)
}
