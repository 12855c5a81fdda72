//! What clients were answered: response tallies by status and source, as Workers carry them to a hostname's object.

use serde::{Deserialize, Serialize};

/// Who made a response a client got: a backend's own answer, or FlowBalance's (a rule's
/// 403/429, a loop's 508, 502/503 when no backend could answer, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Backend,
    Flowbalance,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Backend => "backend",
            Source::Flowbalance => "flowbalance",
        }
    }
}

/// `count` responses with status `code` from `source`, tallied by a Worker and carried to the
/// hostname's object on its next decision or report (never a message of their own per request).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answered {
    pub code: u16,
    pub source: Source,
    pub count: u32,
}

impl Answered {
    /// Compact text for a decide query: `200b12.503f1` (code, `b`ackend or `f`lowbalance, count).
    pub fn encode(list: &[Answered]) -> String {
        let parts: Vec<String> = list
            .iter()
            .map(|a| {
                let s = if a.source == Source::Backend {
                    'b'
                } else {
                    'f'
                };
                format!("{}{s}{}", a.code, a.count)
            })
            .collect();
        parts.join(".")
    }

    pub fn decode(text: &str) -> Result<Vec<Answered>, String> {
        text.split('.')
            .map(|part| {
                let at = part
                    .find(['b', 'f'])
                    .ok_or_else(|| format!("answered: no source in {part:?}"))?;
                let code: u16 = part[..at]
                    .parse()
                    .map_err(|_| format!("answered: bad code in {part:?}"))?;
                let count: u32 = part[at + 1..]
                    .parse()
                    .map_err(|_| format!("answered: bad count in {part:?}"))?;
                if !(100..=599).contains(&code) {
                    return Err(format!("answered: code {code} is not an HTTP status"));
                }
                let source = if &part[at..=at] == "b" {
                    Source::Backend
                } else {
                    Source::Flowbalance
                };
                Ok(Answered {
                    code,
                    source,
                    count,
                })
            })
            .collect()
    }
}
