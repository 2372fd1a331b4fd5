//! Compute pipelines built once and reused, keyed by shader and variant (as
//! ratchet's pipeline pool), and the recorded [`Dispatch`]es that use them.

use super::TensorView;
use anyhow::{Result, anyhow};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Makes a key's WGSL source for an adapter's features (the kernels' shader
/// library supplies it: this layer knows no shader or op by name).
pub type RenderSource = fn(&PipelineKey, wgpu::Features) -> Result<String>;

/// A shader (a name, and how to render its source) plus the template values
/// that specialise it (`{{TILE_M}}` in the source becomes the value given for
/// `TILE_M`). Kernels make keys with `crate::shaders::key`. The name and the
/// values identify the pipeline in the cache (one renderer per shader name).
#[derive(Clone, Debug)]
pub struct PipelineKey {
    pub shader: &'static str,
    pub defines: Vec<(&'static str, String)>,
    pub render: RenderSource,
}

impl PartialEq for PipelineKey {
    fn eq(&self, other: &Self) -> bool {
        self.shader == other.shader && self.defines == other.defines
    }
}

impl Eq for PipelineKey {}

impl std::hash::Hash for PipelineKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.shader.hash(h);
        self.defines.hash(h);
    }
}

impl PipelineKey {
    pub fn new(shader: &'static str, render: RenderSource) -> PipelineKey {
        PipelineKey { shader, defines: Vec::new(), render }
    }

    pub fn define(mut self, name: &'static str, value: impl ToString) -> PipelineKey {
        self.defines.push((name, value.to_string()));
        self
    }
}

pub struct PipelineCache {
    features: wgpu::Features,
    pipelines: Mutex<HashMap<PipelineKey, Arc<wgpu::ComputePipeline>>>,
}

impl PipelineCache {
    pub fn new(features: wgpu::Features) -> PipelineCache {
        PipelineCache { features, pipelines: Mutex::new(HashMap::new()) }
    }

    pub fn get(&self, device: &wgpu::Device, key: &PipelineKey) -> Result<Arc<wgpu::ComputePipeline>> {
        if let Some(p) = self.pipelines.lock().unwrap().get(key) {
            return Ok(p.clone());
        }
        let source = (key.render)(key, self.features)?;
        let label = format!("{}{:?}", key.shader, key.defines);
        if let Some(dir) = std::env::var_os("PETAL_DUMP_SHADERS") {
            dump_source(std::path::Path::new(&dir), key, &label, &source)?;
        }
        let started = std::time::Instant::now();
        // Shader compilation errors are bugs in Petal, but report them as
        // errors (with the WGSL) rather than aborting the process.
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let desc = wgpu::ShaderModuleDescriptor {
            label: Some(&label),
            source: wgpu::ShaderSource::Wgsl(source.clone().into()),
        };
        let module = if trusted(&source) {
            // SAFETY: a shader marked `petal:trusted` keeps every index in
            // bounds (clamped, or guarded by sizes its Rust wrapper checks)
            // and every loop finite; its kernel tests run it with the same
            // compilation. naga's own bounds checks and loop bounding cost
            // 2-4x on lavapipe because they stop the driver unrolling.
            unsafe { device.create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked()) }
        } else {
            device.create_shader_module(desc)
        };
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&label),
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        if let Some(err) = pollster::block_on(scope.pop()) {
            return Err(anyhow!("building pipeline {label}: {err}"));
        }
        if std::env::var_os("PETAL_LOG_PIPELINES").is_some() {
            // The driver's compile time per pipeline (lavapipe: LLVM), to find slow kernels.
            eprintln!("pipeline {label}: built in {:.2} s", started.elapsed().as_secs_f64());
        }
        let pipeline = Arc::new(pipeline);
        self.pipelines.lock().unwrap().insert(key.clone(), pipeline.clone());
        Ok(pipeline)
    }

    pub fn len(&self) -> usize {
        self.pipelines.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Writes the WGSL a pipeline is built from (placeholders filled, snippets
/// included) to `DIR/SHADER-HASH.wgsl`, HASH being that of the template
/// values, named in a first comment line. Set PETAL_DUMP_SHADERS=DIR to read
/// a generated kernel whole. Errors name the file.
fn dump_source(dir: &std::path::Path, key: &PipelineKey, label: &str, source: &str) -> Result<()> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.defines.hash(&mut h);
    let path = dir.join(format!("{}-{:016x}.wgsl", key.shader, h.finish()));
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&path, format!("// {label}\n{source}")))
        .map_err(|e| anyhow!("writing the shader source {}: {e}", path.display()))
}

/// Whether a shader is compiled without naga's runtime checks: it says
/// `// petal:trusted` and PETAL_SHADER_CHECKS is not set (set it to debug a
/// kernel with every access checked).
fn trusted(source: &str) -> bool {
    source.contains("// petal:trusted") && std::env::var_os("PETAL_SHADER_CHECKS").is_none()
}

/// One recorded kernel launch: pipeline, bind group and grid, created once
/// and replayed every step. Clones share the pipeline, bind group and
/// parameter buffer.
#[derive(Clone)]
pub struct Dispatch {
    pub label: String,
    pub pipeline: Arc<wgpu::ComputePipeline>,
    pub bind_group: wgpu::BindGroup,
    pub workgroups: [u32; 3],
    /// The op's parameter block, when it changes between replays
    /// (scheduler coefficients, say).
    pub uniform: Option<wgpu::Buffer>,
}

impl Dispatch {
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(self.workgroups[0], self.workgroups[1], self.workgroups[2]);
    }
}

impl super::Gpu {
    /// Builds a dispatch of `key` with `params` as binding 0 (a small uniform
    /// buffer of its own, made once per plan) and `buffers` as bindings 1..
    /// in order.
    pub fn dispatch<P: bytemuck::Pod>(
        &self,
        label: impl Into<String>,
        key: &PipelineKey,
        params: &P,
        buffers: &[&TensorView],
        workgroups: [u32; 3],
    ) -> Result<Dispatch> {
        let numbered: Vec<(u32, &TensorView)> = buffers.iter().enumerate().map(|(i, b)| (i as u32 + 1, *b)).collect();
        self.dispatch_bindings(label, key, params, &numbered, workgroups)
    }

    /// [`Self::dispatch`] with each buffer's binding number given, for a
    /// shader that binds some of a family's operands and not others.
    /// Errors: the pipeline's (see [`PipelineCache::get`]), a binding the
    /// shader does not declare or one it declares and is not given, or more
    /// workgroups on an axis than the device allows.
    pub fn dispatch_bindings<P: bytemuck::Pod>(
        &self,
        label: impl Into<String>,
        key: &PipelineKey,
        params: &P,
        buffers: &[(u32, &TensorView)],
        workgroups: [u32; 3],
    ) -> Result<Dispatch> {
        let label = label.into();
        let pipeline = self.pipelines.get(&self.device, key)?;
        let bytes = bytemuck::bytes_of(params);
        let uniform = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(&label),
            size: (bytes.len() as u64).next_multiple_of(16),
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.queue.write_buffer(&uniform, 0, bytes);
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: uniform.as_entire_binding(),
        }];
        for (binding, b) in buffers {
            entries.push(wgpu::BindGroupEntry { binding: *binding, resource: b.binding() });
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(&label),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        if let Some(err) = pollster::block_on(scope.pop()) {
            return Err(anyhow!("binding {label}: {err}"));
        }
        for (axis, &n) in workgroups.iter().enumerate() {
            if n > self.limits.max_compute_workgroups_per_dimension {
                return Err(anyhow!("{label}: {n} workgroups on axis {axis} is over the limit"));
            }
        }
        Ok(Dispatch { label, pipeline, bind_group, workgroups, uniform: Some(uniform) })
    }

    /// Records `dispatches` into one compute pass and submits them as one
    /// command buffer.
    pub fn run(&self, dispatches: &[&Dispatch]) -> wgpu::SubmissionIndex {
        let mut enc = self.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            for d in dispatches {
                d.record(&mut pass);
            }
        }
        self.queue.submit([enc.finish()])
    }
}

/// Splits `n` workgroups over x and y so neither exceeds the per-dimension
/// limit; kernels rebuild the linear id as `wid.x + wid.y * nwg.x`.
pub fn grid_1d(n: u32) -> [u32; 3] {
    const MAX: u32 = 65535;
    if n <= MAX { [n.max(1), 1, 1] } else { [MAX, n.div_ceil(MAX), 1] }
}
