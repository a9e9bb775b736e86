//! Webhooks and the record of their last deliveries.

use rusqlite::{params, OptionalExtension};

use crate::{Store, StoreError};

/// Deliveries kept per webhook: enough to see what happened lately, never
/// a growing log.
pub const KEPT_DELIVERIES: i64 = 50;

#[derive(Debug, Clone, PartialEq)]
pub struct WebhookRecord {
    pub id: i64,
    pub name: String,
    pub url: String,
    /// Sealed by the engine's secret box.
    pub secret: String,
    /// Event kinds it receives; empty: all.
    pub events: Vec<String>,
    pub ca_cert: Option<String>,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRecord {
    pub id: String,
    pub webhook_id: i64,
    pub event: String,
    pub state: String,
    pub attempts: u32,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

const WEBHOOK_COLUMNS: &str = "id, name, url, secret, events, ca_cert, created_at";

fn row_webhook(r: &rusqlite::Row<'_>) -> rusqlite::Result<WebhookRecord> {
    let events: String = r.get(4)?;
    Ok(WebhookRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        url: r.get(2)?,
        secret: r.get(3)?,
        events: serde_json::from_str(&events).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(4, rusqlite::types::Type::Text, Box::new(e))
        })?,
        ca_cert: r.get(5)?,
        created_at: r.get(6)?,
    })
}

fn row_delivery(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeliveryRecord> {
    Ok(DeliveryRecord {
        id: r.get(0)?,
        webhook_id: r.get(1)?,
        event: r.get(2)?,
        state: r.get(3)?,
        attempts: r.get(4)?,
        status: r.get(5)?,
        error: r.get(6)?,
        created_at: r.get(7)?,
        updated_at: r.get(8)?,
    })
}

impl Store {
    /// Adds a webhook; a name in use is `Taken`.
    pub fn insert_webhook(&self, w: &WebhookRecord) -> Result<i64, StoreError> {
        let conn = self.conn();
        let events = serde_json::Value::from(w.events.clone()).to_string();
        conn.execute(
            "INSERT INTO webhook (name, url, secret, events, ca_cert, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![w.name, w.url, w.secret, events, w.ca_cert, w.created_at],
        )
        .map_err(|e| {
            crate::taken(e, "webhook name", &w.name, || {
                conn.query_row("SELECT id FROM webhook WHERE name = ?1", [&w.name], |r| {
                    r.get::<_, i64>(0)
                })
                .ok()
                .map(|id| format!("WEBHOOK-{id}"))
            })
        })?;
        Ok(conn.last_insert_rowid())
    }

    pub fn get_webhook(&self, id: i64) -> Result<Option<WebhookRecord>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {WEBHOOK_COLUMNS} FROM webhook WHERE id = ?1"),
                [id],
                row_webhook,
            )
            .optional()?)
    }

    pub fn find_webhook_by_name(&self, name: &str) -> Result<Option<WebhookRecord>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {WEBHOOK_COLUMNS} FROM webhook WHERE name = ?1"),
                [name],
                row_webhook,
            )
            .optional()?)
    }

    pub fn list_webhooks(&self) -> Result<Vec<WebhookRecord>, StoreError> {
        let conn = self.conn();
        let mut st = conn.prepare(&format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhook ORDER BY id"
        ))?;
        let rows = st.query_map([], row_webhook)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deletes a webhook and its deliveries.
    pub fn delete_webhook(&self, id: i64) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM webhook_delivery WHERE webhook_id = ?1", [id])?;
        tx.execute("DELETE FROM webhook WHERE id = ?1", [id])?;
        tx.commit()?;
        Ok(())
    }

    /// Records a new delivery and forgets the webhook's oldest ones past
    /// [`KEPT_DELIVERIES`]. A webhook deleted meanwhile records nothing.
    pub fn insert_delivery(&self, d: &DeliveryRecord) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let exists: bool = tx
            .query_row(
                "SELECT 1 FROM webhook WHERE id = ?1",
                [d.webhook_id],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        if exists {
            tx.execute(
                "INSERT INTO webhook_delivery
                 (id, webhook_id, event, state, attempts, status, error, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    d.id,
                    d.webhook_id,
                    d.event,
                    d.state,
                    d.attempts,
                    d.status,
                    d.error,
                    d.created_at,
                    d.updated_at
                ],
            )?;
            tx.execute(
                "DELETE FROM webhook_delivery WHERE webhook_id = ?1 AND seq NOT IN
                 (SELECT seq FROM webhook_delivery WHERE webhook_id = ?1 ORDER BY seq DESC LIMIT ?2)",
                params![d.webhook_id, KEPT_DELIVERIES],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Records the outcome of a try.
    pub fn update_delivery(&self, d: &DeliveryRecord) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE webhook_delivery SET state = ?2, attempts = ?3, status = ?4, error = ?5,
             updated_at = ?6 WHERE id = ?1",
            params![d.id, d.state, d.attempts, d.status, d.error, d.updated_at],
        )?;
        Ok(())
    }

    /// A webhook's last deliveries, newest first.
    pub fn list_deliveries(&self, webhook_id: i64) -> Result<Vec<DeliveryRecord>, StoreError> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT id, webhook_id, event, state, attempts, status, error, created_at, updated_at
             FROM webhook_delivery WHERE webhook_id = ?1 ORDER BY seq DESC",
        )?;
        let rows = st.query_map([webhook_id], row_delivery)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deliveries a previous run of the engine left pending: it cannot try
    /// them again (the queue was in memory), so they are recorded failed.
    pub fn fail_pending_deliveries(&self, at: &str) -> Result<usize, StoreError> {
        Ok(self.conn().execute(
            "UPDATE webhook_delivery SET state = 'failed',
             error = 'the engine stopped before this delivery ended', updated_at = ?1
             WHERE state = 'pending'",
            [at],
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(name: &str) -> WebhookRecord {
        WebhookRecord {
            id: 0,
            name: name.into(),
            url: "http://127.0.0.1:9/".into(),
            secret: "sealed".into(),
            events: vec!["job.failed".into()],
            ca_cert: None,
            created_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    fn delivery(n: usize, webhook_id: i64) -> DeliveryRecord {
        DeliveryRecord {
            id: format!("d{n}"),
            webhook_id,
            event: "ping".into(),
            state: "pending".into(),
            attempts: 0,
            status: None,
            error: None,
            created_at: "t".into(),
            updated_at: "t".into(),
        }
    }

    #[test]
    fn names_are_unique_and_only_the_last_deliveries_are_kept() {
        let s = Store::open_in_memory().unwrap();
        let id = s.insert_webhook(&hook("a")).unwrap();
        let e = s.insert_webhook(&hook("a")).unwrap_err();
        assert!(
            matches!(&e, StoreError::Taken { holder, .. } if holder == &format!("WEBHOOK-{id}")),
            "{e:?}"
        );
        assert_eq!(s.get_webhook(id).unwrap().unwrap().events, ["job.failed"]);
        for n in 0..(KEPT_DELIVERIES as usize + 5) {
            s.insert_delivery(&delivery(n, id)).unwrap();
        }
        let kept = s.list_deliveries(id).unwrap();
        assert_eq!(kept.len(), KEPT_DELIVERIES as usize);
        assert_eq!(kept[0].id, format!("d{}", KEPT_DELIVERIES + 4));
        assert_eq!(s.fail_pending_deliveries("t2").unwrap(), kept.len());
        s.delete_webhook(id).unwrap();
        assert!(s.list_deliveries(id).unwrap().is_empty());
        // A delivery for a webhook deleted meanwhile is not recorded.
        s.insert_delivery(&delivery(999, id)).unwrap();
        assert!(s.list_deliveries(id).unwrap().is_empty());
    }
}
