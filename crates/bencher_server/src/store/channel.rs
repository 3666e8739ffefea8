//! The runner channel's records: which connection holds a runner's channel and when the
//! runner was last seen, the job a runner holds, output recorded on a job that keeps its
//! status, and, on PostgreSQL, notifications between server processes (`NOTIFY` and a
//! `LISTEN` connection). Database IO only; the rules are in `crate::channel` and
//! `crate::queue`.

use std::collections::HashMap;

use bencher_types::{JobStatus, JobUuid, RunnerUuid};
use chrono::{DateTime, Utc};
use sqlx::postgres::PgListener;
use uuid::Uuid;

use super::{Backend, Store, StoreError, parse_column, to_millis};

/// What the store knows of a runner's channel, for runners whose channel is not on this
/// process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoredPresence {
    /// Some process recorded an open channel (possibly a crashed one: check `last_seen`).
    pub connected: bool,
    /// The newest claimed or running job of the runner.
    pub current_job: Option<JobUuid>,
}

/// The statuses of a job a runner holds.
fn in_flight() -> String {
    format!(
        "('{}', '{}')",
        JobStatus::Claimed.as_str(),
        JobStatus::Running.as_str()
    )
}

impl Store {
    /// Records `connection` as the holder of the runner's channel, if the key the channel
    /// authenticated with is still the runner's and the runner is not archived; `false`
    /// otherwise (the key was rotated or the runner archived since the upgrade).
    pub async fn runner_connected(
        &self,
        runner: RunnerUuid,
        connection: Uuid,
        key_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE runner SET connection = $1, last_seen = $2 \
             WHERE uuid = $3 AND key_hash = $4 AND archived IS NULL",
        )
        .bind(connection.to_string())
        .bind(to_millis(now))
        .bind(runner.to_string())
        .bind(key_hash.to_owned())
        .execute(&self.pool)
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    /// Refreshes `last_seen` while `connection` still holds the channel with a valid key;
    /// `false` when it no longer does (replaced, key rotated, runner archived): the
    /// channel must close. This also catches a notification another process lost.
    pub async fn runner_keepalive(
        &self,
        runner: RunnerUuid,
        connection: Uuid,
        key_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE runner SET last_seen = $1 \
             WHERE uuid = $2 AND connection = $3 AND key_hash = $4 AND archived IS NULL",
        )
        .bind(to_millis(now))
        .bind(runner.to_string())
        .bind(connection.to_string())
        .bind(key_hash.to_owned())
        .execute(&self.pool)
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    /// Records that `connection` closed; a successor that replaced it stays recorded.
    pub async fn runner_disconnected(
        &self,
        runner: RunnerUuid,
        connection: Uuid,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE runner SET connection = NULL, last_seen = $1 WHERE uuid = $2 AND connection = $3",
        )
        .bind(to_millis(now))
        .bind(runner.to_string())
        .bind(connection.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The connection recorded as holding the runner's channel.
    pub async fn runner_connection(&self, runner: RunnerUuid) -> Result<Option<Uuid>, StoreError> {
        let value: Option<Option<String>> =
            sqlx::query_scalar("SELECT connection FROM runner WHERE uuid = $1")
                .bind(runner.to_string())
                .fetch_optional(&self.pool)
                .await?;
        value
            .flatten()
            .map(|c| parse_column("runner", "connection", &c))
            .transpose()
    }

    /// The newest claimed or running job of `runner`: what a runner that reconnected is
    /// presumably resuming.
    pub async fn in_flight_job_of(
        &self,
        runner: RunnerUuid,
    ) -> Result<Option<JobUuid>, StoreError> {
        let job: Option<String> = sqlx::query_scalar(&format!(
            "SELECT uuid FROM job WHERE runner_uuid = $1 AND status IN {} \
             ORDER BY claimed DESC, uuid LIMIT 1",
            in_flight()
        ))
        .bind(runner.to_string())
        .fetch_optional(&self.pool)
        .await?;
        job.map(|j| parse_column("job", "uuid", &j)).transpose()
    }

    /// Channel records of several runners at once, for runner lists.
    pub async fn runner_presence(
        &self,
        runners: &[RunnerUuid],
    ) -> Result<HashMap<RunnerUuid, StoredPresence>, StoreError> {
        let mut found = HashMap::new();
        if runners.is_empty() {
            return Ok(found);
        }
        let placeholders = (1..=runners.len())
            .map(|n| format!("${n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT runner.uuid, runner.connection, \
             (SELECT job.uuid FROM job WHERE job.runner_uuid = runner.uuid AND job.status IN {} \
              ORDER BY job.claimed DESC, job.uuid LIMIT 1) AS job \
             FROM runner WHERE runner.uuid IN ({placeholders})",
            in_flight()
        );
        let mut query = sqlx::query_as::<_, (String, Option<String>, Option<String>)>(&sql);
        for runner in runners {
            query = query.bind(runner.to_string());
        }
        for (uuid, connection, job) in query.fetch_all(&self.pool).await? {
            found.insert(
                parse_column("runner", "uuid", &uuid)?,
                StoredPresence {
                    connected: connection.is_some(),
                    current_job: job.map(|j| parse_column("job", "uuid", &j)).transpose()?,
                },
            );
        }
        Ok(found)
    }

    /// Records the output of a job `runner` held, without a status change, unless the job
    /// already has one. `false` when nothing was recorded.
    pub async fn record_output(
        &self,
        job: JobUuid,
        runner: RunnerUuid,
        output_digest: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE job SET output_digest = $1, modified = $2 \
             WHERE uuid = $3 AND runner_uuid = $4 AND output_digest IS NULL",
        )
        .bind(output_digest.to_owned())
        .bind(to_millis(now))
        .bind(job.to_string())
        .bind(runner.to_string())
        .execute(&self.pool)
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    /// Sends `payload` to every process listening on `channel` (PostgreSQL `NOTIFY`,
    /// delivered after this statement commits). A no-op on SQLite, where one process
    /// serves the database and notifications stay in memory.
    pub async fn notify(&self, channel: &str, payload: &str) -> Result<(), StoreError> {
        if self.backend != Backend::Postgres {
            return Ok(());
        }
        // `pg_notify` returns `void`, which the `Any` driver cannot decode: cast it.
        sqlx::query("SELECT pg_notify($1, $2)::text")
            .bind(channel.to_owned())
            .bind(payload.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// A PostgreSQL connection listening on one notification channel. It reconnects by
/// itself; notifications sent while it was disconnected are lost, which `next` reports.
pub struct Listener {
    inner: PgListener,
}

impl Listener {
    /// Connects to the PostgreSQL database at `url` and listens on `channel`.
    pub async fn connect(url: &str, channel: &str) -> Result<Self, StoreError> {
        let mut inner = PgListener::connect(url).await?;
        inner.listen(channel).await?;
        Ok(Self { inner })
    }

    /// The next notification's payload; `None` when the connection was lost (and is
    /// being re-established), so notifications may have been missed.
    pub async fn next(&mut self) -> Result<Option<String>, StoreError> {
        Ok(self
            .inner
            .try_recv()
            .await?
            .map(|notification| notification.payload().to_owned()))
    }
}
