//! The HTML reports render in a real browser: headless Chromium takes a screenshot, which must
//! not be blank, and the page must carry its charts and load nothing from the network.
//!
//! Chromium must be installed (scripts/test.sh installs Debian's `chromium`); without it these
//! tests fail and say so.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn chromium() -> PathBuf {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if let Ok(o) = Command::new("which").arg(name).output()
            && o.status.success()
        {
            return PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
        }
    }
    panic!(
        "headless Chromium is needed to check the HTML report but none was found on PATH \
         (install Debian's `chromium`, as scripts/test.sh does)"
    );
}

/// Screenshots `html` at 1400×3000 and returns the PNG's path.
fn screenshot(html: &Path, dir: &Path) -> PathBuf {
    let png = dir.join(format!(
        "{}.png",
        html.file_stem().unwrap().to_string_lossy()
    ));
    let profile = tempfile::tempdir().unwrap();
    let o = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg("--window-size=1400,3000")
        .arg(format!("file://{}", html.canonicalize().unwrap().display()))
        .output()
        .expect("run chromium");
    assert!(
        png.exists(),
        "chromium wrote no screenshot: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    png
}

/// Fraction of pixels that are clearly darker than the page background, and the number of
/// strongly coloured ones (only the charts and swatches are coloured).
fn ink(png: &Path) -> (f64, usize) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    assert!(
        channels >= 3,
        "unexpected PNG colour type {:?}",
        info.color_type
    );
    let px = &buf[..info.buffer_size()];
    let (mut ink, mut colour, mut total) = (0usize, 0usize, 0usize);
    for p in px.chunks_exact(channels) {
        total += 1;
        if p[..3].iter().any(|&c| c < 200) {
            ink += 1;
        }
        let (lo, hi) = (p[..3].iter().min().unwrap(), p[..3].iter().max().unwrap());
        if hi - lo > 60 {
            colour += 1;
        }
    }
    (ink as f64 / total as f64, colour)
}

fn check_html(html: &Path, min_svgs: usize, must_have: &[&str]) -> String {
    let text = std::fs::read_to_string(html).unwrap();
    assert!(text.starts_with("<!DOCTYPE html>"));
    let svgs = text.matches("<svg").count();
    assert!(
        svgs >= min_svgs,
        "{svgs} charts, expected at least {min_svgs}"
    );
    for needle in must_have {
        assert!(text.contains(needle), "report lacks {needle:?}");
    }
    // Self-contained: no resource of any kind is fetched, not even the SVG namespace URL.
    for bad in ["http://", "https://", "<script", "<link", "@import", "url("] {
        assert!(!text.contains(bad), "report contains {bad:?}");
    }
    text
}

fn audience(dir: &Path) -> PathBuf {
    let input = dir.join("audience.parquet");
    let o = lakemeans(&[
        "gen",
        "--rows",
        "3000",
        "--features",
        "4",
        "--clusters",
        "4",
        "--seed",
        "3",
        "--output",
        s(&input),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    input
}

#[test]
fn fit_report_renders_in_chromium() {
    let dir = tmpdir();
    let input = audience(dir.path());
    let html = dir.path().join("report.html");
    let o = lakemeans(&[
        "fit",
        s(&input),
        "--k",
        "4",
        "--exclude",
        "customer_id",
        "--compare-with",
        "label",
        "--metrics",
        "--report",
        s(&html),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = check_html(
        &html,
        3,
        &[
            "Cluster sizes",
            "Feature z-scores per cluster",
            "PCA projection",
            "Cluster profiles",
            "Clusters against label",
            "Adjusted Rand Index",
            "silhouette",
        ],
    );
    // A dot per sampled row in the projection.
    assert!(text.matches("<circle").count() >= 2000);
    let png = screenshot(&html, dir.path());
    let (ink, colour) = ink(&png);
    eprintln!(
        "fit report: {:.1}% ink, {colour} coloured pixels",
        100.0 * ink
    );
    assert!(
        ink > 0.03,
        "screenshot is nearly blank ({:.2}% ink)",
        100.0 * ink
    );
    assert!(
        colour > 50_000,
        "charts missing from the screenshot ({colour} coloured pixels)"
    );
}

#[test]
fn sweep_report_renders_in_chromium() {
    let dir = tmpdir();
    let input = audience(dir.path());
    let html = dir.path().join("sweep.html");
    let o = lakemeans(&[
        "sweep",
        s(&input),
        "--k",
        "2..6",
        "--exclude",
        "customer_id,label",
        "--report",
        s(&html),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    check_html(
        &html,
        4,
        &[
            "Elbow: inertia",
            "Silhouette",
            "Calinski-Harabasz",
            "Davies-Bouldin",
            "recommended k",
        ],
    );
    let png = screenshot(&html, dir.path());
    let (ink, colour) = ink(&png);
    eprintln!(
        "sweep report: {:.1}% ink, {colour} coloured pixels",
        100.0 * ink
    );
    assert!(
        ink > 0.005,
        "screenshot is nearly blank ({:.2}% ink)",
        100.0 * ink
    );
    assert!(
        colour > 5_000,
        "charts missing from the screenshot ({colour} coloured pixels)"
    );
}

#[test]
fn drift_report_renders_in_chromium() {
    let dir = tmpdir();
    let input = audience(dir.path());
    let d = dir.path();
    let o = lakemeans(&[
        "fit",
        s(&input),
        "--k",
        "4",
        "--id",
        "customer_id",
        "--exclude",
        "label",
        "--output",
        s(&d.join("a1.parquet")),
        "--model",
        s(&d.join("m1.json")),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let html = d.join("drift.html");
    let o = lakemeans(&[
        "refit",
        s(&input),
        "--model",
        s(&d.join("m1.json")),
        "--k",
        "5",
        "--output",
        s(&d.join("a2.parquet")),
        "--model-out",
        s(&d.join("m2.json")),
        "--previous-assignments",
        s(&d.join("a1.parquet")),
        "--id",
        "customer_id",
        "--report",
        s(&html),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = check_html(
        &html,
        4,
        &[
            "Segment drift",
            "Flows between segments",
            "Migration matrix",
            "Size changes",
            "Features that moved most",
            "PSI of the segment sizes",
        ],
    );
    // One band per non-empty previous → new pair, one cell per pair in the matrix.
    assert!(text.matches("<path").count() >= 4);
    let png = screenshot(&html, dir.path());
    let (ink, colour) = ink(&png);
    eprintln!(
        "drift report: {:.1}% ink, {colour} coloured pixels",
        100.0 * ink
    );
    assert!(
        ink > 0.02,
        "screenshot is nearly blank ({:.2}% ink)",
        100.0 * ink
    );
    assert!(
        colour > 20_000,
        "charts missing from the screenshot ({colour} coloured pixels)"
    );
}
