//! lakemeans: k-means for data-lake feature tables.
//!
//! The layers, from the outside in: [`io`] reads Parquet into a [`data::Dataset`] and writes
//! results back; [`prep`] scales features; [`kmeans`] is the algorithm, written once against the
//! [`backend::Backend`] trait; [`backend`] holds the CPU and GPU implementations; [`model`] is
//! the saved model; [`report`] the summaries; [`insight`] profiles, quality metrics, segment
//! comparison and the choice of k; [`campaign`] audience exports and refits with stable segment
//! ids; [`html`] the self-contained reports; [`cli`] the command line.
//!
//! ```
//! use lakemeans::backend::cpu::CpuBackend;
//! use lakemeans::data::Dataset;
//! use lakemeans::kmeans::{self, KMeansParams, Quiet};
//!
//! // Two obvious groups on a line.
//! let data = Dataset::from_rows(1, vec![0.0, 0.1, 0.2, 10.0, 10.1, 10.2], None);
//! let mut backend = CpuBackend::new(&data);
//! let fit = kmeans::fit(&data, &mut backend, &KMeansParams::new(2), &Quiet).unwrap();
//! let labels = &fit.assignment.labels;
//! assert_eq!(labels[0], labels[2]);
//! assert_ne!(labels[0], labels[3]);
//! assert!((fit.inertia - 0.04).abs() < 1e-6);
//! ```

pub mod backend;
pub mod bench;
pub mod campaign;
pub mod cli;
pub mod data;
pub mod error;
pub mod exact;
pub mod html;
pub mod insight;
pub mod io;
pub mod job;
pub mod kmeans;
pub mod model;
pub mod passes;
pub mod prep;
pub mod report;
pub mod rng;
pub mod synth;

pub use error::{Error, Result};
