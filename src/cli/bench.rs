//! `lakemeans bench` and `lakemeans devices`.

use super::{BenchArgs, DevicesArgs};
use crate::bench::{self, BenchConfig, BenchResult};
use crate::error::{Error, Result};

pub fn devices(a: &DevicesArgs) -> Result<()> {
    let list = crate::backend::gpu::list_adapters();
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&list).map_err(|e| Error::Internal(e.to_string()))?
        );
        return Ok(());
    }
    if list.is_empty() {
        println!(
            "no GPU adapters found; lakemeans will run on the CPU ({} threads)",
            rayon::current_num_threads()
        );
        return Ok(());
    }
    for (i, ad) in list.iter().enumerate() {
        println!(
            "{i}: {} ({}, {}, driver {})",
            ad.name,
            ad.backend,
            ad.device_type,
            if ad.driver.is_empty() {
                "?"
            } else {
                &ad.driver
            }
        );
        println!(
            "   compute {}, max buffer {} MiB, max storage binding {} MiB, workgroup {}x{}x{} / {} invocations, {} KiB workgroup memory",
            if ad.compute { "yes" } else { "no" },
            ad.max_buffer_size >> 20,
            ad.max_storage_buffer_binding_size >> 20,
            ad.max_compute_workgroup_size[0],
            ad.max_compute_workgroup_size[1],
            ad.max_compute_workgroup_size[2],
            ad.max_compute_invocations_per_workgroup,
            ad.max_compute_workgroup_storage_size >> 10,
        );
    }
    Ok(())
}

pub fn run(a: &BenchArgs) -> Result<()> {
    let total_mem = system_memory_bytes().unwrap_or(8 << 30);
    let cfg = BenchConfig {
        rows: a.rows.clone().unwrap_or_else(|| bench::ROWS.to_vec()),
        dims: a.dims.clone().unwrap_or_else(|| bench::DIMS.to_vec()),
        ks: a.ks.clone().unwrap_or_else(|| bench::KS.to_vec()),
        iterations: a.iters,
        budget_seconds: a.budget_seconds,
        max_bytes: a.max_gb.map_or(total_mem / 4, |g| (g * 1e9) as usize),
        device: a.run.device,
        adapter: a.run.adapter.clone(),
        copy: a.copy,
    };
    if cfg.rows.contains(&0) || cfg.dims.contains(&0) || cfg.ks.contains(&0) {
        return Err(Error::Usage("bench sizes must be at least 1".into()));
    }
    if !a.run.json {
        println!(
            "{:>10} {:>5} {:>6}  {:>12} {:>14} {:>9}  device",
            "rows", "d", "k", "s/iter", "points/s", "GFLOP/s"
        );
    }
    let results = bench::run(&cfg, |r| {
        if !a.run.json {
            println!("{}", line(r));
        }
    })?;
    if a.run.json {
        println!(
            "{}",
            serde_json::to_string(&results).map_err(|e| Error::Internal(e.to_string()))?
        );
    }
    Ok(())
}

fn line(r: &BenchResult) -> String {
    match (
        &r.skipped,
        r.seconds_per_iter,
        r.points_per_second,
        r.gflops,
    ) {
        (None, Some(t), Some(p), Some(g)) => {
            let copy = match (r.copy_seconds, r.copy_gb_per_s) {
                (Some(c), Some(bw)) => format!("  copy {c:.5} s ({bw:.1} GB/s)"),
                _ => String::new(),
            };
            let assign = r
                .assign_seconds
                .map(|a| format!("  assign only {a:.5} s"))
                .unwrap_or_default();
            format!(
                "{:>10} {:>5} {:>6}  {:>12.5} {:>14.3e} {:>9.1}  {} ({}){assign}{copy}",
                r.rows, r.dims, r.k, t, p, g, r.device, r.adapter
            )
        }
        (why, ..) => format!(
            "{:>10} {:>5} {:>6}  skipped: {}",
            r.rows,
            r.dims,
            r.k,
            why.as_deref().unwrap_or("")
        ),
    }
}

/// Physical memory, to keep generated data to a safe share of it.
fn system_memory_bytes() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
