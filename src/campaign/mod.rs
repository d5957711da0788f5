//! From segments to campaigns: audience files for ad platforms ([`export`]), and refits that
//! keep segment ids stable from run to run, with a drift report ([`refit`], [`drift`]).
//!
//! The steps read feature tables only through [`source`], and assignments through
//! [`assignments`]; outputs appear atomically (a directory through [`outdir`], files through
//! [`crate::io::Outputs`]).

pub mod assignments;
pub mod drift;
pub mod export;
pub mod matching;
pub mod normalize;
pub mod outdir;
pub mod refit;
pub mod source;
