//! Who may do what: API tokens with roles, browser sessions, and their storage.
//!
//! A token is 256 random bits from the operating system, written `swt_` + 64 hex digits. Only
//! its SHA-256 hash is stored, so a copy of the database reveals no usable secret; a lookup is by
//! hash, so comparing secrets leaks no timing. A plain (unsalted, fast) hash suffices because the
//! secrets are uniformly random, not passwords. A browser session is a second random secret of
//! the same form (`sws_`), stored hashed with the token it was opened with; revoking the token
//! ends its sessions.
//!
//! Roles are ordered: a reader reads; a writer also creates, cancels and imports runs and
//! launches sweeps, studies and diagnostics; an admin also deletes runs and manages tokens.

use crate::store::{Store, StoreError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;

/// How long a browser session lasts after sign-in, in seconds (7 days).
pub const SESSION_SECONDS: i64 = 7 * 24 * 3600;

/// Longest token name.
pub const MAX_TOKEN_NAME: usize = 100;

/// What a token may do, in increasing order of power.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads runs, sweeps, studies, analyses and plans.
    Reader,
    /// Also creates, cancels and imports runs and launches sweeps, studies and diagnostics.
    Writer,
    /// Also deletes runs and manages tokens.
    Admin,
}

impl Role {
    /// The name stored and shown.
    pub fn name(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Admin => "admin",
        }
    }

    /// Parses a stored or typed name.
    pub fn parse(name: &str) -> Option<Role> {
        [Role::Reader, Role::Writer, Role::Admin]
            .into_iter()
            .find(|r| r.name() == name)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Who a request comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Identity {
    /// The token's id; `None` when authentication is off.
    pub token_id: Option<i64>,
    /// The token's name (`anonymous` when authentication is off).
    pub name: String,
    pub role: Role,
}

impl Identity {
    /// Everyone, when authentication is off: an admin without a name.
    pub fn anonymous() -> Identity {
        Identity {
            token_id: None,
            name: "anonymous".into(),
            role: Role::Admin,
        }
    }
}

/// A stored token (never its secret).
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TokenRecord {
    pub id: i64,
    pub name: String,
    pub role: Role,
    pub created_at: String,
    /// When it was revoked; revoked tokens authenticate nothing.
    pub revoked_at: Option<String>,
}

/// A fresh secret: `prefix` + 64 hex digits of operating-system randomness (256 bits).
fn new_secret(prefix: &str) -> Result<String, StoreError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| StoreError::Invalid(format!("no randomness from the OS: {e}")))?;
    Ok(format!("{prefix}{}", hex(&bytes)))
}

/// Lower-case hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The stored form of a secret: hex SHA-256.
pub fn hash_secret(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// Whether `secret` has the shape of a token (cheap refusal before any lookup).
fn plausible(secret: &str, prefix: &str) -> bool {
    secret.len() == prefix.len() + 64
        && secret.starts_with(prefix)
        && secret[prefix.len()..]
            .bytes()
            .all(|b| b.is_ascii_hexdigit())
}

const TOKEN_PREFIX: &str = "swt_";
const SESSION_PREFIX: &str = "sws_";

fn token_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<TokenRecord, sqlx::Error> {
    let role: String = row.try_get("role")?;
    Ok(TokenRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        role: Role::parse(&role).unwrap_or(Role::Reader),
        created_at: row.try_get("created_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

/// Checks a token name: 1 to [`MAX_TOKEN_NAME`] printable characters.
pub fn check_token_name(name: &str) -> Result<(), String> {
    let name_ok = !name.trim().is_empty()
        && name.chars().count() <= MAX_TOKEN_NAME
        && !name.chars().any(char::is_control);
    if name_ok {
        Ok(())
    } else {
        Err(format!(
            "a token name has 1 to {MAX_TOKEN_NAME} printable characters"
        ))
    }
}

impl Store {
    /// Creates a token; returns it and its secret (shown once, stored only as a hash).
    pub async fn create_token(
        &self,
        name: &str,
        role: Role,
    ) -> Result<(TokenRecord, String), StoreError> {
        check_token_name(name).map_err(StoreError::Invalid)?;
        let secret = new_secret(TOKEN_PREFIX)?;
        let record = self
            .insert_token_hash(name, role, &hash_secret(&secret))
            .await?;
        Ok((record, secret))
    }

    async fn insert_token_hash(
        &self,
        name: &str,
        role: Role,
        hash: &str,
    ) -> Result<TokenRecord, StoreError> {
        let row = sqlx::query(
            "INSERT INTO tokens (name, role, hash) VALUES (?, ?, ?) \
             RETURNING id, name, role, created_at, revoked_at",
        )
        .bind(name)
        .bind(role.name())
        .bind(hash)
        .fetch_one(self.pool())
        .await?;
        Ok(token_from_row(&row)?)
    }

    /// Makes sure a token with this secret exists (created as an admin named `name` if no token,
    /// live or revoked, has it). Returns whether it was created.
    pub async fn ensure_token(
        &self,
        name: &str,
        role: Role,
        secret: &str,
    ) -> Result<bool, StoreError> {
        let hash = hash_secret(secret);
        let known: Option<i64> = sqlx::query_scalar("SELECT id FROM tokens WHERE hash = ?")
            .bind(&hash)
            .fetch_optional(self.pool())
            .await?;
        if known.is_some() {
            return Ok(false);
        }
        self.insert_token_hash(name, role, &hash).await?;
        Ok(true)
    }

    /// Every token, oldest first.
    pub async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let rows =
            sqlx::query("SELECT id, name, role, created_at, revoked_at FROM tokens ORDER BY id")
                .fetch_all(self.pool())
                .await?;
        Ok(rows.iter().map(token_from_row).collect::<Result<_, _>>()?)
    }

    /// Revokes token `id` and ends its sessions. `false` if there is no such token.
    pub async fn revoke_token(&self, id: i64) -> Result<bool, StoreError> {
        let changed = sqlx::query(
            "UPDATE tokens SET revoked_at = COALESCE(revoked_at, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) \
             WHERE id = ?",
        )
        .bind(id)
        .execute(self.pool())
        .await?
        .rows_affected();
        sqlx::query("DELETE FROM sessions WHERE token_id = ?")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(changed > 0)
    }

    /// Whether an unrevoked admin token exists.
    pub async fn has_admin_token(&self) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM tokens WHERE role = 'admin' AND revoked_at IS NULL",
        )
        .fetch_one(self.pool())
        .await?;
        Ok(n > 0)
    }

    /// The identity of a token secret, if it is a live token.
    pub async fn identify_token(&self, secret: &str) -> Result<Option<Identity>, StoreError> {
        // Any form is looked up: a bootstrap token from SHAPEWISE_ADMIN_TOKEN is the operator's.
        if secret.is_empty() || secret.len() > 512 {
            return Ok(None);
        }
        let row =
            sqlx::query("SELECT id, name, role FROM tokens WHERE hash = ? AND revoked_at IS NULL")
                .bind(hash_secret(secret))
                .fetch_optional(self.pool())
                .await?;
        identity_from(row)
    }

    /// Opens a browser session for a token; returns the session secret for the cookie.
    pub async fn create_session(&self, token_id: i64) -> Result<String, StoreError> {
        let secret = new_secret(SESSION_PREFIX)?;
        sqlx::query(
            "INSERT INTO sessions (hash, token_id, expires_at) \
             VALUES (?, ?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?))",
        )
        .bind(hash_secret(&secret))
        .bind(token_id)
        .bind(format!("+{SESSION_SECONDS} seconds"))
        .execute(self.pool())
        .await?;
        Ok(secret)
    }

    /// The identity of a session secret, if the session is open and its token live.
    pub async fn identify_session(&self, secret: &str) -> Result<Option<Identity>, StoreError> {
        if !plausible(secret, SESSION_PREFIX) {
            return Ok(None);
        }
        let row = sqlx::query(
            "SELECT t.id, t.name, t.role FROM sessions s JOIN tokens t ON t.id = s.token_id \
             WHERE s.hash = ? AND t.revoked_at IS NULL \
             AND s.expires_at > strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
        )
        .bind(hash_secret(secret))
        .fetch_optional(self.pool())
        .await?;
        identity_from(row)
    }

    /// Ends a session (sign-out); also drops every expired session.
    pub async fn end_session(&self, secret: &str) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM sessions WHERE hash = ? \
             OR expires_at <= strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
        )
        .bind(hash_secret(secret))
        .execute(self.pool())
        .await?;
        Ok(())
    }
}

fn identity_from(row: Option<sqlx::sqlite::SqliteRow>) -> Result<Option<Identity>, StoreError> {
    let Some(row) = row else { return Ok(None) };
    let role: String = row.try_get("role")?;
    Ok(Some(Identity {
        token_id: Some(row.try_get("id")?),
        name: row.try_get("name")?,
        role: Role::parse(&role).unwrap_or(Role::Reader),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_hex_and_stored_hashed() {
        let a = new_secret(TOKEN_PREFIX).unwrap();
        let b = new_secret(TOKEN_PREFIX).unwrap();
        assert_ne!(a, b);
        assert!(plausible(&a, TOKEN_PREFIX), "{a}");
        assert_eq!(a.len(), 4 + 64, "256 bits");
        let h = hash_secret(&a);
        assert_eq!(h.len(), 64);
        assert!(!h.contains(&a[4..]));
        assert_eq!(
            hash_secret("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Reader < Role::Writer && Role::Writer < Role::Admin);
        for role in [Role::Reader, Role::Writer, Role::Admin] {
            assert_eq!(Role::parse(role.name()), Some(role));
        }
        assert!(check_token_name("").is_err());
        assert!(check_token_name("ci\nbot").is_err());
        assert!(check_token_name("ci-bot").is_ok());
    }
}
