//! Parquet in and out, through Arrow.

pub mod cleanup;
pub mod delta;
pub mod partition;
pub mod paths;
pub mod reader;
pub mod results;
pub mod source;
pub mod spill;
pub mod store;
pub mod writer;

pub use partition::Filter;
pub use paths::Paths;
pub use reader::{ReadOptions, Table, read_centroids, read_table, resolve_inputs, resolve_table};
pub use source::Source;
pub use writer::{Outputs, check_target};
