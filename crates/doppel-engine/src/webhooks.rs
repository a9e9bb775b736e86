//! Webhooks: the engine's events (jobs started and ended, capacity
//! crossings, VDB expiry warnings) POSTed as JSON to URLs administrators
//! register, each body signed with HMAC-SHA256 under the webhook's secret.
//!
//! Whatever publishes an event ([`Engine::publish`], the job observer)
//! only puts it on a bounded queue with `try_send`: it never waits, never
//! touches the network or the store, so a slow or dead receiver cannot
//! slow a job. When the queue is full the event is dropped and counted
//! (`doppel_webhook_events_dropped_total`). One dispatcher task takes
//! events off the queue, records a delivery per webhook whose filter takes
//! the event, and hands each to a task of its own that tries it with
//! exponential back-off; at most [`MAX_IN_FLIGHT`] deliveries are under
//! way at once, beyond that the dispatcher waits (and the queue fills).
//! One webhook holds at most [`MAX_IN_FLIGHT_PER_WEBHOOK`] of them: past
//! that its new deliveries are recorded failed at once, so a dead receiver
//! retrying its backlog cannot starve the others.
//!
//! What a receiver sees, per POST:
//! - the body: a [`WebhookEvent`] (`id`, `kind`, `at`, `data`) as JSON;
//! - `X-Doppel-Signature: sha256=<hex HMAC-SHA256 of the exact body>`;
//! - `X-Doppel-Event` (the kind), `X-Doppel-Delivery` (a UUID, the same on
//!   every retry of one delivery, so a receiver can drop repeats) and
//!   `X-Doppel-Timestamp` (Unix seconds of this try).
//!
//! Only a 2xx answer counts as delivered; redirects are not followed.

use std::sync::Arc;
use std::time::Duration;

use doppel_model::{AddWebhook, ApiError, Webhook, WebhookDelivery, WebhookEvent, EVENT_KINDS};
use doppel_store::{DeliveryRecord, Store, WebhookRecord};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::capacity::CapacityReport;
use crate::hosts::parse_ref;
use crate::jobs::JobNotice;
use crate::metrics::Metrics;
use crate::secrets::SecretBox;
use crate::{now, Engine, EngineError};

const WEBHOOK_PREFIX: &str = "WEBHOOK-";

/// Deliveries under way at once, over all webhooks.
pub const MAX_IN_FLIGHT: usize = 32;

/// Deliveries under way at once to one webhook.
pub const MAX_IN_FLIGHT_PER_WEBHOOK: usize = 8;

/// Shortest secret taken: an HMAC key guessable by brute force protects nothing.
const MIN_SECRET: usize = 16;

/// How deliveries are tried.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Tries per delivery before it is recorded failed.
    pub tries: u32,
    /// The wait before the second try; each later wait doubles.
    pub first_retry: Duration,
    /// How long one try may take (connecting, sending, the answer).
    pub timeout: Duration,
    /// Events waiting for the dispatcher; more are dropped.
    pub queue: usize,
}

impl Default for DeliveryConfig {
    /// Six tries over about a minute (2, 4, 8, 16, 32 s apart).
    fn default() -> Self {
        DeliveryConfig {
            tries: 6,
            first_retry: Duration::from_secs(2),
            timeout: Duration::from_secs(10),
            queue: 1024,
        }
    }
}

/// An engine event, as webhooks receive it. Build one with its
/// constructor and hand it to [`Engine::publish`].
#[derive(Debug, Clone)]
pub struct Event {
    kind: &'static str,
    data: Value,
}

impl Event {
    /// `job.started`, `job.succeeded`, `job.failed` or `job.canceled`:
    /// `job`, `type`, `target`, `policy` (the policy whose schedule started
    /// it, if one did), and once ended `state`, `duration_seconds` and, when
    /// failed, `error` (`code`, `message`).
    pub fn job(notice: &JobNotice) -> Event {
        match notice {
            JobNotice::Started {
                job,
                kind,
                target,
                policy,
            } => Event {
                kind: "job.started",
                data: json!({"job": job, "type": kind, "target": target, "policy": policy}),
            },
            JobNotice::Finished {
                job,
                kind,
                target,
                policy,
                state,
                error,
                duration,
            } => {
                let mut data = json!({
                    "job": job, "type": kind, "target": target, "policy": policy,
                    "state": state.as_str(), "duration_seconds": duration.as_secs_f64(),
                });
                if let Some(ApiError { code, message, .. }) = error {
                    data["error"] = json!({"code": code.as_str(), "message": message});
                }
                Event {
                    kind: match state {
                        doppel_model::JobState::Succeeded => "job.succeeded",
                        doppel_model::JobState::Canceled => "job.canceled",
                        _ => "job.failed",
                    },
                    data,
                }
            }
        }
    }

    /// `capacity.warning`: the pool crossed the warning or the refusal
    /// threshold upwards (`state` says which), with the usage and both
    /// thresholds.
    pub fn capacity(report: &CapacityReport) -> Event {
        Event {
            kind: "capacity.warning",
            data: json!({
                "state": report.state,
                "usage_percent": report.usage_percent,
                "warn_percent": report.warn_percent,
                "refuse_percent": report.refuse_percent,
            }),
        }
    }

    /// `vdb.expiring`: a VDB expires at `expires_at` (RFC 3339) and will
    /// then be deleted, unless `protected` (then it stays while protected).
    pub fn vdb_expiring(vdb: &str, name: &str, expires_at: &str, protected: bool) -> Event {
        Event {
            kind: "vdb.expiring",
            data: json!({"vdb": vdb, "name": name, "expires_at": expires_at, "protected": protected}),
        }
    }

    fn ping() -> Event {
        Event {
            kind: "ping",
            data: json!({"message": "a test event from doppel webhook test"}),
        }
    }

    pub fn kind(&self) -> &'static str {
        self.kind
    }

    fn stamped(self) -> WebhookEvent {
        WebhookEvent {
            id: uuid::Uuid::new_v4().to_string(),
            kind: self.kind.to_owned(),
            at: now(),
            data: self.data,
        }
    }
}

/// The publishing end and what deliveries need.
pub(crate) struct Webhooks {
    publisher: Publisher,
    shared: Arc<Shared>,
}

/// Puts events on the queue; cheap to clone (the job observer holds one).
#[derive(Clone)]
pub(crate) struct Publisher {
    queue: tokio::sync::mpsc::Sender<WebhookEvent>,
    metrics: Arc<Metrics>,
}

impl Publisher {
    /// Queues an event without waiting; a full queue drops it (counted).
    pub(crate) fn publish(&self, event: Event) {
        let kind = event.kind;
        if let Err(e) = self.queue.try_send(event.stamped()) {
            self.metrics.webhook_dropped(kind);
            if matches!(e, tokio::sync::mpsc::error::TrySendError::Full(_)) {
                tracing::warn!(kind, "the webhook queue is full: event dropped");
            }
        }
    }
}

struct Shared {
    store: Arc<Store>,
    secrets: Arc<SecretBox>,
    metrics: Arc<Metrics>,
    config: DeliveryConfig,
    in_flight: Arc<tokio::sync::Semaphore>,
    per_webhook: Arc<std::sync::Mutex<std::collections::HashMap<i64, usize>>>,
}

/// One of a webhook's [`MAX_IN_FLIGHT_PER_WEBHOOK`] places; given back on drop.
struct Place {
    counts: Arc<std::sync::Mutex<std::collections::HashMap<i64, usize>>>,
    webhook: i64,
}

impl Place {
    fn take(
        counts: &Arc<std::sync::Mutex<std::collections::HashMap<i64, usize>>>,
        webhook: i64,
    ) -> Option<Place> {
        let mut c = counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = c.entry(webhook).or_default();
        if *n >= MAX_IN_FLIGHT_PER_WEBHOOK {
            return None;
        }
        *n += 1;
        Some(Place {
            counts: counts.clone(),
            webhook,
        })
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = c.get_mut(&self.webhook) {
            *n -= 1;
            if *n == 0 {
                c.remove(&self.webhook);
            }
        }
    }
}

impl Webhooks {
    /// Starts the dispatcher. Deliveries a previous run left pending are
    /// recorded failed: their queue died with it.
    pub(crate) fn start(
        store: Arc<Store>,
        secrets: Arc<SecretBox>,
        metrics: Arc<Metrics>,
        config: DeliveryConfig,
    ) -> Result<Webhooks, EngineError> {
        store.fail_pending_deliveries(&now())?;
        let (queue, mut events) = tokio::sync::mpsc::channel(config.queue.max(1));
        let publisher = Publisher {
            queue,
            metrics: metrics.clone(),
        };
        let shared = Arc::new(Shared {
            store,
            secrets,
            metrics,
            config,
            in_flight: Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)),
            per_webhook: Default::default(),
        });
        let s = shared.clone();
        // Ends when the engine and its job observer (the senders) are gone.
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                s.dispatch(event).await;
            }
        });
        Ok(Webhooks { publisher, shared })
    }

    pub(crate) fn publisher(&self) -> Publisher {
        self.publisher.clone()
    }
}

impl Shared {
    async fn dispatch(self: &Arc<Self>, event: WebhookEvent) {
        let hooks = match self.store.list_webhooks() {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(error = %e, "cannot read webhooks: event not delivered");
                return;
            }
        };
        for hook in hooks {
            if !hook.events.is_empty() && !hook.events.contains(&event.kind) {
                continue;
            }
            let Some(delivery) = self.record_new(&hook, &event) else {
                continue;
            };
            let Some(place) = Place::take(&self.per_webhook, hook.id) else {
                self.give_up(
                    delivery,
                    format!(
                        "{MAX_IN_FLIGHT_PER_WEBHOOK} deliveries to this webhook were already under way \
                         (its receiver is slow or down): not sent"
                    ),
                );
                continue;
            };
            let Ok(permit) = self.in_flight.clone().acquire_owned().await else {
                return;
            };
            let s = self.clone();
            let event = event.clone();
            tokio::spawn(async move {
                s.deliver(&hook, &event, delivery, s.config.tries).await;
                drop((permit, place));
            });
        }
    }

    fn record_new(&self, hook: &WebhookRecord, event: &WebhookEvent) -> Option<DeliveryRecord> {
        let at = now();
        let d = DeliveryRecord {
            id: uuid::Uuid::new_v4().to_string(),
            webhook_id: hook.id,
            event: event.kind.clone(),
            state: "pending".into(),
            attempts: 0,
            status: None,
            error: None,
            created_at: at.clone(),
            updated_at: at,
        };
        match self.store.insert_delivery(&d) {
            Ok(()) => Some(d),
            Err(e) => {
                tracing::error!(webhook = %hook.name, error = %e, "cannot record a webhook delivery");
                None
            }
        }
    }

    /// Tries `d` up to `tries` times, recording each outcome.
    async fn deliver(
        &self,
        hook: &WebhookRecord,
        event: &WebhookEvent,
        mut d: DeliveryRecord,
        tries: u32,
    ) -> DeliveryRecord {
        let body = match serde_json::to_vec(event) {
            Ok(b) => b,
            Err(e) => return self.give_up(d, format!("encoding the event: {e}")),
        };
        let secret = match self.secrets.open_sealed(&hook.secret) {
            Ok(s) => s,
            Err(e) => return self.give_up(d, format!("cannot open the webhook's secret: {e}")),
        };
        let client = match http_client(hook, self.config.timeout) {
            Ok(c) => c,
            Err(e) => return self.give_up(d, e),
        };
        let signature = sign(secret.as_bytes(), &body);
        let mut wait = self.config.first_retry;
        loop {
            d.attempts += 1;
            let outcome = client
                .post(&hook.url)
                .header("content-type", "application/json")
                .header("user-agent", concat!("doppel/", env!("CARGO_PKG_VERSION")))
                .header("x-doppel-signature", &signature)
                .header("x-doppel-event", &event.kind)
                .header("x-doppel-delivery", &d.id)
                .header("x-doppel-timestamp", unix_now().to_string())
                .body(body.clone())
                .send()
                .await;
            match outcome {
                Ok(r) if r.status().is_success() => {
                    d.status = Some(r.status().as_u16());
                    d.error = None;
                    d.state = "delivered".into();
                }
                Ok(r) => {
                    d.status = Some(r.status().as_u16());
                    d.error = Some(format!("the receiver answered {}", r.status()));
                }
                Err(e) => {
                    d.status = None;
                    d.error = Some(describe(&e));
                }
            }
            if d.state != "delivered" && d.attempts >= tries {
                d.state = "failed".into();
            }
            d.updated_at = now();
            if let Err(e) = self.store.update_delivery(&d) {
                tracing::error!(webhook = %hook.name, error = %e, "cannot record a webhook delivery");
            }
            if d.state != "pending" {
                self.metrics.webhook_delivery(&d.state);
                if d.state == "failed" {
                    tracing::warn!(webhook = %hook.name, delivery = %d.id, tries = d.attempts,
                        error = d.error.as_deref().unwrap_or_default(), "webhook delivery failed");
                }
                return d;
            }
            tokio::time::sleep(wait).await;
            wait = wait.saturating_mul(2);
        }
    }

    fn give_up(&self, mut d: DeliveryRecord, why: String) -> DeliveryRecord {
        tracing::error!(delivery = %d.id, error = %why, "webhook delivery failed");
        d.state = "failed".into();
        d.error = Some(why);
        d.updated_at = now();
        let _ = self.store.update_delivery(&d);
        self.metrics.webhook_delivery("failed");
        d
    }
}

/// `sha256=<hex>` of the body under the secret: `X-Doppel-Signature`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("any key length");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in bytes.iter() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// A try's failure in words, with the cause reqwest wraps.
fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "no answer in time"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "the request failed"
    };
    let mut cause = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    if cause.is_empty() {
        format!("{what}: {e}")
    } else {
        format!("{what}: {cause}")
    }
}

/// The system's roots (webpki's), plus the webhook's own CA if it has one.
fn http_client(hook: &WebhookRecord, timeout: Duration) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(pem) = &hook.ca_cert {
        for c in reqwest::Certificate::from_pem_bundle(pem.as_bytes())
            .map_err(|e| format!("the webhook's CA certificate does not parse: {e}"))?
        {
            b = b.add_root_certificate(c);
        }
    }
    b.build()
        .map_err(|e| format!("cannot set up the HTTP client: {e}"))
}

fn invalid(field: &str, reason: impl Into<String>) -> EngineError {
    EngineError::InvalidInput {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Checks a webhook's fields, naming the one at fault.
fn check(req: &AddWebhook) -> Result<(), EngineError> {
    crate::environments::check_name("name", &req.name)?;
    if parse_ref(&req.name, WEBHOOK_PREFIX).is_some() {
        return Err(invalid(
            "name",
            "must not look like a reference (WEBHOOK-<n>)",
        ));
    }
    let url = reqwest::Url::parse(&req.url)
        .map_err(|e| invalid("url", format!("{:?} is not a URL ({e})", req.url)))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(
            "url",
            format!("must be http or https, not {}", url.scheme()),
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("url", "names no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            "url",
            "must not hold credentials: the receiver checks the signature instead",
        ));
    }
    if req.secret.chars().count() < MIN_SECRET {
        return Err(invalid(
            "secret",
            format!("must be at least {MIN_SECRET} characters"),
        ));
    }
    for (i, e) in req.events.iter().enumerate() {
        if !EVENT_KINDS.contains(&e.as_str()) {
            return Err(invalid(
                &format!("events[{i}]"),
                format!("{e:?} is not an event kind: use {}", EVENT_KINDS.join(", ")),
            ));
        }
    }
    if let Some(pem) = &req.ca_cert {
        if url.scheme() != "https" {
            return Err(invalid(
                "ca_cert",
                "only an https URL uses a CA certificate",
            ));
        }
        match reqwest::Certificate::from_pem_bundle(pem.as_bytes()) {
            Ok(c) if !c.is_empty() => {}
            Ok(_) => return Err(invalid("ca_cert", "holds no PEM certificate")),
            Err(e) => return Err(invalid("ca_cert", format!("does not parse: {e}"))),
        }
    }
    Ok(())
}

fn delivery_model(d: DeliveryRecord) -> WebhookDelivery {
    WebhookDelivery {
        id: d.id,
        event: d.event,
        state: d.state,
        attempts: d.attempts,
        status: d.status,
        error: d.error,
        created_at: d.created_at,
        updated_at: d.updated_at,
    }
}

fn model(w: &WebhookRecord, deliveries: Vec<WebhookDelivery>) -> Webhook {
    Webhook {
        reference: format!("{WEBHOOK_PREFIX}{}", w.id),
        name: w.name.clone(),
        url: w.url.clone(),
        events: w.events.clone(),
        ca_cert: w.ca_cert.is_some(),
        created_at: w.created_at.clone(),
        deliveries,
    }
}

impl Engine {
    /// Hands an event to the webhooks that take its kind. Never waits:
    /// callable from anywhere, a job's hot path included.
    pub fn publish(&self, event: Event) {
        self.webhooks.publisher.publish(event);
    }

    fn find_webhook(&self, w: &str) -> Result<WebhookRecord, EngineError> {
        let found = match parse_ref(w, WEBHOOK_PREFIX) {
            Some(id) => self.store.get_webhook(id)?,
            None => self.store.find_webhook_by_name(w)?,
        };
        found.ok_or_else(|| EngineError::NotFound {
            kind: "webhook",
            id: w.to_owned(),
        })
    }

    /// Adds a webhook; nothing is stored unless every field is right.
    pub fn add_webhook(&self, req: AddWebhook) -> Result<Webhook, EngineError> {
        check(&req)?;
        let mut events = req.events.clone();
        events.sort();
        events.dedup();
        let mut record = WebhookRecord {
            id: 0,
            name: req.name,
            url: req.url,
            secret: self.hosts.secrets.seal(&req.secret),
            events,
            ca_cert: req.ca_cert,
            created_at: now(),
        };
        record.id = self.store.insert_webhook(&record)?;
        Ok(model(&record, Vec::new()))
    }

    pub fn list_webhooks(&self) -> Result<Vec<Webhook>, EngineError> {
        Ok(self
            .store
            .list_webhooks()?
            .iter()
            .map(|w| model(w, Vec::new()))
            .collect())
    }

    /// One webhook with its last deliveries.
    pub fn get_webhook(&self, w: &str) -> Result<Webhook, EngineError> {
        let w = self.find_webhook(w)?;
        let deliveries = self
            .store
            .list_deliveries(w.id)?
            .into_iter()
            .map(delivery_model)
            .collect();
        Ok(model(&w, deliveries))
    }

    pub fn delete_webhook(&self, w: &str) -> Result<Webhook, EngineError> {
        let w = self.find_webhook(w)?;
        self.store.delete_webhook(w.id)?;
        Ok(model(&w, Vec::new()))
    }

    /// Sends a `ping` to one webhook now, once, and says how the receiver
    /// answered (also recorded as a delivery).
    pub async fn test_webhook(&self, w: &str) -> Result<WebhookDelivery, EngineError> {
        let hook = self.find_webhook(w)?;
        let shared = &self.webhooks.shared;
        let event = Event::ping().stamped();
        let d = shared
            .record_new(&hook, &event)
            .ok_or_else(|| EngineError::Internal("cannot record the delivery".into()))?;
        Ok(delivery_model(shared.deliver(&hook, &event, d, 1).await))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> AddWebhook {
        AddWebhook {
            name: "ops".into(),
            url: "https://hooks.example.com/doppel".into(),
            secret: "0123456789abcdef".into(),
            events: vec!["job.failed".into()],
            ca_cert: None,
        }
    }

    #[test]
    fn bad_fields_are_named() {
        assert!(check(&req()).is_ok());
        let field = |r: AddWebhook| match check(&r) {
            Err(EngineError::InvalidInput { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        let with = |f: &dyn Fn(&mut AddWebhook)| {
            let mut r = req();
            f(&mut r);
            r
        };
        assert_eq!(field(with(&|r| r.url = "ftp://x/".into())), "url");
        assert_eq!(field(with(&|r| r.url = "not a url".into())), "url");
        assert_eq!(field(with(&|r| r.url = "https://u:p@x/".into())), "url");
        assert_eq!(field(with(&|r| r.secret = "short".into())), "secret");
        assert_eq!(
            field(with(
                &|r| r.events = vec!["job.failed".into(), "job.exploded".into()]
            )),
            "events[1]"
        );
        assert_eq!(field(with(&|r| r.name = "-x".into())), "name");
        assert_eq!(field(with(&|r| r.name = "WEBHOOK-3".into())), "name");
        assert_eq!(
            field(with(&|r| r.ca_cert = Some("not pem".into()))),
            "ca_cert"
        );
    }

    #[test]
    fn one_webhook_holds_a_bounded_number_of_places() {
        let counts = Default::default();
        let held: Vec<Place> = (0..MAX_IN_FLIGHT_PER_WEBHOOK)
            .map(|_| Place::take(&counts, 1).unwrap())
            .collect();
        assert!(Place::take(&counts, 1).is_none());
        // Another webhook is not held up by the first.
        let other = Place::take(&counts, 2).unwrap();
        drop(held);
        assert!(Place::take(&counts, 1).is_some());
        drop(other);
        assert!(counts.lock().unwrap().is_empty());
    }

    #[test]
    fn a_full_queue_drops_the_event_without_waiting_and_counts_it() {
        let metrics = Arc::new(Metrics::new().unwrap());
        // Nobody takes events off this queue of one.
        let (queue, _events) = tokio::sync::mpsc::channel(1);
        let p = Publisher {
            queue,
            metrics: metrics.clone(),
        };
        let e = Event::vdb_expiring("VDB-1", "dev", "2026-01-01T00:00:00Z", false);
        p.publish(e.clone());
        assert_eq!(metrics.webhook_dropped_count("vdb.expiring"), 0);
        p.publish(e.clone());
        p.publish(e);
        assert_eq!(metrics.webhook_dropped_count("vdb.expiring"), 2);
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_the_body() {
        // RFC 4231, test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
