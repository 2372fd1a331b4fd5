// dy_load, dy_bcast of conv2d_backward_weight_subgroup.wgsl, one value a
// load: lane l loads dy at pixel ox0 + l % 8 of the segment and hands it to
// the others. On 8 lanes each lane loads all TM output channels; on 16,
// lanes 0-7 load channels co0 + 2j and lanes 8-15 channels co0 + 2j + 1, so
// that no lane loads twice what another does.
const DY_SRC: u32 = LANES / 8u; // lanes holding each pixel (1 or 2)
alias DyLane = array<f32, (TM + DY_SRC - 1u) / DY_SRC>;

// This lane's values: row is the offset of the segment's image row in
// channel 0 (b cout ho wo + oy wo).
fn dy_load(row: u32, co0: u32, ox0: u32, lane: u32) -> DyLane {
    let plane_out = p.ho * p.wo;
    let px = ox0 + lane % 8u;
    let pix = row + min(px, p.wo - 1u);
    var v: DyLane;
    for (var j = 0u; j < (TM + DY_SRC - 1u) / DY_SRC; j++) {
        let co = min(co0 + DY_SRC * j + lane / 8u, p.cout - 1u);
        v[j] = select(0.0, dy[pix + co * plane_out], px < p.wo);
    }
    return v;
}

// dy of output channel co0 + m at the segment's 8 pixels (zero past the
// row's end), on every lane. m must be known when the shader is compiled.
fn dy_bcast(v: DyLane, m: u32) -> array<f32, 8> {
    if (m % DY_SRC == 0u) {
        return broadcast8(v[m / DY_SRC]);
    }
    return broadcast8_hi(v[m / DY_SRC]);
}
