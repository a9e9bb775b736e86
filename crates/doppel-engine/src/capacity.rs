//! Capacity guardrails: thresholds on how full the pool is. Past the warning
//! threshold `pool status` (and the log, once per crossing) says so; past
//! the refusal threshold new syncs, provisions and snapshots are refused at
//! the request, naming the usage and the threshold. Work already running is
//! never cut off: the check is made only when an operation is asked for.
//!
//! Usage counts what is not free for new data (`size - free`), not the
//! filesystem's own `used`: on btrfs metadata and the global reserve make
//! the two differ, and what matters is the room left.

use serde::Serialize;

use crate::{pool_task, Engine, EngineError};

/// Pool usage thresholds, in percent of the pool's size.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Capacity {
    /// Past this, the pool is reported as filling up.
    pub warn_percent: f64,
    /// Past this, new syncs, provisions and snapshots are refused.
    pub refuse_percent: f64,
}

impl Default for Capacity {
    /// Delphix's defaults: warn at 78 %, stop ingest and provisioning at 85 %.
    fn default() -> Self {
        Capacity {
            warn_percent: 78.0,
            refuse_percent: 85.0,
        }
    }
}

impl Capacity {
    /// Checks the thresholds: each within 0-100 and the warning below the
    /// refusal. The error names the field (as `doppel serve` spells it).
    pub fn validate(&self) -> Result<(), EngineError> {
        for (field, v) in [
            ("pool-warn-percent", self.warn_percent),
            ("pool-refuse-percent", self.refuse_percent),
        ] {
            if !(v.is_finite() && v > 0.0 && v <= 100.0) {
                return Err(EngineError::InvalidInput {
                    field: field.into(),
                    reason: format!("{v} is not a percentage above 0 and at most 100"),
                });
            }
        }
        if self.warn_percent >= self.refuse_percent {
            return Err(EngineError::InvalidInput {
                field: "pool-warn-percent".into(),
                reason: format!(
                    "the warning threshold ({} %) must be below the refusal threshold ({} %)",
                    self.warn_percent, self.refuse_percent
                ),
            });
        }
        Ok(())
    }

    /// Where `usage` (percent) stands against the thresholds.
    pub fn state(&self, usage: f64) -> CapacityState {
        if usage >= self.refuse_percent {
            CapacityState::Refusing
        } else if usage >= self.warn_percent {
            CapacityState::Warning
        } else {
            CapacityState::Ok
        }
    }
}

/// How full the pool is against the thresholds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CapacityState {
    /// Below the warning threshold.
    Ok,
    /// Past the warning threshold: new work is still accepted.
    Warning,
    /// Past the refusal threshold: new syncs, provisions and snapshots are refused.
    Refusing,
}

/// The capacity part of `pool status`.
#[derive(Clone, Debug, Serialize)]
pub struct CapacityReport {
    /// Percent of the pool not free for new data.
    pub usage_percent: f64,
    pub warn_percent: f64,
    pub refuse_percent: f64,
    pub state: CapacityState,
}

/// Percent of `size` not free, rounded to a tenth (what messages quote).
pub(crate) fn usage_percent(space: &doppel_storage::PoolSpace) -> f64 {
    if space.size == 0 {
        return 100.0;
    }
    let used = space.size.saturating_sub(space.free) as f64;
    (used * 1000.0 / space.size as f64).round() / 10.0
}

/// Space of one dSource or VDB.
#[derive(Clone, Debug, Serialize)]
pub struct ObjectSpace {
    /// `dsource` or `vdb`.
    pub kind: &'static str,
    pub name: String,
    pub reference: String,
    /// The pool dataset holding its data.
    pub dataset: String,
    /// Bytes its dataset holds (its own and those shared with others).
    pub used: u64,
    /// Bytes its deletion would give back: what only its dataset and its
    /// snapshots hold (shared blocks stay with whoever else holds them).
    pub frees: u64,
}

/// What `doppel pool status` shows: the pool, the capacity thresholds and
/// where the space went.
#[derive(Clone, Debug, Serialize)]
pub struct PoolReport {
    #[serde(flatten)]
    pub pool: doppel_storage::PoolStatus,
    pub capacity: CapacityReport,
    /// Every dSource and VDB with its space; an object whose dataset cannot
    /// be measured (the driver has no accounting) is left out.
    pub objects: Vec<ObjectSpace>,
}

/// Measures one object's dataset and the snapshots taken of it.
fn object_space(
    pool: &doppel_storage::Pool,
    volume: &str,
    snapshots: &[String],
) -> doppel_storage::Result<(u64, u64)> {
    let v = doppel_storage::VolumeId::new(volume)?;
    let own = pool.volume_usage(&v)?;
    let mut frees = own.exclusive;
    for s in snapshots {
        let r = doppel_storage::SnapshotRef::new(
            v.clone(),
            doppel_storage::SnapshotId::new(s.as_str())?,
        );
        frees += pool.snapshot_usage(&r)?.exclusive;
    }
    Ok((own.exclusive + own.shared, frees))
}

impl Engine {
    /// The pool's status with capacity and per-object space.
    pub async fn pool_report(&self) -> Result<PoolReport, EngineError> {
        let mut objects: Vec<(&'static str, String, String, String)> = Vec::new();
        for d in self.store.list_dsources()? {
            objects.push(("dsource", d.name, format!("DSOURCE-{}", d.id), d.volume));
        }
        for v in self.store.list_vdbs()? {
            objects.push(("vdb", v.name, format!("VDB-{}", v.id), v.volume));
        }
        let mut snapshots: std::collections::HashMap<String, Vec<String>> = Default::default();
        for s in self.store.list_snapshots(None)? {
            snapshots.entry(s.volume).or_default().push(s.pool_snapshot);
        }
        let pool = self.pool.clone();
        let (status, space, measured) = pool_task(move || {
            let status = pool.status()?;
            let space = pool.space()?;
            let measured = objects
                .into_iter()
                .filter_map(|(kind, name, reference, dataset)| {
                    let snaps = snapshots.get(&dataset).map(Vec::as_slice).unwrap_or(&[]);
                    let (used, frees) = object_space(&pool, &dataset, snaps).ok()?;
                    Some(ObjectSpace {
                        kind,
                        name,
                        reference,
                        dataset,
                        used,
                        frees,
                    })
                })
                .collect::<Vec<_>>();
            Ok((status, space, measured))
        })
        .await?;
        let capacity = self.capacity_of(&space);
        self.note_capacity(&capacity);
        let mut status = status;
        match capacity.state {
            CapacityState::Ok => {}
            CapacityState::Warning => status.notices.push(doppel_storage::Notice::warning(format!(
                "the pool is {:.1} % full, past the warning threshold ({} %); new syncs, provisions and snapshots \
                 are refused from {} %",
                capacity.usage_percent, capacity.warn_percent, capacity.refuse_percent
            ))),
            CapacityState::Refusing => status.notices.push(doppel_storage::Notice::warning(format!(
                "the pool is {:.1} % full, past the refusal threshold ({} %): new syncs, provisions and snapshots \
                 are refused; running jobs go on",
                capacity.usage_percent, capacity.refuse_percent
            ))),
        }
        Ok(PoolReport {
            pool: status,
            capacity,
            objects: measured,
        })
    }

    pub(crate) fn capacity_of(&self, space: &doppel_storage::PoolSpace) -> CapacityReport {
        let usage = usage_percent(space);
        CapacityReport {
            usage_percent: usage,
            warn_percent: self.capacity.warn_percent,
            refuse_percent: self.capacity.refuse_percent,
            state: self.capacity.state(usage),
        }
    }

    /// Refuses a new `what` (a sync, provision or snapshot) when the pool is
    /// past the refusal threshold. Called when the operation is asked for,
    /// before its job exists, so running jobs are never affected. One
    /// `statfs` (plus, on btrfs, a look at pending deletions): cheap enough
    /// for the request path, like the store's reads there.
    pub(crate) fn check_capacity(&self, what: &str) -> Result<(), EngineError> {
        let space = self.pool.space()?;
        let report = self.capacity_of(&space);
        self.note_capacity(&report);
        if report.state == CapacityState::Refusing {
            return Err(EngineError::PoolFull(format!(
                "the storage pool is {:.1} % full ({} of {} bytes not free), past the {} % at which new \
                 {what}s are refused; free space (delete VDBs, snapshots or dSources) or raise \
                 --pool-refuse-percent",
                report.usage_percent,
                space.size.saturating_sub(space.free),
                space.size,
                report.refuse_percent
            )));
        }
        Ok(())
    }

    /// Tells of the pool crossing a threshold upwards once per crossing
    /// (the log and a `capacity.warning` event), wherever usage was last
    /// measured: a request's check, `pool status`, a metrics scrape.
    pub(crate) fn note_capacity(&self, report: &CapacityReport) {
        let before = {
            let mut seen = self.capacity_seen.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::replace(&mut *seen, report.state)
        };
        if report.state > before {
            tracing::warn!(
                usage_percent = report.usage_percent,
                warn_percent = report.warn_percent,
                refuse_percent = report.refuse_percent,
                state = ?report.state,
                "the storage pool is filling up"
            );
            self.publish(crate::webhooks::Event::capacity(report));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_out_of_order_or_out_of_range_are_refused_naming_the_field() {
        assert!(Capacity::default().validate().is_ok());
        let e = Capacity {
            warn_percent: 90.0,
            refuse_percent: 85.0,
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().starts_with("pool-warn-percent:"), "{e}");
        let e = Capacity {
            warn_percent: 50.0,
            refuse_percent: 101.0,
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().starts_with("pool-refuse-percent:"), "{e}");
    }

    #[test]
    fn usage_counts_what_is_not_free() {
        let s = doppel_storage::PoolSpace {
            size: 1000,
            used: 10,
            free: 140,
            reclaiming: 0,
        };
        assert_eq!(usage_percent(&s), 86.0);
        assert_eq!(Capacity::default().state(86.0), CapacityState::Refusing);
        assert_eq!(Capacity::default().state(80.0), CapacityState::Warning);
        assert_eq!(Capacity::default().state(10.0), CapacityState::Ok);
    }
}
