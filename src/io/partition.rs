//! Hive-style partitions and `--filter`: the columns a lake table keeps in its directory
//! names (`table/country=NL/month=3/part-0.parquet`), and the predicates that prune whole
//! directories by them, skip row groups by their statistics, and drop the rows that remain
//! but do not match.
//!
//! A predicate is `col = v`, `col != v` or `col in (a, b, ...)`. Numeric columns compare as
//! numbers (`month=03` matches `month = 3`), everything else as its text. A null never
//! matches, as in SQL: not `=`, not `!=`, not `in`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Float64Type;
use arrow_array::{Array, ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray};
use arrow_schema::{DataType, Field};

use crate::error::{Error, Result};

/// The directory name Hive and Spark write for a null partition value.
pub const HIVE_NULL: &str = "__HIVE_DEFAULT_PARTITION__";

/// One input file and the partition values its path gives, in path order.
#[derive(Debug, Clone)]
pub struct InputFile {
    pub path: PathBuf,
    /// `(key, value)` from each `key=value` directory below the input path; `None` for
    /// [`HIVE_NULL`].
    pub partitions: Vec<(String, Option<String>)>,
}

/// The `key=value` segments of `file`'s directories below `root`.
pub fn partition_values(root: &Path, file: &Path) -> Vec<(String, Option<String>)> {
    let Ok(rel) = file.strip_prefix(root) else {
        return Vec::new();
    };
    let Some(dirs) = rel.parent() else {
        return Vec::new();
    };
    dirs.components()
        .filter_map(|c| {
            let seg = c.as_os_str().to_string_lossy();
            let (k, v) = seg.split_once('=')?;
            if k.is_empty() {
                return None;
            }
            let v = unescape(v);
            Some((unescape(k), (v != HIVE_NULL).then_some(v)))
        })
        .collect()
}

/// Undoes the `%XX` escapes of special characters in Hive path segments and Delta paths.
pub(crate) fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(x) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(x);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The partition columns of a table: their names, their types and each file's values.
#[derive(Debug, Clone, Default)]
pub struct Partitions {
    pub fields: Vec<Field>,
    /// Per file, one single-row array per field.
    values: Vec<Vec<ArrayRef>>,
}

impl Partitions {
    /// Types every key by the values seen: integer when all parse as integers, float when
    /// all parse as numbers, string otherwise. Every file must have the same keys, in the same
    /// order.
    pub fn of(files: &[InputFile]) -> Result<Partitions> {
        let Some(first) = files.first() else {
            return Ok(Partitions::default());
        };
        let keys: Vec<&String> = first.partitions.iter().map(|(k, _)| k).collect();
        for f in files {
            let these: Vec<&String> = f.partitions.iter().map(|(k, _)| k).collect();
            if these != keys {
                let show = |k: &[&String]| {
                    if k.is_empty() {
                        "none".to_string()
                    } else {
                        k.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                    }
                };
                return Err(Error::input(
                    &f.path,
                    format!(
                        "partition directories differ: this file's are {}, but {} has {}",
                        show(&these),
                        first.path.display(),
                        show(&keys)
                    ),
                ));
            }
        }
        let mut fields = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let vals = files.iter().filter_map(|f| f.partitions[i].1.as_deref());
            let ty = infer_type(vals);
            fields.push(Field::new(k.as_str(), ty, true));
        }
        let mut parts = Partitions {
            fields,
            values: Vec::new(),
        };
        parts.values = files.iter().map(|f| parts.values_of(f)).collect();
        Ok(parts)
    }

    /// One single-row array per partition column, typed as this table types them.
    fn values_of(&self, f: &InputFile) -> Vec<ArrayRef> {
        self.fields
            .iter()
            .zip(&f.partitions)
            .map(|(fd, (_, v))| constant(fd.data_type(), v.as_deref(), 1))
            .collect()
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.fields.iter().map(|f| f.name())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.fields.iter().any(|f| f.name() == name)
    }

    /// File `file`'s value of partition column `i`, repeated `rows` times.
    pub fn column(&self, file: usize, i: usize, rows: usize) -> ArrayRef {
        let one = &self.values[file][i];
        if rows == 1 {
            return one.clone();
        }
        let idx = arrow_array::UInt32Array::from(vec![0u32; rows]);
        // Taking index 0 `rows` times cannot fail on a one-row array.
        arrow_select::take::take(one.as_ref(), &idx, None)
            .unwrap_or_else(|_| arrow_array::new_null_array(one.data_type(), rows))
    }

    /// Whether file `file` can hold rows matching every filter on a partition column.
    pub fn keeps(&self, file: usize, filters: &[Filter]) -> Result<bool> {
        for f in filters {
            if let Some(i) = self.fields.iter().position(|fd| fd.name() == &f.column) {
                let m = f.matches(&self.values[file][i])?;
                if !m.value(0) || m.is_null(0) {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// Drops the files no row of which can match `filters`, before anything is opened.
    pub fn prune(files: Vec<InputFile>, filters: &[Filter]) -> Result<(Vec<InputFile>, Self)> {
        let all = Partitions::of(&files)?;
        for f in filters {
            if all.contains(&f.column) {
                f.check_values(all.fields.iter().find(|fd| fd.name() == &f.column))?;
            }
        }
        let mut kept = Vec::new();
        for (i, f) in files.into_iter().enumerate() {
            if all.keeps(i, filters)? {
                kept.push(f);
            }
        }
        // Types come from every value seen, not only the kept ones, so a filter does not
        // change a column's type.
        let values = kept.iter().map(|f| all.values_of(f)).collect();
        let parts = Partitions {
            fields: all.fields,
            values,
        };
        Ok((kept, parts))
    }
}

fn infer_type<'a>(vals: impl Iterator<Item = &'a str> + Clone) -> DataType {
    if vals.clone().all(|v| v.parse::<i64>().is_ok()) {
        DataType::Int64
    } else if vals.clone().all(|v| v.parse::<f64>().is_ok()) {
        DataType::Float64
    } else {
        DataType::Utf8
    }
}

/// `value` parsed as `ty`, repeated `rows` times; `None` is null.
fn constant(ty: &DataType, value: Option<&str>, rows: usize) -> ArrayRef {
    match (ty, value) {
        (DataType::Int64, Some(v)) => Arc::new(Int64Array::from(vec![v.parse::<i64>().ok(); rows])),
        (DataType::Float64, Some(v)) => {
            Arc::new(Float64Array::from(vec![v.parse::<f64>().ok(); rows]))
        }
        (_, Some(v)) => Arc::new(StringArray::from(vec![Some(v); rows])),
        (t, None) => arrow_array::new_null_array(t, rows),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    In,
}

/// One `--filter` predicate.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    pub column: String,
    pub op: Op,
    pub values: Vec<String>,
}

impl std::str::FromStr for Filter {
    type Err = Error;

    fn from_str(s: &str) -> Result<Filter> {
        let bad = |why: &str| {
            Error::Usage(format!(
                "--filter '{s}': {why}; expected col=value, col!=value or col in (a,b)"
            ))
        };
        let unquote = |v: &str| {
            let v = v.trim();
            let q = v.len() >= 2
                && ((v.starts_with('\'') && v.ends_with('\''))
                    || (v.starts_with('"') && v.ends_with('"')));
            if q { &v[1..v.len() - 1] } else { v }.to_string()
        };
        let (column, op, rest) = if let Some((c, v)) = s.split_once("!=") {
            (c, Op::Ne, v)
        } else if let Some((c, v)) = s.split_once('=') {
            (c, Op::Eq, v)
        } else {
            let lower = s.to_ascii_lowercase();
            let at = lower.find(" in ").ok_or_else(|| bad("no operator"))?;
            (&s[..at], Op::In, &s[at + 4..])
        };
        let column = unquote(column);
        if column.is_empty() {
            return Err(bad("no column"));
        }
        let values: Vec<String> = if op == Op::In {
            let r = rest.trim();
            let inner = r
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(|| bad("the values of 'in' go in parentheses"))?;
            inner.split(',').map(unquote).collect()
        } else {
            vec![unquote(rest)]
        };
        if values.iter().any(String::is_empty) {
            return Err(bad("an empty value"));
        }
        Ok(Filter { column, op, values })
    }
}

impl std::fmt::Display for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.op {
            Op::Eq => write!(f, "{}={}", self.column, self.values[0]),
            Op::Ne => write!(f, "{}!={}", self.column, self.values[0]),
            Op::In => write!(f, "{} in ({})", self.column, self.values.join(",")),
        }
    }
}

impl Filter {
    /// Numeric values must be numbers for a numeric column: says so before any reading.
    pub fn check_values(&self, field: Option<&Field>) -> Result<()> {
        if let Some(f) = field
            && f.data_type().is_numeric()
        {
            self.numbers()?;
        }
        Ok(())
    }

    fn numbers(&self) -> Result<Vec<f64>> {
        self.values
            .iter()
            .map(|v| {
                v.parse::<f64>().map_err(|_| {
                    Error::Usage(format!(
                        "--filter: column '{}' holds numbers, and '{v}' is not one",
                        self.column
                    ))
                })
            })
            .collect()
    }

    /// Which rows of `col` match (false for nulls).
    pub fn matches(&self, col: &ArrayRef) -> Result<BooleanArray> {
        let hit = |found: bool| match self.op {
            Op::Eq | Op::In => found,
            Op::Ne => !found,
        };
        if col.data_type().is_numeric() {
            let want = self.numbers()?;
            let cast = arrow_cast::cast(col, &DataType::Float64)
                .map_err(|e| Error::Usage(format!("--filter on '{}': {e}", self.column)))?;
            let a = cast.as_primitive::<Float64Type>();
            Ok(a.iter()
                .map(|v| Some(v.is_some_and(|x| hit(want.contains(&x)))))
                .collect())
        } else {
            let cast = arrow_cast::cast(col, &DataType::Utf8).map_err(|_| {
                Error::Usage(format!(
                    "--filter: column '{}' is {}, which cannot be compared",
                    self.column,
                    col.data_type()
                ))
            })?;
            let a = cast.as_string::<i32>();
            Ok(a.iter()
                .map(|v| Some(v.is_some_and(|x| hit(self.values.iter().any(|w| w == x)))))
                .collect())
        }
    }

    /// Whether a row group whose column lies within `[min, max]` may hold a matching row;
    /// `true` when the statistics cannot tell.
    pub fn may_match(&self, min: &ArrayRef, max: &ArrayRef, i: usize) -> bool {
        if min.is_null(i) || max.is_null(i) {
            return true;
        }
        if min.data_type().is_numeric() {
            let (Ok(lo), Ok(hi), Ok(want)) = (
                arrow_cast::cast(min, &DataType::Float64),
                arrow_cast::cast(max, &DataType::Float64),
                self.numbers(),
            ) else {
                return true;
            };
            let (lo, hi) = (
                lo.as_primitive::<Float64Type>().value(i),
                hi.as_primitive::<Float64Type>().value(i),
            );
            return match self.op {
                Op::Eq | Op::In => want.iter().any(|&v| lo <= v && v <= hi),
                Op::Ne => !(lo == hi && want.contains(&lo)),
            };
        }
        if matches!(min.data_type(), DataType::Utf8 | DataType::LargeUtf8) {
            let (Ok(lo), Ok(hi)) = (
                arrow_cast::cast(min, &DataType::Utf8),
                arrow_cast::cast(max, &DataType::Utf8),
            ) else {
                return true;
            };
            let (lo, hi) = (
                lo.as_string::<i32>().value(i),
                hi.as_string::<i32>().value(i),
            );
            return match self.op {
                Op::Eq | Op::In => self
                    .values
                    .iter()
                    .any(|v| lo <= v.as_str() && v.as_str() <= hi),
                Op::Ne => !(lo == hi && self.values.iter().any(|v| v == lo)),
            };
        }
        true
    }
}

/// Rows matching every filter of `filters` that `col_of` can give a column for.
pub fn row_mask(
    filters: &[Filter],
    rows: usize,
    col_of: &dyn Fn(&str) -> Option<ArrayRef>,
) -> Result<Option<BooleanArray>> {
    let mut mask: Option<BooleanArray> = None;
    for f in filters {
        let Some(col) = col_of(&f.column) else {
            continue;
        };
        let m = f.matches(&col)?;
        mask = Some(match mask {
            None => m,
            Some(prev) => prev
                .iter()
                .zip(m.iter())
                .map(|(a, b)| Some(a == Some(true) && b == Some(true)))
                .collect(),
        });
    }
    Ok(mask.filter(|m| m.true_count() < rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_forms() {
        let f: Filter = "country=NL".parse().unwrap();
        assert_eq!(
            (f.column.as_str(), f.op, f.values.clone()),
            ("country", Op::Eq, vec!["NL".to_string()])
        );
        let f: Filter = "country != 'NL'".parse().unwrap();
        assert_eq!((f.column.as_str(), f.op), ("country", Op::Ne));
        assert_eq!(f.values, vec!["NL"]);
        let f: Filter = "country in (NL, BE)".parse().unwrap();
        assert_eq!(f.op, Op::In);
        assert_eq!(f.values, vec!["NL", "BE"]);
        assert!("country".parse::<Filter>().is_err());
        assert!("country in NL".parse::<Filter>().is_err());
    }

    #[test]
    fn reads_partition_segments_below_the_root() {
        let v = partition_values(
            Path::new("/t"),
            Path::new("/t/country=NL/month=03/x=__HIVE_DEFAULT_PARTITION__/p.parquet"),
        );
        assert_eq!(
            v,
            vec![
                ("country".into(), Some("NL".into())),
                ("month".into(), Some("03".into())),
                ("x".into(), None)
            ]
        );
        assert_eq!(unescape("a%2Fb"), "a/b");
    }

    #[test]
    fn nulls_never_match() {
        let col: ArrayRef = Arc::new(StringArray::from(vec![Some("NL"), None, Some("BE")]));
        let ne: Filter = "c!=NL".parse().unwrap();
        let m = ne.matches(&col).unwrap();
        assert_eq!(
            m.iter().collect::<Vec<_>>(),
            vec![Some(false), Some(false), Some(true)]
        );
        let col: ArrayRef = Arc::new(Int64Array::from(vec![Some(3), None]));
        let eq: Filter = "m=03".parse().unwrap();
        let m = eq.matches(&col).unwrap();
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![Some(true), Some(false)]);
    }
}
