//! `--glue-table`: keep the portal projection of the archive's Glue (Athena) table listing
//! every archived portal, so Athena queries across portals need no portal filter.
//!
//! The table's `projection.portal_id.type` is `injected` (every query must name its portals)
//! or `enum` (`projection.portal_id.values` lists them). Either becomes an `enum` listing the
//! values it had plus the portals given, sorted; a value is never removed, since a deleted
//! portal's archived sessions must stay queryable. Nothing else in the table changes.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use aws_sdk_glue::types::{Table, TableInput};
use aws_sdk_glue::Client;

use crate::aws::AwsError;
use crate::config::GlueTable;

/// The table parameter naming the projection type of `portal_id`.
pub const TYPE_KEY: &str = "projection.portal_id.type";
/// The table parameter listing an `enum` projection's values, comma-separated.
pub const VALUES_KEY: &str = "projection.portal_id.values";
/// Glue's limit on the length of a table parameter's value.
pub const VALUE_LIMIT: usize = 512_000;
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

/// Make `table`'s portal projection list every one of `portals` (and every portal it already
/// lists). Returns how many portals were added; 0 means nothing was written (no UpdateTable).
///
/// The update carries the `VersionId` read: if the table changed in between, Glue refuses it
/// (ConcurrentModificationException) and the table is read again and the update recomputed,
/// up to [`ATTEMPTS`] times, so no portal another writer added is lost.
pub async fn add_portals(client: &Client, table: &GlueTable, portals: &[String]) -> Result<usize> {
    let mut attempt = 1;
    loop {
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
        let current = read
            .table()
            .ok_or_else(|| anyhow!("Glue table {table}: GetTable returned no table"))?;
        let params = current.parameters().cloned().unwrap_or_default();
        let Some((values, added)) =
            portal_values(&params, portals).with_context(|| format!("Glue table {table}"))?
        else {
            return Ok(0);
        };
        let mut params = params;
        params.insert(TYPE_KEY.to_string(), "enum".to_string());
        params.insert(VALUES_KEY.to_string(), values);
        let input = table_input(current, params).with_context(|| format!("Glue table {table}"))?;
        let sent = client
            .update_table()
            .database_name(&table.database)
            .table_input(input)
            .set_version_id(current.version_id().map(str::to_string))
            .send()
            .await;
        match sent {
            Ok(_) => return Ok(added),
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
        .get("projection.enabled")
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
