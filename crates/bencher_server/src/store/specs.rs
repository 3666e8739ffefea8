//! Specs in the store: create, read, list, update (rename, archive, fallback swap) and
//! delete (refused while a runner serves the Spec).

use bencher_types::{
    ByteSize, Cpu, JsonNewSpec, JsonSpec, JsonUpdateSpec, Pagination, ResourceId, Slug, SpecQuery,
};
use chrono::{DateTime, Utc};
use sqlx::{Any, Transaction};

use super::{
    ListQuery, Store, StoreError, flag, from_millis, from_millis_opt, is_foreign_key_violation,
    is_unique_violation, parse_column, to_millis,
};

const TABLE: &str = "spec";

/// Every column of `spec`, qualified so the list also works in joins.
pub(crate) const SPEC_COLUMNS: &str = "spec.uuid, spec.name, spec.slug, spec.os, spec.architecture, \
     spec.sandbox, spec.cpu, spec.memory, spec.disk, spec.network, spec.fallback, spec.archived, \
     spec.created, spec.modified";

#[derive(sqlx::FromRow)]
pub(crate) struct SpecRow {
    uuid: String,
    name: String,
    slug: String,
    os: String,
    architecture: String,
    sandbox: Option<String>,
    cpu: i64,
    memory: i64,
    disk: i64,
    network: i64,
    fallback: i64,
    archived: Option<i64>,
    created: i64,
    modified: i64,
}

impl SpecRow {
    pub(crate) fn into_json(self) -> Result<JsonSpec, StoreError> {
        let cpu = u32::try_from(self.cpu)
            .map_err(|e| StoreError::corrupt(TABLE, e))
            .and_then(|c| Cpu::new(c).map_err(|e| StoreError::corrupt(TABLE, e)))?;
        let size = |bytes: i64| {
            u64::try_from(bytes)
                .map_err(|e| StoreError::corrupt(TABLE, e))
                .and_then(|b| ByteSize::new(b).map_err(|e| StoreError::corrupt(TABLE, e)))
        };
        Ok(JsonSpec {
            uuid: parse_column(TABLE, "uuid", &self.uuid)?,
            name: parse_column(TABLE, "name", &self.name)?,
            slug: parse_column(TABLE, "slug", &self.slug)?,
            os: parse_column(TABLE, "os", &self.os)?,
            architecture: parse_column(TABLE, "architecture", &self.architecture)?,
            sandbox: self
                .sandbox
                .as_deref()
                .map(|s| parse_column(TABLE, "sandbox", s))
                .transpose()?,
            cpu,
            memory: size(self.memory)?,
            disk: size(self.disk)?,
            network: self.network != 0,
            fallback: self.fallback != 0,
            archived: from_millis_opt(TABLE, self.archived)?,
            created: from_millis(TABLE, self.created)?,
            modified: from_millis(TABLE, self.modified)?,
        })
    }
}

/// `WHERE` condition selecting one resource by UUID or slug, and the value to bind.
pub(crate) fn id_condition(table: &str, id: &ResourceId) -> (String, String) {
    match id {
        ResourceId::Uuid(uuid) => (format!("{table}.uuid = $1"), uuid.to_string()),
        ResourceId::Slug(slug) => (format!("{table}.slug = $1"), slug.to_string()),
    }
}

/// The slug to store: the caller's, or one derived from the name and made unique by a
/// suffix from the new row's UUID when the plain form is taken. `fallback_prefix` names
/// the resource kind for names with no ASCII letters or digits.
pub(crate) async fn choose_slug(
    tx: &mut Transaction<'static, Any>,
    table: &'static str,
    explicit: Option<&Slug>,
    name: &bencher_types::ResourceName,
    uuid: uuid::Uuid,
    fallback_prefix: &str,
) -> Result<Slug, StoreError> {
    if let Some(slug) = explicit {
        return Ok(slug.clone());
    }
    let suffix = &uuid.simple().to_string()[..8];
    let derived = match Slug::derive(name) {
        Some(slug) => slug,
        None => format!("{fallback_prefix}-{suffix}")
            .parse()
            .map_err(|e| StoreError::corrupt(table, e))?,
    };
    let taken: Option<i64> = sqlx::query_scalar(&format!("SELECT 1 FROM {table} WHERE slug = $1"))
        .bind(derived.as_str())
        .fetch_optional(&mut **tx)
        .await?;
    if taken.is_none() {
        return Ok(derived);
    }
    derived
        .with_suffix(suffix)
        .map_err(|e| StoreError::corrupt(table, e))
}

pub(crate) fn slug_conflict(kind: &str, slug: &Slug) -> StoreError {
    StoreError::Conflict(format!("a {kind} with slug `{slug}` already exists"))
}

pub(crate) async fn fetch_spec(
    tx: &mut Transaction<'static, Any>,
    id: &ResourceId,
) -> Result<JsonSpec, StoreError> {
    let (condition, value) = id_condition(TABLE, id);
    let row: Option<SpecRow> = sqlx::query_as(&format!(
        "SELECT {SPEC_COLUMNS} FROM spec WHERE {condition}"
    ))
    .bind(value)
    .fetch_optional(&mut **tx)
    .await?;
    row.ok_or_else(|| StoreError::NotFound(format!("spec `{id}`")))?
        .into_json()
}

/// Clears the current fallback, if any, so another Spec can take its place in the same
/// transaction. The partial unique index makes a concurrent swap fail instead of
/// leaving two fallbacks.
async fn clear_fallback(
    tx: &mut Transaction<'static, Any>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE spec SET fallback = 0, modified = $1 WHERE fallback = 1")
        .bind(to_millis(now))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl Store {
    /// Turns a failed insert or update of `uuid` into the conflict it stands for: the
    /// slug taken by another Spec, or a concurrent fallback swap that won the race.
    async fn explain_unique_violation(
        &self,
        error: sqlx::Error,
        slug: &Slug,
        uuid: uuid::Uuid,
    ) -> StoreError {
        if !is_unique_violation(&error) {
            return error.into();
        }
        let taken: Result<Option<i64>, _> =
            sqlx::query_scalar("SELECT 1 FROM spec WHERE slug = $1 AND uuid <> $2")
                .bind(slug.as_str())
                .bind(uuid.to_string())
                .fetch_optional(&self.pool)
                .await;
        match taken {
            Ok(Some(_)) => slug_conflict("spec", slug),
            Ok(None) => StoreError::Conflict(
                "another Spec became the fallback at the same time; retry".into(),
            ),
            Err(error) => error.into(),
        }
    }

    pub async fn create_spec(
        &self,
        new: &JsonNewSpec,
        now: DateTime<Utc>,
    ) -> Result<JsonSpec, StoreError> {
        let uuid = uuid::Uuid::new_v4();
        let mut tx = self.begin_write().await?;
        let slug = choose_slug(&mut tx, TABLE, new.slug.as_ref(), &new.name, uuid, "spec").await?;
        if new.fallback {
            clear_fallback(&mut tx, now).await?;
        }
        let inserted = sqlx::query(
            "INSERT INTO spec (uuid, name, slug, os, architecture, sandbox, cpu, memory, disk, \
             network, fallback, archived, created, modified) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, NULL, $12, $12)",
        )
        .bind(uuid.to_string())
        .bind(new.name.as_str())
        .bind(slug.as_str())
        .bind(new.os.as_str())
        .bind(new.architecture.as_str())
        .bind(new.sandbox.map(|s| s.as_str()))
        .bind(i64::from(new.cpu.get()))
        .bind(size_column(new.memory))
        .bind(size_column(new.disk))
        .bind(flag(new.network))
        .bind(flag(new.fallback))
        .bind(to_millis(now))
        .execute(&mut *tx)
        .await;
        if let Err(error) = inserted {
            return Err(self.explain_unique_violation(error, &slug, uuid).await);
        }
        let spec = fetch_spec(&mut tx, &ResourceId::Uuid(uuid)).await?;
        tx.commit().await?;
        Ok(spec)
    }

    pub async fn get_spec(&self, id: &ResourceId) -> Result<JsonSpec, StoreError> {
        let (condition, value) = id_condition(TABLE, id);
        let row: Option<SpecRow> = sqlx::query_as(&format!(
            "SELECT {SPEC_COLUMNS} FROM spec WHERE {condition}"
        ))
        .bind(value)
        .fetch_optional(&self.pool)
        .await?;
        row.ok_or_else(|| StoreError::NotFound(format!("spec `{id}`")))?
            .into_json()
    }

    /// One page of Specs and the total number matching the filters.
    pub async fn list_specs(
        &self,
        query: &SpecQuery,
        pagination: &Pagination,
        limit_offset: (u32, u64),
    ) -> Result<(Vec<JsonSpec>, u64), StoreError> {
        let list = ListQuery::resource_filters(
            TABLE,
            query.archived,
            query.name.as_deref(),
            query.search.as_deref(),
        );
        let (rows, total) = self
            .fetch_page::<SpecRow>(TABLE, SPEC_COLUMNS, &list, pagination, limit_offset)
            .await?;
        let specs = rows
            .into_iter()
            .map(SpecRow::into_json)
            .collect::<Result<_, _>>()?;
        Ok((specs, total))
    }

    pub async fn update_spec(
        &self,
        id: &ResourceId,
        update: &JsonUpdateSpec,
        now: DateTime<Utc>,
    ) -> Result<JsonSpec, StoreError> {
        let mut tx = self.begin_write().await?;
        let current = fetch_spec(&mut tx, id).await?;
        let archived = match update.archived {
            Some(true) => Some(current.archived.unwrap_or(now)),
            Some(false) => None,
            None => current.archived,
        };
        let fallback = match (update.fallback, archived) {
            (Some(true), Some(_)) => {
                return Err(StoreError::Conflict(format!(
                    "spec `{}` is archived and cannot be the fallback",
                    current.slug
                )));
            }
            (Some(fallback), _) => fallback,
            // Archiving the fallback leaves no fallback rather than an unusable one.
            (None, Some(_)) => false,
            (None, None) => current.fallback,
        };
        if fallback && !current.fallback {
            clear_fallback(&mut tx, now).await?;
        }
        let name = update.name.as_ref().unwrap_or(&current.name);
        let slug = update.slug.as_ref().unwrap_or(&current.slug);
        let updated = sqlx::query(
            "UPDATE spec SET name = $1, slug = $2, fallback = $3, archived = $4, modified = $5 \
             WHERE uuid = $6",
        )
        .bind(name.as_str())
        .bind(slug.as_str())
        .bind(flag(fallback))
        .bind(archived.map(to_millis))
        .bind(to_millis(now))
        .bind(current.uuid.to_string())
        .execute(&mut *tx)
        .await;
        if let Err(error) = updated {
            return Err(self
                .explain_unique_violation(error, slug, current.uuid.as_uuid())
                .await);
        }
        let spec = fetch_spec(&mut tx, &ResourceId::Uuid(current.uuid.as_uuid())).await?;
        tx.commit().await?;
        Ok(spec)
    }

    /// Deletes a Spec nobody references; a Spec in use is a conflict (archive it instead).
    pub async fn delete_spec(&self, id: &ResourceId) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let spec = fetch_spec(&mut tx, id).await?;
        let runners: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM runner_spec WHERE spec_uuid = $1")
                .bind(spec.uuid.to_string())
                .fetch_one(&mut *tx)
                .await?;
        let in_use = || {
            StoreError::Conflict(format!(
                "spec `{}` is in use by {runners} runner(s); remove it from them or archive it instead",
                spec.slug
            ))
        };
        if runners > 0 {
            return Err(in_use());
        }
        let deleted = sqlx::query("DELETE FROM spec WHERE uuid = $1")
            .bind(spec.uuid.to_string())
            .execute(&mut *tx)
            .await;
        match deleted {
            // A reference added concurrently, or by a table added later, still wins.
            Err(error) if is_foreign_key_violation(&error) => Err(StoreError::Conflict(format!(
                "spec `{}` is in use; archive it instead",
                spec.slug
            ))),
            Err(error) => Err(error.into()),
            Ok(_) => {
                tx.commit().await?;
                Ok(())
            }
        }
    }
}

/// Sizes are below 2^53 by construction, so they always fit a BIGINT.
fn size_column(size: ByteSize) -> i64 {
    i64::try_from(size.bytes()).unwrap_or(i64::MAX)
}
