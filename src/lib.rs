//! lakemeans: k-means for data-lake feature tables.
//!
//! The layers, from the outside in: [`io`] reads Parquet into a [`data::Dataset`] and writes
//! results back; [`prep`] scales features; [`kmeans`] is the algorithm, written once against the
//! [`backend::Backend`] trait; [`backend`] holds the CPU and GPU implementations; [`model`] is
//! the saved model; [`report`] the summaries; [`cli`] the command line.

pub mod backend;
pub mod cli;
pub mod data;
pub mod error;
pub mod io;
pub mod kmeans;
pub mod model;
pub mod prep;
pub mod report;
pub mod rng;
pub mod synth;

pub use error::{Error, Result};
