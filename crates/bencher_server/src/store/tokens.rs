//! API tokens in the store: only SHA-256 hashes are kept. Includes the one-time
//! bootstrap of the first admin token, safe with several server processes.

use bencher_types::{JsonToken, Pagination, ResourceName, TokenUuid};
use chrono::{DateTime, Utc};

use super::{
    ListQuery, Store, StoreError, flag, from_millis, from_millis_opt, parse_column, to_millis,
};

const TABLE: &str = "api_token";
const TOKEN_COLUMNS: &str = "uuid, name, admin, created, expires, revoked";

/// Marks in `server_meta` that the first admin token was created, once per database.
const BOOTSTRAP_KEY: &str = "admin_token_bootstrapped";

#[derive(sqlx::FromRow)]
struct TokenRow {
    uuid: String,
    name: String,
    admin: i64,
    created: i64,
    expires: Option<i64>,
    revoked: Option<i64>,
}

impl TokenRow {
    fn into_json(self) -> Result<JsonToken, StoreError> {
        Ok(JsonToken {
            uuid: parse_column(TABLE, "uuid", &self.uuid)?,
            name: parse_column(TABLE, "name", &self.name)?,
            admin: self.admin != 0,
            created: from_millis(TABLE, self.created)?,
            expires: from_millis_opt(TABLE, self.expires)?,
            revoked: from_millis_opt(TABLE, self.revoked)?,
        })
    }
}

impl Store {
    pub async fn create_token(
        &self,
        name: &ResourceName,
        admin: bool,
        expires: Option<DateTime<Utc>>,
        hash: &str,
        now: DateTime<Utc>,
    ) -> Result<JsonToken, StoreError> {
        let uuid = uuid::Uuid::new_v4().to_string();
        let row: TokenRow = sqlx::query_as(&format!(
            "INSERT INTO api_token (uuid, name, hash, admin, created, expires, revoked) \
             VALUES ($1, $2, $3, $4, $5, $6, NULL) RETURNING {TOKEN_COLUMNS}"
        ))
        .bind(uuid)
        .bind(name.as_str())
        .bind(hash.to_owned())
        .bind(flag(admin))
        .bind(to_millis(now))
        .bind(expires.map(to_millis))
        .fetch_one(&self.pool)
        .await?;
        row.into_json()
    }

    /// Creates the first admin token unless this database already had one. Returns
    /// whether it did; exactly one of several processes starting at once wins.
    /// `before_commit` runs inside the transaction, after the insert and before the
    /// commit, so the token is only valid if, say, writing it to disk succeeded.
    pub async fn bootstrap_admin_token<F, E>(
        &self,
        hash: &str,
        now: DateTime<Utc>,
        before_commit: F,
    ) -> Result<bool, BootstrapError<E>>
    where
        F: FnOnce() -> Result<(), E>,
    {
        let mut tx = self.begin_write().await.map_err(StoreError::from)?;
        let claimed = sqlx::query(
            "INSERT INTO server_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(BOOTSTRAP_KEY)
        .bind(now.to_rfc3339())
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from)?;
        if claimed.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO api_token (uuid, name, hash, admin, created, expires, revoked) \
             VALUES ($1, 'admin', $2, 1, $3, NULL, NULL)",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(hash.to_owned())
        .bind(to_millis(now))
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from)?;
        before_commit().map_err(BootstrapError::BeforeCommit)?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(true)
    }

    /// The active (not revoked, not expired) token with this hash.
    pub async fn find_active_token(
        &self,
        hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<JsonToken>, StoreError> {
        let row: Option<TokenRow> = sqlx::query_as(&format!(
            "SELECT {TOKEN_COLUMNS} FROM api_token \
             WHERE hash = $1 AND revoked IS NULL AND (expires IS NULL OR expires > $2)"
        ))
        .bind(hash.to_owned())
        .bind(to_millis(now))
        .fetch_optional(&self.pool)
        .await?;
        row.map(TokenRow::into_json).transpose()
    }

    pub async fn list_tokens(
        &self,
        pagination: &Pagination,
        limit_offset: (u32, u64),
    ) -> Result<(Vec<JsonToken>, u64), StoreError> {
        let (rows, total) = self
            .fetch_page::<TokenRow>(
                TABLE,
                TOKEN_COLUMNS,
                &ListQuery::default(),
                pagination,
                limit_offset,
            )
            .await?;
        let tokens = rows
            .into_iter()
            .map(TokenRow::into_json)
            .collect::<Result<_, _>>()?;
        Ok((tokens, total))
    }

    /// Revokes a token at once. Revoking a revoked token is a no-op; revoking the last
    /// active admin token is refused, so the server never locks its operators out.
    pub async fn revoke_token(
        &self,
        uuid: TokenUuid,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let row: Option<TokenRow> = sqlx::query_as(&format!(
            "SELECT {TOKEN_COLUMNS} FROM api_token WHERE uuid = $1"
        ))
        .bind(uuid.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        let token = row
            .ok_or_else(|| StoreError::NotFound(format!("token `{uuid}`")))?
            .into_json()?;
        if token.revoked.is_some() {
            return Ok(());
        }
        if token.admin {
            let other_admins: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM api_token WHERE admin = 1 AND revoked IS NULL \
                 AND (expires IS NULL OR expires > $1) AND uuid <> $2",
            )
            .bind(to_millis(now))
            .bind(uuid.to_string())
            .fetch_one(&mut *tx)
            .await?;
            if other_admins == 0 {
                return Err(StoreError::Conflict(
                    "this is the last active admin token; create another admin token first".into(),
                ));
            }
        }
        sqlx::query("UPDATE api_token SET revoked = $1 WHERE uuid = $2")
            .bind(to_millis(now))
            .bind(uuid.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Why the admin bootstrap failed: in the store, or in the caller's step before commit.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError<E> {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot hand out the admin token")]
    BeforeCommit(#[source] E),
}
