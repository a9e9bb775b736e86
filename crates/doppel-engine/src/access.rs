//! Who may do what.
//!
//! Every API user has a [`Role`]: auditors read, operators create
//! environments, dSources and VDBs and act on what they own or were granted,
//! administrators do everything. Rights on one object ([`Right`]: owner or
//! provisioner) are grants stored per object reference; whoever creates an
//! object owns it. Reading is open to every role: rights guard changes.
//!
//! The API checks the role a route needs before the handler runs, and the
//! handler asks [`Engine::authorize`] for the object rights its request
//! needs before calling the operation, so a refused request changes nothing.

use doppel_model::{Grant, GrantRequest, Right, Role};
use doppel_store::GrantRecord;

use crate::auth::Principal;
use crate::hosts::{parse_ref, ENVIRONMENT_PREFIX};
use crate::{Engine, EngineError, SNAPSHOT_PREFIX};

const DSOURCE_PREFIX: &str = "DSOURCE-";
const VDB_PREFIX: &str = "VDB-";

/// Refuses unless `who` has at least role `min`; `what` completes "may not …".
pub fn require_role(who: &Principal, min: Role, what: &str) -> Result<(), EngineError> {
    if who.role >= min {
        return Ok(());
    }
    Err(EngineError::Forbidden(format!(
        "user {:?} ({}) may not {what}: that needs the {min} role",
        who.name, who.role
    )))
}

/// An object rights are granted on, resolved to its stable reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantObject {
    /// `UNIX_HOST_ENVIRONMENT-<n>`, `DSOURCE-<n>`, `VDB-<n>` or a plugin id.
    pub reference: String,
    /// For messages: `environment source`, `VDB dev`.
    pub label: String,
}

/// One object right a request needs, named as the user named the object.
#[derive(Debug, Clone, Copy)]
pub enum Need<'a> {
    /// An environment by name or reference.
    Environment(&'a str, Right),
    /// The environment a repository (`REPOSITORY-<n>`) lives on.
    RepositoryEnvironment(&'a str, Right),
    /// The environment a source config (`SOURCE_CONFIG-<n>`) lives on.
    SourceConfigEnvironment(&'a str, Right),
    DSource(&'a str, Right),
    Vdb(&'a str, Right),
    /// A dSource or a VDB by name or reference (a VDB wins a tie, as in
    /// provisioning).
    Dataset(&'a str, Right),
    /// The dSource or VDB a snapshot (`SNAPSHOT-<n>`) belongs to.
    Snapshot(&'a str, Right),
    /// A plugin by id or name.
    Plugin(&'a str, Right),
    /// Cancelling a job: owner of the object it works on.
    Job(&'a str),
}

impl Engine {
    /// Checks every need of a request. Administrators pass; auditors never
    /// pass; operators need the right, or owner, on each object. An object
    /// that does not exist answers not found, as the operation would.
    pub fn authorize(&self, who: &Principal, needs: &[Need<'_>]) -> Result<(), EngineError> {
        if who.is_admin() {
            // Still resolve, so an administrator gets the same not-found
            // answers before anything starts.
            for need in needs {
                self.need_object(*need)?;
            }
            return Ok(());
        }
        require_role(who, Role::Operator, "change anything")?;
        for need in needs {
            let (object, right) = self.need_object(*need)?;
            let Some(object) = object else {
                // A job on no object (an environment being added, say):
                // only administrators may cancel it.
                return Err(EngineError::Forbidden(format!(
                    "user {:?} may not cancel that job: it works on no object they own",
                    who.name
                )));
            };
            self.require_right(who, &object, right)?;
        }
        Ok(())
    }

    fn require_right(
        &self,
        who: &Principal,
        object: &GrantObject,
        right: Right,
    ) -> Result<(), EngineError> {
        let held = self
            .store
            .grant_of(&object.reference, who.user_id)?
            .and_then(|r| Right::parse(&r));
        if held.is_some_and(|h| h >= right) {
            return Ok(());
        }
        Err(EngineError::Forbidden(format!(
            "user {:?} lacks the {right} right on {} ({}){}",
            who.name,
            object.label,
            object.reference,
            match held {
                Some(h) => format!("; they are only {h}"),
                None => String::new(),
            }
        )))
    }

    fn need_object(&self, need: Need<'_>) -> Result<(Option<GrantObject>, Right), EngineError> {
        Ok(match need {
            Need::Environment(e, r) => (Some(self.environment_object(e)?), r),
            Need::RepositoryEnvironment(repo, r) => {
                let env = self.repository_environment(repo)?;
                (Some(self.environment_object(&env)?), r)
            }
            Need::SourceConfigEnvironment(sc, r) => {
                let sc = self.find_source_config(sc)?;
                let env =
                    self.repository_environment(&format!("REPOSITORY-{}", sc.repository_id))?;
                (Some(self.environment_object(&env)?), r)
            }
            Need::DSource(d, r) => (Some(self.dsource_object(d)?), r),
            Need::Vdb(v, r) => (Some(self.vdb_object(v)?), r),
            Need::Dataset(d, r) => match self.vdb_object(d) {
                Ok(o) => (Some(o), r),
                Err(EngineError::NotFound { .. }) => (Some(self.dsource_object(d)?), r),
                Err(e) => return Err(e),
            },
            Need::Snapshot(s, r) => (Some(self.snapshot_object(s)?), r),
            Need::Plugin(p, r) => {
                let p = self.find_plugin(p)?;
                (
                    Some(GrantObject {
                        label: format!("plugin {}", p.name),
                        reference: p.id,
                    }),
                    r,
                )
            }
            Need::Job(j) => {
                let job = self
                    .store
                    .get_job(j)?
                    .ok_or_else(|| EngineError::NotFound {
                        kind: "job",
                        id: j.to_owned(),
                    })?;
                let object = match job.target.as_deref() {
                    Some(t) => self.object_of_reference(t).ok(),
                    None => None,
                };
                (object, Right::Owner)
            }
        })
    }

    fn environment_object(&self, e: &str) -> Result<GrantObject, EngineError> {
        let env = self.find_environment(e)?;
        Ok(GrantObject {
            reference: format!("{ENVIRONMENT_PREFIX}{}", env.id),
            label: format!("environment {}", env.name),
        })
    }

    fn dsource_object(&self, d: &str) -> Result<GrantObject, EngineError> {
        let ds = self.get_dsource(d)?;
        Ok(GrantObject {
            label: format!("dSource {}", ds.name),
            reference: ds.reference,
        })
    }

    fn vdb_object(&self, v: &str) -> Result<GrantObject, EngineError> {
        let vdb = self.get_vdb(v)?;
        Ok(GrantObject {
            label: format!("VDB {}", vdb.name),
            reference: vdb.reference,
        })
    }

    fn repository_environment(&self, repo: &str) -> Result<String, EngineError> {
        let id = parse_ref(repo, "REPOSITORY-").ok_or_else(|| EngineError::InvalidInput {
            field: "repository".into(),
            reason: "must look like REPOSITORY-<n>".into(),
        })?;
        let repo = self
            .store
            .get_repository(id)?
            .ok_or_else(|| EngineError::NotFound {
                kind: "repository",
                id: repo.to_owned(),
            })?;
        Ok(format!("{ENVIRONMENT_PREFIX}{}", repo.environment_id))
    }

    fn snapshot_object(&self, s: &str) -> Result<GrantObject, EngineError> {
        let id = parse_ref(s, SNAPSHOT_PREFIX).ok_or_else(|| EngineError::InvalidInput {
            field: "snapshot".into(),
            reason: "must look like SNAPSHOT-<n>".into(),
        })?;
        let snap = self
            .store
            .get_snapshot(id)?
            .ok_or_else(|| EngineError::NotFound {
                kind: "snapshot",
                id: s.to_owned(),
            })?;
        if let Some(ds) = self
            .store
            .list_dsources()?
            .into_iter()
            .find(|d| d.volume == snap.volume)
        {
            return self.dsource_object(&format!("{DSOURCE_PREFIX}{}", ds.id));
        }
        if let Some(v) = self
            .store
            .list_vdbs()?
            .into_iter()
            .find(|v| v.volume == snap.volume)
        {
            return self.vdb_object(&format!("{VDB_PREFIX}{}", v.id));
        }
        Err(EngineError::Internal(format!(
            "{s} belongs to no dSource or VDB"
        )))
    }

    /// An object by its reference, or `KIND:NAME` (`env`, `dsource`, `vdb`,
    /// `plugin`), or a plugin id.
    pub(crate) fn object_of_reference(&self, s: &str) -> Result<GrantObject, EngineError> {
        if let Some((kind, name)) = s.split_once(':') {
            return match kind {
                "env" | "environment" => self.environment_object(name),
                "dsource" => self.dsource_object(name),
                "vdb" => self.vdb_object(name),
                "plugin" => self.plugin_object(name),
                _ => Err(EngineError::InvalidInput {
                    field: "object".into(),
                    reason: format!(
                        "{kind:?} is not a kind of object: use env, dsource, vdb or plugin"
                    ),
                }),
            };
        }
        if parse_ref(s, ENVIRONMENT_PREFIX).is_some() {
            return self.environment_object(s);
        }
        if parse_ref(s, DSOURCE_PREFIX).is_some() {
            return self.dsource_object(s);
        }
        if parse_ref(s, VDB_PREFIX).is_some() {
            return self.vdb_object(s);
        }
        if uuid::Uuid::parse_str(s).is_ok() {
            return self.plugin_object(s);
        }
        Err(EngineError::InvalidInput {
            field: "object".into(),
            reason: format!(
                "{s:?} is neither a reference (UNIX_HOST_ENVIRONMENT-<n>, DSOURCE-<n>, VDB-<n>, a plugin id) nor KIND:NAME"
            ),
        })
    }

    fn plugin_object(&self, p: &str) -> Result<GrantObject, EngineError> {
        let p = self.find_plugin(p)?;
        Ok(GrantObject {
            label: format!("plugin {}", p.name),
            reference: p.id,
        })
    }

    /// Makes `who` the owner of an object they just created. Administrators
    /// own what they create too, so that rights can be handed on.
    pub(crate) fn record_owner(&self, who: &Principal, reference: &str) -> Result<(), EngineError> {
        self.store
            .set_grant(reference, who.user_id, Right::Owner.as_str())?;
        Ok(())
    }

    fn grant_model(&self, g: GrantRecord) -> Grant {
        Grant {
            object_name: self
                .object_of_reference(&g.object)
                .map(|o| o.label)
                .unwrap_or_else(|_| "(gone)".into()),
            object: g.object,
            user: g.user,
            right: Right::parse(&g.right).unwrap_or(Right::Provisioner),
            granted_at: g.granted_at,
        }
    }

    /// Rights on one object and/or of one user.
    pub fn list_grants(
        &self,
        object: Option<&str>,
        user: Option<&str>,
    ) -> Result<Vec<Grant>, EngineError> {
        let object = object.map(|o| self.object_of_reference(o)).transpose()?;
        let user = match user {
            Some(u) => Some(self.api_user_id(u)?),
            None => None,
        };
        Ok(self
            .store
            .list_grants(object.as_ref().map(|o| o.reference.as_str()), user)?
            .into_iter()
            .map(|g| self.grant_model(g))
            .collect())
    }

    fn api_user_id(&self, name: &str) -> Result<i64, EngineError> {
        Ok(self
            .store
            .get_user(name)?
            .ok_or_else(|| EngineError::NotFound {
                kind: "user",
                id: name.to_owned(),
            })?
            .id)
    }

    /// Gives a user a right on an object; only its owners and
    /// administrators may. Auditors hold no rights.
    pub fn grant(&self, who: &Principal, req: &GrantRequest) -> Result<Grant, EngineError> {
        let right = req.right.ok_or_else(|| EngineError::InvalidInput {
            field: "right".into(),
            reason: "say which right to grant: owner or provisioner".into(),
        })?;
        let object = self.object_of_reference(&req.object)?;
        if !who.is_admin() {
            require_role(who, Role::Operator, "grant rights")?;
            self.require_right(who, &object, Right::Owner)?;
        }
        let user = self
            .store
            .get_user(&req.user)?
            .ok_or_else(|| EngineError::NotFound {
                kind: "user",
                id: req.user.clone(),
            })?;
        if user.role == Role::Auditor.as_str() {
            return Err(EngineError::InvalidInput {
                field: "user".into(),
                reason: format!(
                    "{:?} is an auditor: auditors read and hold no rights",
                    user.name
                ),
            });
        }
        self.store
            .set_grant(&object.reference, user.id, right.as_str())?;
        tracing::info!(object = %object.reference, user = %user.name, %right, by = %who.name, "right granted");
        self.list_grants(Some(&object.reference), Some(&user.name))?
            .pop()
            .ok_or_else(|| EngineError::Internal("the grant just made is gone".into()))
    }

    /// Takes a user's right on an object away; only its owners and
    /// administrators may.
    pub fn revoke(&self, who: &Principal, req: &GrantRequest) -> Result<(), EngineError> {
        let object = self.object_of_reference(&req.object)?;
        if !who.is_admin() {
            require_role(who, Role::Operator, "revoke rights")?;
            self.require_right(who, &object, Right::Owner)?;
        }
        let user = self.api_user_id(&req.user)?;
        if !self.store.delete_grant(&object.reference, user)? {
            return Err(EngineError::NotFound {
                kind: "grant",
                id: format!("{} on {}", req.user, object.reference),
            });
        }
        tracing::info!(object = %object.reference, user = %req.user, by = %who.name, "right revoked");
        Ok(())
    }
}
