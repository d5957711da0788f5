// order[buckets[j]++] = row for each row labelled j, after bucket_scan.wgsl: `order` then lists
// the chunk's rows cluster by cluster. The order within a cluster varies from run to run; the
// sorted update's integer sums do not depend on it.

// `p`, the uniform at binding 0, is declared in update_params.wgsl, which the host puts in front.
@group(0) @binding(1) var<storage, read> labels: array<u32>;
@group(0) @binding(2) var<storage, read_write> buckets: array<atomic<u32>>;
@group(0) @binding(3) var<storage, read_write> order: array<u32>;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x < p.rows) {
        let pos = atomicAdd(&buckets[labels[gid.x]], 1u);
        order[pos] = gid.x;
    }
}
