// load_row of conv2d_backward_weight_subgroup.wgsl from aligned vec4s (x
// bound as array<vec4<f32>>): for inputs without upsampling whose rows are
// 4k columns long, so that a row starts on a group and every group lies
// wholly inside or outside the row. A segment's first column ix0 = 8 j S -
// pad_left is CSHIFT past a group start (CSHIFT = -pad_left mod 4, set by
// the Rust wrapper), so the NCOL columns lie in NG groups.
const CSHIFT: u32 = {{CSHIFT}}u;
const NG: u32 = (CSHIFT + NCOL + 3u) / 4u;

// Columns ix0 .. ix0 + NCOL of row iy (zero outside the input) of the plane
// that starts at base.
fn load_row(base: u32, iy: i32, ix0: i32) -> array<f32, NCOL> {
    let hin = i32(p.h);
    let win = i32(p.w);
    let row_ok = iy >= 0 && iy < hin;
    let xrow = base + u32(clamp(iy, 0, hin - 1)) * p.w;
    let gs = ix0 - i32(CSHIFT);
    var g: array<vec4<f32>, NG>;
    for (var t = 0u; t < NG; t++) {
        let ix = gs + 4 * i32(t);
        let ok = row_ok && ix >= 0 && ix < win;
        g[t] = select(vec4<f32>(), x[(xrow + u32(clamp(ix, 0, win - 4))) / 4u], ok);
    }
    var r: array<f32, NCOL>;
    for (var t = 0u; t < NCOL; t++) {
        r[t] = g[(t + CSHIFT) / 4u][(t + CSHIFT) % 4u];
    }
    return r;
}
