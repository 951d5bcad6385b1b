//! The OpenAPI 3 document, generated from the handlers' annotations.

use actix_web::{get, HttpResponse};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::contract::Contract;
use super::{
    admin_keys, alerts, carrier_api, carriers, health, lockers, lockouts, parcels, recipients, remote_opens, sites,
};

struct AdminAuth;

const CARRIER_AUTH: &str = "The carrier's API key as a bearer token, and on every request (a GET \
signs an empty body) the Standard Webhooks headers: `webhook-id` (unique per request; an event \
is idempotent by it: a repeat gets the first answer, with header `idempotent-replayed: true`), \
`webhook-timestamp` (Unix seconds, at most 5 minutes off) and `webhook-signature`: `v1,` + \
base64(HMAC-SHA256(key, \"{webhook-id}.{webhook-timestamp}.{body}\")), where key is the base64 \
after the `whsec_` prefix of the carrier's webhook secret (during a rotation's overlap either \
secret signs). A missing or wrong key or signature is 401.";

/// Handlers are mounted under `/api/v1` by scope, which the path macros cannot see; and
/// operation ids must be unique, so they are prefixed with the tag.
struct Prefix;

impl Modify for Prefix {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let paths = std::mem::take(&mut api.paths.paths);
        for (path, mut item) in paths {
            // Only the admin scope lives under /api/v1; probes, QR images and this document do not.
            let path = if path.starts_with("/healthz")
                || path.starts_with("/readyz")
                || path.starts_with("/qr/")
                || path.starts_with("/api-docs")
                || path.starts_with("/carrier/")
            {
                path
            } else {
                format!("/api/v1{path}")
            };
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                let tag = op.tags.as_ref().and_then(|t| t.first().cloned()).unwrap_or_default();
                if let Some(id) = &op.operation_id {
                    op.operation_id = Some(format!("{tag}_{id}"));
                }
            }
            api.paths.paths.insert(path, item);
        }
    }
}

impl Modify for AdminAuth {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("lhk_…")
                    .build(),
            ),
        );
        // Carrier systems: their API key, and a Standard Webhooks signature of each request.
        // The signature headers are described here rather than as parameters: a client adds
        // them to every request it sends (over the exact body bytes), as a transport hook.
        components.add_security_scheme(
            "carrier",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("lhc_…")
                    .description(Some(CARRIER_AUTH))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "lockerhub", description = "One parcel-locker network for every carrier."),
    modifiers(&AdminAuth, &Prefix, &Contract),
    paths(
        health::healthz, health::readyz,
        sites::create, sites::list, sites::get_one, sites::update,
        lockers::create, lockers::list, lockers::get_one, lockers::update, lockers::rotate_credential,
        lockers::add_compartments, lockers::list_compartments, lockers::update_compartment,
        lockers::list_sections, lockers::put_section, lockers::delete_section,
        lockers::list_size_classes, lockers::put_size_classes, lockers::list_quotas, lockers::put_quota,
        lockers::get_allowed_carriers, lockers::put_allowed_carriers,
        lockers::list_faults,
        remote_opens::open_compartment, remote_opens::list_for_locker, remote_opens::get_one,
        remote_opens::approve, remote_opens::reject, remote_opens::list_for_parcel,
        admin_keys::create, admin_keys::list, admin_keys::get_one, admin_keys::revoke,
        lockouts::list,
        alerts::list, alerts::acknowledge,
        carriers::create, carriers::list, carriers::get_one, carriers::update,
        carriers::deliveries, carriers::redeliver_one, carriers::redeliver_dead, carriers::rotate_secret,
        recipients::create, recipients::list, recipients::get_one, recipients::update, recipients::import_csv,
        parcels::search, parcels::get_one, parcels::resend_code, parcels::notifications_log, health::qr,
        carrier_api::post_event, carrier_api::precheck, carrier_api::get_parcel,
    ),
    components(schemas(crate::error::ErrorBody))
)]
pub struct ApiDoc;

#[get("/api-docs/openapi.json")]
pub async fn document() -> HttpResponse {
    static DOC: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    let doc = DOC.get_or_init(|| {
        let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
        super::contract::finish(&mut doc);
        super::webhook_docs::add(&mut doc);
        doc
    });
    HttpResponse::Ok().json(doc)
}

/// The methods a documented path template allows, for the `Allow` header of a 405.
pub fn allowed_methods(pattern: &str) -> Option<&'static str> {
    use std::collections::HashMap;
    use std::sync::OnceLock;
    static METHODS: OnceLock<HashMap<String, String>> = OnceLock::new();
    let map = METHODS.get_or_init(|| {
        let mut map: HashMap<String, String> = crate::http::contract::UNDOCUMENTED_ROUTES
            .iter()
            .map(|(p, m)| (p.to_string(), m.to_string()))
            .collect();
        for (path, item) in ApiDoc::openapi().paths.paths {
            let methods: Vec<&str> = [
                ("GET", item.get.is_some()),
                ("POST", item.post.is_some()),
                ("PUT", item.put.is_some()),
                ("PATCH", item.patch.is_some()),
                ("DELETE", item.delete.is_some()),
            ]
            .into_iter()
            .filter_map(|(m, on)| on.then_some(m))
            .collect();
            map.insert(path, methods.join(", "));
        }
        map
    });
    map.get(pattern).map(String::as_str)
}
