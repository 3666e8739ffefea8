//! Projects in the store: create (slug derived and made unique), read by UUID or slug,
//! and list.

use bencher_types::{JsonNewProject, JsonProject, Pagination, ProjectQuery, ResourceId};
use chrono::{DateTime, Utc};

use super::specs::{choose_slug, id_condition, slug_conflict};
use super::{
    ListQuery, Store, StoreError, from_millis, is_unique_violation, parse_column, to_millis,
};

const TABLE: &str = "project";
const PROJECT_COLUMNS: &str =
    "project.uuid, project.name, project.slug, project.created, project.modified";

#[derive(sqlx::FromRow)]
struct ProjectRow {
    uuid: String,
    name: String,
    slug: String,
    created: i64,
    modified: i64,
}

impl ProjectRow {
    fn into_json(self) -> Result<JsonProject, StoreError> {
        Ok(JsonProject {
            uuid: parse_column(TABLE, "uuid", &self.uuid)?,
            name: parse_column(TABLE, "name", &self.name)?,
            slug: parse_column(TABLE, "slug", &self.slug)?,
            created: from_millis(TABLE, self.created)?,
            modified: from_millis(TABLE, self.modified)?,
        })
    }
}

impl Store {
    pub async fn create_project(
        &self,
        new: &JsonNewProject,
        now: DateTime<Utc>,
    ) -> Result<JsonProject, StoreError> {
        let uuid = uuid::Uuid::new_v4();
        let mut tx = self.begin_write().await?;
        let slug = choose_slug(
            &mut tx,
            TABLE,
            new.slug.as_ref(),
            &new.name,
            uuid,
            "project",
        )
        .await?;
        let inserted: Result<ProjectRow, _> = sqlx::query_as(&format!(
            "INSERT INTO project (uuid, name, slug, archived, created, modified) \
             VALUES ($1, $2, $3, NULL, $4, $4) RETURNING {PROJECT_COLUMNS}"
        ))
        .bind(uuid.to_string())
        .bind(new.name.as_str())
        .bind(slug.as_str())
        .bind(to_millis(now))
        .fetch_one(&mut *tx)
        .await;
        let row = match inserted {
            Err(error) if is_unique_violation(&error) => {
                return Err(slug_conflict("project", &slug));
            }
            other => other?,
        };
        tx.commit().await?;
        row.into_json()
    }

    pub async fn get_project(&self, id: &ResourceId) -> Result<JsonProject, StoreError> {
        let (condition, value) = id_condition(TABLE, id);
        let row: Option<ProjectRow> = sqlx::query_as(&format!(
            "SELECT {PROJECT_COLUMNS} FROM project WHERE {condition} AND project.archived IS NULL"
        ))
        .bind(value)
        .fetch_optional(&self.pool)
        .await?;
        row.ok_or_else(|| StoreError::NotFound(format!("project `{id}`")))?
            .into_json()
    }

    pub async fn list_projects(
        &self,
        query: &ProjectQuery,
        pagination: &Pagination,
        limit_offset: (u32, u64),
    ) -> Result<(Vec<JsonProject>, u64), StoreError> {
        let list = ListQuery::resource_filters(
            TABLE,
            None,
            query.name.as_deref(),
            query.search.as_deref(),
        );
        let (rows, total) = self
            .fetch_page::<ProjectRow>(TABLE, PROJECT_COLUMNS, &list, pagination, limit_offset)
            .await?;
        let projects = rows
            .into_iter()
            .map(ProjectRow::into_json)
            .collect::<Result<_, _>>()?;
        Ok((projects, total))
    }
}
