//! FP32, FP16 and INT8 weights: the one place that decides how each
//! parameter is stored, on disk and on the GPU.
//!
//! A [`Precision`] is chosen once, when a model is loaded ([`load_unet`]);
//! [`convert`] turns the weights as read from disk into that precision's
//! [`HostTensor`]s, which are exactly what `petal quantize` writes
//! ([`write_weights`]) and what the GPU receives ([`group_format`],
//! [`encode_group`]). So a folder converted on load and the same folder
//! quantized to disk and reloaded give bit-identical outputs.
//!
//! - FP32: every tensor f32.
//! - FP16: every tensor f16 on disk (diffusers' `variant="fp16"` file,
//!   `diffusion_pytorch_model.fp16.safetensors`); on the GPU, conv and linear
//!   weights stay f16 (two per 32-bit word, widened in the kernels, f32
//!   arithmetic); biases and norm parameters (0.1% of the parameters) are
//!   widened to f32.
//! - INT8: weight-only, symmetric, one f32 scale per output channel, for the
//!   conv and linear weights of the resnets, the down/upsamplers and every
//!   time_emb_proj. Kept in float (f16, as in FP16), because they are known
//!   to hurt diffusion UNets when quantized: the timestep MLP
//!   (`time_embedding`), `conv_in`, `conv_out`, every norm and the attention
//!   projections. File: `diffusion_pytorch_model.int8.safetensors` with
//!   int8 weights, `<weight>_scale` f32 tensors of shape (cout,) and the
//!   metadata entry `petal_quantization: int8-per-channel-symmetric`.

use super::folder::{self, LoadedModel};
use super::graph::{Graph, Pid};
use super::weights::legacy_name;
use super::{ParamStore, SchedulerConfig, UNet};
use crate::gpu::{Dtype, Gpu};
use anyhow::{Context, Result, anyhow, bail};
use safetensors::{Dtype as StDtype, SafeTensors};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The `__metadata__` key of an int8 file, and its one known value.
pub const QUANTIZATION_KEY: &str = "petal_quantization";
pub const INT8_PER_CHANNEL: &str = "int8-per-channel-symmetric";
/// The suffix of a scale tensor: `conv1.weight` -> `conv1.weight_scale`.
pub const SCALE_SUFFIX: &str = "_scale";

/// The precision of a model's weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Precision {
    Fp32,
    Fp16,
    Int8,
}

impl Precision {
    pub const ALL: [Precision; 3] = [Precision::Fp32, Precision::Fp16, Precision::Int8];

    /// "fp32", "fp16" or "int8" (also the flag values).
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16 => "fp16",
            Precision::Int8 => "int8",
        }
    }

    pub fn parse(s: &str) -> Result<Precision> {
        match s {
            "fp32" => Ok(Precision::Fp32),
            "fp16" => Ok(Precision::Fp16),
            "int8" => Ok(Precision::Int8),
            other => bail!("--precision {other}: expected fp32, fp16 or int8"),
        }
    }

    /// diffusers' weights variant of this precision (None for fp32's plain file).
    pub fn variant(self) -> Option<&'static str> {
        match self {
            Precision::Fp32 => None,
            Precision::Fp16 => Some("fp16"),
            Precision::Int8 => Some("int8"),
        }
    }

    /// The weights file a folder of this precision holds (diffusers'
    /// variant naming: `diffusion_pytorch_model[.<variant>].safetensors`).
    pub fn weights_file(self) -> &'static str {
        match self {
            Precision::Fp32 => "diffusion_pytorch_model.safetensors",
            Precision::Fp16 => "diffusion_pytorch_model.fp16.safetensors",
            Precision::Int8 => "diffusion_pytorch_model.int8.safetensors",
        }
    }

    /// The element type of a sampling forward pass's activations: the one
    /// place the f16-activation path is chosen, from the precision and the
    /// adapter. F16 (feature maps in f16; sums, norms and softmax in f32:
    /// [`super::plan::f16_safe`]) for FP16 and INT8 weights on a hardware
    /// GPU (the `gpu` kernel family) that offers `SHADER_F16`. F32 for FP32
    /// (`--precision fp32` forces f32 throughout), on adapters without
    /// `SHADER_F16`, and on software renderers (lavapipe), where f16 saves
    /// no memory bandwidth worth having (the "GPU memory" is the same RAM)
    /// and was measured not faster (small model, batch 16: 0.49-0.51 s
    /// against 0.48-0.50 s per pass, batch 1 slower) while LLVM builds its
    /// pipelines in twice the time (65 s against 30 s for the first
    /// batch-16 pass). `PETAL_ACTIVATIONS=f16` or `=f32` overrides the
    /// choice for FP16 and INT8 (f16 still needs `SHADER_F16`).
    pub fn activations(self, gpu: &Gpu) -> Dtype {
        let has_f16 = gpu.features.contains(wgpu::Features::SHADER_F16);
        if self == Precision::Fp32 || !has_f16 {
            return Dtype::F32;
        }
        match std::env::var("PETAL_ACTIVATIONS").as_deref() {
            Ok("f16") => Dtype::F16,
            Ok("f32") => Dtype::F32,
            _ if gpu.family == crate::gpu::KernelFamily::Gpu => Dtype::F16,
            _ => Dtype::F32,
        }
    }

    /// What runs on the GPU, for the line printed at start.
    pub fn describe(self, gpu: &Gpu) -> String {
        let acts = match (self, self.activations(gpu)) {
            (Precision::Fp32, _) => "f32 activations and arithmetic".to_string(),
            (_, Dtype::F16) => "f16 activations between ops (SHADER_F16), f32 arithmetic, sums, group norm statistics, softmax, \
                 time embedding and the scheduler's sample and model output"
                .to_string(),
            _ if !gpu.features.contains(wgpu::Features::SHADER_F16) => {
                "f32 activations and arithmetic (the adapter has no SHADER_F16 for f16 activations)".to_string()
            }
            _ if std::env::var("PETAL_ACTIVATIONS").as_deref() == Ok("f32") => {
                "f32 activations and arithmetic (PETAL_ACTIVATIONS=f32)".to_string()
            }
            _ => "f32 activations and arithmetic (f16 activations are for hardware GPUs; PETAL_ACTIVATIONS=f16 forces them)"
                .to_string(),
        };
        match self {
            Precision::Fp32 => format!("fp32: f32 weights, {acts}"),
            Precision::Fp16 => format!("fp16: f16 weights on the GPU, widened in the kernels; {acts}"),
            Precision::Int8 => format!(
                "int8: int8 conv/linear weights with per-channel scales, time embedding, conv_in, conv_out and attention in f16; \
                 dequantized in the kernels; {acts}"
            ),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How a parameter was stored in the file it was read from.
#[derive(Clone, Debug, PartialEq)]
pub enum Stored {
    F32,
    F16,
    /// bfloat16 (read only; treated as f32 data).
    BF16,
    /// int8 with one scale per output channel; the widened weights are
    /// `q * scale[row]`, so `q = round(w / scale[row])` recovers q exactly.
    I8 { scale: Vec<f32> },
}

/// One parameter in a precision's form, as it is written to disk.
#[derive(Clone, Debug, PartialEq)]
pub enum HostTensor {
    F32(Vec<f32>),
    F16(Vec<half::f16>),
    /// (q of shape (rows, ...), one scale per row)
    I8 { q: Vec<i8>, scale: Vec<f32> },
}

impl HostTensor {
    /// The values as f32 (dequantized for int8).
    pub fn widen(&self) -> Vec<f32> {
        match self {
            HostTensor::F32(v) => v.clone(),
            HostTensor::F16(v) => v.iter().map(|h| h.to_f32()).collect(),
            HostTensor::I8 { q, scale } => {
                let per_row = q.len() / scale.len().max(1);
                q.iter().enumerate().map(|(i, &v)| v as f32 * scale[i / per_row.max(1)]).collect()
            }
        }
    }

    pub fn len(&self) -> usize {
        match self {
            HostTensor::F32(v) => v.len(),
            HostTensor::F16(v) => v.len(),
            HostTensor::I8 { q, .. } => q.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether INT8 quantizes this parameter: conv and linear weights (2-D or
/// more) except the timestep MLP, conv_in, conv_out and attention.
pub fn quantizable(name: &str, shape: &[usize]) -> bool {
    shape.len() >= 2
        && name.ends_with(".weight")
        && !name.starts_with("time_embedding.")
        && !name.starts_with("conv_in.")
        && !name.starts_with("conv_out.")
        && !name.contains(".attentions.")
}

/// Symmetric per-row int8: scale[r] = max|w[r, :]| / 127 (1 for an all-zero
/// row), q = round(w / scale) in [-127, 127].
pub fn quantize_rows(w: &[f32], rows: usize) -> (Vec<i8>, Vec<f32>) {
    let per_row = w.len() / rows.max(1);
    let mut q = Vec::with_capacity(w.len());
    let mut scale = Vec::with_capacity(rows);
    for row in w.chunks(per_row.max(1)) {
        let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        let s = if max > 0.0 { max / 127.0 } else { 1.0 };
        q.extend(row.iter().map(|&v| (v / s).round().clamp(-127.0, 127.0) as i8));
        scale.push(s);
    }
    (q, scale)
}

/// One parameter in `precision`'s form. `w` are its values as read (widened
/// to f32), `stored` how the file held them: values already in the target
/// form are kept exactly (an int8 file loaded as int8 keeps its q and scales).
pub fn convert_one(name: &str, shape: &[usize], w: &[f32], stored: &Stored, precision: Precision) -> HostTensor {
    let f16 = || HostTensor::F16(w.iter().map(|&v| half::f16::from_f32(v)).collect());
    match precision {
        Precision::Fp32 => HostTensor::F32(w.to_vec()),
        Precision::Fp16 => f16(),
        Precision::Int8 if quantizable(name, shape) => match stored {
            Stored::I8 { scale } => {
                let per_row = w.len() / scale.len().max(1);
                let q = w.iter().enumerate().map(|(i, &v)| (v / scale[i / per_row.max(1)]).round().clamp(-127.0, 127.0) as i8).collect();
                HostTensor::I8 { q, scale: scale.clone() }
            }
            _ => {
                let (q, scale) = quantize_rows(w, shape[0]);
                HostTensor::I8 { q, scale }
            }
        },
        Precision::Int8 => f16(),
    }
}

/// Every parameter of `graph` in `precision`'s form (see [`convert_one`]).
pub fn convert(graph: &Graph, weights: &[Vec<f32>], stored: &[Stored], precision: Precision) -> Vec<HostTensor> {
    graph
        .params
        .iter()
        .zip(weights)
        .zip(stored)
        .map(|((p, w), s)| convert_one(&p.name, &p.shape, w, s, precision))
        .collect()
}

/// The precision a file's tensors are in: int8 if any is, fp16 if all are
/// half floats, else fp32.
pub fn stored_precision(stored: &[Stored]) -> Precision {
    if stored.iter().any(|s| matches!(s, Stored::I8 { .. })) {
        Precision::Int8
    } else if !stored.is_empty() && stored.iter().all(|s| matches!(s, Stored::F16 | Stored::BF16)) {
        Precision::Fp16
    } else {
        Precision::Fp32
    }
}

/// How a parameter group is stored on the GPU, from its members' host form:
/// int8 when they are int8, f16 when they are f16 weights (2-D or more),
/// f32 otherwise (biases and norm parameters are widened: they are tiny and
/// their kernels read f32). Every member of a group has the same form,
/// because [`convert_one`] decides by name patterns every group shares.
pub fn group_format(graph: &Graph, group: &[Pid], host: &[HostTensor]) -> Result<Dtype> {
    let first = &host[group[0]];
    let weight = graph.params[group[0]].shape.len() >= 2;
    let dtype = match first {
        HostTensor::I8 { .. } => Dtype::I8 { rows: group.iter().map(|&p| graph.params[p].shape[0] as u32).sum() },
        HostTensor::F16(_) if weight => Dtype::F16,
        _ => Dtype::F32,
    };
    for &p in group {
        let same = matches!(
            (&host[p], first),
            (HostTensor::I8 { .. }, HostTensor::I8 { .. }) | (HostTensor::F16(_), HostTensor::F16(_)) | (HostTensor::F32(_), HostTensor::F32(_))
        );
        if !same {
            bail!("parameters {} and {} are used together but stored differently", graph.params[group[0]].name, graph.params[p].name);
        }
    }
    Ok(dtype)
}

/// The GPU bytes of a group stored as `dtype` (see [`Dtype`]): members back
/// to back in graph order, for int8 followed by all members' scales.
pub fn encode_group(group: &[Pid], host: &[HostTensor], dtype: Dtype) -> Vec<u8> {
    let mut out = Vec::new();
    match dtype {
        Dtype::F32 => {
            for &p in group {
                out.extend_from_slice(bytemuck::cast_slice(&host[p].widen()));
            }
        }
        Dtype::F16 => {
            for &p in group {
                match &host[p] {
                    HostTensor::F16(v) => out.extend(v.iter().flat_map(|h| h.to_le_bytes())),
                    other => out.extend(other.widen().iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes())),
                }
            }
        }
        Dtype::I8 { .. } => {
            let mut scales = Vec::new();
            for &p in group {
                let HostTensor::I8 { q, scale } = &host[p] else { unreachable!("group_format checked the group") };
                out.extend(q.iter().map(|&v| v as u8));
                scales.extend_from_slice(scale);
            }
            out.resize(out.len().next_multiple_of(4), 0);
            out.extend_from_slice(bytemuck::cast_slice(&scales));
        }
    }
    out.resize(out.len().next_multiple_of(4), 0);
    out
}

impl ParamStore {
    /// The parameters of `graph` in their precision's form: each group in the
    /// format [`group_format`] gives it, one allocation per group. A packed
    /// group is bound only as a whole ([`ParamStore::span`] of the group).
    pub fn from_host(gpu: &Gpu, graph: &Graph, label: &str, host: &[HostTensor]) -> Result<ParamStore> {
        let mut arena = crate::gpu::Arena::new(label, &gpu.limits);
        let mut planned = Vec::with_capacity(graph.groups.len());
        for group in &graph.groups {
            let dtype = group_format(graph, group, host)?;
            let len: usize = group.iter().map(|&p| graph.params[p].len()).sum();
            for &p in group {
                if host[p].len() != graph.params[p].len() {
                    bail!("parameter {}: {} values, expected {}", graph.params[p].name, host[p].len(), graph.params[p].len());
                }
            }
            planned.push((arena.alloc_bytes(dtype.bytes(len)), dtype, len));
        }
        arena.build(&gpu.device);
        let mut views: Vec<Option<crate::gpu::TensorView>> = vec![None; graph.params.len()];
        let mut groups = Vec::with_capacity(graph.groups.len());
        for (group, &(slot, dtype, len)) in graph.groups.iter().zip(&planned) {
            let whole = arena.view_typed(slot, 0, len, dtype);
            gpu.write_bytes(&whole, &encode_group(group, host, dtype));
            let mut at = 0;
            for &p in group {
                let n = graph.params[p].len();
                views[p] = Some(if dtype == Dtype::F32 { arena.view_typed(slot, at as u64 * 4, n, Dtype::F32) } else { whole.clone() });
                at += n;
            }
            groups.push((group.clone(), whole));
        }
        let views = views
            .into_iter()
            .enumerate()
            .map(|(p, v)| v.ok_or_else(|| anyhow!("parameter {} is in no group", graph.params[p].name)))
            .collect::<Result<_>>()?;
        let lens = graph.params.iter().map(|p| p.len()).collect();
        Ok(ParamStore { arena, views, packed: groups, lens })
    }

    /// Bytes the parameters take on the GPU.
    pub fn gpu_bytes(&self) -> u64 {
        self.arena.bytes()
    }
}

/// A model loaded at a precision, with what the window shows about it.
pub struct LoadedUNet {
    pub unet: UNet,
    pub scheduler: SchedulerConfig,
    pub precision: Precision,
    /// The precision the weights file stores.
    pub stored: Precision,
    /// The weights file read, and its size in bytes.
    pub weights_file: PathBuf,
    pub file_bytes: u64,
    /// The size of this precision's weights file: `file_bytes` when the file
    /// read is in `precision`, else the size [`weights_bytes`] would write.
    pub precision_file_bytes: u64,
    /// Bytes the weights take on the GPU (slabs, with alignment padding).
    pub gpu_bytes: u64,
}

/// Loads a diffusers model folder at `precision` (None: the precision its
/// weights file is stored in), converting on load. Without a `variant`, a
/// folder that holds `precision`'s own file
/// (`diffusion_pytorch_model.fp16.safetensors`, `.int8.`) is read from it,
/// so a shipped INT8 file keeps its exact values; otherwise the folder's
/// usual file (see [`folder::resolve`]) is converted. Errors name the file
/// and tensor. This is what `petal sample --precision` and the window call.
pub fn load_unet(gpu: Arc<Gpu>, dir: &Path, variant: Option<&str>, precision: Option<Precision>) -> Result<LoadedUNet> {
    let own = match (variant, precision) {
        (None, Some(p)) if folder::resolve(dir, p.variant()).is_ok() => p.variant(),
        _ => variant,
    };
    let m = folder::load(dir, own)?;
    let stored = stored_precision(&m.stored);
    let precision = precision.unwrap_or(stored);
    let graph = super::unet::build_graph(&m.config);
    let host = convert(&graph, &m.weights, &m.stored, precision);
    let unet = UNet::from_host(gpu, m.config.clone(), &host, precision).with_context(|| format!("{}", m.files.weights.display()))?;
    let file_bytes = std::fs::metadata(&m.files.weights).map(|md| md.len()).unwrap_or(0);
    let precision_file_bytes = if precision == stored { file_bytes } else { weights_bytes(&graph, &host).map_or(0, |b| b.len() as u64) };
    let gpu_bytes = unet.params.gpu_bytes();
    Ok(LoadedUNet { unet, scheduler: m.scheduler, precision, stored, weights_file: m.files.weights, file_bytes, precision_file_bytes, gpu_bytes })
}

impl UNet {
    /// The UNet of a loaded folder with its weights converted to `precision`.
    pub fn from_loaded_at(gpu: Arc<Gpu>, m: &LoadedModel, precision: Precision) -> Result<UNet> {
        let graph = super::unet::build_graph(&m.config);
        let host = convert(&graph, &m.weights, &m.stored, precision);
        UNet::from_host(gpu, m.config.clone(), &host, precision).with_context(|| format!("{}", m.files.weights.display()))
    }

    /// A UNet from weights already in a precision's form (graph order).
    pub fn from_host(gpu: Arc<Gpu>, config: super::UNetConfig, host: &[HostTensor], precision: Precision) -> Result<UNet> {
        config.validate()?;
        let graph = super::unet::build_graph(&config);
        if host.len() != graph.params.len() {
            bail!("{} weight tensors for {} parameters", host.len(), graph.params.len());
        }
        let params = ParamStore::from_host(&gpu, &graph, "parameters", host)?;
        let activations = precision.activations(&gpu);
        Ok(UNet { gpu, config, graph, params, precision, activations })
    }
}

// ---------------------------------------------------------------------------
// Files

/// Reads a weights file for `graph`: every parameter widened to f32 in graph
/// order, and how each was stored. Checks what an int8 file promises: every
/// int8 tensor is a weight INT8 quantizes and has its `<name>_scale`
/// (f32, one positive finite value per output channel); every scale belongs
/// to an int8 tensor; the metadata entry is present exactly when int8
/// tensors are. Errors are one line naming the file and tensor.
pub fn read_weights(path: &Path, graph: &Graph) -> Result<(Vec<Vec<f32>>, Vec<Stored>)> {
    if path.to_string_lossy().ends_with(".index.json") {
        // A sharded checkpoint: float shards only, widened to f32.
        let mut tensors = super::weights::read_weights(path)?;
        let mut weights = Vec::with_capacity(graph.params.len());
        for p in &graph.params {
            let (name, (shape, data)) = match tensors.remove_entry(&p.name) {
                Some(t) => t,
                None => match legacy_name(&p.name).and_then(|l| tensors.remove_entry(&l)) {
                    Some(t) => t,
                    None => bail!("{}: tensor {} is missing (the config in use expects it; does config.json belong to these weights?)", path.display(), p.name),
                },
            };
            if shape != p.shape {
                bail!("{}: tensor {name} has shape {shape:?}, but the config needs {:?} (does config.json belong to these weights?)", path.display(), p.shape);
            }
            if let Some(i) = data.iter().position(|v| !v.is_finite()) {
                bail!("{}: tensor {name} holds a non-finite value at index {i}", path.display());
            }
            weights.push(data);
        }
        if let Some(extra) = tensors.keys().min() {
            bail!("{}: tensor {extra} has no place in the config in use; does config.json belong to these weights?", path.display());
        }
        let stored = vec![Stored::F32; weights.len()];
        return Ok((weights, stored));
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    parse_weights(&bytes, graph).with_context(|| format!("{}", path.display()))
}

/// [`read_weights`] on the bytes of a file (errors name the tensor; the
/// caller adds the file).
pub fn parse_weights(bytes: &[u8], graph: &Graph) -> Result<(Vec<Vec<f32>>, Vec<Stored>)> {
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| anyhow!("not a valid safetensors file: {e}"))?;
    let st = SafeTensors::deserialize(bytes).map_err(|e| anyhow!("not a valid safetensors file: {e}"))?;
    let quant = meta.metadata().as_ref().and_then(|m| m.get(QUANTIZATION_KEY)).cloned();
    if let Some(q) = &quant
        && q != INT8_PER_CHANNEL
    {
        bail!("__metadata__ {QUANTIZATION_KEY} = {q:?} is not a format Petal reads (expected {INT8_PER_CHANNEL:?})");
    }
    // name -> (shape, values, stored); scales apart.
    let mut tensors: HashMap<String, (Vec<usize>, Vec<f32>, Stored)> = HashMap::new();
    let mut scales: HashMap<String, (Vec<usize>, StDtype, Vec<f32>)> = HashMap::new();
    let mut int8 = Vec::new();
    for (name, view) in st.tensors() {
        let data = view.data();
        let f32s = |d: &[u8]| -> Vec<f32> { d.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect() };
        let (values, stored) = match view.dtype() {
            StDtype::F32 => (f32s(data), Stored::F32),
            StDtype::F16 => (data.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(), Stored::F16),
            StDtype::BF16 => (data.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(), Stored::BF16),
            StDtype::I8 => {
                int8.push(name.clone());
                (data.iter().map(|&b| b as i8 as f32).collect(), Stored::I8 { scale: Vec::new() })
            }
            other => bail!("tensor {name} is stored as {other:?}; model weights must be F32, F16 or BF16 (or I8 with scales, as petal quantize writes)"),
        };
        if name.ends_with(SCALE_SUFFIX) {
            scales.insert(name, (view.shape().to_vec(), view.dtype(), values));
        } else {
            tensors.insert(name, (view.shape().to_vec(), values, stored));
        }
    }
    if quant.is_some() && int8.is_empty() {
        bail!("__metadata__ says {QUANTIZATION_KEY} = {INT8_PER_CHANNEL:?}, but no tensor is int8");
    }
    int8.sort();
    for name in &int8 {
        let (shape, values, stored) = tensors.get_mut(name).expect("inserted above");
        if quant.is_none() {
            bail!("tensor {name} is int8, but __metadata__ has no {QUANTIZATION_KEY} entry saying how to read it");
        }
        // The graph's name for it (legacy attention names map to current ones).
        let pname = graph.params.iter().find(|p| p.name == *name || legacy_name(&p.name).as_deref() == Some(name.as_str()));
        let quantized_here = pname.is_some_and(|p| quantizable(&p.name, &p.shape));
        if !quantized_here {
            bail!(
                "tensor {name} is int8, but Petal keeps it in float (int8 is for conv and linear weights outside \
                 time_embedding, conv_in, conv_out and attention), so no scale is expected for it"
            );
        }
        let sname = format!("{name}{SCALE_SUFFIX}");
        let Some((sshape, sdtype, svals)) = scales.remove(&sname) else {
            bail!("int8 tensor {name} has no scale tensor {sname}");
        };
        if sdtype != StDtype::F32 {
            bail!("scale tensor {sname} is {sdtype:?}, expected F32");
        }
        let rows = shape.first().copied().unwrap_or(0);
        if sshape != [rows] {
            bail!("scale tensor {sname} has shape {sshape:?}, expected [{rows}] (one scale per output channel of {name})");
        }
        if let Some(i) = svals.iter().position(|s| !(s.is_finite() && *s > 0.0)) {
            bail!("scale tensor {sname} holds {} at index {i}; scales must be positive and finite", svals[i]);
        }
        let per_row = values.len() / rows.max(1);
        for (i, v) in values.iter_mut().enumerate() {
            *v *= svals[i / per_row.max(1)];
        }
        *stored = Stored::I8 { scale: svals };
    }
    if let Some(sname) = scales.keys().min() {
        bail!("scale tensor {sname} belongs to no int8 tensor {}", sname.trim_end_matches(SCALE_SUFFIX));
    }

    let mut weights = Vec::with_capacity(graph.params.len());
    let mut stored_all = Vec::with_capacity(graph.params.len());
    for p in &graph.params {
        let (name, (shape, data, stored)) = match tensors.remove_entry(&p.name) {
            Some(t) => t,
            None => match legacy_name(&p.name).and_then(|l| tensors.remove_entry(&l)) {
                Some(t) => t,
                None => bail!("tensor {} is missing (the config in use expects it; does config.json belong to these weights?)", p.name),
            },
        };
        if shape != p.shape {
            bail!("tensor {name} has shape {shape:?}, but the config needs {:?} (does config.json belong to these weights?)", p.shape);
        }
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            bail!("tensor {name} holds a non-finite value at index {i}");
        }
        weights.push(data);
        stored_all.push(stored);
    }
    if !tensors.is_empty() {
        let mut extra: Vec<_> = tensors.keys().cloned().collect();
        extra.sort();
        let shown = extra.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
        bail!(
            "{} tensor(s) the config has no place for ({shown}{}); does config.json belong to these weights?",
            extra.len(),
            if extra.len() > 3 { ", ..." } else { "" }
        );
    }
    Ok((weights, stored_all))
}

/// Serialises `graph`'s parameters in their host form as safetensors bytes:
/// f32, f16 or int8 tensors under diffusers' names, `<name>_scale` for each
/// int8 one, and `petal_quantization` in the metadata when there are any.
pub fn weights_bytes(graph: &Graph, host: &[HostTensor]) -> Result<Vec<u8>> {
    let mut datas: Vec<(String, StDtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (p, t) in graph.params.iter().zip(host) {
        match t {
            HostTensor::F32(v) => datas.push((p.name.clone(), StDtype::F32, p.shape.clone(), bytemuck::cast_slice(v).to_vec())),
            HostTensor::F16(v) => {
                datas.push((p.name.clone(), StDtype::F16, p.shape.clone(), v.iter().flat_map(|h| h.to_le_bytes()).collect()))
            }
            HostTensor::I8 { q, scale } => {
                datas.push((p.name.clone(), StDtype::I8, p.shape.clone(), q.iter().map(|&v| v as u8).collect()));
                datas.push((format!("{}{SCALE_SUFFIX}", p.name), StDtype::F32, vec![scale.len()], bytemuck::cast_slice(scale).to_vec()));
            }
        }
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = datas
        .iter()
        .map(|(name, dt, shape, d)| {
            let v = safetensors::tensor::TensorView::new(*dt, shape.clone(), d).map_err(|e| anyhow!("tensor {name}: {e}"))?;
            Ok((name.clone(), v))
        })
        .collect::<Result<_>>()?;
    let mut meta: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    if host.iter().any(|t| matches!(t, HostTensor::I8 { .. })) {
        meta.insert(QUANTIZATION_KEY.into(), INT8_PER_CHANNEL.into());
    }
    safetensors::serialize(views, Some(meta)).map_err(|e| anyhow!("serialising safetensors: {e}"))
}

/// The timesteps [`output_error`] checks: both ends and the middle of
/// DDPM's 1000.
pub const CHECK_TIMESTEPS: [u32; 6] = [1, 50, 250, 500, 750, 999];

/// How far a model's UNet output at `precision` is from its FP32 output:
/// the relative L2 error ||out_p - out_fp32|| / ||out_fp32|| of one
/// standard-normal image (seed 0) at each timestep of `timesteps`, in that
/// order. Issue 10's bounds: FP16 within 1%, INT8 within 5%. `fp32` and
/// `other` are the same model loaded at FP32 and at the precision checked.
pub fn output_error(gpu: &Gpu, fp32: &UNet, other: &UNet, timesteps: &[u32]) -> Result<Vec<f64>> {
    let batch = timesteps.len() as u32;
    let (h, w) = fp32.config.sample_hw();
    let per_image = (fp32.config.in_channels * h * w) as usize;
    let sample = crate::rng::Rng::new(0).normal_vec(per_image * timesteps.len());
    let ts: Vec<f32> = timesteps.iter().map(|&t| t as f32).collect();
    let want = super::ForwardPlan::new(fp32, batch)?.forward(gpu, &sample, &ts)?;
    let got = super::ForwardPlan::new(other, batch)?.forward(gpu, &sample, &ts)?;
    let per_out = want.len() / timesteps.len();
    Ok(got
        .chunks(per_out)
        .zip(want.chunks(per_out))
        .map(|(g, w)| {
            let num: f64 = g.iter().zip(w).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
            let den: f64 = w.iter().map(|&b| (b as f64).powi(2)).sum();
            (num / den.max(1e-300)).sqrt()
        })
        .collect())
}

/// What `petal quantize` wrote.
#[derive(Clone, Debug)]
pub struct QuantizeReport {
    pub weights_file: PathBuf,
    pub file_bytes: u64,
    /// The size of the weights file it was made from.
    pub source_bytes: u64,
}

/// Writes a complete model folder at `out` (model_index.json,
/// unet/config.json, unet/<precision's weights file>,
/// scheduler/scheduler_config.json) holding the model in `src` converted to
/// `precision`. `out` must not exist yet (or be an empty folder).
pub fn quantize_folder(src: &Path, variant: Option<&str>, precision: Precision, out: &Path) -> Result<QuantizeReport> {
    if out.exists() && std::fs::read_dir(out).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{}: already exists and is not an empty folder; give a new one", out.display());
    }
    let m = folder::load(src, variant)?;
    let graph = super::unet::build_graph(&m.config);
    let host = convert(&graph, &m.weights, &m.stored, precision);
    let bytes = weights_bytes(&graph, &host)?;
    let weights_file = out.join("unet").join(precision.weights_file());
    if out.exists() {
        std::fs::remove_dir(out).with_context(|| format!("replacing the empty folder {}", out.display()))?;
    }
    crate::train::checkpoint::write_dir_atomically(out, |dir| {
        let write = |rel: &str, data: &[u8]| -> Result<()> {
            let p = dir.join(rel);
            std::fs::create_dir_all(p.parent().expect("a parent")).with_context(|| format!("creating {}", p.display()))?;
            std::fs::write(&p, data).with_context(|| format!("writing {}", p.display()))
        };
        write("model_index.json", crate::train::checkpoint::MODEL_INDEX.as_bytes())?;
        let config = std::fs::read(&m.files.unet_config).with_context(|| format!("reading {}", m.files.unet_config.display()))?;
        write("unet/config.json", &config)?;
        write(&format!("unet/{}", precision.weights_file()), &bytes)?;
        write("scheduler/scheduler_config.json", m.scheduler.to_json().as_bytes())
    })?;
    let source_bytes = std::fs::metadata(&m.files.weights).map(|md| md.len()).unwrap_or(0);
    Ok(QuantizeReport { weights_file, file_bytes: bytes.len() as u64, source_bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantize_rows_is_symmetric_per_row() {
        let w = [0.5, -1.0, 0.25, 0.0, 0.0, 0.0, 2.0, 1.0, -0.5];
        let (q, s) = quantize_rows(&w, 3);
        assert_eq!(s, vec![1.0 / 127.0, 1.0, 2.0 / 127.0]);
        assert_eq!(q, vec![64, -127, 32, 0, 0, 0, 127, 64, -32]);
    }

    #[test]
    fn int8_round_trips_through_its_widened_values() {
        let w: Vec<f32> = (0..64).map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.013).collect();
        let (q, scale) = quantize_rows(&w, 4);
        let t = HostTensor::I8 { q, scale: scale.clone() };
        let back = convert_one("a.conv1.weight", &[4, 16], &t.widen(), &Stored::I8 { scale }, Precision::Int8);
        assert_eq!(back, t);
    }

    #[test]
    fn policy_keeps_the_sensitive_layers_in_float() {
        assert!(quantizable("down_blocks.0.resnets.0.conv1.weight", &[32, 32, 3, 3]));
        assert!(quantizable("down_blocks.0.resnets.0.time_emb_proj.weight", &[32, 128]));
        assert!(!quantizable("down_blocks.0.resnets.0.conv1.bias", &[32]));
        assert!(!quantizable("down_blocks.0.resnets.0.norm1.weight", &[32]));
        assert!(!quantizable("time_embedding.linear_1.weight", &[128, 32]));
        assert!(!quantizable("conv_in.weight", &[32, 3, 3, 3]));
        assert!(!quantizable("conv_out.weight", &[3, 32, 3, 3]));
        assert!(!quantizable("mid_block.attentions.0.to_q.weight", &[64, 64]));
    }

    #[test]
    fn i8_group_bytes_put_scales_after_the_values() {
        let host = vec![
            HostTensor::I8 { q: vec![1, -2, 3], scale: vec![0.5] },
            HostTensor::I8 { q: vec![4, 5, -6, 7, 8, 9], scale: vec![0.25, 2.0] },
        ];
        let b = encode_group(&[0, 1], &host, Dtype::I8 { rows: 3 });
        assert_eq!(b.len(), 12 + 12);
        assert_eq!(&b[..9], &[1, 254, 3, 4, 5, 250, 7, 8, 9]);
        let dec = Dtype::I8 { rows: 3 }.decode(&b, 9);
        assert_eq!(dec, vec![0.5, -1.0, 1.5, 1.0, 1.25, -1.5, 14.0, 16.0, 18.0]);
    }
}
