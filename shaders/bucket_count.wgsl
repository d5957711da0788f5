// First of three kernels that list a chunk's rows cluster by cluster for the sorted update
// (update_sorted.wgsl): buckets[j] = rows labelled j. Then bucket_scan.wgsl turns the counts
// into offsets and bucket_scatter.wgsl places the rows.

// `p`, the uniform at binding 0, is declared in update_params.wgsl, which the host puts in front.
@group(0) @binding(1) var<storage, read> labels: array<u32>;
@group(0) @binding(2) var<storage, read_write> buckets: array<atomic<u32>>;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x < p.rows) {
        atomicAdd(&buckets[labels[gid.x]], 1u);
    }
}
