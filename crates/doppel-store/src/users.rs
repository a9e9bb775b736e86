//! API users and their tokens (API tokens, web sessions, single-use upload
//! and download tokens).
//!
//! Passwords arrive here already hashed and tokens as digests: this module
//! never sees a secret. Times are UTC, `YYYY-MM-DDTHH:MM:SSZ`, so that text
//! order is time order.

use rusqlite::{params, OptionalExtension};

use crate::{Store, StoreError};

#[derive(Debug, Clone, PartialEq)]
pub struct UserRecord {
    pub id: i64,
    pub name: String,
    /// A PHC string (algorithm, parameters, salt and hash).
    pub password_hash: String,
    pub is_admin: bool,
    pub created_at: String,
    /// `admin`, `operator` or `auditor`.
    pub role: String,
}

/// One user's right on one object.
#[derive(Debug, Clone, PartialEq)]
pub struct GrantRecord {
    pub object: String,
    pub user: String,
    /// `owner` or `provisioner`.
    pub right: String,
    pub granted_at: String,
}

/// A live (unexpired) token and whose it is.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenRecord {
    pub user: UserRecord,
    pub kind: String,
    pub created_at: String,
    pub expires_at: String,
    pub used: bool,
}

/// What [`Store::set_user_role`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum RoleChange {
    Changed(UserRecord),
    NotFound,
    /// Refused: the user is the only administrator left.
    LastAdmin,
    /// Refused: auditors hold no rights, and the user holds this many.
    HoldsRights(i64),
}

/// What [`Store::delete_user`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserDeletion {
    Deleted,
    NotFound,
    /// Refused: the user is the only administrator left.
    LastAdmin,
}

fn stamp(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn now() -> String {
    stamp(time::OffsetDateTime::now_utc())
}

const USER_COLUMNS: &str = "u.id, u.name, u.password_hash, u.is_admin, u.created_at, u.role";

fn row_to_user(r: &rusqlite::Row<'_>) -> rusqlite::Result<UserRecord> {
    Ok(UserRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        password_hash: r.get(2)?,
        is_admin: r.get::<_, i64>(3)? != 0,
        created_at: r.get(4)?,
        role: r.get(5)?,
    })
}

/// Removes every right on an object, inside the transaction that deletes it.
pub(crate) fn delete_grants_of(
    tx: &rusqlite::Transaction<'_>,
    object: &str,
) -> rusqlite::Result<usize> {
    tx.execute("DELETE FROM object_grant WHERE object = ?1", [object])
}

impl Store {
    pub fn count_users(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT COUNT(*) FROM api_user", [], |r| r.get(0))?)
    }

    /// Adds a user; `None` when the name is taken.
    pub fn create_user(
        &self,
        name: &str,
        password_hash: &str,
        role: &str,
    ) -> Result<Option<UserRecord>, StoreError> {
        let conn = self.conn();
        let n = conn.execute(
            "INSERT INTO api_user (name, password_hash, is_admin, created_at, role) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (name) DO NOTHING",
            params![name, password_hash, (role == "admin") as i64, now(), role],
        )?;
        if n == 0 {
            return Ok(None);
        }
        let id = conn.last_insert_rowid();
        Ok(Some(conn.query_row(
            &format!("SELECT {USER_COLUMNS} FROM api_user u WHERE u.id = ?1"),
            [id],
            row_to_user,
        )?))
    }

    pub fn get_user(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {USER_COLUMNS} FROM api_user u WHERE u.name = ?1"),
                [name],
                row_to_user,
            )
            .optional()?)
    }

    pub fn list_users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {USER_COLUMNS} FROM api_user u ORDER BY u.name"
        ))?;
        let rows = stmt.query_map([], row_to_user)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Gives a user another role, unless that takes the last administrator
    /// away or makes an auditor of a user who holds rights.
    pub fn set_user_role(&self, name: &str, role: &str) -> Result<RoleChange, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let select = format!("SELECT {USER_COLUMNS} FROM api_user u WHERE u.name = ?1");
        let Some(user) = tx.query_row(&select, [name], row_to_user).optional()? else {
            return Ok(RoleChange::NotFound);
        };
        if user.is_admin && role != "admin" {
            let admins: i64 = tx.query_row(
                "SELECT COUNT(*) FROM api_user WHERE is_admin = 1",
                [],
                |r| r.get(0),
            )?;
            if admins <= 1 {
                return Ok(RoleChange::LastAdmin);
            }
        }
        if role == "auditor" {
            let rights: i64 = tx.query_row(
                "SELECT COUNT(*) FROM object_grant WHERE user_id = ?1",
                [user.id],
                |r| r.get(0),
            )?;
            if rights > 0 {
                return Ok(RoleChange::HoldsRights(rights));
            }
        }
        tx.execute(
            "UPDATE api_user SET role = ?2, is_admin = ?3 WHERE id = ?1",
            params![user.id, role, (role == "admin") as i64],
        )?;
        let changed = tx.query_row(&select, [name], row_to_user)?;
        tx.commit()?;
        Ok(RoleChange::Changed(changed))
    }

    /// Deletes a user and all their tokens, unless it is the last administrator.
    pub fn delete_user(&self, name: &str) -> Result<UserDeletion, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let user = tx
            .query_row(
                &format!("SELECT {USER_COLUMNS} FROM api_user u WHERE u.name = ?1"),
                [name],
                row_to_user,
            )
            .optional()?;
        let Some(user) = user else {
            return Ok(UserDeletion::NotFound);
        };
        if user.is_admin {
            let admins: i64 = tx.query_row(
                "SELECT COUNT(*) FROM api_user WHERE is_admin = 1",
                [],
                |r| r.get(0),
            )?;
            if admins <= 1 {
                return Ok(UserDeletion::LastAdmin);
            }
        }
        tx.execute("DELETE FROM api_token WHERE user_id = ?1", [user.id])?;
        tx.execute("DELETE FROM api_user WHERE id = ?1", [user.id])?;
        tx.commit()?;
        Ok(UserDeletion::Deleted)
    }

    /// Gives `user_id` `right` on `object`, replacing the right they had.
    pub fn set_grant(&self, object: &str, user_id: i64, right: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO object_grant (object, user_id, grant_right, granted_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (object, user_id) DO UPDATE SET grant_right = excluded.grant_right, granted_at = excluded.granted_at",
            params![object, user_id, right, now()],
        )?;
        Ok(())
    }

    /// Takes away the right `user_id` had on `object`; false if there was none.
    pub fn delete_grant(&self, object: &str, user_id: i64) -> Result<bool, StoreError> {
        Ok(self.conn().execute(
            "DELETE FROM object_grant WHERE object = ?1 AND user_id = ?2",
            params![object, user_id],
        )? > 0)
    }

    /// The right `user_id` has on `object`, if any.
    pub fn grant_of(&self, object: &str, user_id: i64) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT grant_right FROM object_grant WHERE object = ?1 AND user_id = ?2",
                params![object, user_id],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Rights, on one object and/or of one user, or all of them.
    pub fn list_grants(
        &self,
        object: Option<&str>,
        user_id: Option<i64>,
    ) -> Result<Vec<GrantRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT g.object, u.name, g.grant_right, g.granted_at
             FROM object_grant g JOIN api_user u ON u.id = g.user_id
             WHERE (?1 IS NULL OR g.object = ?1) AND (?2 IS NULL OR g.user_id = ?2)
             ORDER BY g.object, u.name",
        )?;
        let rows = stmt.query_map(params![object, user_id], |r| {
            Ok(GrantRecord {
                object: r.get(0)?,
                user: r.get(1)?,
                right: r.get(2)?,
                granted_at: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records a token digest for a user, valid for `ttl_seconds`; returns
    /// when it expires.
    pub fn put_token(
        &self,
        token_hash: &str,
        user_id: i64,
        kind: &str,
        ttl_seconds: i64,
    ) -> Result<String, StoreError> {
        let created = time::OffsetDateTime::now_utc();
        let expires = created + time::Duration::seconds(ttl_seconds);
        let conn = self.conn();
        // Expired tokens are of no use to anyone: sweep them on the way.
        conn.execute(
            "DELETE FROM api_token WHERE expires_at <= ?1",
            [stamp(created)],
        )?;
        conn.execute(
            "INSERT INTO api_token (token_hash, user_id, kind, created_at, expires_at, used) VALUES (?1, ?2, ?3, ?4, ?5, 0)",
            params![token_hash, user_id, kind, stamp(created), stamp(expires)],
        )?;
        Ok(stamp(expires))
    }

    /// The unexpired token with this digest, used or not.
    pub fn find_token(&self, token_hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!(
                    "SELECT {USER_COLUMNS}, t.kind, t.created_at, t.expires_at, t.used
                     FROM api_token t JOIN api_user u ON u.id = t.user_id
                     WHERE t.token_hash = ?1 AND t.expires_at > ?2"
                ),
                params![token_hash, now()],
                |r| {
                    Ok(TokenRecord {
                        user: row_to_user(r)?,
                        kind: r.get(6)?,
                        created_at: r.get(7)?,
                        expires_at: r.get(8)?,
                        used: r.get::<_, i64>(9)? != 0,
                    })
                },
            )
            .optional()?)
    }

    /// Marks an unexpired, unused token of this kind used; returns whether
    /// it was (false: unknown, expired, another kind or already used).
    pub fn consume_token(&self, token_hash: &str, kind: &str) -> Result<bool, StoreError> {
        Ok(self.conn().execute(
            "UPDATE api_token SET used = 1 WHERE token_hash = ?1 AND kind = ?2 AND used = 0 AND expires_at > ?3",
            params![token_hash, kind, now()],
        )? == 1)
    }

    pub fn delete_token(&self, token_hash: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .execute("DELETE FROM api_token WHERE token_hash = ?1", [token_hash])?
            == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_and_single_use_tokens() {
        let s = Store::open_in_memory().unwrap();
        let admin = s.create_user("admin", "h", "admin").unwrap().unwrap();
        assert!(admin.is_admin && admin.role == "admin");
        assert!(s.create_user("admin", "h2", "operator").unwrap().is_none());
        assert_eq!(s.delete_user("admin").unwrap(), UserDeletion::LastAdmin);
        s.put_token("t1", admin.id, "upload", 60).unwrap();
        assert!(s.find_token("t1").unwrap().is_some());
        assert!(!s.consume_token("t1", "download").unwrap());
        assert!(s.consume_token("t1", "upload").unwrap());
        assert!(!s.consume_token("t1", "upload").unwrap());
        s.put_token("t2", admin.id, "api", -1).unwrap();
        assert!(s.find_token("t2").unwrap().is_none(), "expired");
        let bob = s.create_user("bob", "h", "operator").unwrap().unwrap();
        assert!(!bob.is_admin);
        s.set_grant("VDB-1", bob.id, "provisioner").unwrap();
        s.set_grant("VDB-1", bob.id, "owner").unwrap();
        assert_eq!(
            s.grant_of("VDB-1", bob.id).unwrap().as_deref(),
            Some("owner")
        );
        assert_eq!(s.list_grants(None, Some(bob.id)).unwrap().len(), 1);
        assert!(s.list_grants(Some("VDB-2"), None).unwrap().is_empty());
        s.put_token("t3", bob.id, "api", 60).unwrap();
        assert_eq!(s.delete_user("bob").unwrap(), UserDeletion::Deleted);
        assert!(s.find_token("t3").unwrap().is_none());
        assert!(
            s.list_grants(None, None).unwrap().is_empty(),
            "a user's rights go with them"
        );
        assert_eq!(s.delete_user("bob").unwrap(), UserDeletion::NotFound);
        assert_eq!(s.count_users().unwrap(), 1);
    }
}
