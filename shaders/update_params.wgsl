// The uniform of the update kernels (update.wgsl, update_sorted.wgsl and bucket_*.wgsl), which
// the host puts in front of each: they all read one per-chunk value written once.

struct Params {
    rows: u32,        // rows in this chunk
    k: u32,
    rows_per_wg: u32, // fixed row range of each update.wgsl workgroup
    wscale: f32,      // 2^e for the weights
}

@group(0) @binding(0) var<uniform> p: Params;
