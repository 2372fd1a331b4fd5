// dy_load, dy_bcast of conv2d_backward_weight_subgroup.wgsl from aligned
// vec4s (dy bound as array<vec4<f32>>): for outputs whose rows are 4k pixels
// long and TM a multiple of LANES / 2. Lane l's load s (s < TM / (LANES / 2))
// is channel co0 + (LANES / 2) s + l / 2 at pixels ox0 + 4 (l % 2) .. + 3, so
// a channel's 8 pixels come from lanes 2h and 2h + 1 (broadcast_pair).
const DY_CH: u32 = LANES / 2u; // channels one load of all lanes covers
alias DyLane = array<vec4<f32>, TM / DY_CH>;

// This lane's values: row is the offset of the segment's image row in
// channel 0 (b cout ho wo + oy wo).
fn dy_load(row: u32, co0: u32, ox0: u32, lane: u32) -> DyLane {
    let plane_out = p.ho * p.wo;
    let px = ox0 + 4u * (lane % 2u);
    var v: DyLane;
    for (var s = 0u; s < TM / DY_CH; s++) {
        let co = min(co0 + DY_CH * s + lane / 2u, p.cout - 1u);
        v[s] = select(vec4<f32>(), dy[(row + co * plane_out + min(px, p.wo - 4u)) / 4u], px < p.wo);
    }
    return v;
}

// dy of output channel co0 + m at the segment's 8 pixels (zero past the
// row's end), on every lane. m must be known when the shader is compiled.
fn dy_bcast(v: DyLane, m: u32) -> array<f32, 8> {
    return broadcast_pair(v[m / DY_CH], m % DY_CH);
}
