// dy_load, dy_bcast of conv2d_backward_weight_subgroup.wgsl, one value a
// load: lane l loads dy at pixel ox0 + l of the segment for each of the TM
// output channels and hands it to the others.
alias DyLane = array<f32, TM>;

// This lane's values: row is the offset of the segment's image row in
// channel 0 (b cout ho wo + oy wo).
fn dy_load(row: u32, co0: u32, ox0: u32, lane: u32) -> DyLane {
    let plane_out = p.ho * p.wo;
    let pix = row + min(ox0 + lane, p.wo - 1u);
    var v: DyLane;
    for (var m = 0u; m < TM; m++) {
        let co = min(co0 + m, p.cout - 1u);
        v[m] = select(0.0, dy[pix + co * plane_out], ox0 + lane < p.wo);
    }
    return v;
}

// dy of output channel co0 + m at the segment's 8 pixels (zero past the
// row's end), on every lane. m must be known when the shader is compiled.
fn dy_bcast(v: DyLane, m: u32) -> array<f32, 8> {
    return broadcast8(v[m]);
}
