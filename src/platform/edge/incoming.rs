//! What the balanced path reads of the client's request, in one call into the runtime.

use worker::{wasm_bindgen, web_sys};

use crate::policy::telemetry::record::Asker;
use crate::policy::traffic::forwarding::UrlParts;
use crate::policy::traffic::retry::REPLAY_BODY_CAP;
use crate::policy::traffic::rules::{RequestLine, RuleNeeds};

/// The request facts the balanced path uses, read in one call into the runtime (one string,
/// rather than a crossing and a string copy per header).
pub struct Incoming {
    pub method: String,
    pub url: String,
    pub hop: bool,
    pub upgrade: Option<String>,
    pub client_ip: Option<String>,
    pub cookies: Option<String>,
    pub connection: Option<String>,
    pub forwarded_for: Option<String>,
    pub content_length: Option<String>,
    /// The value of the header that keys header affinity (when its name was asked for).
    pub affinity_key: Option<String>,
    /// `request.cf`'s country and continent, read only when `geo` was asked for: building the
    /// cf object costs about as much as the rest of this together.
    pub country: Option<String>,
    pub continent: Option<String>,
    pub geo: bool,
    /// What the service's traffic rules read of the request (only what they name).
    pub line: Option<RequestLine>,
}

impl Incoming {
    pub fn read(
        req: &web_sys::Request,
        key_header: Option<&str>,
        geo: bool,
        rules: &RuleNeeds,
    ) -> Self {
        let text = fb_incoming(req, key_header, geo, &rules.headers.join("\n"));
        let mut lines = text.split('\n');
        let method = lines.next().unwrap_or("GET").to_string();
        let url = lines.next().unwrap_or_default().to_string();
        // Each later line is "" (absent) or "=" and the value.
        let mut next = || {
            lines
                .next()
                .and_then(|l| l.strip_prefix('='))
                .map(str::to_string)
        };
        let hop = next().is_some();
        let upgrade = next();
        let client_ip = next();
        let cookies = next();
        let connection = next();
        let forwarded_for = next();
        let content_length = next();
        let affinity_key = next();
        let (country, continent) = if geo { (next(), next()) } else { (None, None) };
        let line = (!rules.is_empty()).then(|| {
            let parts = UrlParts::of(&url);
            RequestLine {
                method: if rules.method {
                    method.clone()
                } else {
                    String::new()
                },
                path: parts.path.to_string(),
                query: if rules.query {
                    parts
                        .path_and_query
                        .split_once('?')
                        .map_or("", |(_, q)| q)
                        .to_string()
                } else {
                    String::new()
                },
                headers: rules
                    .headers
                    .iter()
                    .map(|name| (name.clone(), next()))
                    .collect(),
            }
        });
        Self {
            method,
            url,
            hop,
            upgrade,
            client_ip,
            cookies,
            connection,
            forwarded_for,
            content_length,
            affinity_key,
            country,
            continent,
            geo,
            line,
        }
    }

    /// What the request log keeps of this request besides its method and path, so a config
    /// preview can replay it.
    pub fn asker(&self) -> Asker {
        let query = UrlParts::of(&self.url)
            .path_and_query
            .split_once('?')
            .map(|(_, q)| q.to_string())
            .filter(|q| !q.is_empty());
        Asker {
            query,
            client_ip: self.client_ip.clone(),
            country: self.country.clone(),
        }
    }

    /// Whether the request's body will stream to the backend rather than be buffered (see
    /// `forward::read_body`): such a request cannot be replayed on another backend.
    pub fn streams_body(&self, req: &web_sys::Request) -> bool {
        let method = self.method.as_str();
        if method.eq_ignore_ascii_case("GET") || method.eq_ignore_ascii_case("HEAD") {
            return false;
        }
        match self
            .content_length
            .as_deref()
            .and_then(|v| v.trim().parse::<usize>().ok())
        {
            Some(n) => n > REPLAY_BODY_CAP,
            None => req.body().is_some(),
        }
    }
}

#[wasm_bindgen::prelude::wasm_bindgen(inline_js = r#"
// The request facts the balanced path needs, as lines: method, URL, then per header "" when
// absent or "=value" (a header value holds no newline), then cf's country and continent, then
// the headers the rules name (`ruleHeaders`: names joined by newlines, one string to cross).
export function fb_incoming(req, keyHeader, geo, ruleHeaders) {
  const h = req.headers;
  const v = (x) => (x === null || x === undefined ? "" : "=" + x);
  let out = `${req.method}\n${req.url}\n${v(h.get("x-flowbalance-hop"))}\n${v(h.get("upgrade"))}\n${v(h.get("cf-connecting-ip"))}\n${v(h.get("cookie"))}\n${v(h.get("connection"))}\n${v(h.get("x-forwarded-for"))}\n${v(h.get("content-length"))}\n${v(keyHeader === undefined ? null : h.get(keyHeader))}`;
  if (geo) {
    const cf = req.cf;
    out += `\n${v(cf && cf.country)}\n${v(cf && cf.continent)}`;
  }
  if (ruleHeaders !== "") for (const name of ruleHeaders.split("\n")) out += `\n${v(h.get(name))}`;
  return out;
}
"#)]
extern "C" {
    /// See [`Incoming`].
    fn fb_incoming(
        req: &web_sys::Request,
        key_header: Option<&str>,
        geo: bool,
        rule_headers: &str,
    ) -> String;
}
