//! The UNet: config, weights, the op list, and its GPU form.

pub mod config;
pub mod folder;
pub mod graph;
pub mod plan;
pub mod precision;
pub mod record;
pub mod unet;
pub mod weights;

pub use config::{SchedulerConfig, UNetConfig};
pub use graph::{Graph, Op, Pid, Tid};
pub use plan::ForwardPlan;
pub use precision::{LoadedUNet, Precision, load_unet};

use crate::gpu::{Arena, Gpu, TensorView};
use anyhow::{Result, bail};
use std::path::Path;
use std::sync::Arc;

/// Every parameter of a graph on the GPU, in slabs, at offsets planned by
/// the graph's groups. Gradients and optimizer moments reuse the same layout.
/// Inference weights may be stored packed (f16, int8; see
/// [`ParamStore::from_host`]): then a group is bound only as a whole.
pub struct ParamStore {
    pub arena: Arena,
    /// One view per parameter id; for a member of a packed group, the whole
    /// group's view.
    pub views: Vec<TensorView>,
    /// (members, view) of every group, when made by `from_host`; empty for
    /// an all-f32 store made by `new`.
    pub packed: Vec<(Vec<crate::model::Pid>, TensorView)>,
    /// Elements of each parameter.
    pub lens: Vec<usize>,
}

impl ParamStore {
    /// Refuses a model with a parameter group (tensors bound together, such
    /// as the stacked to_q/to_k/to_v) larger than the adapter's largest
    /// storage binding, before any buffer is made.
    pub fn check_fits(graph: &Graph, limits: &wgpu::Limits) -> Result<()> {
        let max = crate::gpu::max_tensor_bytes(limits);
        for group in &graph.groups {
            let bytes: u64 = group.iter().map(|&p| graph.params[p].len() as u64 * 4).sum();
            if bytes > max {
                bail!(
                    "parameter {} takes {:.1} MiB, over this adapter's largest storage binding of {:.1} MiB: the model is too large for it",
                    graph.params[group[0]].name,
                    bytes as f64 / (1 << 20) as f64,
                    max as f64 / (1 << 20) as f64
                );
            }
        }
        Ok(())
    }

    /// Every parameter of `graph` in slabs (call [`ParamStore::check_fits`] first).
    pub fn new(gpu: &Gpu, graph: &Graph, label: &str) -> ParamStore {
        let mut arena = Arena::new(label, &gpu.limits);
        let mut slots = vec![None; graph.params.len()];
        for group in &graph.groups {
            let lens: Vec<usize> = group.iter().map(|&p| graph.params[p].len()).collect();
            for (&p, s) in group.iter().zip(arena.alloc_group(&lens)) {
                slots[p] = Some(s);
            }
        }
        arena.build(&gpu.device);
        let views = slots
            .into_iter()
            .enumerate()
            .map(|(p, s)| arena.view(s.unwrap_or_else(|| panic!("parameter {} is in no group", graph.params[p].name))))
            .collect();
        let lens = graph.params.iter().map(|p| p.len()).collect();
        ParamStore { arena, views, packed: Vec::new(), lens }
    }

    /// One view over parameters that lie back to back (a group or part of
    /// one; a packed group only whole).
    pub fn span(&self, pids: &[crate::model::Pid]) -> TensorView {
        if let Some((_, v)) = self.packed.iter().find(|(g, _)| g[..] == pids[..]) {
            return v.clone();
        }
        let first = &self.views[pids[0]];
        assert_eq!(first.dtype, crate::gpu::Dtype::F32, "span over part of a packed group");
        let mut len = 0;
        for &p in pids {
            let v = &self.views[p];
            assert!(v.same_buffer(first) && v.offset == first.offset + len as u64 * 4, "parameters not contiguous");
            len += v.len;
        }
        first.clone_with_len(len)
    }

    pub fn upload(&self, gpu: &Gpu, data: &[Vec<f32>]) {
        for (v, d) in self.views.iter().zip(data) {
            gpu.write_f32(v, d);
        }
    }

    /// Every parameter back from the GPU as f32 (packed ones widened and
    /// dequantized), in graph order.
    pub fn download(&self, gpu: &Gpu) -> Result<Vec<Vec<f32>>> {
        if self.packed.is_empty() {
            let refs: Vec<&TensorView> = self.views.iter().collect();
            return gpu.read_many(&refs);
        }
        let refs: Vec<&TensorView> = self.packed.iter().map(|(_, v)| v).collect();
        let groups = gpu.read_many(&refs)?;
        let mut out = vec![Vec::new(); self.views.len()];
        for ((members, _), values) in self.packed.iter().zip(groups) {
            let mut at = 0;
            for &p in members {
                let n = self.lens[p];
                out[p] = values[at..at + n].to_vec();
                at += n;
            }
        }
        Ok(out)
    }
}

/// A UNet2DModel on the GPU.
pub struct UNet {
    pub gpu: Arc<Gpu>,
    pub config: UNetConfig,
    pub graph: Graph,
    pub params: ParamStore,
    /// How the weights are stored on the GPU.
    pub precision: Precision,
    /// The element type of a sampling forward pass's activations
    /// ([`Precision::activations`]): f16 where the precision and adapter
    /// allow it, else f32. Training always runs in f32.
    pub activations: crate::gpu::Dtype,
}

impl UNet {
    /// A UNet with these weights (in graph order).
    pub fn new(gpu: Arc<Gpu>, config: UNetConfig, weights: &[Vec<f32>]) -> Result<UNet> {
        config.validate()?;
        let graph = unet::build_graph(&config);
        if weights.len() != graph.params.len() {
            bail!("{} weight tensors for {} parameters", weights.len(), graph.params.len());
        }
        for (p, w) in graph.params.iter().zip(weights) {
            if p.len() != w.len() {
                bail!("parameter {}: {} values, expected {}", p.name, w.len(), p.len());
            }
        }
        ParamStore::check_fits(&graph, &gpu.limits)?;
        let params = ParamStore::new(&gpu, &graph, "parameters");
        params.upload(&gpu, weights);
        Ok(UNet { gpu, config, graph, params, precision: Precision::Fp32, activations: crate::gpu::Dtype::F32 })
    }

    /// Loads the UNet of a diffusers model folder (either layout), at the
    /// precision its weights are stored in (see [`load_unet`] to choose).
    pub fn load(gpu: Arc<Gpu>, dir: &Path, variant: Option<&str>) -> Result<(UNet, SchedulerConfig)> {
        let m = folder::load(dir, variant)?;
        let unet = UNet::from_loaded(gpu, &m)?;
        Ok((unet, m.scheduler))
    }

    /// The UNet of a folder already read by [`folder::load`], at the
    /// precision its weights are stored in.
    pub fn from_loaded(gpu: Arc<Gpu>, m: &folder::LoadedModel) -> Result<UNet> {
        UNet::from_loaded_at(gpu, m, precision::stored_precision(&m.stored))
    }

    /// The weights back from the GPU, in graph order.
    pub fn weights(&self) -> Result<Vec<Vec<f32>>> {
        self.params.download(&self.gpu)
    }
}
