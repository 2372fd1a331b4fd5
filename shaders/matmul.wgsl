// matmul: C[z] = alpha * A[z] B[z] (+ C[z] when accumulate = 1), batched and
// strided, for attention (scores = Q^T K, out = V P^T) and its gradients.
// A[z](m, k) = a[a_off + outer*a_so + inner*a_si + m*a_sm + k*a_sk], where
// z = outer*inner_count + inner (image and head), likewise B(k, n) and C(m, n).
// Each invocation computes a 4x4 block of C.
// petal:trusted (indices stay in bounds for sizes its Rust wrapper checks; loops are finite)

struct Params {
    m: u32, n: u32, k: u32, inner_count: u32,
    a_so: u32, a_si: u32, a_sm: u32, a_sk: u32,
    b_so: u32, b_si: u32, b_sk: u32, b_sn: u32,
    c_so: u32, c_si: u32, c_sm: u32, c_sn: u32,
    a_off: u32, b_off: u32, c_off: u32, batch: u32,
    alpha: f32, accumulate: u32, _pad0: u32, _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<{{A_T}}>;
@group(0) @binding(2) var<storage, read> bm: array<{{B_T}}>;
@group(0) @binding(3) var<storage, read_write> c: array<{{C_T}}>;

@compute @workgroup_size(8, 8)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n0 = gid.x * 4u;
    let m0 = gid.y * 4u;
    let z = gid.z;
    if (n0 >= p.n || m0 >= p.m || z >= p.batch) {
        return;
    }
    let outer = z / p.inner_count;
    let inner = z % p.inner_count;
    let abase = p.a_off + outer * p.a_so + inner * p.a_si;
    let bbase = p.b_off + outer * p.b_so + inner * p.b_si;
    let cbase = p.c_off + outer * p.c_so + inner * p.c_si;

    var acc: array<vec4<f32>, 4>;
    for (var i = 0u; i < 4u; i++) {
        acc[i] = vec4<f32>(0.0);
    }
    for (var kk = 0u; kk < p.k; kk++) {
        var bv: vec4<f32>;
        for (var j = 0u; j < 4u; j++) {
            let n = min(n0 + j, p.n - 1u);
            bv[j] = f32(bm[bbase + kk * p.b_sk + n * p.b_sn]);
        }
        for (var i = 0u; i < 4u; i++) {
            let m = min(m0 + i, p.m - 1u);
            acc[i] += f32(a[abase + m * p.a_sm + kk * p.a_sk]) * bv;
        }
    }
    for (var i = 0u; i < 4u; i++) {
        let m = m0 + i;
        if (m >= p.m) {
            break;
        }
        for (var j = 0u; j < 4u; j++) {
            let n = n0 + j;
            if (n >= p.n) {
                break;
            }
            let o = cbase + m * p.c_sm + n * p.c_sn;
            var v = p.alpha * acc[i][j];
            if (p.accumulate != 0u) {
                v += f32(c[o]);
            }
            c[o] = {{C_T}}(v);
        }
    }
}
