//! The store: every database read and write of the server, on embedded SQLite (the
//! default) or PostgreSQL, through one portable SQL dialect and sqlx's `Any` driver.
//!
//! All database IO of the server happens in this module. Rules that keep one SQL text
//! valid on both backends: `$N` placeholders, `TEXT` UUIDs, `BIGINT` Unix milliseconds,
//! flags as `BIGINT` 0 or 1, `INSERT … ON CONFLICT`, `RETURNING`, no backend-specific
//! functions.
//! Every change that touches more than one row runs in one transaction.

pub mod channel;
mod float;
pub mod jobs;
pub mod projects;
pub mod registry;
pub mod report_queries;
pub mod reports;
pub mod runners;
pub mod specs;
pub mod tokens;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Which database the store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sqlite => "SQLite",
            Self::Postgres => "PostgreSQL",
        })
    }
}

impl Backend {
    /// The backend a database URL names, or `None` for anything else.
    pub fn of_url(url: &str) -> Option<Self> {
        if url.starts_with("sqlite:") {
            Some(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Self::Postgres)
        } else {
            None
        }
    }
}

/// Why the store could not be opened. The database URL is never part of the message:
/// it may carry a password.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("unsupported database URL: expected `sqlite://PATH` or `postgres://…`")]
    Scheme,
    #[error("invalid {backend} database URL")]
    Url {
        backend: Backend,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot connect to the {backend} database")]
    Connect {
        backend: Backend,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot apply the database migrations")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

/// Why a store operation failed. `NotFound` and `Conflict` are the caller's mistakes;
/// the others are the server's.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("invalid data in table `{table}`: {detail}")]
    Corrupt { table: &'static str, detail: String },
}

impl StoreError {
    pub(crate) fn corrupt(table: &'static str, detail: impl fmt::Display) -> Self {
        Self::Corrupt {
            table,
            detail: detail.to_string(),
        }
    }
}

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish()
    }
}

impl Store {
    /// Connects and applies the pending migrations. SQLite files are created when
    /// missing and switched to WAL; several server processes may share one PostgreSQL
    /// database (migrations take PostgreSQL's advisory lock).
    pub async fn open(url: &str) -> Result<Self, OpenError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(url).ok_or(OpenError::Scheme)?;
        let options = AnyConnectOptions::from_str(url)
            .map_err(|source| OpenError::Url { backend, source })?;
        let pool = AnyPoolOptions::new()
            .max_connections(match backend {
                // SQLite has one writer at a time; a few readers are plenty.
                Backend::Sqlite => 8,
                Backend::Postgres => 16,
            })
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers run beside the writer; NORMAL is durable in WAL
                        // mode up to the last checkpointed commit and much faster than FULL.
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(|source| OpenError::Connect { backend, source })?;
        MIGRATOR.run(&pool).await.map_err(OpenError::Migrate)?;
        Ok(Self { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Starts a transaction that will write. SQLite takes its write lock at `BEGIN
    /// IMMEDIATE`, so concurrent writers queue on the busy timeout instead of failing when
    /// a read lock cannot be upgraded; PostgreSQL locks rows as it goes.
    pub(crate) async fn begin_write(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
    }

    /// A trivial query, for the health endpoint.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes every connection; pending queries finish first.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// A flag column's value (0 or 1).
pub(crate) fn flag(value: bool) -> i64 {
    i64::from(value)
}

/// Unix milliseconds, the store's representation of time.
pub(crate) fn to_millis(time: DateTime<Utc>) -> i64 {
    time.timestamp_millis()
}

pub(crate) fn from_millis(table: &'static str, millis: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(millis)
        .ok_or_else(|| StoreError::corrupt(table, format!("timestamp {millis} out of range")))
}

pub(crate) fn from_millis_opt(
    table: &'static str,
    millis: Option<i64>,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    millis.map(|m| from_millis(table, m)).transpose()
}

/// Parses a stored column into its validated type; a failure means the row is corrupt.
pub(crate) fn parse_column<T>(
    table: &'static str,
    column: &str,
    value: &str,
) -> Result<T, StoreError>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    value
        .parse()
        .map_err(|e| StoreError::corrupt(table, format!("column `{column}` = `{value}`: {e}")))
}

/// Whether a database error is a unique-constraint violation.
pub(crate) fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.kind() == sqlx::error::ErrorKind::UniqueViolation)
}

/// Whether a database error is a foreign-key violation. SQLite reports an `ON DELETE
/// RESTRICT` violation with extended code 1811 (`SQLITE_CONSTRAINT_TRIGGER`), which sqlx
/// does not classify; we define no triggers, so that code can only mean this.
pub(crate) fn is_foreign_key_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e)
        if e.kind() == sqlx::error::ErrorKind::ForeignKeyViolation || e.code().as_deref() == Some("1811"))
}

/// Escapes `%`, `_` and `\` so user input matches literally in `LIKE … ESCAPE '\'`.
pub(crate) fn like_pattern(search: &str) -> String {
    let mut pattern = String::with_capacity(search.len() + 2);
    pattern.push('%');
    for c in search.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// Builds the `WHERE` clause and `ORDER BY … LIMIT … OFFSET …` tail of a list query
/// with numbered placeholders, keeping the bound values in order. Only fixed SQL
/// fragments are pushed; user input always travels as a bound value.
#[derive(Default)]
pub(crate) struct ListQuery {
    conditions: Vec<String>,
    values: Vec<String>,
}

impl ListQuery {
    /// Adds a condition whose `?` marks are replaced by fresh `$N` placeholders bound to
    /// `values`, in order.
    pub fn condition(&mut self, sql: &str, values: &[&str]) {
        let mut out = String::with_capacity(sql.len() + 4);
        let mut values = values.iter();
        for c in sql.chars() {
            if c == '?' {
                let value = values.next().expect("one value per placeholder");
                self.values.push((*value).to_owned());
                out.push_str(&format!("${}", self.values.len()));
            } else {
                out.push(c);
            }
        }
        self.conditions.push(out);
    }

    pub fn where_clause(&self) -> String {
        if self.conditions.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.conditions.join(" AND "))
        }
    }

    /// `ORDER BY`, `LIMIT` and `OFFSET` with the next two placeholder numbers.
    pub fn page_clause(&self, order_by: &str, limit_offset: (u32, u64)) -> (String, i64, i64) {
        let n = self.values.len();
        (
            format!(" ORDER BY {order_by} LIMIT ${} OFFSET ${}", n + 1, n + 2),
            i64::from(limit_offset.0),
            i64::try_from(limit_offset.1).unwrap_or(i64::MAX),
        )
    }

    pub fn values(&self) -> &[String] {
        &self.values
    }

    /// The filters every named resource list accepts: archived or active, exact name,
    /// case-insensitive search in name and slug.
    pub fn resource_filters(
        table: &str,
        archived: Option<bool>,
        name: Option<&str>,
        search: Option<&str>,
    ) -> Self {
        let mut list = Self::default();
        if archived == Some(true) {
            list.condition(&format!("{table}.archived IS NOT NULL"), &[]);
        } else {
            list.condition(&format!("{table}.archived IS NULL"), &[]);
        }
        if let Some(name) = name {
            list.condition(&format!("{table}.name = ?"), &[name]);
        }
        if let Some(search) = search {
            let pattern = like_pattern(search);
            list.condition(
                &format!(
                    "(LOWER({table}.name) LIKE ? ESCAPE '\\' OR {table}.slug LIKE ? ESCAPE '\\')"
                ),
                &[&pattern, &pattern],
            );
        }
        list
    }
}

impl Store {
    /// One page of `table` rows matching `list`, and the total number matching.
    pub(crate) async fn fetch_page<R>(
        &self,
        table: &str,
        columns: &str,
        list: &ListQuery,
        pagination: &bencher_types::Pagination,
        limit_offset: (u32, u64),
    ) -> Result<(Vec<R>, u64), StoreError>
    where
        R: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> + Send + Unpin,
    {
        let where_clause = list.where_clause();
        let count_sql = format!("SELECT COUNT(*) FROM {table}{where_clause}");
        let mut count = sqlx::query_scalar::<_, i64>(&count_sql);
        for value in list.values() {
            count = count.bind(value.clone());
        }
        let total = count.fetch_one(&self.pool).await?;

        let order = order_by(
            pagination.sort.unwrap_or_default(),
            pagination.direction.unwrap_or_default(),
        );
        let (tail, limit, offset) = list.page_clause(&order, limit_offset);
        let sql = format!("SELECT {columns} FROM {table}{where_clause}{tail}");
        let mut rows = sqlx::query_as::<_, R>(&sql);
        for value in list.values() {
            rows = rows.bind(value.clone());
        }
        let rows = rows.bind(limit).bind(offset).fetch_all(&self.pool).await?;
        Ok((rows, u64::try_from(total).unwrap_or_default()))
    }
}

/// `ORDER BY` text for a validated sort key; a closed set, never user text. Columns are
/// unqualified: list queries read one table. Names sort case-insensitively, the same on
/// both backends whatever PostgreSQL's collation; the uuid tie-break keeps pages stable
/// when names or times are equal.
pub(crate) fn order_by(sort: bencher_types::SortBy, direction: bencher_types::Direction) -> String {
    let d = match direction {
        bencher_types::Direction::Asc => "ASC",
        bencher_types::Direction::Desc => "DESC",
    };
    match sort {
        bencher_types::SortBy::Name => format!("LOWER(name) {d}, name {d}, uuid {d}"),
        bencher_types::SortBy::Created => format!("created {d}, uuid {d}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_pattern_escapes() {
        assert_eq!(like_pattern("My_Runner%"), "%my\\_runner\\%%");
    }

    #[test]
    fn list_query_numbers_placeholders() {
        let mut q = ListQuery::default();
        q.condition("archived IS NULL", &[]);
        q.condition("name = ?", &["a"]);
        q.condition(
            "(LOWER(name) LIKE ? ESCAPE '\\' OR slug LIKE ? ESCAPE '\\')",
            &["%b%", "%b%"],
        );
        assert_eq!(
            q.where_clause(),
            " WHERE archived IS NULL AND name = $1 AND (LOWER(name) LIKE $2 ESCAPE '\\' OR slug LIKE $3 ESCAPE '\\')"
        );
        let (tail, limit, offset) = q.page_clause("name ASC", (10, 20));
        assert_eq!(tail, " ORDER BY name ASC LIMIT $4 OFFSET $5");
        assert_eq!((limit, offset), (10, 20));
        assert_eq!(q.values(), ["a", "%b%", "%b%"]);
    }
}
