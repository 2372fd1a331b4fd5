// load_row of conv2d_backward_weight_subgroup.wgsl, one value a load.

// One logical input row (zero outside the input) under an 8-pixel segment:
// columns ix0 .. ix0 + NCOL of row iy of the plane that starts at base.
fn load_row(base: u32, iy: i32, ix0: i32) -> array<f32, NCOL> {
    let up = p.upsample;
    let hin = i32(p.h << up);
    let win = i32(p.w << up);
    let row_ok = iy >= 0 && iy < hin;
    let xrow = base + (u32(clamp(iy, 0, hin - 1)) >> up) * p.w;
    var r: array<f32, NCOL>;
    for (var t = 0u; t < NCOL; t++) {
        let ix = ix0 + i32(t);
        let ok = row_ok && ix >= 0 && ix < win;
        r[t] = select(0.0, x[xrow + (u32(clamp(ix, 0, win - 1)) >> up)], ok);
    }
    return r;
}
