// Element width of the memory-bound kernels: V is f32 (VW = 1) or, where a
// row's length is a multiple of 4, vec4<f32> (VW = 4), so that each load
// and store moves four values. On lavapipe a storage load or store costs a
// loop over the 8 lanes whatever its width (conv2d_forward_subgroup.wgsl), so
// four values cost about what one does. Rust side: kernels::elements.
alias V = {{V}};
const VW: u32 = {{VW}}u;

// The sum and the largest of v's components.
fn hsum(v: V) -> f32 {
    return {{HSUM}};
}

fn hmax(v: V) -> f32 {
    return {{HMAX}};
}
