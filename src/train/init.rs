//! Fresh weights, initialised as PyTorch initialises diffusers' UNet2DModel:
//! Conv2d and Linear weights and biases uniform in +-1/sqrt(fan_in)
//! (kaiming_uniform with a = sqrt(5)), GroupNorm weights 1 and biases 0.

use crate::model::graph::Graph;
use crate::rng::Rng;

fn is_norm(name: &str) -> bool {
    let layer = name.rsplit_once('.').map_or(name, |(l, _)| l);
    let last = layer.rsplit('.').next().unwrap_or(layer);
    last.starts_with("norm") || last == "group_norm" || last == "conv_norm_out"
}

/// Weights for every parameter of `graph`, in graph order.
pub fn init_weights(graph: &Graph, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = Rng::stream(seed, "init");
    graph
        .params
        .iter()
        .map(|p| {
            let n = p.len();
            if is_norm(&p.name) {
                return vec![if p.name.ends_with(".weight") { 1.0 } else { 0.0 }; n];
            }
            // A bias takes the fan-in of its layer's weight.
            let fan_in: usize = if p.name.ends_with(".bias") {
                let w = p.name.trim_end_matches(".bias").to_string() + ".weight";
                graph.param_id(&w).map_or(1, |i| graph.params[i].shape[1..].iter().product())
            } else {
                p.shape[1..].iter().product()
            };
            let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
            (0..n).map(|_| ((rng.uniform() * 2.0 - 1.0) * bound) as f32).collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn norms_are_identity_and_others_bounded() {
        let cfg = crate::model::UNetConfig::builtin("tiny").unwrap();
        let g = crate::model::unet::build_graph(&cfg);
        let w = init_weights(&g, 0);
        let id = |n: &str| g.param_id(n).unwrap();
        assert!(w[id("down_blocks.0.resnets.0.norm1.weight")].iter().all(|&v| v == 1.0));
        assert!(w[id("conv_norm_out.bias")].iter().all(|&v| v == 0.0));
        assert!(w[id("mid_block.attentions.0.group_norm.weight")].iter().all(|&v| v == 1.0));
        let conv = &w[id("conv_in.weight")];
        let bound = 1.0 / 27f32.sqrt();
        assert!(conv.iter().all(|v| v.abs() <= bound) && conv.iter().any(|v| v.abs() > bound / 2.0));
        let b = &w[id("time_embedding.linear_2.bias")];
        assert!(b.iter().all(|v| v.abs() <= 1.0 / (64f32).sqrt()));
    }
}
