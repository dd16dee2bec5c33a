//! Small files → large ones, and removal of files no version references any more.

use deltalake::operations::optimize::OptimizeType;

use crate::compact::{CompactOptions, writer_properties};
use crate::{Error, Lake, Result};

/// What an optimize run did.
#[derive(Clone, Debug, Default)]
pub struct OptimizeReport {
    pub table: String,
    pub files_removed: u64,
    pub files_added: u64,
}

/// Bin-packs the files of `table` towards `opts.target_file_size` bytes (Delta OPTIMIZE), written
/// with compaction's layout (zstd level, row-group size, bloom filters); readers keep seeing a
/// consistent version throughout.
pub async fn optimize(lake: &Lake, table: &str, opts: &CompactOptions) -> Result<OptimizeReport> {
    let Some(t) = lake.table(table).await? else {
        return Ok(OptimizeReport {
            table: table.to_owned(),
            ..Default::default()
        });
    };
    let (_, metrics) = t
        .optimize()
        .with_type(OptimizeType::Compact)
        .with_target_size(
            std::num::NonZeroU64::new(opts.target_file_size).unwrap_or(std::num::NonZeroU64::MIN),
        )
        .with_writer_properties(writer_properties(opts)?)
        .await
        .map_err(|source| Error::delta(table, source))?;
    Ok(OptimizeReport {
        table: table.to_owned(),
        files_removed: metrics.num_files_removed,
        files_added: metrics.num_files_added,
    })
}
