//! Rows → Parquet bytes (and several files → one, for compaction): the dataset's schema, zstd, dictionaries for the low-cardinality
//! strings, column-chunk statistics, and no page or offset index (parquet-mr and Trino readers
//! were reported to misread parquet-rs page indexes: arrow-rs #10316).

use std::sync::{Arc, OnceLock};

use anyhow::{bail, Context, Result};
use arrow_array::builder::{ListBuilder, StringBuilder, TimestampMillisecondBuilder};
use arrow_array::{new_null_array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::model::Session;

/// `created_by` in every file's footer. The `<app> version <semver> (build <x>)` shape is the
/// one parquet-mr's version parser understands.
pub const CREATED_BY: &str = concat!(
    "archiver version ",
    env!("CARGO_PKG_VERSION"),
    " (build parquet-rs)"
);

/// The element of the `client_ip_addresses` list, named as the Parquet spec's 3-level list.
fn ip_element() -> Arc<Field> {
    Arc::new(Field::new("element", DataType::Utf8, true))
}

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

/// The dataset's columns. Partition keys (`portal_id`, `start_date`) live in the path only.
/// Strings are plain `Utf8` for readers; the low-cardinality ones are dictionary-encoded
/// inside the Parquet pages (see [`properties`]).
pub fn schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                Field::new("portal_arn", DataType::Utf8, false),
                Field::new("session_id", DataType::Utf8, false),
                Field::new("username", DataType::Utf8, true),
                Field::new("status", DataType::Utf8, false),
                Field::new("start_time", ts(), false),
                Field::new("end_time", ts(), true),
                Field::new("archived_at", ts(), false),
                // Null unless archived with --with-client-ips.
                Field::new("client_ip_addresses", DataType::List(ip_element()), true),
            ]))
        })
        .clone()
}

/// The writer settings of every file of the dataset.
pub fn writer_properties() -> WriterProperties {
    let plain = |name: &str| ColumnPath::from(name);
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(3).expect("valid level"),
        ))
        .set_dictionary_enabled(true)
        .set_column_dictionary_enabled(plain("session_id"), false)
        .set_column_dictionary_enabled(plain("start_time"), false)
        .set_column_dictionary_enabled(plain("end_time"), false)
        .set_column_dictionary_enabled(plain("archived_at"), false)
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_offset_index_disabled(true)
        .set_created_by(CREATED_BY.to_string())
        .build()
}

/// One RecordBatch of the dataset's schema.
pub fn record_batch(rows: &[Session], archived_at_ms: i64) -> Result<RecordBatch> {
    let n = rows.len();
    let mut arn = StringBuilder::with_capacity(n, n * 80);
    let mut id = StringBuilder::with_capacity(n, n * 36);
    let mut user = StringBuilder::with_capacity(n, n * 24);
    let mut status = StringBuilder::with_capacity(n, n * 10);
    let mut start = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut end = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut archived = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut ips = ListBuilder::new(StringBuilder::new()).with_field(ip_element());
    for s in rows {
        arn.append_value(&s.portal_arn);
        id.append_value(&s.session_id);
        user.append_option(s.username.as_deref());
        status.append_value(s.status.as_str());
        start.append_value(s.start_ms);
        end.append_option(s.end_ms);
        archived.append_value(archived_at_ms);
        match &s.client_ips {
            Some(list) => {
                for ip in list {
                    ips.values().append_value(ip);
                }
                ips.append(true);
            }
            None => ips.append(false),
        }
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(arn.finish()),
        Arc::new(id.finish()),
        Arc::new(user.finish()),
        Arc::new(status.finish()),
        Arc::new(start.finish()),
        Arc::new(end.finish()),
        Arc::new(archived.finish()),
        Arc::new(ips.finish()),
    ];
    RecordBatch::try_new(schema(), columns).context("building a record batch")
}

/// Rows handed to the Parquet writer at a time: bounds the Arrow copy of the rows, whatever
/// the file's size (the row group still spans the whole file).
const CHUNK_ROWS: usize = 8192;

/// Encode rows as one complete Parquet file, in memory.
pub fn encode(rows: &[Session], archived_at_ms: i64) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(rows.len() * 40 + 4096);
    let mut writer = ArrowWriter::try_new(&mut out, schema(), Some(writer_properties()))
        .context("starting a parquet writer")?;
    for chunk in rows.chunks(CHUNK_ROWS) {
        writer
            .write(&record_batch(chunk, archived_at_ms)?)
            .context("encoding parquet")?;
    }
    writer.close().context("finishing parquet")?;
    Ok(out)
}

/// The batches of one Parquet file, each in the current schema: a column an older file lacks
/// becomes nulls; a column of another type is an error naming the file.
pub fn read_in_schema(bytes: Vec<u8>, name: &str) -> Result<Vec<RecordBatch>> {
    let target = schema();
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
        .with_context(|| format!("reading {name}"))?
        .build()?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.with_context(|| format!("reading {name}"))?;
        out.push(conform(batch, &target, name)?);
    }
    Ok(out)
}

/// One batch of file `name` in the `target` schema: a column an older file lacks becomes
/// nulls; a column of another type is an error naming the file.
pub fn conform(batch: RecordBatch, target: &SchemaRef, name: &str) -> Result<RecordBatch> {
    let n = batch.num_rows();
    let columns = target
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) if c.data_type() == f.data_type() => Ok(c.clone()),
            Some(c) => bail!(
                "{name}: column {} is {}, expected {}",
                f.name(),
                c.data_type(),
                f.data_type()
            ),
            None if f.is_nullable() => Ok(new_null_array(f.data_type(), n)),
            None => bail!("{name}: no column {}", f.name()),
        })
        .collect::<Result<Vec<ArrayRef>>>()?;
    Ok(RecordBatch::try_new(target.clone(), columns)?)
}

/// Re-encode several files as one, column by column into the current schema (a column an
/// older file lacks becomes nulls). Checks that every row made it.
pub fn rewrite(inputs: Vec<Vec<u8>>, names: &[String]) -> Result<(Vec<u8>, u64)> {
    let target = schema();
    let mut out = Vec::new();
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(&mut out, target.clone(), Some(writer_properties()))?;
    let mut rows_in = 0u64;
    for (bytes, name) in inputs.into_iter().zip(names) {
        for batch in read_in_schema(bytes, name)? {
            rows_in += batch.num_rows() as u64;
            writer.write(&batch)?;
        }
    }
    let meta = writer.close()?;
    let rows_out = meta.file_metadata().num_rows() as u64;
    if rows_out != rows_in {
        bail!("compaction wrote {rows_out} rows of {rows_in}");
    }
    if rows_in == 0 {
        tracing::warn!("compacting files with no rows");
    }
    Ok((out, rows_out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SessionStatus;
    use arrow_array::cast::AsArray;
    use arrow_array::types::TimestampMillisecondType;
    use arrow_array::Array;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::basic::{LogicalType, TimeUnit as PqUnit, TimestampType};
    use parquet::file::reader::{FileReader, SerializedFileReader};

    fn rows() -> Vec<Session> {
        (0..20_000)
            .map(|i| Session {
                portal_arn: "arn:aws:workspaces-web:us-east-1:123456789012:portal/p".into(),
                session_id: format!("{i:036}"),
                username: (i % 10 != 0).then(|| format!("user{}@example.com", i % 7)),
                status: SessionStatus::Terminated,
                start_ms: 1_700_000_000_000 + i * 1000,
                end_ms: (i % 3 != 0).then_some(1_700_000_000_000 + i * 2000),
                client_ips: (i % 2 == 0)
                    .then(|| vec![format!("10.0.0.{}", i % 250), "203.0.113.9".into()]),
            })
            .collect()
    }

    #[test]
    fn round_trip_keeps_rows_and_schema() {
        let rows = rows();
        let bytes = encode(&rows, 42).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
            .unwrap()
            .build()
            .unwrap();
        let mut n = 0;
        for batch in reader {
            let batch = batch.unwrap();
            let ids = batch.column(1).as_string::<i32>();
            let starts = batch.column(4).as_primitive::<TimestampMillisecondType>();
            let ends = batch.column(5).as_primitive::<TimestampMillisecondType>();
            let ips = batch.column(7).as_list::<i32>();
            for i in 0..batch.num_rows() {
                let want = &rows[n];
                assert_eq!(ids.value(i), want.session_id);
                assert_eq!(starts.value(i), want.start_ms);
                assert_eq!(ends.is_null(i), want.end_ms.is_none());
                let got: Option<Vec<String>> = (!ips.is_null(i)).then(|| {
                    ips.value(i)
                        .as_string::<i32>()
                        .iter()
                        .map(|v| v.unwrap().to_string())
                        .collect()
                });
                assert_eq!(got, want.client_ips);
                n += 1;
            }
        }
        assert_eq!(n, rows.len());
        assert!(
            rows.len() > CHUNK_ROWS * 2,
            "the round trip must span several chunks"
        );
    }

    #[test]
    fn footer_has_millis_utc_zstd_chunk_stats_and_no_page_index() {
        let bytes = bytes::Bytes::from(encode(&rows(), 42).unwrap());
        let reader = SerializedFileReader::new(bytes).unwrap();
        let meta = reader.metadata();
        assert_eq!(meta.num_row_groups(), 1, "one row group per file");
        assert_eq!(meta.file_metadata().created_by(), Some(CREATED_BY));
        assert!(meta.page_index().is_none());
        let schema = meta.file_metadata().schema_descr();
        for name in ["start_time", "end_time", "archived_at"] {
            let col = schema.columns().iter().find(|c| c.name() == name).unwrap();
            assert_eq!(
                col.logical_type_ref(),
                Some(&LogicalType::Timestamp(TimestampType {
                    is_adjusted_to_u_t_c: true,
                    unit: PqUnit::MILLIS
                })),
                "{name}"
            );
        }
        for rg in meta.row_groups() {
            for c in rg.columns() {
                assert!(
                    matches!(c.compression(), Compression::ZSTD(_)),
                    "{:?}",
                    c.column_path()
                );
                assert!(c.statistics().is_some(), "{:?}", c.column_path());
                assert!(c.column_index_offset().is_none(), "{:?}", c.column_path());
                assert!(c.offset_index_offset().is_none(), "{:?}", c.column_path());
            }
        }
    }
}
