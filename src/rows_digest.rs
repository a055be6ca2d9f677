//! The rows digest: an order-independent SHA-256 digest of a set of rows (with repeats), so a
//! compaction can prove, in its manifest, that its output holds exactly the rows of its inputs
//! (see `docs/dataset.md`, "The rows digest").
//!
//! E(row) concatenates, over the dataset's columns in schema order, null → `0x00`; a string →
//! `0x01`, its UTF-8 length (u32 big-endian), its bytes; a timestamp → `0x01`, its epoch
//! milliseconds (i64 big-endian); a list → `0x01`, its length (u32 big-endian), then each item
//! as a string (or `0x00` if null). h(row) = SHA-256(E(row)) as a 256-bit unsigned big-endian
//! integer; the digest is Σ h(row) mod 2^256. Any changed, lost or added row changes it.

use anyhow::{anyhow, bail, Context, Result};
use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMillisecondType;
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sha2::{Digest, Sha256};

use crate::encode::{conform, schema};
use crate::sink::manifest::{sha256_hex, Input, Proof};

/// A rows digest in progress: a 256-bit sum, four big-endian 64-bit limbs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RowsDigest {
    limbs: [u64; 4],
}

impl RowsDigest {
    /// Add one row's hash.
    fn add_hash(&mut self, h: &[u8]) {
        let mut other = [0u64; 4];
        for (i, l) in other.iter_mut().enumerate() {
            *l = u64::from_be_bytes(h[8 * i..8 * i + 8].try_into().expect("32 bytes"));
        }
        self.add(&RowsDigest { limbs: other });
    }

    /// Add another digest (the union of both sets of rows).
    pub fn add(&mut self, o: &RowsDigest) {
        let mut carry = false;
        for i in (0..4).rev() {
            let (s, c1) = self.limbs[i].overflowing_add(o.limbs[i]);
            let (s, c2) = s.overflowing_add(u64::from(carry));
            self.limbs[i] = s;
            carry = c1 || c2;
        }
    }

    /// Subtract another digest (the rows of `self` without those of `o`).
    pub fn sub(&mut self, o: &RowsDigest) {
        let mut borrow = false;
        for i in (0..4).rev() {
            let (s, b1) = self.limbs[i].overflowing_sub(o.limbs[i]);
            let (s, b2) = s.overflowing_sub(u64::from(borrow));
            self.limbs[i] = s;
            borrow = b1 || b2;
        }
    }

    /// Add every row of a batch in the dataset's schema (see [`crate::encode::schema`]).
    pub fn add_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        let mut rows = vec![Vec::with_capacity(160); batch.num_rows()];
        for (field, col) in batch.schema().fields().iter().zip(batch.columns()) {
            match field.data_type() {
                DataType::Utf8 => {
                    let a = col.as_string::<i32>();
                    for (i, e) in rows.iter_mut().enumerate() {
                        string(e, a.is_valid(i).then(|| a.value(i)));
                    }
                }
                DataType::Timestamp(arrow_schema::TimeUnit::Millisecond, _) => {
                    let a = col.as_primitive::<TimestampMillisecondType>();
                    for (i, e) in rows.iter_mut().enumerate() {
                        if a.is_valid(i) {
                            e.push(1);
                            e.extend_from_slice(&a.value(i).to_be_bytes());
                        } else {
                            e.push(0);
                        }
                    }
                }
                DataType::List(_) => {
                    let a = col.as_list::<i32>();
                    for (i, e) in rows.iter_mut().enumerate() {
                        if !a.is_valid(i) {
                            e.push(0);
                            continue;
                        }
                        let items = a.value(i);
                        let items = items.as_string_opt::<i32>().ok_or_else(|| {
                            anyhow!("column {} is not a list of strings", field.name())
                        })?;
                        e.push(1);
                        e.extend_from_slice(&(items.len() as u32).to_be_bytes());
                        for j in 0..items.len() {
                            string(e, items.is_valid(j).then(|| items.value(j)));
                        }
                    }
                }
                other => bail!("column {} of type {other} has no rows digest", field.name()),
            }
        }
        for e in rows {
            self.add_hash(&Sha256::digest(&e));
        }
        Ok(())
    }

    /// 64 lowercase hex digits.
    pub fn hex(&self) -> String {
        self.limbs.iter().map(|l| format!("{l:016x}")).collect()
    }

    /// Parse [`RowsDigest::hex`]'s form (either case).
    pub fn parse(hex: &str) -> Option<RowsDigest> {
        if hex.len() != 64 || !hex.is_ascii() {
            return None;
        }
        let mut limbs = [0u64; 4];
        for (i, l) in limbs.iter_mut().enumerate() {
            *l = u64::from_str_radix(&hex[16 * i..16 * i + 16], 16).ok()?;
        }
        Some(RowsDigest { limbs })
    }

    pub fn is_zero(&self) -> bool {
        self.limbs == [0; 4]
    }
}

fn string(e: &mut Vec<u8>, v: Option<&str>) {
    match v {
        Some(s) => {
            e.push(1);
            e.extend_from_slice(&(s.len() as u32).to_be_bytes());
            e.extend_from_slice(s.as_bytes());
        }
        None => e.push(0),
    }
}

/// One Parquet file of the dataset, read a record batch at a time: its row count and rows
/// digest (a column an older file lacks counts as null).
pub fn file_rows_digest(bytes: bytes::Bytes, name: &str) -> Result<(u64, RowsDigest)> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .with_context(|| format!("reading {name}"))?
        .build()
        .with_context(|| format!("reading {name}"))?;
    let target = schema();
    let (mut rows, mut digest) = (0u64, RowsDigest::default());
    for batch in reader {
        let batch = conform(
            batch.with_context(|| format!("reading {name}"))?,
            &target,
            name,
        )?;
        rows += batch.num_rows() as u64;
        digest
            .add_batch(&batch)
            .with_context(|| format!("reading {name}"))?;
    }
    Ok((rows, digest))
}

/// One input file of a compaction, as read: what its manifest entry is checked against, and
/// its rows digest.
#[derive(Clone, Debug)]
pub struct InputRead {
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
    pub rows: u64,
    pub digest: RowsDigest,
}

/// Read one input file of a compaction (call it on a blocking thread).
pub fn read_input(path: &str, bytes: &bytes::Bytes) -> Result<InputRead> {
    let (rows, digest) = file_rows_digest(bytes.clone(), path)?;
    Ok(InputRead {
        path: path.to_string(),
        bytes: bytes.len() as u64,
        sha256: sha256_hex(bytes),
        rows,
        digest,
    })
}

/// The proof of a rewrite of `inputs` into `output` (its bytes, read back): the inputs, the
/// output's rows digest, and what the inputs hold that the output does not. An output holding
/// more rows than its inputs is an error.
pub fn prove(inputs: &[InputRead], output: bytes::Bytes, name: &str) -> Result<Proof> {
    let (out_rows, out_digest) = file_rows_digest(output, name)?;
    let mut removed = RowsDigest::default();
    let mut in_rows = 0u64;
    for i in inputs {
        removed.add(&i.digest);
        in_rows += i.rows;
    }
    removed.sub(&out_digest);
    let removed_rows = in_rows.checked_sub(out_rows).ok_or_else(|| {
        anyhow!("{name}: holds {out_rows} rows, more than the {in_rows} of its inputs")
    })?;
    let mut list: Vec<Input> = inputs
        .iter()
        .map(|i| Input {
            path: i.path.clone(),
            sha256: i.sha256.clone(),
            rows: i.rows,
        })
        .collect();
    list.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Proof {
        inputs: list,
        rows_sha256: out_digest.hex(),
        removed_rows,
        removed_rows_sha256: removed.hex(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::encode;
    use crate::model::{Session, SessionStatus};

    fn session(id: &str, user: Option<&str>, ips: Option<Vec<&str>>) -> Session {
        Session {
            portal_arn: "arn:aws:workspaces-web:us-east-1:123456789012:portal/p".into(),
            session_id: id.into(),
            username: user.map(str::to_string),
            status: SessionStatus::Terminated,
            start_ms: 1_795_651_200_000,
            end_ms: Some(1_795_651_260_000),
            client_ips: ips.map(|v| v.into_iter().map(str::to_string).collect()),
        }
    }

    fn digest_of(rows: &[Session]) -> RowsDigest {
        file_rows_digest(encode(rows, 1_795_700_000_000).unwrap().into(), "t")
            .unwrap()
            .1
    }

    /// E(row) and h(row) by hand for one row, the sum of two, and hex.
    #[test]
    fn the_digest_of_one_row_is_the_sha256_of_its_documented_encoding() {
        let s = session("s1", None, Some(vec!["10.0.0.1"]));
        let mut e = Vec::new();
        let str_ = |e: &mut Vec<u8>, v: &str| {
            e.push(1);
            e.extend_from_slice(&(v.len() as u32).to_be_bytes());
            e.extend_from_slice(v.as_bytes());
        };
        str_(&mut e, &s.portal_arn);
        str_(&mut e, "s1");
        e.push(0); // username
        str_(&mut e, "Terminated");
        for ms in [1_795_651_200_000i64, 1_795_651_260_000, 1_795_700_000_000] {
            e.push(1);
            e.extend_from_slice(&ms.to_be_bytes());
        }
        e.push(1);
        e.extend_from_slice(&1u32.to_be_bytes());
        str_(&mut e, "10.0.0.1");
        let want = crate::sink::manifest::sha256_hex(&e);
        assert_eq!(digest_of(std::slice::from_ref(&s)).hex(), want);
        assert_eq!(RowsDigest::default().hex(), "0".repeat(64));
    }

    #[test]
    fn it_is_order_independent_counts_repeats_and_sees_any_change() {
        let a = session("a", Some("u@example.com"), None);
        let b = session("b", None, Some(vec!["10.0.0.1", "203.0.113.9"]));
        let ab = digest_of(&[a.clone(), b.clone()]);
        assert_eq!(ab, digest_of(&[b.clone(), a.clone()]));
        let mut sum = digest_of(std::slice::from_ref(&a));
        sum.add(&digest_of(std::slice::from_ref(&b)));
        assert_eq!(ab, sum, "the digest of two files adds up");
        assert_ne!(ab, digest_of(&[a.clone(), b.clone(), b.clone()]));
        let mut changed = b.clone();
        changed.client_ips = Some(vec!["10.0.0.1".into(), "203.0.113.8".into()]);
        assert_ne!(ab, digest_of(&[a.clone(), changed]));
        // An empty list is not a null list; an empty username is not a null one.
        let mut empty = b.clone();
        empty.client_ips = Some(vec![]);
        let mut none = b.clone();
        none.client_ips = None;
        assert_ne!(digest_of(&[empty]), digest_of(&[none]));
        let mut sub = ab;
        sub.sub(&digest_of(std::slice::from_ref(&a)));
        assert_eq!(sub, digest_of(&[b]));
        assert_eq!(RowsDigest::parse(&ab.hex()), Some(ab));
        assert_eq!(RowsDigest::parse("xyz"), None);
    }

    /// What compaction refuses (a changed row: same count, other digest) and what a repair
    /// records (removed rows and their digest).
    #[test]
    fn a_proof_tells_removed_and_changed_rows() {
        let at = 1_795_700_000_000;
        let (a, b) = (session("a", None, None), session("b", Some("u"), None));
        let file = |rows: &[Session]| bytes::Bytes::from(encode(rows, at).unwrap());
        let inputs = [
            read_input("x/2.parquet", &file(std::slice::from_ref(&b))).unwrap(),
            read_input("x/1.parquet", &file(std::slice::from_ref(&a))).unwrap(),
        ];
        let same = prove(&inputs, file(&[b.clone(), a.clone()]), "out").unwrap();
        assert_eq!(same.removed_rows, 0);
        assert!(RowsDigest::parse(&same.removed_rows_sha256)
            .unwrap()
            .is_zero());
        assert_eq!(same.rows_sha256, digest_of(&[a.clone(), b.clone()]).hex());
        assert_eq!(same.inputs[0].path, "x/1.parquet", "sorted by path");
        assert_eq!(same.inputs[1].rows, 1);
        assert_eq!(same.inputs[1].sha256.len(), 64);

        let dropped = prove(&inputs, file(std::slice::from_ref(&a)), "out").unwrap();
        assert_eq!(dropped.removed_rows, 1);
        assert_eq!(
            dropped.removed_rows_sha256,
            digest_of(std::slice::from_ref(&b)).hex()
        );

        let mut changed = b.clone();
        changed.end_ms = Some(changed.end_ms.unwrap() + 1);
        let changed = prove(&inputs, file(&[a.clone(), changed]), "out").unwrap();
        assert_eq!(changed.removed_rows, 0);
        assert!(!RowsDigest::parse(&changed.removed_rows_sha256)
            .unwrap()
            .is_zero());

        assert!(prove(&inputs, file(&[a.clone(), b.clone(), b]), "out").is_err());
    }

    #[test]
    fn the_sum_wraps_modulo_2_to_the_256() {
        let mut max = RowsDigest::parse(&"f".repeat(64)).unwrap();
        max.add(&RowsDigest::parse(&format!("{:064x}", 2)).unwrap());
        assert_eq!(max.hex(), format!("{:064x}", 1));
        max.sub(&RowsDigest::parse(&format!("{:064x}", 2)).unwrap());
        assert_eq!(max.hex(), "f".repeat(64));
    }
}
