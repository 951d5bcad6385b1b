//! What the OpenAPI document says about every operation because of the shared edge, not the
//! handler: authentication, body parsing, path and query extraction, paging, the per-address
//! connection cap and the body timeout. Written once here so every operation, including ones
//! added later, documents the statuses it really can answer; handler-specific statuses (409,
//! 422 for a field's rule, 504) stay in each handler's annotation.

use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::request_body::RequestBody;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::Modify;

use crate::db::page::MAX_LIMIT;

/// Routes outside the OpenAPI document (the device WebSocket has its own specification,
/// docs/protocol.md), with their methods, for `Allow` on a 405.
pub const UNDOCUMENTED_ROUTES: &[(&str, &str)] = &[("/ws/v1/lockers/{id}", "GET"), ("/api-docs/openapi.json", "GET")];

pub struct Contract;

fn error(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
        .into()
}

fn add(op: &mut Operation, status: &str, description: &str) {
    op.responses
        .responses
        .entry(status.to_string())
        .or_insert_with(|| error(description));
}

fn has_body(body: &Option<RequestBody>) -> bool {
    body.as_ref().is_some_and(|b| !b.content.is_empty())
}

impl Modify for Contract {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        for (path, item) in api.paths.paths.iter_mut() {
            let ops = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ];
            for op in ops.into_iter().flatten() {
                edge(op, path);
            }
        }
    }
}

fn edge(op: &mut Operation, path: &str) {
    add(
        op,
        "429",
        "Too many failed authentications, or too many unauthenticated connections, from this address",
    );
    if path.starts_with("/carrier/") {
        add(
            op,
            "401",
            "Missing or invalid API key, or a signature that does not verify (or is too old)",
        );
    } else if op.security.as_ref().is_some_and(|s| !s.is_empty()) {
        add(op, "401", "Missing or invalid admin key");
    }
    if has_body(&op.request_body) {
        add(op, "400", "Malformed body, unknown field or wrong type");
        add(op, "408", "The body did not arrive within the request body timeout");
        add(op, "413", "The body is larger than the configured limit");
        add(op, "415", "Wrong Content-Type");
        add(op, "422", "A field breaks a rule stated in its schema or description");
    }
    let params = op.parameters.get_or_insert_with(Vec::new);
    let mut paged = false;
    for p in params.iter_mut() {
        match (p.parameter_in.clone(), p.name.as_str()) {
            (ParameterIn::Query, "limit") => {
                paged = true;
                p.schema = Some(
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                        .minimum(Some(1))
                        .maximum(Some(MAX_LIMIT))
                        .into(),
                );
            }
            (ParameterIn::Query, "after") => {
                p.schema = Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
                        .into(),
                );
            }
            _ => {}
        }
    }
    let has = |place: ParameterIn| params.iter().any(|p| p.parameter_in == place);
    let (in_path, in_query) = (has(ParameterIn::Path) || path.contains('{'), has(ParameterIn::Query));
    if params.is_empty() {
        op.parameters = None;
    }
    if in_query {
        add(op, "400", "Malformed query string");
    }
    if paged {
        add(
            op,
            "422",
            "`limit` out of range or `after` not a cursor from a previous page",
        );
    }
    if in_path {
        add(op, "400", "Malformed path parameter");
        add(op, "404", "What the path names does not exist");
    }
}

/// Rules the derive macros cannot write, patched into the served JSON: the IANA zone names a
/// `time_zone` must be one of, that a preferred channel needs its contact detail, that
/// compartments are added by layout or by number (one, not both), and the links from each
/// create to what reads the created thing (so clients and stateful tests can follow a new id).
pub fn finish(doc: &mut serde_json::Value) {
    use serde_json::{json, Value};
    links(doc);
    let Some(schemas) = doc.pointer_mut("/components/schemas").and_then(Value::as_object_mut) else {
        return;
    };
    let zones: Vec<Value> = chrono_tz::TZ_VARIANTS.iter().map(|z| json!(z.name())).collect();
    for schema in schemas.values_mut() {
        if let Some(tz) = schema.pointer_mut("/properties/time_zone") {
            let mut names = zones.clone();
            if tz["type"].as_array().is_some_and(|t| t.contains(&json!("null"))) {
                names.push(Value::Null);
            }
            tz["enum"] = Value::Array(names);
        }
    }
    // An event is exactly `type` and `data` (the enum refuses anything else).
    if let Some(variants) = schemas
        .get_mut("CarrierEvent")
        .and_then(|e| e.get_mut("oneOf"))
        .and_then(Value::as_array_mut)
    {
        for v in variants {
            v["additionalProperties"] = json!(false);
            // A name for generated clients: `out_for_delivery` → `OutForDeliveryEvent`.
            if let Some(kind) = v.pointer("/properties/type/enum/0").and_then(Value::as_str) {
                let title: String = kind
                    .split('_')
                    .map(|w| {
                        let mut c = w.chars();
                        c.next()
                            .map(|f| f.to_uppercase().chain(c).collect::<String>())
                            .unwrap_or_default()
                    })
                    .collect();
                v["title"] = json!(format!("{title}Event"));
            }
        }
    }
    if let Some(add) = schemas.get_mut("AddCompartments") {
        add["minProperties"] = json!(1);
    }
    if let Some(create) = schemas.get_mut("CreateRecipient") {
        // Mirrors `channels_for`: each listed channel needs its detail, non-blank.
        let needs = |channel: &str, field: &str, pattern: &str| {
            json!({
                "if": {"required": ["channels"], "properties": {"channels": {"type": "array", "contains": {"const": channel}}}},
                "then": {"required": [field], "properties": {field: {"type": "string", "pattern": pattern}}}
            })
        };
        create["allOf"] = json!([
            needs("sms", "phone", "[0-9]"),
            needs("email", "email", "@"),
            needs(
                "push",
                "push_target",
                "[^\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]",
            ),
        ]);
    }
}

/// A collection path, the JSON pointer of the id in what its POST answers, and the operations
/// (operationId, link name) that take that id.
type LinkChain<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);

fn links(doc: &mut serde_json::Value) {
    use serde_json::json;
    let chains: &[LinkChain] = &[
        (
            "/api/v1/sites",
            "/id",
            &[("sites_get_one", "GetSite"), ("sites_update", "UpdateSite")],
        ),
        (
            "/api/v1/lockers",
            "/locker/id",
            &[
                ("lockers_get_one", "GetLocker"),
                ("lockers_update", "UpdateLocker"),
                ("lockers_list_compartments", "ListCompartments"),
                ("lockers_add_compartments", "AddCompartments"),
                ("lockers_list_sections", "ListSections"),
                ("lockers_list_faults", "ListFaults"),
            ],
        ),
        (
            "/api/v1/carriers",
            "/carrier/id",
            &[
                ("carriers_get_one", "GetCarrier"),
                ("carriers_update", "UpdateCarrier"),
                ("carriers_deliveries", "ListDeliveries"),
            ],
        ),
        (
            "/api/v1/recipients",
            "/id",
            &[
                ("recipients_get_one", "GetRecipient"),
                ("recipients_update", "UpdateRecipient"),
            ],
        ),
    ];
    // A search's first hit leads to the parcel's own operations.
    if let Some(found) = doc.pointer_mut("/paths/~1api~1v1~1parcels/get/responses/200") {
        for (operation_id, name) in [
            ("parcels_get_one", "GetParcel"),
            ("parcels_notifications_log", "ParcelNotifications"),
            ("parcels_resend_code", "ResendCode"),
        ] {
            found["links"][name] = json!({
                "operationId": operation_id,
                "parameters": {"id": "$response.body#/items/0/id"},
            });
        }
    }
    for (path, id, targets) in chains {
        let pointer = format!("/paths/{}/post/responses/201", path.replace('/', "~1"));
        let Some(created) = doc.pointer_mut(&pointer) else {
            continue;
        };
        for (operation_id, name) in *targets {
            created["links"][*name] = json!({
                "operationId": operation_id,
                "parameters": {"id": format!("$response.body#{id}")},
            });
        }
    }
}
