//! The webhooks lockerhub sends, in the OpenAPI document's `webhooks` section (OpenAPI 3.1):
//! to carriers (`parcel.*`, at the carrier's `webhook_url`) and to the operator
//! (`alert.raised`, at `operator_webhook_url`). Every one is a signed POST (Standard Webhooks)
//! of `{"type", "timestamp", "data"}`; the schemas here are checked against the bodies the
//! server really sends (tests/api/carrier_api.rs).

use serde_json::{json, Map, Value};

/// The fields every parcel webhook's `data` has.
fn parcel_fields() -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("parcel_id".into(), json!({"type": "string"}));
    m.insert("tracking_number".into(), json!({"type": "string"}));
    m.insert(
        "locker_id".into(),
        json!({"type": ["string", "null"], "description": "The locker that holds (or held) the parcel."}),
    );
    m.insert(
        "compartment".into(),
        json!({"type": ["integer", "null"], "description": "Its compartment number at that locker."}),
    );
    m
}

fn time(description: &str) -> Value {
    json!({"type": "string", "format": "date-time", "description": description})
}

fn offline() -> Value {
    json!({"type": "boolean", "description": "Present and true when a locker did this offline and told the server \
           later (docs/protocol.md §15.4): the time fields give when it happened."})
}

/// One parcel webhook: its type, what it means, the fields beyond the common ones (with which
/// are required), and an example of its `data`.
struct Hook {
    kind: &'static str,
    summary: &'static str,
    extra: Vec<(&'static str, Value, bool)>,
    example: Value,
}

fn parcel_hooks() -> Vec<Hook> {
    let base = |extra: Value| {
        let mut v = json!({"parcel_id": "0193a3c0-5b1e-7c39-9f1a-2d4e5f6a7b8c", "tracking_number": "1Z999AA10000000001",
                           "locker_id": "0193a3b2-0d4f-7a11-8e2c-6b5a4c3d2e1f", "compartment": 7});
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        v
    };
    vec![
        Hook {
            kind: "parcel.delivered_to_locker",
            summary: "The driver deposited the parcel; the recipient has been sent the pickup code.",
            extra: vec![
                ("deposited_at", time("When the door closed on the parcel."), true),
                (
                    "pickup_deadline",
                    time("Until when the recipient may pick it up."),
                    true,
                ),
                ("offline", offline(), false),
            ],
            example: base(
                json!({"deposited_at": "2026-11-24T09:15:02.120Z", "pickup_deadline": "2026-11-27T09:15:02.120Z"}),
            ),
        },
        Hook {
            kind: "parcel.picked_up",
            summary: "The recipient took the parcel out.",
            extra: vec![
                (
                    "picked_up_at",
                    time("When the door closed on the empty compartment."),
                    true,
                ),
                ("offline", offline(), false),
                (
                    "after_expiry",
                    json!({"type": "boolean", "description": "With `offline`: the parcel had expired (and \
                           `parcel.return_requested` was sent) before the locker could tell; this withdraws the \
                           return request."}),
                    false,
                ),
            ],
            example: base(json!({"picked_up_at": "2026-11-25T18:02:44.000Z"})),
        },
        Hook {
            kind: "parcel.return_requested",
            summary: "The dwell window closed: collect the parcel (request a collection code with a \
                      `return_collection` event).",
            extra: vec![("expired_at", time("When the pickup deadline passed."), true)],
            example: base(json!({"expired_at": "2026-11-27T09:15:02.120Z"})),
        },
        Hook {
            kind: "parcel.returned",
            summary: "The carrier's driver collected the expired parcel.",
            extra: vec![
                (
                    "returned_at",
                    time("When the door closed on the empty compartment."),
                    true,
                ),
                ("offline", offline(), false),
            ],
            example: base(json!({"returned_at": "2026-11-28T08:30:00.000Z"})),
        },
        Hook {
            kind: "parcel.removed",
            summary: "An administrator's remote open emptied the compartment (docs: remote opens).",
            extra: vec![(
                "removed_at",
                time("When the door closed on the empty compartment."),
                true,
            )],
            example: base(json!({"removed_at": "2026-11-26T12:00:00.000Z"})),
        },
        Hook {
            kind: "parcel.reservation_expired",
            summary: "A pre-advice's reservation ran out before the deposit; the compartment is free again \
                      (the parcel is still expected: a driver may still deposit it if one is free).",
            extra: vec![],
            example: base(json!({})),
        },
    ]
}

/// The `data` schema of a parcel webhook.
fn data_schema(h: &Hook) -> Value {
    let mut props = parcel_fields();
    let mut required: Vec<&str> = vec!["parcel_id", "tracking_number", "locker_id", "compartment"];
    for (name, schema, req) in &h.extra {
        props.insert((*name).into(), schema.clone());
        if *req {
            required.push(name);
        }
    }
    json!({"type": "object", "properties": props, "required": required, "additionalProperties": false})
}

fn envelope(kind: &str, data: Value, description: &str) -> Value {
    json!({
        "type": "object",
        "description": description,
        "properties": {
            "type": {"type": "string", "enum": [kind]},
            "timestamp": time("When the event was queued."),
            "data": data,
        },
        "required": ["type", "timestamp", "data"],
        "additionalProperties": false,
    })
}

/// The headers of every webhook lockerhub sends.
fn signed_headers() -> Value {
    json!([
        {"name": "webhook-id", "in": "header", "required": true, "schema": {"type": "string"},
         "description": "Unique per event; a redelivery has the same id (deduplicate on it)."},
        {"name": "webhook-timestamp", "in": "header", "required": true, "schema": {"type": "string", "pattern": "^[0-9]+$"},
         "description": "Unix seconds when this attempt was signed."},
        {"name": "webhook-signature", "in": "header", "required": true, "schema": {"type": "string"},
         "description": "`v1,` + base64(HMAC-SHA256(secret, \"{webhook-id}.{webhook-timestamp}.{body}\")), \
                         space-separated when two secrets are live (a rotation's overlap). The secret is the \
                         `whsec_` webhook secret, base64 after its prefix."},
    ])
}

fn operation(summary: &str, schema_name: &str, example: Value) -> Value {
    json!({"post": {
        "summary": summary,
        "parameters": signed_headers(),
        "requestBody": {"required": true, "content": {"application/json": {
            "schema": {"$ref": format!("#/components/schemas/{schema_name}")},
            "example": example,
        }}},
        "responses": {
            "2XX": {"description": "Delivered. Anything else (or no answer in 10 s) is retried with backoff."},
        },
    }})
}

/// The name of a webhook's schema in `components`: `parcel.picked_up` → `WebhookParcelPickedUp`.
pub fn schema_name(kind: &str) -> String {
    let mut out = String::from("Webhook");
    for part in kind.split(['.', '_']) {
        let mut c = part.chars();
        if let Some(f) = c.next() {
            out.extend(f.to_uppercase());
            out.push_str(c.as_str());
        }
    }
    out
}

/// Adds `webhooks` and their schemas to the served document.
pub fn add(doc: &mut Value) {
    let mut hooks = Map::new();
    let mut schemas = Map::new();
    for h in parcel_hooks() {
        let name = schema_name(h.kind);
        schemas.insert(name.clone(), envelope(h.kind, data_schema(&h), h.summary));
        let example = json!({"type": h.kind, "timestamp": "2026-11-24T09:15:02.130Z", "data": h.example});
        hooks.insert(h.kind.into(), operation(h.summary, &name, example));
    }
    let failed = json!({
        "type": "object",
        "properties": {
            "parcel_id": {"type": "string"},
            "tracking_number": {"type": "string"},
            "locker_id": {"type": ["string", "null"]},
            "reason_code": {"type": "string", "enum": ["locker_full", "no_fitting_compartment", "locker_unavailable", "over_quota"],
                            "description": "Why, as a stable code (the `reason` of a pre-check, `POST /carrier/v1/precheck`)."},
            "reason": {"type": "string", "description": "Why no compartment was reserved, in words."},
        },
        "required": ["parcel_id", "tracking_number", "locker_id", "reason_code", "reason"],
        "additionalProperties": false,
    });
    let summary = "A pre-advice found no free compartment that fits: reroute the parcel or deliver it otherwise.";
    let name = schema_name("parcel.reservation_failed");
    schemas.insert(name.clone(), envelope("parcel.reservation_failed", failed, summary));
    hooks.insert(
        "parcel.reservation_failed".into(),
        operation(
            summary,
            &name,
            json!({"type": "parcel.reservation_failed", "timestamp": "2026-11-24T09:15:02.130Z",
                   "data": {"parcel_id": "0193a3c0-5b1e-7c39-9f1a-2d4e5f6a7b8c", "tracking_number": "1Z999AA10000000001",
                            "locker_id": "0193a3b2-0d4f-7a11-8e2c-6b5a4c3d2e1f", "reason_code": "locker_full",
                            "reason": "no free compartment fits size L"}}),
        ),
    );
    let alert = json!({"$ref": "#/components/schemas/Alert"});
    let summary = "To the operator endpoint (`operator_webhook_url`): something needs a person (a forced or \
                   blocked door, an offline conflict, a rejected or lost journal).";
    let name = schema_name("alert.raised");
    schemas.insert(name.clone(), envelope("alert.raised", alert, summary));
    hooks.insert(
        "alert.raised".into(),
        operation(
            summary,
            &name,
            json!({"type": "alert.raised", "timestamp": "2026-11-24T11:40:00.120Z",
                   "data": {"id": "0193a3d1-…", "locker_id": "0193a3b2-0d4f-7a11-8e2c-6b5a4c3d2e1f", "compartment": 9,
                            "kind": "door_forced", "detail": "the door opened without an open command",
                            "created_at": "2026-11-24T11:40:00.118Z", "acknowledged_at": null, "acknowledged_by": null}}),
        ),
    );
    doc["webhooks"] = Value::Object(hooks);
    if let Some(all) = doc.pointer_mut("/components/schemas").and_then(Value::as_object_mut) {
        all.extend(schemas);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_type() {
        assert_eq!(schema_name("parcel.picked_up"), "WebhookParcelPickedUp");
        assert_eq!(schema_name("alert.raised"), "WebhookAlertRaised");
    }

    #[test]
    fn every_example_has_the_required_fields() {
        let mut doc = json!({"components": {"schemas": {}}});
        add(&mut doc);
        for (kind, op) in doc["webhooks"].as_object().unwrap() {
            let example = &op["post"]["requestBody"]["content"]["application/json"]["example"];
            assert_eq!(example["type"], kind.as_str());
            let schema = &doc["components"]["schemas"][schema_name(kind)];
            if let Some(req) = schema["properties"]["data"]["required"].as_array() {
                for r in req {
                    assert!(example["data"].get(r.as_str().unwrap()).is_some(), "{kind}: {r}");
                }
            }
        }
    }
}
