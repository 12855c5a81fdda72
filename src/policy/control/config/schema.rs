//! The config's JSON Schemas, generated from the model types for `/admin/openapi.json`.

use serde_json::{Map, Value};

use super::*;

/// The JSON Schemas of the config, as `/admin/openapi.json` carries them under
/// `components.schemas` (generated natively; a test keeps the served document in step).
#[cfg(not(target_arch = "wasm32"))]
pub fn schemas() -> Map<String, Value> {
    let mut settings = schemars::generate::SchemaSettings::draft2020_12();
    settings.definitions_path = "/components/schemas".into();
    settings.meta_schema = None;
    let mut g = settings.into_generator();
    let service = g.subschema_for::<ServiceConfig>().to_value();
    let mut blocks = Map::new();
    blocks.insert(
        "activeHealthChecks".into(),
        g.subschema_for::<ActiveHealth>().to_value(),
    );
    blocks.insert(
        "passiveHealthChecks".into(),
        g.subschema_for::<PassiveHealth>().to_value(),
    );
    blocks.insert(
        "connection_error_handling".into(),
        g.subschema_for::<ConnectionHandling>().to_value(),
    );
    blocks.insert(
        "retries".into(),
        serde_json::json!({"type": "integer", "minimum": 0, "maximum": 10}),
    );
    blocks.insert(
        "load_balancer".into(),
        g.subschema_for::<LoadBalancer>().to_value(),
    );
    blocks.insert(
        "rate_limit".into(),
        g.subschema_for::<RateLimit>().to_value(),
    );
    blocks.insert(
        "access_control".into(),
        g.subschema_for::<AccessLists>().to_value(),
    );
    blocks.insert(
        "notifications".into(),
        g.subschema_for::<Notifications>().to_value(),
    );
    blocks.insert(
        "decisions".into(),
        g.subschema_for::<Decisions>().to_value(),
    );
    blocks.insert(
        "change_safety".into(),
        g.subschema_for::<ChangeSafety>().to_value(),
    );
    blocks.insert(
        "services".into(),
        serde_json::json!({"type": "array", "minItems": 1, "items": service}),
    );
    let mut defs = g.take_definitions(true);
    // The REST body may leave the hostname out: the URL names it.
    let mut body = defs.get("ServiceConfig").cloned().unwrap_or_default();
    if let Some(required) = body.get_mut("required").and_then(Value::as_array_mut) {
        required.retain(|r| r != "hostname");
    }
    body["description"] = "A service; `hostname` may be left out (the URL names it).".into();
    defs.insert("ServiceBody".into(), body);
    defs.insert(
        "DefaultBackends".into(),
        serde_json::json!({
            "description": "DEFAULT_BACKENDS: one service, an array of services, or {\"services\": [...]} with default blocks merged into each service.",
            "oneOf": [
                service,
                {"type": "array", "minItems": 1, "items": service},
                {"type": "object", "required": ["services"], "additionalProperties": false, "properties": blocks},
            ]
        }),
    );
    defs.insert(
        "BackendPatch".into(),
        serde_json::json!({
            "type": "object",
            "required": ["url"],
            "additionalProperties": false,
            "properties": {
                "url": {"$ref": "#/components/schemas/BackendUrl"},
                "weight": {"type": "integer", "minimum": 1, "maximum": 1000},
                "state": {"$ref": "#/components/schemas/BackendState"},
            }
        }),
    );
    defs
}
