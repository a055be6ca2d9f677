//! `--glue-table`: the archive's Glue (Athena) table, kept so that Athena queries across
//! portals need no upkeep. The table's own properties say how:
//!
//! - **Partition projection on** (`projection.enabled` true, `projection.portal_id.type`
//!   `injected` or `enum`): the run keeps `projection.portal_id.values` listing every archived
//!   portal ([`add_portals`]). Either type becomes an `enum` listing the values it had plus
//!   the portals given, sorted; a value is never removed, since a deleted portal's archived
//!   sessions must stay queryable. Nothing else in the table changes.
//! - **No partition projection**: each partition (portal, UTC day) the archive holds is
//!   registered in Glue ([`Partitions`], [`register_many`]), so Athena reads exactly the
//!   partitions a query's filter selects, whatever the number of portals.
//!
//! [`disable_projection`] turns a projected table into one of registered partitions (after the
//! caller has registered them all).

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use aws_sdk_glue::types::{PartitionInput, StorageDescriptor, Table, TableInput};
use aws_sdk_glue::Client;

use crate::aws::AwsError;
use crate::config::GlueTable;

/// The table parameter naming the projection type of `portal_id`.
pub const TYPE_KEY: &str = "projection.portal_id.type";
/// The table parameter listing an `enum` projection's values, comma-separated.
pub const VALUES_KEY: &str = "projection.portal_id.values";
/// The table parameter turning partition projection on.
pub const ENABLED_KEY: &str = "projection.enabled";
/// The table parameter mapping partition values to their folder.
pub const TEMPLATE_KEY: &str = "storage.location.template";
/// Glue's limit on the length of a table parameter's value.
pub const VALUE_LIMIT: usize = 512_000;
/// Glue's limit on the partitions of one BatchCreatePartition call.
pub const BATCH: usize = 100;
/// BatchCreatePartition calls in flight at once.
const IN_FLIGHT: usize = 4;
/// UpdateTable calls refused because the table changed since it was read (another run, a
/// person), each followed by a fresh read.
const ATTEMPTS: u32 = 5;

/// The Glue client of the job's own account and region (the SDK chain's; honours
/// `AWS_ENDPOINT_URL_GLUE`), with standard retries and no retry quota.
pub fn client(sdk: &aws_config::SdkConfig, max_attempts: u32) -> Client {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        .read_timeout(Duration::from_secs(30))
        .operation_attempt_timeout(Duration::from_secs(60))
        .build();
    let conf = aws_sdk_glue::config::Builder::from(sdk)
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(max_attempts))
        .retry_partition(crate::aws::exact_attempts("archiver-glue"))
        .timeout_config(timeouts)
        .build();
    Client::from_conf(conf)
}

/// The table, as GetTable returns it.
pub async fn read(client: &Client, table: &GlueTable) -> Result<Table> {
    let read = client
        .get_table()
        .database_name(&table.database)
        .name(&table.table)
        .send()
        .await
        .map_err(|e| {
            let e = AwsError::from(e);
            let what = if e.code.as_deref() == Some("EntityNotFoundException") {
                "not found"
            } else {
                "GetTable failed"
            };
            anyhow::Error::new(e).context(format!("Glue table {table}: {what}"))
        })?;
    read.table
        .ok_or_else(|| anyhow!("Glue table {table}: GetTable returned no table"))
}

/// Does the table project its partitions (`projection.enabled` is true)?
pub fn projected(t: &Table) -> bool {
    t.parameters()
        .and_then(|p| p.get(ENABLED_KEY))
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// Make `table`'s portal projection list every one of `portals` (and every portal it already
/// lists), starting from `read`, the table as just read (or reading it). Returns how many
/// portals were added; 0 means nothing was written (no UpdateTable).
///
/// The update carries the `VersionId` read: if the table changed in between, Glue refuses it
/// (ConcurrentModificationException) and the table is read again and the update recomputed,
/// up to [`ATTEMPTS`] times, so no portal another writer added is lost.
pub async fn add_portals(
    client: &Client,
    table: &GlueTable,
    read: Option<Table>,
    portals: &[String],
) -> Result<usize> {
    let added = update_params(client, table, read, |params| {
        let Some((values, added)) = portal_values(params, portals)? else {
            return Ok(None);
        };
        let mut params = params.clone();
        params.insert(TYPE_KEY.to_string(), "enum".to_string());
        params.insert(VALUES_KEY.to_string(), values);
        Ok(Some((params, added)))
    })
    .await?;
    Ok(added.unwrap_or(0))
}

/// Turn the table's partition projection off (`projection.enabled` = `false`, every other
/// property kept): Athena then reads the partitions registered in Glue. Returns whether the
/// table was changed (false: projection was already off). Call it only once every partition
/// of the archive is registered, or queries miss the rest.
pub async fn disable_projection(client: &Client, table: &GlueTable) -> Result<bool> {
    let changed = update_params(client, table, None, |params| {
        let on = params
            .get(ENABLED_KEY)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        if !on {
            return Ok(None);
        }
        let mut params = params.clone();
        params.insert(ENABLED_KEY.to_string(), "false".to_string());
        Ok(Some((params, ())))
    })
    .await?;
    Ok(changed.is_some())
}

/// Read the table (or take `first`, as just read), compute its new parameters with `change`
/// (`None`: nothing to write), and write them with UpdateTable naming the version read;
/// refused for a concurrent change, read again and recompute, up to [`ATTEMPTS`] times.
/// Returns what `change` returned with the parameters written, or `None` if nothing was
/// written.
async fn update_params<T>(
    client: &Client,
    table: &GlueTable,
    mut first: Option<Table>,
    change: impl Fn(&HashMap<String, String>) -> Result<Option<(HashMap<String, String>, T)>>,
) -> Result<Option<T>> {
    let mut attempt = 1;
    loop {
        let current = match first.take() {
            Some(t) => t,
            None => read(client, table).await?,
        };
        let params = current.parameters().cloned().unwrap_or_default();
        let Some((params, out)) = change(&params).with_context(|| format!("Glue table {table}"))?
        else {
            return Ok(None);
        };
        let input = table_input(&current, params).with_context(|| format!("Glue table {table}"))?;
        let sent = client
            .update_table()
            .database_name(&table.database)
            .table_input(input)
            .set_version_id(current.version_id().map(str::to_string))
            .send()
            .await;
        match sent {
            Ok(_) => return Ok(Some(out)),
            Err(e) => {
                let e = AwsError::from(e);
                let concurrent = e.code.as_deref() == Some("ConcurrentModificationException");
                if concurrent && attempt < ATTEMPTS {
                    tracing::debug!(glue_table = %table, attempt, "Glue table changed meanwhile; reading it again");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                    attempt += 1;
                    continue;
                }
                let why = if concurrent {
                    format!("Glue table {table}: UpdateTable failed {attempt} times in a row, the table changing each time")
                } else {
                    format!("Glue table {table}: UpdateTable failed")
                };
                return Err(anyhow::Error::new(e).context(why));
            }
        }
    }
}

/// The new `projection.portal_id.values` of a table with these parameters once `portals` are
/// added, and how many were added; `None` if it already lists them all (or there is nothing to
/// list). An error if the table has no `injected` or `enum` projection on `portal_id`, or if
/// the list would exceed Glue's limit.
pub fn portal_values(
    params: &HashMap<String, String>,
    portals: &[String],
) -> Result<Option<(String, usize)>> {
    let kind = params.get(TYPE_KEY).map(|t| t.trim().to_ascii_lowercase());
    let mut values: BTreeSet<&str> = BTreeSet::new();
    match kind.as_deref() {
        Some("enum") => {
            if let Some(v) = params.get(VALUES_KEY) {
                values.extend(v.split(',').map(str::trim).filter(|v| !v.is_empty()));
            }
        }
        Some("injected") => {}
        Some(other) => {
            return Err(anyhow!(
                "partition projection of portal_id is of type {other:?}; only injected or enum can list the portals"
            ))
        }
        None => {
            return Err(anyhow!(
                "no partition projection on portal_id (table parameter {TYPE_KEY} is not set; see sql/athena/create_table.sql)"
            ))
        }
    }
    if !params
        .get(ENABLED_KEY)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    {
        return Err(anyhow!(
            "partition projection is not enabled (table parameter projection.enabled is not true)"
        ));
    }
    let before = values.len();
    values.extend(portals.iter().map(|p| p.as_str()));
    let added = values.len() - before;
    if values.is_empty() || (added == 0 && kind.as_deref() == Some("enum")) {
        return Ok(None);
    }
    let joined = values.into_iter().collect::<Vec<_>>().join(",");
    if joined.len() > VALUE_LIMIT {
        return Err(anyhow!(
            "the portal list ({} portals, {} bytes) would exceed Glue's limit of {VALUE_LIMIT} bytes for {VALUES_KEY}",
            joined.split(',').count(),
            joined.len()
        ));
    }
    Ok(Some((joined, added)))
}

/// A table whose partitions are registered in Glue: how each partition is described.
#[derive(Clone, Debug)]
pub struct Partitions {
    /// The table's name and creation time: a table dropped and created again under the same
    /// name is another table (its partitions went with the old one).
    pub identity: String,
    /// The table's storage descriptor (columns, formats, SerDe), each partition's copy
    /// carrying its own location.
    storage: StorageDescriptor,
    /// The partition's folder, with `${portal_id}` and `${start_date}` to fill in.
    template: String,
}

impl Partitions {
    /// The partitions of this table: its partition keys must be `portal_id` then
    /// `start_date`, as `sql/athena/create_table.sql` makes them. A partition's folder follows
    /// the table's `storage.location.template` if it has one, else the table's location.
    pub fn of(t: &Table, name: &GlueTable) -> Result<Partitions> {
        let keys: Vec<String> = t
            .partition_keys()
            .iter()
            .map(|c| c.name().to_ascii_lowercase())
            .collect();
        if keys != ["portal_id", "start_date"] {
            return Err(anyhow!(
                "Glue table {name}: partition keys are ({}), not (portal_id, start_date) as in sql/athena/create_table.sql",
                keys.join(", ")
            ));
        }
        let storage = t
            .storage_descriptor()
            .cloned()
            .ok_or_else(|| anyhow!("Glue table {name}: it has no storage descriptor"))?;
        let template = match t.parameters().and_then(|p| p.get(TEMPLATE_KEY)) {
            Some(tpl) => tpl.trim().to_string(),
            None => {
                let root = storage
                    .location()
                    .filter(|l| !l.trim().is_empty())
                    .ok_or_else(|| anyhow!("Glue table {name}: it has no location"))?;
                format!(
                    "{}/portal_id=${{portal_id}}/start_date=${{start_date}}/",
                    root.trim().trim_end_matches('/')
                )
            }
        };
        if !template.contains("${portal_id}") || !template.contains("${start_date}") {
            return Err(anyhow!(
                "Glue table {name}: {TEMPLATE_KEY} {template:?} lacks ${{portal_id}} or ${{start_date}}"
            ));
        }
        let created = t
            .create_time()
            .map(|c| format!("{}.{:09}", c.secs(), c.subsec_nanos()))
            .unwrap_or_default();
        Ok(Partitions {
            identity: format!("{name}@{created}"),
            storage,
            template,
        })
    }

    /// The folder of one partition.
    pub fn location(&self, portal: &str, date: &str) -> String {
        self.template
            .replace("${portal_id}", portal)
            .replace("${start_date}", date)
    }

    fn input(&self, portal: &str, date: &str) -> PartitionInput {
        let mut storage = self.storage.clone();
        storage.location = Some(self.location(portal, date));
        PartitionInput::builder()
            .values(portal)
            .values(date)
            .storage_descriptor(storage)
            .build()
    }
}

/// What registering partitions did.
#[derive(Debug, Default)]
pub struct Registered {
    /// Partitions created.
    pub created: usize,
    /// Partitions Glue now holds (created, or there already): `(portal_id, start_date)`.
    pub held: Vec<(String, String)>,
    /// Partitions not registered.
    pub failed: usize,
    /// Why (the first few reasons, each with its count).
    pub errors: Vec<String>,
}

impl Registered {
    fn error(&mut self, e: String) {
        if self.errors.len() < 5 && !self.errors.contains(&e) {
            self.errors.push(e);
        }
    }
}

/// Register these partitions (`(portal_id, start_date)`) in the table: BatchCreatePartition,
/// [`BATCH`] at a time, [`IN_FLIGHT`] calls at once. A partition Glue already holds counts as
/// registered (so registering is idempotent). After a call fails as a whole (the table gone,
/// access denied, retries exhausted), no further call is made; the partitions not registered
/// are counted in `failed`.
pub async fn register_many(
    client: &Client,
    table: &GlueTable,
    parts: &Partitions,
    pairs: &[(String, String)],
) -> Registered {
    let mut out = Registered::default();
    let mut calls = tokio::task::JoinSet::new();
    let mut batches = pairs.chunks(BATCH);
    let mut stopped = false;
    loop {
        while !stopped && calls.len() < IN_FLIGHT {
            let Some(batch) = batches.next() else { break };
            let (client, table, parts, batch) =
                (client.clone(), table.clone(), parts.clone(), batch.to_vec());
            calls.spawn(async move {
                let r = register(&client, &table, &parts, &batch).await;
                (batch, r)
            });
        }
        let Some(joined) = calls.join_next().await else {
            break;
        };
        let (batch, result) = match joined {
            Ok(j) => j,
            Err(e) => {
                stopped = true;
                out.error(format!("BatchCreatePartition task failed: {e}"));
                continue;
            }
        };
        match result {
            Ok(r) => {
                out.created += r.created;
                out.failed += r.failed;
                out.held.extend(r.held);
                for e in r.errors {
                    out.error(e);
                }
            }
            Err(e) => {
                stopped = true;
                out.failed += batch.len();
                out.error(format!("{e:#}"));
            }
        }
    }
    // Batches never sent.
    out.failed += batches.map(<[_]>::len).sum::<usize>();
    out
}

/// One BatchCreatePartition call for at most [`BATCH`] partitions.
async fn register(
    client: &Client,
    table: &GlueTable,
    parts: &Partitions,
    batch: &[(String, String)],
) -> Result<Registered> {
    let inputs: Vec<PartitionInput> = batch.iter().map(|(p, d)| parts.input(p, d)).collect();
    let sent = client
        .batch_create_partition()
        .database_name(&table.database)
        .table_name(&table.table)
        .set_partition_input_list(Some(inputs))
        .send()
        .await
        .map_err(|e| {
            anyhow::Error::new(AwsError::from(e))
                .context(format!("Glue table {table}: BatchCreatePartition failed"))
        })?;
    let mut refused: HashMap<(&str, &str), String> = HashMap::new();
    let mut existed = 0;
    for e in sent.errors() {
        let values = e.partition_values();
        let (Some(p), Some(d)) = (values.first(), values.get(1)) else {
            continue;
        };
        let detail = e.error_detail();
        let code = detail.and_then(|d| d.error_code()).unwrap_or("unknown");
        if code == "AlreadyExistsException" {
            existed += 1;
            continue;
        }
        let message = detail.and_then(|d| d.error_message()).unwrap_or("");
        if let Some((p, d)) = batch.iter().find(|(bp, bd)| bp == p && bd == d) {
            refused.insert(
                (p.as_str(), d.as_str()),
                format!("Glue table {table}: partition ({p}, {d}) refused: {code} {message}")
                    .trim_end()
                    .to_string(),
            );
        }
    }
    let mut out = Registered::default();
    for (p, d) in batch {
        match refused.get(&(p.as_str(), d.as_str())) {
            Some(e) => {
                out.failed += 1;
                out.error(e.clone());
            }
            None => out.held.push((p.clone(), d.clone())),
        }
    }
    out.created = out.held.len() - existed.min(out.held.len());
    Ok(out)
}

/// The table as read, as an UpdateTable input: every field a `TableInput` has, carried over,
/// with `parameters` replaced.
fn table_input(t: &Table, parameters: HashMap<String, String>) -> Result<TableInput> {
    if t.view_definition().is_some() {
        return Err(anyhow!("is a multi-dialect view, not the archive's table"));
    }
    TableInput::builder()
        .name(t.name())
        .set_description(t.description().map(str::to_string))
        .set_owner(t.owner().map(str::to_string))
        .set_last_access_time(t.last_access_time().cloned())
        .set_last_analyzed_time(t.last_analyzed_time().cloned())
        .retention(t.retention())
        .set_storage_descriptor(t.storage_descriptor().cloned())
        .set_partition_keys(t.partition_keys.clone())
        .set_view_original_text(t.view_original_text().map(str::to_string))
        .set_view_expanded_text(t.view_expanded_text().map(str::to_string))
        .set_table_type(t.table_type().map(str::to_string))
        .set_parameters(Some(parameters))
        .set_target_table(t.target_table().cloned())
        .set_federated_table(t.federated_table().cloned())
        .build()
        .map_err(|e| anyhow!("building UpdateTable input: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(kind: &str, values: Option<&str>) -> HashMap<String, String> {
        let mut p = HashMap::from([
            ("projection.enabled".to_string(), "true".to_string()),
            (TYPE_KEY.to_string(), kind.to_string()),
        ]);
        if let Some(v) = values {
            p.insert(VALUES_KEY.to_string(), v.to_string());
        }
        p
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn injected_becomes_a_sorted_enum() {
        let got = portal_values(&params("injected", None), &ids(&["b", "a", "b"])).unwrap();
        assert_eq!(got, Some(("a,b".to_string(), 2)));
    }

    #[test]
    fn enum_values_are_kept_and_new_ones_added() {
        let p = params("enum", Some("z, c"));
        let got = portal_values(&p, &ids(&["a", "c"])).unwrap();
        assert_eq!(got, Some(("a,c,z".to_string(), 1)));
        // Nothing new (even listed in another order): no update.
        assert_eq!(portal_values(&p, &ids(&["z"])).unwrap(), None);
        assert_eq!(portal_values(&p, &[]).unwrap(), None);
        // An injected projection with nothing to list stays as it is.
        assert_eq!(portal_values(&params("injected", None), &[]).unwrap(), None);
        // The type's case does not matter.
        assert_eq!(
            portal_values(&params("ENUM", Some("a")), &ids(&["a"])).unwrap(),
            None
        );
    }

    #[test]
    fn tables_without_a_portal_projection_are_refused() {
        let e = portal_values(&HashMap::new(), &ids(&["a"])).unwrap_err();
        assert!(
            e.to_string()
                .contains("no partition projection on portal_id"),
            "{e}"
        );
        let e = portal_values(&params("integer", None), &ids(&["a"])).unwrap_err();
        assert!(e.to_string().contains("\"integer\""), "{e}");
        let mut p = params("injected", None);
        p.insert("projection.enabled".into(), "false".into());
        let e = portal_values(&p, &ids(&["a"])).unwrap_err();
        assert!(e.to_string().contains("not enabled"), "{e}");
    }

    fn table(keys: &[&str], location: Option<&str>, template: Option<&str>) -> Table {
        use aws_sdk_glue::types::Column;
        let mut params = HashMap::new();
        if let Some(t) = template {
            params.insert(TEMPLATE_KEY.to_string(), t.to_string());
        }
        Table::builder()
            .name("t")
            .set_partition_keys(Some(
                keys.iter()
                    .map(|k| Column::builder().name(*k).r#type("string").build().unwrap())
                    .collect(),
            ))
            .storage_descriptor(
                StorageDescriptor::builder()
                    .set_location(location.map(str::to_string))
                    .input_format("in")
                    .build(),
            )
            .set_parameters(Some(params))
            .create_time(aws_sdk_glue::primitives::DateTime::from_secs(1_700_000_000))
            .build()
            .unwrap()
    }

    fn name() -> GlueTable {
        GlueTable {
            database: "db".into(),
            table: "t".into(),
        }
    }

    #[test]
    fn a_partition_is_described_by_the_table() {
        // The location, with or without its trailing slash.
        for loc in ["s3://b/p/sessions/", "s3://b/p/sessions"] {
            let p = Partitions::of(
                &table(&["portal_id", "start_date"], Some(loc), None),
                &name(),
            )
            .unwrap();
            assert_eq!(
                p.location("a", "2026-11-20"),
                "s3://b/p/sessions/portal_id=a/start_date=2026-11-20/"
            );
            assert_eq!(p.identity, "db.t@1700000000.000000000");
            let input = p.input("a", "2026-11-20");
            assert_eq!(input.values(), ["a", "2026-11-20"]);
            let sd = input.storage_descriptor().unwrap();
            assert_eq!(
                sd.location(),
                Some("s3://b/p/sessions/portal_id=a/start_date=2026-11-20/")
            );
            assert_eq!(sd.input_format(), Some("in"), "the rest is the table's");
        }
        // The template, when the table has one.
        let tpl = "s3://x/y/${start_date}/${portal_id}/";
        let p = Partitions::of(
            &table(&["PORTAL_ID", "start_date"], Some("s3://b/p/"), Some(tpl)),
            &name(),
        )
        .unwrap();
        assert_eq!(p.location("a", "2026-11-20"), "s3://x/y/2026-11-20/a/");
    }

    #[test]
    fn tables_of_other_shapes_are_refused() {
        let e =
            Partitions::of(&table(&["start_date"], Some("s3://b/"), None), &name()).unwrap_err();
        assert!(
            e.to_string().contains("partition keys are (start_date)"),
            "{e}"
        );
        let e = Partitions::of(
            &table(&["start_date", "portal_id"], Some("s3://b/"), None),
            &name(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("not (portal_id, start_date)"), "{e}");
        let e =
            Partitions::of(&table(&["portal_id", "start_date"], None, None), &name()).unwrap_err();
        assert!(e.to_string().contains("no location"), "{e}");
        let e = Partitions::of(
            &table(
                &["portal_id", "start_date"],
                None,
                Some("s3://b/${portal_id}/"),
            ),
            &name(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("lacks"), "{e}");
    }

    #[test]
    fn a_list_over_glues_limit_is_an_error() {
        // 36-character ids and a comma: 37 bytes each, the last without a comma.
        let n = (VALUE_LIMIT + 1) / 37;
        let fits: Vec<String> = (0..n).map(|i| format!("{i:036}")).collect();
        let (v, added) = portal_values(&params("injected", None), &fits)
            .unwrap()
            .unwrap();
        assert!(v.len() <= VALUE_LIMIT);
        assert_eq!(added, n);
        let over: Vec<String> = (0..n + 1).map(|i| format!("{i:036}")).collect();
        let e = portal_values(&params("injected", None), &over).unwrap_err();
        assert!(e.to_string().contains("limit of 512000 bytes"), "{e}");
    }
}
