//! Webhooks: URLs that receive the engine's events as signed JSON POSTs.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Every event kind a webhook may ask for. `ping` is sent only by
/// `POST /api/v1/webhooks/{webhook}/test`, whatever the filter.
pub const EVENT_KINDS: &[&str] = &[
    "job.started",
    "job.succeeded",
    "job.failed",
    "job.canceled",
    "capacity.warning",
    "vdb.expiring",
];

/// `POST /api/v1/webhooks`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AddWebhook {
    pub name: String,
    /// An `http` or `https` URL without credentials in it.
    pub url: String,
    /// The key of the HMAC-SHA256 signature of each body (at least 16
    /// characters). Stored encrypted; never shown back.
    pub secret: String,
    /// The event kinds to send (see `EVENT_KINDS`); empty: all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,
    /// PEM certificates trusted for an `https` URL besides the usual roots
    /// (a receiver with a private CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<String>,
}

/// A webhook as shown: never its secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Webhook {
    /// `WEBHOOK-<n>`.
    pub reference: String,
    pub name: String,
    pub url: String,
    /// The event kinds it receives; empty: all.
    pub events: Vec<String>,
    /// Whether it has a CA certificate of its own.
    pub ca_cert: bool,
    pub created_at: String,
    /// The last deliveries, newest first (only when one webhook is shown).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deliveries: Vec<WebhookDelivery>,
}

/// One event sent (or being sent) to one webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookDelivery {
    /// Sent as `X-Doppel-Delivery`; the same on every retry.
    pub id: String,
    /// The event's kind (`job.failed`, `ping`, ...).
    pub event: String,
    /// `pending` (being tried, or waiting to be tried again), `delivered`
    /// (a 2xx answer) or `failed` (every try failed).
    pub state: String,
    pub attempts: u32,
    /// The HTTP status of the last answer, if there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why the last try failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// The body of every POST: the event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookEvent {
    /// Unique per event (the same for every webhook it is sent to).
    pub id: String,
    /// One of `EVENT_KINDS`, or `ping`.
    pub kind: String,
    /// When it happened, RFC 3339 UTC.
    pub at: String,
    /// What happened; its fields depend on the kind.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub data: Value,
}
