//! How fast this adapter moves memory through each way a WGSL kernel can
//! read or write it: the measurement behind "every storage-buffer load is a
//! loop over the lanes" (conv2d_forward_subgroup.wgsl) and the texture
//! figures in BENCHMARKS.md. Each kernel streams a 64 MiB array once (each
//! invocation walks a strided range and keeps a sum, so nothing is dead
//! code); a run is 10 back-to-back dispatches, the median of --runs is kept.
//!
//!     cargo bench --bench loads [-- --lanes 16] [--runs 5]
//!
//! Kernels: `storage vec4` (array<vec4<f32>>, the memory-bound kernels'
//! width), `storage f32`, `texture` (textureLoad from an rgba32float
//! texture_2d, the same bytes), `store storage vec4`, `store texture`
//! (textureStore to an rgba32float storage texture), and `copy to texture`
//! (copy_buffer_to_texture, no kernel). GB/s counts the 64 MiB once.
//! --lanes sets the workgroup size (lavapipe's subgroups are 8 lanes at
//! 256-bit vectors and 16 at 512; this binary asks for 512 where they pay,
//! as `petal` does: `PETAL_WIDE_VECTORS=1` on any CPU with AVX-512).

use petal::gpu::{Gpu, GpuOptions};
use std::time::Instant;
use wgpu::util::DeviceExt;

const W: u32 = 4096; // texels a row
const H: u32 = 1024; // rows: 4 Mi texels of 16 bytes, 64 MiB
const THREADS: u32 = 16 * 512;

fn kernel(name: &str, lanes: u32) -> String {
    let n4 = W * H;
    let head = format!("@compute @workgroup_size({lanes}) fn main(@builtin(global_invocation_id) g: vec3<u32>) {{\n  let T = {THREADS}u;");
    match name {
        "storage vec4" => format!(
            "@group(0) @binding(0) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> o: array<f32>;
{head}
  var s = vec4<f32>(0.0);
  for (var i = g.x; i < {n4}u; i += T) {{ s += x[i]; }}
  o[g.x] = s.x + s.y + s.z + s.w;
}}"
        ),
        "storage f32" => format!(
            "@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> o: array<f32>;
{head}
  var s = 0.0;
  for (var i = g.x; i < {}u; i += T) {{ s += x[i]; }}
  o[g.x] = s;
}}",
            n4 * 4
        ),
        "texture" => format!(
            "@group(0) @binding(0) var x: texture_2d<f32>;
@group(0) @binding(1) var<storage, read_write> o: array<f32>;
{head}
  var s = vec4<f32>(0.0);
  for (var i = g.x; i < {n4}u; i += T) {{ s += textureLoad(x, vec2<u32>(i % {W}u, i / {W}u), 0); }}
  o[g.x] = s.x + s.y + s.z + s.w;
}}"
        ),
        "store storage vec4" => format!(
            "@group(0) @binding(0) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> o: array<vec4<f32>>;
{head}
  let v = x[g.x];
  for (var i = g.x; i < {n4}u; i += T) {{ o[i] = v + f32(i); }}
}}"
        ),
        "store texture" => format!(
            "@group(0) @binding(0) var x: texture_storage_2d<rgba32float, write>;
@group(0) @binding(1) var<storage, read_write> o: array<f32>;
{head}
  for (var i = g.x; i < {n4}u; i += T) {{ textureStore(x, vec2<u32>(i % {W}u, i / {W}u), vec4<f32>(f32(i))); }}
  o[g.x] = 1.0;
}}"
        ),
        _ => unreachable!(),
    }
}

fn main() -> anyhow::Result<()> {
    // SAFETY: no other thread exists yet, and no GPU instance.
    unsafe { petal::gpu::prefer_wide_vectors() };
    let mut lanes = 16u32;
    let mut runs = 5usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--lanes" => lanes = args.next().and_then(|v| v.parse().ok()).expect("--lanes N"),
            "--runs" => runs = args.next().and_then(|v| v.parse().ok()).expect("--runs N"),
            "--bench" => {}
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let gpu = Gpu::new(&GpuOptions::default())?;
    println!("{}", gpu.describe());
    if let Ok(l) = std::fs::read_to_string("/proc/loadavg") {
        println!("load average: {}", l.trim());
    }
    let dev = &gpu.device;
    let bytes = (W * H) as u64 * 16;
    let data: Vec<f32> = (0..(W * H * 4) as usize).map(|i| (i % 7) as f32).collect();
    let src = dev.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("src"),
        contents: bytemuck::cast_slice(&data),
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
    });
    let dst = dev.create_buffer(&wgpu::BufferDescriptor { label: Some("dst"), size: bytes, usage: wgpu::BufferUsages::STORAGE, mapped_at_creation: false });
    let sums = dev.create_buffer(&wgpu::BufferDescriptor { label: Some("sums"), size: THREADS as u64 * 4, usage: wgpu::BufferUsages::STORAGE, mapped_at_creation: false });
    let extent = wgpu::Extent3d { width: W, height: H, depth_or_array_layers: 1 };
    let tex = dev.create_texture(&wgpu::TextureDescriptor {
        label: Some("tex"),
        size: extent,
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: wgpu::TextureFormat::Rgba32Float,
        usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::STORAGE_BINDING | wgpu::TextureUsages::COPY_DST,
        view_formats: &[],
    });
    let view = tex.create_view(&Default::default());
    let copy = |e: &mut wgpu::CommandEncoder| {
        e.copy_buffer_to_texture(
            wgpu::TexelCopyBufferInfo { buffer: &src, layout: wgpu::TexelCopyBufferLayout { offset: 0, bytes_per_row: Some(W * 16), rows_per_image: Some(H) } },
            tex.as_image_copy(),
            extent,
        );
    };
    // Times `record` (10 of one operation into one submission), median of runs.
    let time = |record: &dyn Fn(&mut wgpu::CommandEncoder)| -> anyhow::Result<f64> {
        let submit = || -> anyhow::Result<()> {
            let mut e = dev.create_command_encoder(&Default::default());
            record(&mut e);
            gpu.queue.submit([e.finish()]);
            gpu.wait()
        };
        submit()?;
        let mut t: Vec<f64> = Vec::new();
        for _ in 0..runs {
            let t0 = Instant::now();
            submit()?;
            t.push(t0.elapsed().as_secs_f64() / 10.0);
        }
        t.sort_by(|a, b| a.partial_cmp(b).unwrap());
        Ok(t[t.len() / 2])
    };
    println!("\n64 MiB once, workgroups of {lanes}, median of {runs} runs of 10:");
    println!("{:<20} {:>9} {:>8} {:>14}", "kernel", "ms", "GB/s", "vs storage vec4");
    let mut base = None;
    for name in ["storage vec4", "storage f32", "texture", "store storage vec4", "store texture", "copy to texture"] {
        let t = if name == "copy to texture" {
            time(&|e| (0..10).for_each(|_| copy(e)))?
        } else {
            let m = dev.create_shader_module(wgpu::ShaderModuleDescriptor { label: Some(name), source: wgpu::ShaderSource::Wgsl(kernel(name, lanes).into()) });
            let p = dev.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(name),
                layout: None,
                module: &m,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            });
            let first = if name.contains("texture") { wgpu::BindingResource::TextureView(&view) } else { src.as_entire_binding() };
            let out = if name == "store storage vec4" { &dst } else { &sums };
            let bg = dev.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(name),
                layout: &p.get_bind_group_layout(0),
                entries: &[
                    wgpu::BindGroupEntry { binding: 0, resource: first },
                    wgpu::BindGroupEntry { binding: 1, resource: out.as_entire_binding() },
                ],
            });
            time(&|e| {
                let mut c = e.begin_compute_pass(&Default::default());
                c.set_pipeline(&p);
                c.set_bind_group(0, &bg, &[]);
                for _ in 0..10 {
                    c.dispatch_workgroups(THREADS / lanes, 1, 1);
                }
            })?
        };
        let base_t = *base.get_or_insert(t);
        println!("{name:<20} {:>9.2} {:>8.2} {:>13.2}x", t * 1e3, bytes as f64 / t / 1e9, base_t / t);
    }
    Ok(())
}
