//! Admin request bodies: read as text, no further than 1 MiB.

use futures_util::StreamExt;
use worker::*;

use crate::platform::error_response;

/// Admin request bodies above this many bytes are refused with 413 (a config is a few KiB).
const MAX_ADMIN_BODY: usize = 1024 * 1024;

/// The request body as text, read no further than `MAX_ADMIN_BODY`: a declared length over it is
/// refused before reading, and a chunked body as soon as it grows past it.
pub async fn read_body(req: &mut Request) -> Result<std::result::Result<String, Response>> {
    let too_large = || {
        error_response(
            413,
            &format!("request body too large: admin request bodies are limited to {MAX_ADMIN_BODY} bytes (1 MiB)"),
            None,
        )
    };
    let declared: Option<u64> = req
        .headers()
        .get("content-length")?
        .and_then(|v| v.trim().parse().ok());
    if declared.is_some_and(|n| n > MAX_ADMIN_BODY as u64) {
        return Ok(Err(too_large()?));
    }
    if req.inner().body().is_none() {
        return Ok(Ok(String::new()));
    }
    let mut stream = req.stream()?;
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if bytes.len() + chunk.len() > MAX_ADMIN_BODY {
            return Ok(Err(too_large()?));
        }
        bytes.extend_from_slice(&chunk);
    }
    match String::from_utf8(bytes) {
        Ok(text) => Ok(Ok(text)),
        Err(_) => Ok(Err(error_response(
            400,
            "request body: not UTF-8 text; expected JSON",
            None,
        )?)),
    }
}
