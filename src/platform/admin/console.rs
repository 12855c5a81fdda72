//! The operator console's static files (`dashboard/`): one HTML page at `{root}/` and its assets under `{root}/assets/`, each with a strict CSP; the page calls the admin API itself.

use worker::*;

use crate::platform::error_response;

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";

macro_rules! assets {
    ($(($name:literal, $type:expr)),* $(,)?) => {
        /// Every file under `dashboard/assets/`, by name, with its content type.
        pub const ASSETS: &[(&str, &str, &str)] = &[
            $(($name, $type, include_str!(concat!("../../../dashboard/assets/", $name)))),*
        ];
    };
}

assets!(
    ("app.css", CSS),
    ("app.js", JS),
    ("api.js", JS),
    ("dom.js", JS),
    ("charts.js", JS),
    ("diff.js", JS),
    ("login.js", JS),
    ("overview.js", JS),
    ("service.js", JS),
    ("config.js", JS),
    ("rules.js", JS),
    ("logs.js", JS),
    ("live.js", JS),
    ("history.js", JS),
    ("add.js", JS),
    ("keys.js", JS),
    ("docs.js", JS),
    ("icon.svg", SVG),
);

const PAGE: &str = include_str!("../../../dashboard/index.html");

/// No script, style or connection leaves the Worker's origin, and nothing may frame the console.
const CSP: &str = "default-src 'self'; img-src 'self' data:; object-src 'none'; \
                   frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The console's answer for `path` (already without `/__lb_admin__`), or None when the path is
/// not the console's. An unknown asset is a 404 here: it never reaches a backend.
pub fn serve(path: &str) -> Option<Result<Response>> {
    if path == "/" {
        return Some(file(PAGE, HTML));
    }
    let name = path.strip_prefix("/assets/")?;
    Some(match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, body)) => file(body, content_type),
        None => error_response(404, &format!("no console asset {name:?}"), None),
    })
}

fn file(body: &str, content_type: &str) -> Result<Response> {
    let mut resp = Response::ok(body)?;
    let h = resp.headers_mut();
    h.set("content-type", content_type)?;
    h.set("content-security-policy", CSP)?;
    h.set("x-content-type-options", "nosniff")?;
    h.set("referrer-policy", "same-origin")?;
    // Revalidated on every load, so a deploy is picked up at once (the files are small).
    h.set("cache-control", "no-cache")?;
    Ok(resp)
}
