//! The digests' records (see [`crate::digest`]): the SHA-256 of every manifest the state
//! wrote, which digest lists it, and the newest digest of the chain (with its exact bytes
//! until they are written).

use anyhow::{bail, Result};
use rusqlite::{params, OptionalExtension};

use super::{PortalOutcome, State};
use crate::clock::now_ms;

/// A manifest recorded for the next digest: `(key, portal_id, seq, sha256)`.
pub type ManifestRow = (String, String, i64, String);

/// The newest digest of the chain.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DigestRow {
    pub seq: u64,
    pub key: String,
    pub sha256: String,
    pub signature: Option<String>,
    pub created_at: String,
    /// Written to the digest location; `false`: stored here, to be written first by the next
    /// command.
    pub written: bool,
}

/// A digest stored but not yet written: its seq, key and exact bytes.
#[derive(Clone, Debug)]
pub struct Unwritten {
    pub seq: u64,
    pub key: String,
    pub bytes: Vec<u8>,
}

/// What the next digest is built from.
#[derive(Clone, Debug)]
pub struct DigestBasis {
    /// The newest digest; `None`: the chain starts with the next one.
    pub previous: Option<DigestRow>,
    /// Manifests no digest lists yet, sorted by key: `(key, sha256)`.
    pub manifests: Vec<(String, String)>,
    /// The state archived before digests existed: the output's manifests of this state are
    /// to be read and listed by the first digest.
    pub import: bool,
    /// The state's creation (epoch ms): the first digest's range starts there.
    pub created_at_ms: i64,
    /// Every portal with its flush sequence and watermark: `(portal_id, flush_seq, watermark)`.
    pub portals: Vec<(String, i64, Option<i64>)>,
}

/// A digest to store.
#[derive(Clone, Debug)]
pub struct NewDigest {
    pub seq: u64,
    pub key: String,
    pub sha256: String,
    pub signature: Option<String>,
    pub created_at: String,
    pub bytes: Vec<u8>,
    /// The keys of the manifests it lists that are recorded here, waiting for it.
    pub manifests: Vec<String>,
    /// Manifests of an archive older than digests, read from the output for the first digest.
    pub imported: Vec<ManifestRow>,
}

impl State {
    /// The KMS signing key `spec` as a command opened it before: `(key ARN, algorithm, public
    /// key DER)`, so later commands need no `GetPublicKey` call.
    pub fn kms_key_record(&self, spec: &str) -> Result<Option<(String, String, Vec<u8>)>> {
        let value: Option<String> = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = ?1",
                [format!("kms_key {spec}")],
                |r| r.get(0),
            )
            .optional()?;
        Ok(value.and_then(|v| {
            let mut parts = v.splitn(3, ' ');
            let (id, alg, der) = (parts.next()?, parts.next()?, parts.next()?);
            let der = crate::sign::base64_decode(der)?;
            Some((id.to_string(), alg.to_string(), der))
        }))
    }

    /// Record what [`State::kms_key_record`] returns.
    pub fn record_kms_key(
        &self,
        spec: &str,
        key_id: &str,
        algorithm: &str,
        der: &[u8],
    ) -> Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
            params![
                format!("kms_key {spec}"),
                format!("{key_id} {algorithm} {}", crate::sign::base64_encode(der))
            ],
        )?;
        Ok(())
    }

    /// A manifest was written with these bytes' SHA-256: record it for the next digest. The
    /// same manifest written again (recovery replays the write) is recorded once; another
    /// SHA-256 for a recorded key is an error (the write would have been a clash).
    pub fn record_manifest(
        &self,
        key: &str,
        portal_id: &str,
        seq: i64,
        sha256: &str,
    ) -> Result<()> {
        let known: Option<String> = self
            .conn
            .query_row("SELECT sha256 FROM manifests WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?;
        match known {
            Some(s) if s == sha256 => Ok(()),
            Some(s) => bail!(
                "manifest {key} is recorded with SHA-256 {s}, but was written as {sha256} (state invariant)"
            ),
            None => {
                self.conn.execute(
                    "INSERT INTO manifests (key, portal_id, seq, sha256, written_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![key, portal_id, seq, sha256, now_ms()],
                )?;
                Ok(())
            }
        }
    }

    /// A manifest found written (by a command killed before it recorded it), recorded as it
    /// is for the next digest, unless it is recorded already.
    pub fn record_found_manifest(
        &self,
        key: &str,
        portal_id: &str,
        seq: i64,
        sha256: &str,
    ) -> Result<()> {
        self.conn.execute(
            "INSERT INTO manifests (key, portal_id, seq, sha256, written_at)
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (key) DO NOTHING",
            params![key, portal_id, seq, sha256, now_ms()],
        )?;
        Ok(())
    }

    /// What each portal's work in run `run_id` came to, by portal id.
    pub fn run_passes(&self, run_id: i64) -> Result<Vec<PortalOutcome>> {
        let mut stmt = self.conn.prepare(
            "SELECT portal_id, pass, outcome, rows, pages, error FROM run_portals
             WHERE run_id = ?1 ORDER BY portal_id",
        )?;
        let rows = stmt
            .query_map([run_id], |r| {
                Ok(PortalOutcome {
                    portal_id: r.get(0)?,
                    pass: r.get(1)?,
                    outcome: r.get(2)?,
                    rows: r.get(3)?,
                    pages: r.get(4)?,
                    error: r.get(5)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// The newest digest of the chain, written or not.
    pub fn newest_digest(&self) -> Result<Option<DigestRow>> {
        Ok(self
            .conn
            .query_row(
                "SELECT seq, key, sha256, signature, created_at, written FROM digests
                 ORDER BY seq DESC LIMIT 1",
                [],
                |r| {
                    Ok(DigestRow {
                        seq: r.get::<_, i64>(0)? as u64,
                        key: r.get(1)?,
                        sha256: r.get(2)?,
                        signature: r.get(3)?,
                        created_at: r.get(4)?,
                        written: r.get::<_, i64>(5)? != 0,
                    })
                },
            )
            .optional()?)
    }

    /// The digest stored but not yet written, if any.
    pub fn unwritten_digest(&self) -> Result<Option<Unwritten>> {
        Ok(self
            .conn
            .query_row(
                "SELECT seq, key, bytes FROM digests WHERE written = 0 ORDER BY seq LIMIT 1",
                [],
                |r| {
                    Ok(Unwritten {
                        seq: r.get::<_, i64>(0)? as u64,
                        key: r.get(1)?,
                        bytes: r.get(2)?,
                    })
                },
            )
            .optional()?)
    }

    /// What the next digest is built from.
    pub fn digest_basis(&self) -> Result<DigestBasis> {
        let previous = self.newest_digest()?;
        let mut stmt = self
            .conn
            .prepare("SELECT key, sha256 FROM manifests WHERE digest_seq IS NULL ORDER BY key")?;
        let manifests = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let meta = |key: &str| -> Result<Option<String>> {
            Ok(self
                .conn
                .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .optional()?)
        };
        let import = meta("digest_import")?.is_some();
        let created_at_ms = meta("created_at_ms")?
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(now_ms);
        let mut stmt = self.conn.prepare(
            "SELECT portal_id, flush_seq, high_watermark_ms FROM portals ORDER BY portal_id",
        )?;
        let portals = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(DigestBasis {
            previous,
            manifests,
            import,
            created_at_ms,
            portals,
        })
    }

    /// Store a digest, its exact bytes, and mark the manifests it lists as listed, in one
    /// transaction. Refused unless it is the next of the chain and every manifest it lists
    /// was waiting for a digest.
    pub fn store_digest(&mut self, d: &NewDigest) -> Result<()> {
        let tx = self.conn.transaction()?;
        let newest: Option<(i64, i64)> = tx
            .query_row(
                "SELECT seq, written FROM digests ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        match newest {
            Some((_, 0)) => bail!("a digest of this state is stored but not written yet"),
            Some((seq, _)) if seq as u64 + 1 != d.seq => {
                bail!("digest {} does not follow digest {seq}", d.seq)
            }
            None if d.seq != 1 => bail!("digest {} without a previous one", d.seq),
            _ => {}
        }
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO manifests (key, portal_id, seq, sha256, written_at, digest_seq)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for (key, portal, seq, sha) in &d.imported {
                ins.execute(params![key, portal, seq, sha, now_ms(), d.seq as i64])?;
            }
            let mut mark = tx.prepare_cached(
                "UPDATE manifests SET digest_seq = ?2 WHERE key = ?1 AND digest_seq IS NULL",
            )?;
            for key in &d.manifests {
                if mark.execute(params![key, d.seq as i64])? != 1 {
                    bail!("manifest {key} is not waiting for a digest (state invariant)");
                }
            }
        }
        tx.execute(
            "INSERT INTO digests (seq, key, sha256, signature, created_at, bytes)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                d.seq as i64,
                d.key,
                d.sha256,
                d.signature,
                d.created_at,
                d.bytes
            ],
        )?;
        tx.execute("DELETE FROM meta WHERE key = 'digest_import'", [])?;
        tx.commit()?;
        Ok(())
    }

    /// Digest `seq` is written: forget its bytes and the older digests, and the manifests
    /// listed by it (or before) that recovery can no longer write again (their flush is
    /// published), in one transaction.
    pub fn mark_digest_written(&mut self, seq: u64) -> Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "UPDATE digests SET written = 1, bytes = NULL WHERE seq = ?1",
            [seq as i64],
        )?;
        tx.execute("DELETE FROM digests WHERE seq < ?1", [seq as i64])?;
        tx.execute(
            "DELETE FROM manifests
             WHERE digest_seq IS NOT NULL AND digest_seq <= ?1
               AND NOT EXISTS (SELECT 1 FROM flush_files f
                               WHERE f.portal_id = manifests.portal_id
                                 AND f.seq = manifests.seq AND f.published = 0)",
            [seq as i64],
        )?;
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(seq: u64, manifests: &[&str]) -> NewDigest {
        NewDigest {
            seq,
            key: format!("d{seq}"),
            sha256: "0".repeat(64),
            signature: None,
            created_at: "t".into(),
            bytes: b"bytes".to_vec(),
            manifests: manifests.iter().map(|m| m.to_string()).collect(),
            imported: vec![],
        }
    }

    #[test]
    fn manifests_are_listed_once_and_digests_follow_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = State::open(&dir.path().join("s.db")).unwrap();
        assert!(
            !st.digest_basis().unwrap().import,
            "a new state imports nothing"
        );
        st.record_manifest("m1", "p", 1, &"a".repeat(64)).unwrap();
        st.record_manifest("m1", "p", 1, &"a".repeat(64)).unwrap();
        assert!(st.record_manifest("m1", "p", 1, &"b".repeat(64)).is_err());
        st.record_manifest("m2", "p", 2, &"c".repeat(64)).unwrap();
        let basis = st.digest_basis().unwrap();
        assert!(basis.previous.is_none());
        assert_eq!(basis.manifests.len(), 2);
        assert!(
            st.store_digest(&digest(2, &["m1"])).is_err(),
            "the chain starts at 1"
        );
        st.store_digest(&digest(1, &["m1", "m2"])).unwrap();
        // Stored, not written: no next digest until it is.
        assert_eq!(st.unwritten_digest().unwrap().unwrap().bytes, b"bytes");
        assert!(st.store_digest(&digest(2, &[])).is_err());
        st.mark_digest_written(1).unwrap();
        assert!(st.unwritten_digest().unwrap().is_none());
        assert!(st.digest_basis().unwrap().manifests.is_empty());
        // A listed manifest cannot be listed again.
        assert!(st.store_digest(&digest(2, &["m1"])).is_err());
        st.store_digest(&digest(2, &[])).unwrap();
        st.mark_digest_written(2).unwrap();
        let newest = st.newest_digest().unwrap().unwrap();
        assert_eq!((newest.seq, newest.written), (2, true));
        let rows: i64 = st
            .conn
            .query_row("SELECT count(*) FROM digests", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 1, "only the newest digest is kept");
    }
}
