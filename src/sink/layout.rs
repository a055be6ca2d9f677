//! The dataset's key layout: where each file of a flush is staged and published, relative
//! to the output root. Pure naming, shared by every sink.
//!
//! Names are deterministic from what is committed (state id, portal, flush sequence, date), so
//! replaying a step after a crash overwrites or finds its own file, never a second copy.

use crate::model::PortalId;

/// Root folder of the dataset inside the output.
pub const DATASET: &str = "sessions";
/// Root folder of staged (uncommitted or unpublished) files inside the output.
pub const STAGING: &str = "_staging";
/// Root folder of the manifests inside the output (see [`super::manifest`]).
pub const MANIFEST: &str = "_manifest";

/// Final key of a flush's file for one partition, relative to the output root.
pub fn final_key(portal: &PortalId, date: &str, state_id: &str, seq: i64) -> String {
    format!("{DATASET}/portal_id={portal}/start_date={date}/part-{state_id}-{seq:010}.parquet")
}

/// The id of the state that wrote a file, from its [`final_key`] name.
pub fn writer_of(key: &str) -> Option<&str> {
    let name = key.rsplit('/').next()?;
    name.strip_prefix("part-")?.split('-').next()
}

/// Root folder of the portals' claims inside the output (see [`claim_key`]).
pub const CLAIM: &str = "_claim";

/// Key of a portal's claim: written once, with `If-None-Match: *`, by the state that archives
/// the portal first, before its first flush. It names that state.
pub fn claim_key(portal: &PortalId) -> String {
    format!("{CLAIM}/portal_id={portal}.json")
}

/// Staging key of a claim on a local output; tagged like [`staging_key`].
pub fn claim_staging_key(portal: &PortalId, state_id: &str) -> String {
    format!(
        "{}/claim-{state_id}-{}.tmp",
        staging_prefix(portal),
        crate::ids::process_tag()
    )
}

/// The id of the state that staged a file (a [`staging_key`], [`manifest_staging_key`] or
/// [`claim_staging_key`]).
pub fn staged_writer_of(key: &str) -> Option<&str> {
    // A local output's half-written temporary copy of one: `.<name>.tmp-<random>`.
    let name = key.rsplit('/').next()?;
    let name = name.strip_prefix('.').unwrap_or(name);
    let rest = name
        .strip_prefix("part-")
        .or_else(|| name.strip_prefix("manifest-"))
        .or_else(|| name.strip_prefix("claim-"))?;
    rest.split('-').next()
}

/// Staging key of the same file. It also carries a tag unique to this process, so two runs
/// that both believe they own a state (one whose S3 lease expired under it) never write the
/// same staged object; the state records the staging key it committed.
pub fn staging_key(portal: &PortalId, date: &str, state_id: &str, seq: i64) -> String {
    format!(
        "{}/part-{state_id}-{seq:010}-{date}-{}.tmp",
        staging_prefix(portal),
        crate::ids::process_tag()
    )
}

/// Key of the manifest of flush (or compaction) `seq`, relative to the output root.
pub fn manifest_key(portal: &PortalId, state_id: &str, seq: i64) -> String {
    format!("{MANIFEST}/portal_id={portal}/{state_id}-{seq:010}.json")
}

/// Staging key of a manifest on a local output (written there durably, then linked to its
/// [`manifest_key`]); tagged like [`staging_key`].
pub fn manifest_staging_key(portal: &PortalId, state_id: &str, seq: i64) -> String {
    format!(
        "{}/manifest-{state_id}-{seq:010}-{}.tmp",
        staging_prefix(portal),
        crate::ids::process_tag()
    )
}

/// The staging folder of one portal, relative to the output root.
pub fn staging_prefix(portal: &PortalId) -> String {
    format!("{STAGING}/portal_id={portal}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn portal() -> PortalId {
        PortalId::parse("0a1b2c3d-0000-4000-8000-123456789abc").unwrap()
    }

    #[test]
    fn names_are_hive_partitioned_and_deterministic() {
        let k = final_key(&portal(), "2026-11-26", "abc", 7);
        assert_eq!(
            k,
            "sessions/portal_id=0a1b2c3d-0000-4000-8000-123456789abc/start_date=2026-11-26/part-abc-0000000007.parquet"
        );
        assert_eq!(writer_of(&k), Some("abc"));
        assert_eq!(writer_of("sessions/x/other.parquet"), None);
        let s = staging_key(&portal(), "2026-11-26", "abc", 7);
        assert!(s.starts_with("_staging/"));
        assert!(!s.ends_with(".parquet"));
        assert_ne!(s, staging_key(&portal(), "2026-11-27", "abc", 7));
        assert_eq!(staged_writer_of(&s), Some("abc"));
        assert_eq!(
            staged_writer_of(&manifest_staging_key(&portal(), "abc", 7)),
            Some("abc")
        );
        assert_eq!(staged_writer_of("_staging/portal_id=x/.probe-1"), None);
        assert_eq!(
            staged_writer_of("_staging/portal_id=x/.part-abc-0000000001-2026-11-24-f.tmp.tmp-n3o"),
            Some("abc")
        );
        assert_eq!(
            manifest_key(&portal(), "abc", 7),
            "_manifest/portal_id=0a1b2c3d-0000-4000-8000-123456789abc/abc-0000000007.json"
        );
    }
}
