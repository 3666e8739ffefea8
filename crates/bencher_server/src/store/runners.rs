//! Runners in the store: create with a key hash, read, list, update (rename, archive),
//! key rotation, the Specs each runner serves, and the runner key check.

use std::collections::HashMap;

use bencher_types::{
    JsonNewRunner, JsonSpec, JsonUpdateRunner, Pagination, ResourceId, ResourceName, RunnerQuery,
    RunnerUuid, Slug,
};
use chrono::{DateTime, Utc};
use sqlx::{Any, Transaction};

use super::specs::{SPEC_COLUMNS, SpecRow, choose_slug, fetch_spec, id_condition, slug_conflict};
use super::{
    ListQuery, Store, StoreError, from_millis, from_millis_opt, is_unique_violation, parse_column,
    to_millis,
};

const TABLE: &str = "runner";

const RUNNER_COLUMNS: &str = "runner.uuid, runner.name, runner.slug, runner.last_seen, runner.archived, runner.created, runner.modified";

/// A runner as stored, without its key hash (which never leaves the store).
#[derive(Debug, Clone)]
pub struct Runner {
    pub uuid: RunnerUuid,
    pub name: ResourceName,
    pub slug: Slug,
    pub specs: Vec<JsonSpec>,
    pub last_seen: Option<DateTime<Utc>>,
    pub archived: Option<DateTime<Utc>>,
    pub created: DateTime<Utc>,
    pub modified: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct RunnerRow {
    uuid: String,
    name: String,
    slug: String,
    last_seen: Option<i64>,
    archived: Option<i64>,
    created: i64,
    modified: i64,
}

impl RunnerRow {
    fn into_runner(self, specs: Vec<JsonSpec>) -> Result<Runner, StoreError> {
        Ok(Runner {
            uuid: parse_column(TABLE, "uuid", &self.uuid)?,
            name: parse_column(TABLE, "name", &self.name)?,
            slug: parse_column(TABLE, "slug", &self.slug)?,
            specs,
            last_seen: from_millis_opt(TABLE, self.last_seen)?,
            archived: from_millis_opt(TABLE, self.archived)?,
            created: from_millis(TABLE, self.created)?,
            modified: from_millis(TABLE, self.modified)?,
        })
    }
}

/// Anything that can run a query: the pool or an open transaction.
async fn fetch_row<'e, E>(executor: E, id: &ResourceId) -> Result<RunnerRow, StoreError>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    let (condition, value) = id_condition(TABLE, id);
    let row: Option<RunnerRow> = sqlx::query_as(&format!(
        "SELECT {RUNNER_COLUMNS} FROM runner WHERE {condition}"
    ))
    .bind(value)
    .fetch_optional(executor)
    .await?;
    row.ok_or_else(|| StoreError::NotFound(format!("runner `{id}`")))
}

async fn specs_of<'e, E>(executor: E, runner: &str) -> Result<Vec<JsonSpec>, StoreError>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    let rows: Vec<SpecRow> = sqlx::query_as(&format!(
        "SELECT {SPEC_COLUMNS} FROM spec JOIN runner_spec ON runner_spec.spec_uuid = spec.uuid \
         WHERE runner_spec.runner_uuid = $1 ORDER BY spec.name, spec.uuid"
    ))
    .bind(runner.to_owned())
    .fetch_all(executor)
    .await?;
    rows.into_iter().map(SpecRow::into_json).collect()
}

async fn fetch_runner(
    tx: &mut Transaction<'static, Any>,
    id: &ResourceId,
) -> Result<Runner, StoreError> {
    let row = fetch_row(&mut **tx, id).await?;
    let specs = specs_of(&mut **tx, &row.uuid).await?;
    row.into_runner(specs)
}

impl Store {
    /// Creates a runner holding only the hash of its key.
    pub async fn create_runner(
        &self,
        new: &JsonNewRunner,
        key_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Runner, StoreError> {
        let uuid = uuid::Uuid::new_v4();
        let mut tx = self.begin_write().await?;
        let slug =
            choose_slug(&mut tx, TABLE, new.slug.as_ref(), &new.name, uuid, "runner").await?;
        let inserted = sqlx::query(
            "INSERT INTO runner (uuid, name, slug, key_hash, last_seen, archived, created, modified) \
             VALUES ($1, $2, $3, $4, NULL, NULL, $5, $5)",
        )
        .bind(uuid.to_string())
        .bind(new.name.as_str())
        .bind(slug.as_str())
        .bind(key_hash.to_owned())
        .bind(to_millis(now))
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(error) if is_unique_violation(&error) => {
                return Err(slug_conflict("runner", &slug));
            }
            Err(error) => return Err(error.into()),
            Ok(_) => {}
        }
        let runner = fetch_runner(&mut tx, &ResourceId::Uuid(uuid)).await?;
        tx.commit().await?;
        Ok(runner)
    }

    pub async fn get_runner(&self, id: &ResourceId) -> Result<Runner, StoreError> {
        let row = fetch_row(&self.pool, id).await?;
        let specs = specs_of(&self.pool, &row.uuid).await?;
        row.into_runner(specs)
    }

    /// One page of runners with their Specs, and the total number matching the filters.
    pub async fn list_runners(
        &self,
        query: &RunnerQuery,
        pagination: &Pagination,
        limit_offset: (u32, u64),
    ) -> Result<(Vec<Runner>, u64), StoreError> {
        let list = ListQuery::resource_filters(
            TABLE,
            query.archived,
            query.name.as_deref(),
            query.search.as_deref(),
        );
        let (rows, total) = self
            .fetch_page::<RunnerRow>(TABLE, RUNNER_COLUMNS, &list, pagination, limit_offset)
            .await?;
        let mut specs = self.specs_of_runners(&rows).await?;
        let runners = rows
            .into_iter()
            .map(|row| {
                let specs = specs.remove(&row.uuid).unwrap_or_default();
                row.into_runner(specs)
            })
            .collect::<Result<_, _>>()?;
        Ok((runners, total))
    }

    /// The Specs of a page of runners in one query, keyed by runner UUID.
    async fn specs_of_runners(
        &self,
        rows: &[RunnerRow],
    ) -> Result<HashMap<String, Vec<JsonSpec>>, StoreError> {
        let mut by_runner: HashMap<String, Vec<JsonSpec>> = HashMap::new();
        if rows.is_empty() {
            return Ok(by_runner);
        }
        let placeholders = (1..=rows.len())
            .map(|n| format!("${n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT runner_spec.runner_uuid, {SPEC_COLUMNS} FROM spec \
             JOIN runner_spec ON runner_spec.spec_uuid = spec.uuid \
             WHERE runner_spec.runner_uuid IN ({placeholders}) ORDER BY spec.name, spec.uuid"
        );
        let mut query = sqlx::query_as::<_, RunnerSpecRow>(&sql);
        for row in rows {
            query = query.bind(row.uuid.clone());
        }
        for row in query.fetch_all(&self.pool).await? {
            by_runner
                .entry(row.runner_uuid)
                .or_default()
                .push(row.spec.into_json()?);
        }
        Ok(by_runner)
    }

    pub async fn update_runner(
        &self,
        id: &ResourceId,
        update: &JsonUpdateRunner,
        now: DateTime<Utc>,
    ) -> Result<Runner, StoreError> {
        let mut tx = self.begin_write().await?;
        let current = fetch_row(&mut *tx, id).await?;
        let archived = match update.archived {
            Some(true) => Some(current.archived.unwrap_or(to_millis(now))),
            Some(false) => None,
            None => current.archived,
        };
        let name = update
            .name
            .as_ref()
            .map_or(current.name.as_str(), ResourceName::as_str);
        let slug = update
            .slug
            .as_ref()
            .map_or(current.slug.as_str(), Slug::as_str);
        let updated = sqlx::query(
            "UPDATE runner SET name = $1, slug = $2, archived = $3, modified = $4 WHERE uuid = $5",
        )
        .bind(name.to_owned())
        .bind(slug.to_owned())
        .bind(archived)
        .bind(to_millis(now))
        .bind(current.uuid.clone())
        .execute(&mut *tx)
        .await;
        match (updated, &update.slug) {
            (Err(error), Some(slug)) if is_unique_violation(&error) => {
                return Err(slug_conflict("runner", slug));
            }
            (Err(error), _) => return Err(error.into()),
            (Ok(_), _) => {}
        }
        let runner = fetch_runner(
            &mut tx,
            &ResourceId::Uuid(parse_column(TABLE, "uuid", &current.uuid)?),
        )
        .await?;
        tx.commit().await?;
        Ok(runner)
    }

    /// Replaces the runner's key hash: from this commit on, only the new key works.
    pub async fn rotate_runner_key(
        &self,
        id: &ResourceId,
        key_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Runner, StoreError> {
        let mut tx = self.begin_write().await?;
        let current = fetch_row(&mut *tx, id).await?;
        sqlx::query("UPDATE runner SET key_hash = $1, modified = $2 WHERE uuid = $3")
            .bind(key_hash.to_owned())
            .bind(to_millis(now))
            .bind(current.uuid.clone())
            .execute(&mut *tx)
            .await?;
        let runner = fetch_runner(
            &mut tx,
            &ResourceId::Uuid(parse_column(TABLE, "uuid", &current.uuid)?),
        )
        .await?;
        tx.commit().await?;
        Ok(runner)
    }

    /// The runner `id` names if `key_hash` is its current key and it is not archived.
    /// Unknown runner, wrong key and archived runner all give `None`, so a caller cannot
    /// tell a client which part was wrong.
    pub async fn authenticate_runner(
        &self,
        id: &ResourceId,
        key_hash: &str,
    ) -> Result<Option<Runner>, StoreError> {
        let (condition, value) = id_condition(TABLE, id);
        let row: Option<RunnerRow> = sqlx::query_as(&format!(
            "SELECT {RUNNER_COLUMNS} FROM runner \
             WHERE {condition} AND runner.key_hash = $2 AND runner.archived IS NULL"
        ))
        .bind(value)
        .bind(key_hash.to_owned())
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => {
                let specs = specs_of(&self.pool, &row.uuid).await?;
                row.into_runner(specs).map(Some)
            }
            None => Ok(None),
        }
    }

    pub async fn runner_specs(&self, id: &ResourceId) -> Result<Vec<JsonSpec>, StoreError> {
        Ok(self.get_runner(id).await?.specs)
    }

    /// Links a Spec to a runner. Archived Specs cannot be added; a link that exists is a
    /// conflict.
    pub async fn add_runner_spec(
        &self,
        runner: &ResourceId,
        spec: &ResourceId,
        now: DateTime<Utc>,
    ) -> Result<JsonSpec, StoreError> {
        let mut tx = self.begin_write().await?;
        let runner_row = fetch_row(&mut *tx, runner).await?;
        let spec = fetch_spec(&mut tx, spec).await?;
        if spec.archived.is_some() {
            return Err(StoreError::Conflict(format!(
                "spec `{}` is archived and cannot be added to a runner",
                spec.slug
            )));
        }
        let inserted = sqlx::query(
            "INSERT INTO runner_spec (runner_uuid, spec_uuid, created) VALUES ($1, $2, $3)",
        )
        .bind(runner_row.uuid.clone())
        .bind(spec.uuid.to_string())
        .bind(to_millis(now))
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(error) if is_unique_violation(&error) => {
                return Err(StoreError::Conflict(format!(
                    "runner `{}` already serves spec `{}`",
                    runner_row.slug, spec.slug
                )));
            }
            Err(error) => return Err(error.into()),
            Ok(_) => {}
        }
        tx.commit().await?;
        Ok(spec)
    }

    pub async fn remove_runner_spec(
        &self,
        runner: &ResourceId,
        spec: &ResourceId,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let runner_row = fetch_row(&mut *tx, runner).await?;
        let spec = fetch_spec(&mut tx, spec).await?;
        let deleted =
            sqlx::query("DELETE FROM runner_spec WHERE runner_uuid = $1 AND spec_uuid = $2")
                .bind(runner_row.uuid.clone())
                .bind(spec.uuid.to_string())
                .execute(&mut *tx)
                .await?;
        if deleted.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!(
                "spec `{}` on runner `{}`",
                spec.slug, runner_row.slug
            )));
        }
        tx.commit().await?;
        Ok(())
    }
}

#[derive(sqlx::FromRow)]
struct RunnerSpecRow {
    runner_uuid: String,
    #[sqlx(flatten)]
    spec: SpecRow,
}
