//! The registry's metadata store: SQLite (the embedded default) or PostgreSQL, through sqlx's
//! `Any` driver so both run the same queries.
//!
//! - SQLite runs in WAL mode with a busy timeout and a 64 MiB auto-checkpoint (checkpoints inside
//!   commits were the LogBatch latency tail), and the pool holds one connection: SQLite
//!   allows one writer at a time, and funnelling every statement through one connection is what
//!   makes concurrent clients never see "database is locked" (each statement takes microseconds).
//! - PostgreSQL uses a normal pool; version numbering takes a row lock
//!   (`UPDATE … RETURNING`), so concurrent registrations get distinct consecutive numbers.
//! - Fixed queries use `$1, $2, …` placeholders in order of first use, which both dialects
//!   accept; dynamically built ones use anonymous `?` on SQLite (see `Sql`).
//! - LIKE is case-sensitive on both (SQLite's `case_sensitive_like` pragma) with `\` as the
//!   escape character; ILIKE is written as `LOWER(x) LIKE LOWER(pattern)`.
//! - The schema lives in `migrations/<dialect>/NNNN_*.sql`, applied in order once each and
//!   recorded in `lightops_migrations` (hand-written: twenty lines that keep the two dialects'
//!   files side by side).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use lightops_api::registry::v1 as pb;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, AssertSqlSafe, Row};
use tokio::sync::broadcast;

use crate::error::{Error, Result};
use crate::filter::{Clause, Entity, Filter, Op, OrderBy, Value};
use crate::uri::{ModelUri, STAGES};

/// The database dialect behind a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite, a file under `LIGHTOPS_HOME`.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

const MIGRATIONS_SQLITE: &[(i64, &str)] = &[
    (1, include_str!("../migrations/sqlite/0001_init.sql")),
    (2, include_str!("../migrations/sqlite/0002_artifacts.sql")),
];
const MIGRATIONS_POSTGRES: &[(i64, &str)] = &[
    (1, include_str!("../migrations/postgres/0001_init.sql")),
    (2, include_str!("../migrations/postgres/0002_artifacts.sql")),
];

/// Run statuses as stored, indexed by the proto enum value.
const RUN_STATUSES: [&str; 6] = ["", "RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"];

/// Largest page a listing returns.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// The metadata store.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    artifact_root: String,
    changes: broadcast::Sender<String>,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// A value bound into a dynamically built query.
#[derive(Debug, Clone)]
enum Arg {
    Text(String),
    Float(f64),
    Int(i64),
}

/// Builds SQL with placeholders in order of use: anonymous `?` on SQLite, `$N` on PostgreSQL.
/// (SQLite looks a named parameter such as `$7` up by a linear scan, and sqlx asks for every
/// parameter's name, so a statement with n named parameters costs O(n²): a 1,000-row metrics
/// INSERT took 28.8 ms with `$N`. Anonymous parameters have no name to scan for.)
#[derive(Debug)]
struct Sql {
    text: String,
    args: Vec<Arg>,
    numbered: bool,
}

impl Sql {
    fn new(backend: Backend) -> Self {
        Self { text: String::new(), args: Vec::new(), numbered: backend == Backend::Postgres }
    }

    fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    fn bind(&mut self, arg: Arg) -> &mut Self {
        self.args.push(arg);
        if self.numbered {
            self.text.push_str(&format!("${}", self.args.len()));
        } else {
            self.text.push('?');
        }
        self
    }

    fn query(&self) -> sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments> {
        // Audited: the text holds only fixed SQL, validated identifiers and placeholders.
        let mut query = sqlx::query(AssertSqlSafe(self.text.clone()));
        for arg in &self.args {
            query = match arg {
                Arg::Text(v) => query.bind(v.clone()),
                Arg::Float(v) => query.bind(*v),
                Arg::Int(v) => query.bind(*v),
            };
        }
        query
    }
}

impl Store {
    /// Opens (creating if needed) the store at `url` (`sqlite://PATH` or `postgres://…`) and
    /// applies migrations. `artifact_root` is where experiments keep artifacts by default.
    pub async fn open(url: &str, artifact_root: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(Error::invalid("store", format!("{url:?} is neither sqlite://PATH nor postgres://…")));
        };
        let url = match backend {
            Backend::Sqlite if !url.contains('?') => format!("{url}?mode=rwc"),
            _ => url.to_owned(),
        };
        let options = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(10));
        let pool = match backend {
            Backend::Sqlite => {
                options
                    .max_connections(1)
                    .after_connect(|conn, _meta| {
                        Box::pin(async move {
                            sqlx::raw_sql(
                                "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000; \
                             PRAGMA synchronous = NORMAL; PRAGMA case_sensitive_like = ON; \
                             PRAGMA wal_autocheckpoint = 16384;",
                            )
                            .execute(conn)
                            .await?;
                            Ok(())
                        })
                    })
                    .connect(&url)
                    .await?
            }
            Backend::Postgres => options.max_connections(16).connect(&url).await?,
        };
        let (changes, _) = broadcast::channel(1024);
        let store = Self { pool, backend, artifact_root: artifact_root.trim_end_matches('/').to_owned(), changes };
        store.migrate().await?;
        Ok(store)
    }

    /// The dialect.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Names of registered models as their versions, stages or aliases change.
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.changes.subscribe()
    }

    fn changed(&self, name: &str) {
        // No subscribers is fine.
        let _ = self.changes.send(name.to_owned());
    }

    async fn migrate(&self) -> Result<()> {
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS lightops_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
        )
        .execute(&self.pool)
        .await?;
        let migrations = match self.backend {
            Backend::Sqlite => MIGRATIONS_SQLITE,
            Backend::Postgres => MIGRATIONS_POSTGRES,
        };
        for (version, script) in migrations {
            let mut tx = self.pool.begin().await?;
            let done: Option<i64> = sqlx::query_scalar("SELECT version FROM lightops_migrations WHERE version = $1")
                .bind(*version)
                .fetch_optional(&mut *tx)
                .await?;
            if done.is_some() {
                continue;
            }
            sqlx::raw_sql(*script).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO lightops_migrations (version, applied_at) VALUES ($1, $2)")
                .bind(*version)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            tracing::info!(version, "applied registry migration");
        }
        Ok(())
    }

    // -------------------------------------------------------------------------------------
    // Experiments
    // -------------------------------------------------------------------------------------

    /// Creates an experiment.
    pub async fn create_experiment(&self, name: &str, artifact_location: &str) -> Result<pb::Experiment> {
        if name.trim().is_empty() {
            return Err(Error::invalid("name", "an experiment needs a name"));
        }
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query_scalar::<_, i64>(
            "INSERT INTO experiments (name, artifact_location, creation_time) VALUES ($1, $2, $3) RETURNING experiment_id",
        )
        .bind(name)
        .bind(artifact_location)
        .bind(now)
        .fetch_one(&mut *tx)
        .await;
        let id = match inserted {
            Ok(id) => id,
            Err(e) if unique_violation(&e) => return Err(Error::AlreadyExists(format!("experiment `{name}`"))),
            Err(e) => return Err(e.into()),
        };
        let location = if artifact_location.is_empty() {
            let location = format!("{}/{id}", self.artifact_root);
            sqlx::query("UPDATE experiments SET artifact_location = $1 WHERE experiment_id = $2")
                .bind(&location)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            location
        } else {
            artifact_location.to_owned()
        };
        tx.commit().await?;
        Ok(pb::Experiment {
            experiment_id: id.to_string(),
            name: name.to_owned(),
            artifact_location: location,
            creation_time_ms: now,
        })
    }

    fn experiment_from_row(row: &AnyRow) -> Result<pb::Experiment> {
        Ok(pb::Experiment {
            experiment_id: row.try_get::<i64, _>("experiment_id")?.to_string(),
            name: row.try_get("name")?,
            artifact_location: row.try_get("artifact_location")?,
            creation_time_ms: row.try_get("creation_time")?,
        })
    }

    /// Gets an experiment by id.
    pub async fn experiment_by_id(&self, id: &str) -> Result<pb::Experiment> {
        let numeric = parse_experiment_id(id)?;
        let row = sqlx::query("SELECT * FROM experiments WHERE experiment_id = $1")
            .bind(numeric)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::NotFound(format!("experiment {id}")))?;
        Self::experiment_from_row(&row)
    }

    /// Gets an experiment by name.
    pub async fn experiment_by_name(&self, name: &str) -> Result<pb::Experiment> {
        let row = sqlx::query("SELECT * FROM experiments WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::NotFound(format!("experiment `{name}`")))?;
        Self::experiment_from_row(&row)
    }

    /// Lists experiments, newest first.
    pub async fn list_experiments(&self, page_size: u32, page_token: &str) -> Result<(Vec<pb::Experiment>, String)> {
        let (limit, offset) = page(page_size, page_token)?;
        let rows = sqlx::query("SELECT * FROM experiments ORDER BY experiment_id DESC LIMIT $1 OFFSET $2")
            .bind(limit + 1)
            .bind(offset)
            .fetch_all(&self.pool)
            .await?;
        let mut experiments = rows.iter().map(Self::experiment_from_row).collect::<Result<Vec<_>>>()?;
        let next = next_token(&mut experiments, limit, offset);
        Ok((experiments, next))
    }

    // -------------------------------------------------------------------------------------
    // Runs
    // -------------------------------------------------------------------------------------

    /// Creates a run.
    pub async fn create_run(
        &self,
        experiment_id: &str,
        run_name: &str,
        start_ms: i64,
        tags: &[pb::Tag],
    ) -> Result<pb::Run> {
        let experiment = self.experiment_by_id(experiment_id).await?;
        let run_id = new_run_id();
        let start = if start_ms > 0 { start_ms } else { now_ms() };
        let name = if run_name.is_empty() { format!("run-{}", &run_id[..8]) } else { run_name.to_owned() };
        let artifact_uri = format!("{}/{run_id}/artifacts", experiment.artifact_location.trim_end_matches('/'));
        validate_tags(tags)?;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO runs (run_id, experiment_id, run_name, status, start_time, artifact_uri) \
             VALUES ($1, $2, $3, 'RUNNING', $4, $5)",
        )
        .bind(&run_id)
        .bind(parse_experiment_id(experiment_id)?)
        .bind(&name)
        .bind(start)
        .bind(&artifact_uri)
        .execute(&mut *tx)
        .await?;
        for tag in tags {
            upsert_tag(&mut tx, &run_id, tag).await?;
        }
        tx.commit().await?;
        self.run(&run_id).await
    }

    /// Gets a run with its params, latest metrics and tags.
    pub async fn run(&self, run_id: &str) -> Result<pb::Run> {
        let row = sqlx::query("SELECT * FROM runs WHERE run_id = $1")
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::NotFound(format!("run {run_id}")))?;
        let mut runs = self.runs_from_rows(&[row]).await?;
        runs.pop().ok_or_else(|| Error::NotFound(format!("run {run_id}")))
    }

    /// Builds runs (with params, latest metrics, tags) from `runs` rows, keeping their order.
    async fn runs_from_rows(&self, rows: &[AnyRow]) -> Result<Vec<pb::Run>> {
        let mut runs = Vec::with_capacity(rows.len());
        let mut index = HashMap::new();
        for row in rows {
            let status: String = row.try_get("status")?;
            let run_id: String = row.try_get("run_id")?;
            index.insert(run_id.clone(), runs.len());
            runs.push(pb::Run {
                run_id,
                experiment_id: row.try_get::<i64, _>("experiment_id")?.to_string(),
                run_name: row.try_get("run_name")?,
                status: RUN_STATUSES.iter().position(|s| *s == status).unwrap_or_default() as i32,
                start_time_ms: row.try_get("start_time")?,
                end_time_ms: row.try_get::<Option<i64>, _>("end_time")?.unwrap_or_default(),
                artifact_uri: row.try_get("artifact_uri")?,
                ..pb::Run::default()
            });
        }
        if runs.is_empty() {
            return Ok(runs);
        }
        for table in ["params", "latest_metrics", "tags"] {
            let mut sql = Sql::new(self.backend);
            sql.push(&format!("SELECT * FROM {table} WHERE run_id IN ("));
            for (i, run) in runs.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.bind(Arg::Text(run.run_id.clone()));
            }
            sql.push(") ORDER BY key");
            for row in sql.query().fetch_all(&self.pool).await? {
                let run_id: String = row.try_get("run_id")?;
                let Some(&at) = index.get(&run_id) else { continue };
                let run = &mut runs[at];
                match table {
                    "params" => run.params.push(pb::Param { key: row.try_get("key")?, value: row.try_get("value")? }),
                    "tags" => run.tags.push(pb::Tag { key: row.try_get("key")?, value: row.try_get("value")? }),
                    _ => run.metrics.push(metric_from_row(&row)?),
                }
            }
        }
        Ok(runs)
    }

    /// Updates a run's status, end time or name.
    pub async fn update_run(
        &self,
        run_id: &str,
        status: Option<&str>,
        end_ms: Option<i64>,
        name: Option<&str>,
    ) -> Result<pb::Run> {
        let mut sql = Sql::new(self.backend);
        sql.push("UPDATE runs SET run_id = run_id");
        if let Some(status) = status {
            sql.push(", status = ").bind(Arg::Text(status.to_owned()));
        }
        if let Some(end) = end_ms {
            sql.push(", end_time = ").bind(Arg::Int(end));
        }
        if let Some(name) = name {
            sql.push(", run_name = ").bind(Arg::Text(name.to_owned()));
        }
        sql.push(" WHERE run_id = ").bind(Arg::Text(run_id.to_owned()));
        if sql.query().execute(&self.pool).await?.rows_affected() == 0 {
            return Err(Error::NotFound(format!("run {run_id}")));
        }
        self.run(run_id).await
    }

    /// Deletes a run and everything logged to it.
    pub async fn delete_run(&self, run_id: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for table in ["params", "metrics", "latest_metrics", "tags"] {
            sqlx::query(AssertSqlSafe(format!("DELETE FROM {table} WHERE run_id = $1")))
                .bind(run_id)
                .execute(&mut *tx)
                .await?;
        }
        let deleted = sqlx::query("DELETE FROM runs WHERE run_id = $1").bind(run_id).execute(&mut *tx).await?;
        if deleted.rows_affected() == 0 {
            return Err(Error::NotFound(format!("run {run_id}")));
        }
        tx.commit().await?;
        Ok(())
    }

    /// Logs params (write-once), metrics (append-only) and tags (overwritable) atomically.
    pub async fn log_batch(
        &self,
        run_id: &str,
        metrics: &[pb::Metric],
        params: &[pb::Param],
        tags: &[pb::Tag],
    ) -> Result<()> {
        for (i, metric) in metrics.iter().enumerate() {
            if metric.key.is_empty() {
                return Err(Error::invalid("metrics", format!("metrics[{i}] has an empty key")));
            }
            if !metric.value.is_finite() {
                return Err(Error::invalid("metrics", format!("metrics[{i}] ({}) is not a finite number", metric.key)));
            }
        }
        for (i, param) in params.iter().enumerate() {
            if param.key.is_empty() {
                return Err(Error::invalid("params", format!("params[{i}] has an empty key")));
            }
        }
        validate_tags(tags)?;
        let mut tx = self.pool.begin().await?;
        let exists: Option<String> = sqlx::query_scalar("SELECT run_id FROM runs WHERE run_id = $1")
            .bind(run_id)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(Error::NotFound(format!("run {run_id}")));
        }
        for param in params {
            let inserted = sqlx::query(
                "INSERT INTO params (run_id, key, value) VALUES ($1, $2, $3) ON CONFLICT (run_id, key) DO NOTHING",
            )
            .bind(run_id)
            .bind(&param.key)
            .bind(&param.value)
            .execute(&mut *tx)
            .await?;
            if inserted.rows_affected() == 0 {
                let old: String = sqlx::query_scalar("SELECT value FROM params WHERE run_id = $1 AND key = $2")
                    .bind(run_id)
                    .bind(&param.key)
                    .fetch_one(&mut *tx)
                    .await?;
                if old != param.value {
                    return Err(Error::FailedPrecondition(format!(
                        "param `{}` of run {run_id} is already {old:?}; params are write-once (tried {:?})",
                        param.key, param.value
                    )));
                }
            }
        }
        let now = now_ms();
        let stamped: Vec<pb::Metric> = metrics
            .iter()
            .map(|m| pb::Metric { timestamp_ms: if m.timestamp_ms > 0 { m.timestamp_ms } else { now }, ..m.clone() })
            .collect();
        // Multi-row inserts, up to 1,000 rows (5,000 parameters, within both dialects' limits).
        for chunk in stamped.chunks(1000) {
            let mut sql = Sql::new(self.backend);
            sql.push("INSERT INTO metrics ");
            push_metric_rows(&mut sql, run_id, chunk.iter());
            sql.query().execute(&mut *tx).await?;
        }
        // The newest value per key of this batch, then one upsert that keeps the newer one.
        let mut latest: BTreeMap<&str, &pb::Metric> = BTreeMap::new();
        for metric in &stamped {
            let newer = latest
                .get(metric.key.as_str())
                .is_none_or(|old| (metric.step, metric.timestamp_ms) >= (old.step, old.timestamp_ms));
            if newer {
                latest.insert(&metric.key, metric);
            }
        }
        // One statement for all keys (they are distinct here, as PostgreSQL's ON CONFLICT needs).
        for chunk in latest.values().collect::<Vec<_>>().chunks(1000) {
            let mut sql = Sql::new(self.backend);
            sql.push("INSERT INTO latest_metrics ");
            push_metric_rows(&mut sql, run_id, chunk.iter().map(|metric| **metric));
            sql.push(
                " ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value, step = excluded.step, \
                 timestamp = excluded.timestamp WHERE excluded.step > latest_metrics.step \
                 OR (excluded.step = latest_metrics.step AND excluded.timestamp >= latest_metrics.timestamp)",
            );
            sql.query().execute(&mut *tx).await?;
        }
        for tag in tags {
            upsert_tag(&mut tx, run_id, tag).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Every value of one metric, by step then timestamp.
    pub async fn metric_history(&self, run_id: &str, key: &str) -> Result<Vec<pb::Metric>> {
        self.run(run_id).await?;
        let rows = sqlx::query("SELECT * FROM metrics WHERE run_id = $1 AND key = $2 ORDER BY step, timestamp")
            .bind(run_id)
            .bind(key)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(metric_from_row).collect()
    }

    /// Searches runs.
    pub async fn search_runs(
        &self,
        experiment_ids: &[String],
        filter: &Filter,
        order_by: &[OrderBy],
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<pb::Run>, String)> {
        let (limit, offset) = page(page_size, page_token)?;
        let mut sql = Sql::new(self.backend);
        sql.push("SELECT r.* FROM runs r WHERE 1 = 1");
        if !experiment_ids.is_empty() {
            sql.push(" AND r.experiment_id IN (");
            for (i, id) in experiment_ids.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.bind(Arg::Int(parse_experiment_id(id)?));
            }
            sql.push(")");
        }
        for clause in &filter.clauses {
            sql.push(" AND ");
            push_clause(&mut sql, clause);
        }
        sql.push(" ORDER BY ");
        for order in order_by {
            push_order_expression(&mut sql, order);
            sql.push(if order.descending { " DESC NULLS LAST, " } else { " ASC NULLS LAST, " });
        }
        sql.push("r.start_time DESC, r.run_id ASC LIMIT ")
            .bind(Arg::Int(limit + 1))
            .push(" OFFSET ")
            .bind(Arg::Int(offset));
        let rows = sql.query().fetch_all(&self.pool).await?;
        let mut runs = self.runs_from_rows(&rows).await?;
        let next = next_token(&mut runs, limit, offset);
        Ok((runs, next))
    }

    // -------------------------------------------------------------------------------------
    // Registered models
    // -------------------------------------------------------------------------------------

    /// Creates a registered model.
    pub async fn create_registered_model(
        &self,
        name: &str,
        description: &str,
        tags: &[pb::Tag],
    ) -> Result<pb::RegisteredModel> {
        validate_model_name(name)?;
        validate_tags(tags)?;
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO registered_models (name, description, creation_time, last_updated_time) VALUES ($1, $2, $3, $3)",
        )
        .bind(name)
        .bind(description)
        .bind(now)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if unique_violation(&e) => return Err(Error::AlreadyExists(format!("registered model `{name}`"))),
            Err(e) => return Err(e.into()),
        }
        for tag in tags {
            upsert_model_tag(&mut tx, name, tag).await?;
        }
        tx.commit().await?;
        self.registered_model(name).await
    }

    /// Gets a registered model with its tags and aliases.
    pub async fn registered_model(&self, name: &str) -> Result<pb::RegisteredModel> {
        let row = sqlx::query("SELECT * FROM registered_models WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::NotFound(format!("registered model `{name}`")))?;
        let tags = sqlx::query("SELECT key, value FROM model_tags WHERE name = $1 ORDER BY key")
            .bind(name)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| Ok(pb::Tag { key: r.try_get("key")?, value: r.try_get("value")? }))
            .collect::<Result<Vec<_>>>()?;
        let aliases = sqlx::query("SELECT alias, version FROM aliases WHERE name = $1")
            .bind(name)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| Ok((r.try_get::<String, _>("alias")?, r.try_get::<i64, _>("version")?)))
            .collect::<Result<HashMap<_, _>>>()?;
        Ok(pb::RegisteredModel {
            name: row.try_get("name")?,
            description: row.try_get("description")?,
            creation_time_ms: row.try_get("creation_time")?,
            last_updated_time_ms: row.try_get("last_updated_time")?,
            tags,
            aliases,
            latest_version: row.try_get("latest_version")?,
        })
    }

    /// Lists registered models whose name contains `contains`.
    pub async fn list_registered_models(
        &self,
        contains: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<pb::RegisteredModel>, String)> {
        let (limit, offset) = page(page_size, page_token)?;
        let contains_sql = match self.backend {
            Backend::Sqlite => "instr(name, $1) > 0",
            Backend::Postgres => "strpos(name, $1) > 0",
        };
        let sql = format!("SELECT name FROM registered_models WHERE {contains_sql} ORDER BY name LIMIT $2 OFFSET $3");
        let names: Vec<String> = sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(contains)
            .bind(limit + 1)
            .bind(offset)
            .fetch_all(&self.pool)
            .await?;
        let mut models = Vec::with_capacity(names.len());
        for name in &names {
            models.push(self.registered_model(name).await?);
        }
        let next = next_token(&mut models, limit, offset);
        Ok((models, next))
    }

    /// Sets a registered model's description and tags.
    pub async fn update_registered_model(
        &self,
        name: &str,
        description: Option<&str>,
        tags: &[pb::Tag],
    ) -> Result<pb::RegisteredModel> {
        validate_tags(tags)?;
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query(
            "UPDATE registered_models SET description = COALESCE($1, description), last_updated_time = $2 WHERE name = $3",
        )
        .bind(description.map(str::to_owned))
        .bind(now_ms())
        .bind(name)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(Error::NotFound(format!("registered model `{name}`")));
        }
        for tag in tags {
            upsert_model_tag(&mut tx, name, tag).await?;
        }
        tx.commit().await?;
        self.registered_model(name).await
    }

    /// Deletes a registered model with its versions, aliases and tags.
    pub async fn delete_registered_model(&self, name: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for table in ["model_versions", "aliases", "model_tags"] {
            sqlx::query(AssertSqlSafe(format!("DELETE FROM {table} WHERE name = $1")))
                .bind(name)
                .execute(&mut *tx)
                .await?;
        }
        let deleted = sqlx::query("DELETE FROM registered_models WHERE name = $1").bind(name).execute(&mut *tx).await?;
        if deleted.rows_affected() == 0 {
            return Err(Error::NotFound(format!("registered model `{name}`")));
        }
        tx.commit().await?;
        self.changed(name);
        Ok(())
    }

    // -------------------------------------------------------------------------------------
    // Versions, stages, aliases
    // -------------------------------------------------------------------------------------

    /// Registers a new version, numbered after the model's latest.
    pub async fn create_model_version(
        &self,
        name: &str,
        run_id: &str,
        source: &str,
        sha256: &str,
        description: &str,
        create_model: bool,
    ) -> Result<pb::ModelVersion> {
        validate_model_name(name)?;
        if source.is_empty() {
            return Err(Error::invalid("source", "a model version needs the artifact's location"));
        }
        let well_formed = sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit());
        if !sha256.is_empty() && !well_formed {
            return Err(Error::invalid("sha256", format!("{sha256:?} is not 64 hex digits")));
        }
        if !run_id.is_empty() {
            self.run(run_id).await?;
        }
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        if create_model {
            sqlx::query(
                "INSERT INTO registered_models (name, description, creation_time, last_updated_time) VALUES ($1, '', $2, $2) \
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        let version: Option<i64> = sqlx::query_scalar(
            "UPDATE registered_models SET latest_version = latest_version + 1, last_updated_time = $1 \
             WHERE name = $2 RETURNING latest_version",
        )
        .bind(now)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(version) = version else {
            return Err(Error::NotFound(format!("registered model `{name}`")));
        };
        sqlx::query(
            "INSERT INTO model_versions (name, version, run_id, source, sha256, stage, description, creation_time) \
             VALUES ($1, $2, $3, $4, $5, 'None', $6, $7)",
        )
        .bind(name)
        .bind(version)
        .bind(run_id)
        .bind(source)
        .bind(sha256.to_ascii_lowercase())
        .bind(description)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.changed(name);
        self.model_version(name, version).await
    }

    /// Gets one version with its aliases.
    pub async fn model_version(&self, name: &str, version: i64) -> Result<pb::ModelVersion> {
        let row = sqlx::query("SELECT * FROM model_versions WHERE name = $1 AND version = $2")
            .bind(name)
            .bind(version)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::NotFound(format!("version {version} of model `{name}`")))?;
        let mut versions = self.versions_from_rows(name, &[row]).await?;
        versions.pop().ok_or_else(|| Error::NotFound(format!("version {version} of model `{name}`")))
    }

    async fn versions_from_rows(&self, name: &str, rows: &[AnyRow]) -> Result<Vec<pb::ModelVersion>> {
        let mut aliases: HashMap<i64, Vec<String>> = HashMap::new();
        for row in sqlx::query("SELECT alias, version FROM aliases WHERE name = $1 ORDER BY alias")
            .bind(name)
            .fetch_all(&self.pool)
            .await?
        {
            aliases.entry(row.try_get("version")?).or_default().push(row.try_get("alias")?);
        }
        rows.iter()
            .map(|row| {
                let version: i64 = row.try_get("version")?;
                let stage: String = row.try_get("stage")?;
                Ok(pb::ModelVersion {
                    name: row.try_get("name")?,
                    version,
                    run_id: row.try_get("run_id")?,
                    source: row.try_get("source")?,
                    sha256: row.try_get("sha256")?,
                    stage: STAGES.iter().position(|s| *s == stage).unwrap_or_default() as i32,
                    aliases: aliases.remove(&version).unwrap_or_default(),
                    creation_time_ms: row.try_get("creation_time")?,
                    description: row.try_get("description")?,
                })
            })
            .collect()
    }

    /// Versions of a model, newest first.
    pub async fn list_model_versions(&self, name: &str) -> Result<Vec<pb::ModelVersion>> {
        self.registered_model(name).await?;
        let rows = sqlx::query("SELECT * FROM model_versions WHERE name = $1 ORDER BY version DESC")
            .bind(name)
            .fetch_all(&self.pool)
            .await?;
        self.versions_from_rows(name, &rows).await
    }

    /// Moves a version to a stage, optionally archiving the others in it.
    pub async fn transition_stage(
        &self,
        name: &str,
        version: i64,
        stage: &str,
        archive_existing: bool,
    ) -> Result<pb::ModelVersion> {
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query("UPDATE model_versions SET stage = $1 WHERE name = $2 AND version = $3")
            .bind(stage)
            .bind(name)
            .bind(version)
            .execute(&mut *tx)
            .await?;
        if updated.rows_affected() == 0 {
            return Err(Error::NotFound(format!("version {version} of model `{name}`")));
        }
        if archive_existing && stage != "None" && stage != "Archived" {
            sqlx::query(
                "UPDATE model_versions SET stage = 'Archived' WHERE name = $1 AND stage = $2 AND version <> $3",
            )
            .bind(name)
            .bind(stage)
            .bind(version)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("UPDATE registered_models SET last_updated_time = $1 WHERE name = $2")
            .bind(now_ms())
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.changed(name);
        self.model_version(name, version).await
    }

    /// Points an alias at a version.
    pub async fn set_alias(&self, name: &str, alias: &str, version: i64) -> Result<pb::ModelVersion> {
        validate_alias(alias)?;
        self.model_version(name, version).await?;
        sqlx::query("INSERT INTO aliases (name, alias, version) VALUES ($1, $2, $3) ON CONFLICT (name, alias) DO UPDATE SET version = excluded.version")
            .bind(name)
            .bind(alias)
            .bind(version)
            .execute(&self.pool)
            .await?;
        self.changed(name);
        self.model_version(name, version).await
    }

    /// Removes an alias.
    pub async fn delete_alias(&self, name: &str, alias: &str) -> Result<()> {
        let deleted = sqlx::query("DELETE FROM aliases WHERE name = $1 AND alias = $2")
            .bind(name)
            .bind(alias)
            .execute(&self.pool)
            .await?;
        if deleted.rows_affected() == 0 {
            return Err(Error::NotFound(format!("alias `{alias}` of model `{name}`")));
        }
        self.changed(name);
        Ok(())
    }

    /// Resolves a `models:/…` URI.
    pub async fn resolve(&self, uri: &ModelUri) -> Result<pb::ModelVersion> {
        let (name, version) = match uri {
            ModelUri::Version { name, version } => (name, *version),
            ModelUri::Alias { name, alias } => {
                let version: Option<i64> =
                    sqlx::query_scalar("SELECT version FROM aliases WHERE name = $1 AND alias = $2")
                        .bind(name)
                        .bind(alias)
                        .fetch_optional(&self.pool)
                        .await?;
                let version = version.ok_or_else(|| Error::NotFound(format!("alias `{alias}` of model `{name}`")))?;
                (name, version)
            }
            ModelUri::Stage { name, stage } => {
                let version: Option<i64> =
                    sqlx::query_scalar("SELECT MAX(version) FROM model_versions WHERE name = $1 AND stage = $2")
                        .bind(name)
                        .bind(*stage)
                        .fetch_one(&self.pool)
                        .await?;
                let version =
                    version.ok_or_else(|| Error::NotFound(format!("a version of model `{name}` in stage {stage}")))?;
                (name, version)
            }
        };
        self.model_version(name, version).await
    }
}

impl Store {
    /// The experiment id of a run (NOT_FOUND if the run does not exist).
    pub async fn run_experiment(&self, run_id: &str) -> Result<String> {
        let id: Option<i64> = sqlx::query_scalar("SELECT experiment_id FROM runs WHERE run_id = $1")
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await?;
        id.map(|id| id.to_string()).ok_or_else(|| Error::NotFound(format!("run {run_id}")))
    }

    /// Records an uploaded file (replacing an earlier upload of the same path).
    pub async fn record_artifact(&self, info: &pb::ArtifactInfo) -> Result<()> {
        sqlx::query(
            "INSERT INTO artifacts (run_id, path, size, sha256, uri) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (run_id, path) DO UPDATE SET size = excluded.size, sha256 = excluded.sha256, uri = excluded.uri",
        )
        .bind(&info.run_id)
        .bind(&info.path)
        .bind(info.size as i64)
        .bind(&info.sha256)
        .bind(&info.uri)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A recorded file.
    pub async fn artifact(&self, run_id: &str, path: &str) -> Result<pb::ArtifactInfo> {
        let row = sqlx::query("SELECT * FROM artifacts WHERE run_id = $1 AND path = $2")
            .bind(run_id)
            .bind(path)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::NotFound(format!("artifact {path} of run {run_id}")))?;
        artifact_from_row(&row)
    }

    /// A run's recorded files, by path.
    pub async fn artifacts(&self, run_id: &str) -> Result<Vec<pb::ArtifactInfo>> {
        self.run_experiment(run_id).await?;
        let rows = sqlx::query("SELECT * FROM artifacts WHERE run_id = $1 ORDER BY path")
            .bind(run_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(artifact_from_row).collect()
    }
}

fn artifact_from_row(row: &AnyRow) -> Result<pb::ArtifactInfo> {
    Ok(pb::ArtifactInfo {
        run_id: row.try_get("run_id")?,
        path: row.try_get("path")?,
        size: row.try_get::<i64, _>("size")? as u64,
        sha256: row.try_get("sha256")?,
        uri: row.try_get("uri")?,
    })
}

/// Appends `(run_id, key, value, step, timestamp) VALUES (…), (…)` for `metrics`.
fn push_metric_rows<'a>(sql: &mut Sql, run_id: &str, metrics: impl Iterator<Item = &'a pb::Metric>) {
    sql.push("(run_id, key, value, step, timestamp) VALUES ");
    for (i, metric) in metrics.enumerate() {
        sql.push(if i == 0 { "(" } else { ", (" });
        sql.bind(Arg::Text(run_id.to_owned())).push(", ");
        sql.bind(Arg::Text(metric.key.clone())).push(", ");
        sql.bind(Arg::Float(metric.value)).push(", ");
        sql.bind(Arg::Int(metric.step)).push(", ");
        sql.bind(Arg::Int(metric.timestamp_ms)).push(")");
    }
}

fn metric_from_row(row: &AnyRow) -> Result<pb::Metric> {
    Ok(pb::Metric {
        key: row.try_get("key")?,
        value: row.try_get("value")?,
        step: row.try_get("step")?,
        timestamp_ms: row.try_get("timestamp")?,
    })
}

async fn upsert_tag(tx: &mut sqlx::Transaction<'_, sqlx::Any>, run_id: &str, tag: &pb::Tag) -> Result<()> {
    sqlx::query("INSERT INTO tags (run_id, key, value) VALUES ($1, $2, $3) ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value")
        .bind(run_id)
        .bind(&tag.key)
        .bind(&tag.value)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn upsert_model_tag(tx: &mut sqlx::Transaction<'_, sqlx::Any>, name: &str, tag: &pb::Tag) -> Result<()> {
    sqlx::query("INSERT INTO model_tags (name, key, value) VALUES ($1, $2, $3) ON CONFLICT (name, key) DO UPDATE SET value = excluded.value")
        .bind(name)
        .bind(&tag.key)
        .bind(&tag.value)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// A run id: 32 lowercase hex digits, like MLflow's.
fn new_run_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn parse_experiment_id(id: &str) -> Result<i64> {
    id.parse::<i64>().map_err(|_| Error::invalid("experiment_id", format!("{id:?} is not an experiment id (a number)")))
}

fn validate_model_name(name: &str) -> Result<()> {
    if name.is_empty() || name.contains('/') || name.contains('@') || name.chars().any(char::is_control) {
        return Err(Error::invalid(
            "name",
            format!("{name:?}: a model name is non-empty, without '/', '@' or control characters"),
        ));
    }
    Ok(())
}

fn validate_alias(alias: &str) -> Result<()> {
    let valid = !alias.is_empty()
        && alias.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && !alias.chars().all(|c| c.is_ascii_digit());
    if !valid {
        return Err(Error::invalid(
            "alias",
            format!("{alias:?}: an alias is letters, digits, '_' or '-', not only digits"),
        ));
    }
    Ok(())
}

fn validate_tags(tags: &[pb::Tag]) -> Result<()> {
    match tags.iter().position(|t| t.key.is_empty()) {
        Some(i) => Err(Error::invalid("tags", format!("tags[{i}] has an empty key"))),
        None => Ok(()),
    }
}

/// `(limit, offset)` from a page size and token.
fn page(page_size: u32, token: &str) -> Result<(i64, i64)> {
    let limit = if page_size == 0 { 100 } else { page_size.min(MAX_PAGE_SIZE) } as i64;
    let offset = if token.is_empty() {
        0
    } else {
        token
            .parse::<i64>()
            .ok()
            .filter(|o| *o >= 0)
            .ok_or_else(|| Error::invalid("page_token", format!("{token:?} is not a token this server issued")))?
    };
    Ok((limit, offset))
}

/// Trims the look-ahead row and returns the next page token (empty at the end).
fn next_token<T>(items: &mut Vec<T>, limit: i64, offset: i64) -> String {
    if items.len() as i64 > limit {
        items.truncate(limit as usize);
        (offset + limit).to_string()
    } else {
        String::new()
    }
}

/// Appends one filter clause as SQL over the run alias `r`.
fn push_clause(sql: &mut Sql, clause: &Clause) {
    let (table, column) = match clause.entity {
        Entity::Metric => ("latest_metrics", "value"),
        Entity::Param => ("params", "value"),
        Entity::Tag => ("tags", "value"),
        Entity::Attribute => ("", ""),
    };
    if clause.entity == Entity::Attribute {
        // Keys were validated by the parser against a fixed list, so they are safe as columns.
        let column = format!("r.{}", clause.key);
        push_comparison(sql, &column, clause.op, &clause.value);
        return;
    }
    sql.push(&format!("EXISTS (SELECT 1 FROM {table} x WHERE x.run_id = r.run_id AND x.key = "));
    sql.bind(Arg::Text(clause.key.clone()));
    sql.push(" AND ");
    push_comparison(sql, &format!("x.{column}"), clause.op, &clause.value);
    sql.push(")");
}

fn push_comparison(sql: &mut Sql, column: &str, op: Op, value: &Value) {
    let bind = |sql: &mut Sql, value: &Value| match value {
        Value::Number(n) => {
            sql.bind(Arg::Float(*n));
        }
        Value::Text(t) => {
            sql.bind(Arg::Text(t.clone()));
        }
        Value::List(_) => {}
    };
    match (op, value) {
        (Op::In | Op::NotIn, Value::List(items)) => {
            sql.push(column).push(if op == Op::In { " IN (" } else { " NOT IN (" });
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.bind(Arg::Text(item.clone()));
            }
            sql.push(")");
        }
        (Op::ILike, _) => {
            sql.push(&format!("LOWER({column}) LIKE LOWER("));
            bind(sql, value);
            sql.push(") ESCAPE '\\'");
        }
        (Op::Like, _) => {
            sql.push(column).push(" LIKE ");
            bind(sql, value);
            sql.push(" ESCAPE '\\'");
        }
        _ => {
            sql.push(column).push(" ").push(op.as_str()).push(" ");
            bind(sql, value);
        }
    }
}

fn push_order_expression(sql: &mut Sql, order: &OrderBy) {
    let table = match order.entity {
        Entity::Attribute => {
            sql.push(&format!("r.{}", order.key));
            return;
        }
        Entity::Metric => "latest_metrics",
        Entity::Param => "params",
        Entity::Tag => "tags",
    };
    sql.push(&format!("(SELECT x.value FROM {table} x WHERE x.run_id = r.run_id AND x.key = "));
    sql.bind(Arg::Text(order.key.clone()));
    sql.push(")");
}
