//! The GPU: adapter choice, device, buffers, pipelines and readback.
//!
//! Everything above this module talks to the GPU through [`Gpu`]: it owns the
//! device and queue, knows which kernel family suits the adapter
//! ([`KernelFamily`]), and caches compute pipelines by shader and variant.

mod arena;
mod pipelines;

pub use arena::{Arena, Dtype, Slot, TensorView, max_tensor_bytes};
pub use pipelines::{Dispatch, PipelineCache, PipelineKey, grid_1d};

use anyhow::{Context, Result, anyhow};
use std::sync::{Arc, Mutex};

/// Which shape of kernels runs fastest on the adapter.
///
/// Software rasterisers (lavapipe/llvmpipe, WARP, SwiftShader) run an
/// invocation per SIMD lane and turn most workgroup-memory traffic into scalar
/// loops, so they want register-blocked kernels with lots of arithmetic per load
/// and no barriers. Real GPUs want the classic workgroup-memory tiling.
/// Both families compute the same thing and are tested against the same CPU
/// reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelFamily {
    /// Register-blocked kernels for CPU (software) adapters.
    Cpu,
    /// Workgroup-memory tiled kernels for hardware GPUs.
    Gpu,
}

impl KernelFamily {
    pub fn name(self) -> &'static str {
        match self {
            KernelFamily::Cpu => "cpu",
            KernelFamily::Gpu => "gpu",
        }
    }

    /// The family for an adapter, unless `PETAL_KERNELS=cpu|gpu` overrides it
    /// (the tests use this to check both families on one machine).
    fn choose(info: &wgpu::AdapterInfo) -> Result<KernelFamily> {
        if let Ok(v) = std::env::var("PETAL_KERNELS") {
            return match v.as_str() {
                "cpu" => Ok(KernelFamily::Cpu),
                "gpu" => Ok(KernelFamily::Gpu),
                "" | "auto" => Ok(Self::for_device_type(info.device_type)),
                other => Err(anyhow!("PETAL_KERNELS={other}: expected cpu, gpu or auto")),
            };
        }
        Ok(Self::for_device_type(info.device_type))
    }

    fn for_device_type(t: wgpu::DeviceType) -> KernelFamily {
        match t {
            wgpu::DeviceType::Cpu => KernelFamily::Cpu,
            _ => KernelFamily::Gpu,
        }
    }
}

/// Asks lavapipe (Mesa's llvmpipe, the software Vulkan driver) for 512-bit
/// vectors where they pay, by setting `LP_NATIVE_VECTOR_WIDTH=512` in this
/// process's environment unless the user has set it. lavapipe then runs
/// subgroups of 16 lanes and the CPU family's conv kernels use them
/// ([`crate::kernels::conv_lanes`]). Other drivers ignore the variable.
/// Returns whether it set it.
///
/// Whether 512 bits pay depends on the CPU, not only on AVX-512
/// ([`wide_vectors_pay`]): on a 2-core AMD EPYC (Zen 5) cifar10-32's
/// forward pass at batch 16 took 1.38x less time and training steps
/// 1.07-1.10x less (BENCHMARKS.md, "16-lane convolutions"); on a 2-core
/// Intel Xeon (Ice Lake-SP) 512 bits made 6 of the 8 workloads of issue 8's
/// table 1.07-1.31x slower than the default 256 (medians of three runs) and
/// left cifar10-32's forward pass at batch 16 and its training step even
/// (BENCHMARKS.md, "The vector width by CPU"). `PETAL_WIDE_VECTORS=1` asks for 512 bits on
/// any CPU with AVX-512, `PETAL_WIDE_VECTORS=0` never.
///
/// `petal` calls it for its headless commands only (sample, train, bench,
/// parity), not for the window: with Mesa 22.3.6 and LLVM 15 at 512 bits the
/// app crashed (SIGSEGV in LLVM's EarlyCSE pass, building a shader while the
/// window drew) in 4 of 10 launches under Xvfb (2 starting up, 2 while
/// generating), in none of 5 at the default width (1 generating a batch of
/// 16). Compute-only processes ran the kernel and parity test suites and
/// `petal sample` at 512 bits without a fault.
///
/// # Safety
/// Call before any other thread exists and before any GPU instance is made
/// (Mesa reads the variable once, when the driver loads): changing the
/// environment while another thread reads it is undefined behaviour.
pub unsafe fn prefer_wide_vectors() -> bool {
    if std::env::var_os("LP_NATIVE_VECTOR_WIDTH").is_some() {
        return false;
    }
    let setting = std::env::var("PETAL_WIDE_VECTORS").ok();
    if !wide_vectors_pay(Cpu::this(), setting.as_deref()) {
        return false;
    }
    // SAFETY: the caller guarantees no other thread reads the environment.
    unsafe { std::env::set_var("LP_NATIVE_VECTOR_WIDTH", "512") };
    true
}

/// The host CPU, as far as lavapipe's vector width is chosen by it
/// ([`wide_vectors_pay`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cpu {
    pub vendor: CpuVendor,
    /// The x86 display family (base family, plus the extended family where
    /// the base is 0xF): 6 for Intel's Core and Xeon, 0x19 for AMD Zen 3 and
    /// 4, 0x1A for Zen 5.
    pub family: u32,
    /// AVX-512 Foundation, which 512-bit lavapipe needs.
    pub avx512: bool,
}

/// Who made the CPU, from CPUID leaf 0's vendor string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuVendor {
    Amd,
    Intel,
    Other,
}

impl Cpu {
    /// This machine's CPU, read with CPUID; None off x86-64.
    pub fn this() -> Option<Cpu> {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::__cpuid;
            #[allow(unused_unsafe)]
            // SAFETY: CPUID leaves 0 and 1 exist on every x86-64 CPU.
            let (l0, l1) = unsafe { (__cpuid(0), __cpuid(1)) };
            let mut vendor = [0u8; 12];
            for (i, r) in [l0.ebx, l0.edx, l0.ecx].iter().enumerate() {
                vendor[4 * i..4 * i + 4].copy_from_slice(&r.to_le_bytes());
            }
            let vendor = match &vendor {
                b"AuthenticAMD" => CpuVendor::Amd,
                b"GenuineIntel" => CpuVendor::Intel,
                _ => CpuVendor::Other,
            };
            let base = (l1.eax >> 8) & 0xF;
            let family = if base == 0xF { base + ((l1.eax >> 20) & 0xFF) } else { base };
            Some(Cpu { vendor, family, avx512: std::arch::is_x86_feature_detected!("avx512f") })
        }
        #[cfg(not(target_arch = "x86_64"))]
        None
    }
}

/// Whether lavapipe should run at 512-bit vectors on `cpu`, given the
/// `PETAL_WIDE_VECTORS` setting: "1" on any CPU with AVX-512, "0" (or any
/// other value) never, unset where it was measured to pay: AMD's Zen 5
/// (family 0x1A) and later. The one Intel CPU measured, an Ice Lake-SP Xeon,
/// was 1.05-1.25x slower at 512 bits; other CPUs with AVX-512 (AMD's Zen 4,
/// family 0x19, which splits 512-bit operations in two, and Intel's later
/// cores) are not measured and keep lavapipe's default.
///
/// # Examples
/// ```
/// use petal::gpu::{Cpu, CpuVendor, wide_vectors_pay};
/// let zen5 = Some(Cpu { vendor: CpuVendor::Amd, family: 0x1A, avx512: true });
/// let ice_lake = Some(Cpu { vendor: CpuVendor::Intel, family: 6, avx512: true });
/// assert!(wide_vectors_pay(zen5, None));
/// assert!(!wide_vectors_pay(ice_lake, None));
/// assert!(wide_vectors_pay(ice_lake, Some("1")));
/// ```
pub fn wide_vectors_pay(cpu: Option<Cpu>, setting: Option<&str>) -> bool {
    let Some(cpu) = cpu.filter(|c| c.avx512) else { return false };
    match setting {
        Some(s) => s == "1",
        None => cpu.vendor == CpuVendor::Amd && cpu.family >= 0x1A,
    }
}

/// Options for opening the GPU.
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// Pick the adapter whose name contains this (case-insensitive).
    pub adapter: Option<String>,
    /// Force a kernel family instead of choosing by adapter kind.
    pub family: Option<KernelFamily>,
}

/// The device, queue and what we know about them.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
    pub family: KernelFamily,
    /// The CPU that runs the kernels where the adapter is a software
    /// renderer (lavapipe), read once when the device opens; None for
    /// hardware GPUs. Some CPU-family blockings depend on it
    /// (`kernels::conv2d_backward::WeightGradLayout`).
    pub host: Option<Cpu>,
    pub pipelines: PipelineCache,
    /// A tiny buffer bound where a kernel's optional input is absent.
    pub dummy: TensorView,
    /// The first thing that made the device unusable: it was lost (a driver
    /// reset, a GPU removed, [`Gpu::destroy`]) or an error no scope caught.
    /// See [`Gpu::check`].
    broken: Arc<Mutex<Broken>>,
}

/// What [`Gpu::check`] reports: a loss first (it explains the errors that follow it).
#[derive(Default)]
struct Broken {
    lost: Option<String>,
    error: Option<String>,
}

impl Gpu {
    /// Opens the best adapter: a hardware GPU when there is one, else a
    /// software one (lavapipe in CI).
    pub fn new(opts: &GpuOptions) -> Result<Arc<Gpu>> {
        pollster::block_on(Self::new_async(opts))
    }

    async fn new_async(opts: &GpuOptions) -> Result<Arc<Gpu>> {
        // Vulkan, Metal and DX12 unless WGPU_BACKEND says otherwise (GL lacks
        // the compute features the kernels need).
        let backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::PRIMARY);
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends,
            ..wgpu::InstanceDescriptor::new_without_display_handle_from_env()
        });
        let adapters = instance.enumerate_adapters(backends).await;
        let adapter = match &opts.adapter {
            Some(want) => {
                let want_l = want.to_lowercase();
                adapters
                    .into_iter()
                    .find(|a| a.get_info().name.to_lowercase().contains(&want_l))
                    .ok_or_else(|| anyhow!("no GPU adapter matches {want:?}"))?
            }
            None => pick_adapter(adapters).ok_or_else(|| {
                anyhow!(
                    "no GPU adapter found: install a Vulkan, Metal or DX12 driver \
                     (on Linux without a GPU: the mesa-vulkan-drivers package gives lavapipe)"
                )
            })?,
        };
        Self::from_adapter(adapter, opts).await
    }

    async fn from_adapter(adapter: wgpu::Adapter, opts: &GpuOptions) -> Result<Arc<Gpu>> {
        let info = adapter.get_info();
        let wanted = wgpu::Features::SUBGROUP | wgpu::Features::SHADER_F16;
        let features = adapter.features() & wanted;
        // Take everything the adapter offers: the big storage bindings and
        // workgroup sizes are what the kernels are sized by.
        let mut limits = adapter.limits();
        if let Some(bytes) = max_binding_from_env()? {
            limits.max_storage_buffer_binding_size = limits.max_storage_buffer_binding_size.min(bytes);
            limits.max_buffer_size = limits.max_buffer_size.min(bytes);
        }
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("petal"),
                required_features: features,
                required_limits: limits.clone(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .with_context(|| format!("opening GPU device on {}", info.name))?;
        let family = match opts.family {
            Some(f) => f,
            None => KernelFamily::choose(&info)?,
        };
        Ok(Self::assemble(device, queue, info, family))
    }

    fn assemble(
        device: wgpu::Device,
        queue: wgpu::Queue,
        info: wgpu::AdapterInfo,
        family: KernelFamily,
    ) -> Arc<Gpu> {
        let limits = device.limits();
        let features = device.features();
        let pipelines = PipelineCache::new(features);
        let dummy = TensorView::whole(device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("dummy"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        }));
        // A lost device or an uncaught error is recorded, not a panic (wgpu's
        // default for uncaught errors): the next wait or readback returns it
        // as an error, and the worker reopens the GPU.
        let broken = Arc::new(Mutex::new(Broken::default()));
        let b = broken.clone();
        device.set_device_lost_callback(move |reason, msg| {
            let text = format!("the GPU device was lost ({reason:?}{})", if msg.is_empty() { String::new() } else { format!(": {msg}") });
            b.lock().unwrap_or_else(|p| p.into_inner()).lost.get_or_insert(text);
        });
        let b = broken.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            b.lock().unwrap_or_else(|p| p.into_inner()).error.get_or_insert(format!("GPU error: {e}"));
        }));
        let host = if info.device_type == wgpu::DeviceType::Cpu { Cpu::this() } else { None };
        Arc::new(Gpu { device, queue, info, limits, features, family, host, pipelines, dummy, broken })
    }

    /// Err with what happened when the device was lost or hit an error no
    /// error scope caught; Ok while it is usable. Waits and readbacks call it.
    pub fn check(&self) -> Result<()> {
        let errored = self.broken.lock().unwrap_or_else(|p| p.into_inner()).error.is_some();
        if errored {
            // A loss is reported when the device is next polled; an error
            // caused by it must not hide it.
            let _ = self.device.poll(wgpu::PollType::Poll);
        }
        let b = self.broken.lock().unwrap_or_else(|p| p.into_inner());
        match b.lost.as_ref().or(b.error.as_ref()) {
            Some(msg) => Err(anyhow!("{msg}")),
            None => Ok(()),
        }
    }

    /// Destroys the device, as a driver reset would: everything after it
    /// fails with "the GPU device was lost". For tests of that path.
    pub fn destroy(&self) {
        self.device.destroy();
    }

    /// Wraps a device someone else opened (eframe's, in the app).
    pub fn from_device(
        device: wgpu::Device,
        queue: wgpu::Queue,
        info: wgpu::AdapterInfo,
        family: Option<KernelFamily>,
    ) -> Result<Arc<Gpu>> {
        let family = match family {
            Some(f) => f,
            None => KernelFamily::choose(&info)?,
        };
        Ok(Self::assemble(device, queue, info, family))
    }

    /// "NVIDIA GeForce RTX 4070 (Vulkan, discrete GPU, gpu kernels)".
    pub fn describe(&self) -> String {
        let kind = match self.info.device_type {
            wgpu::DeviceType::DiscreteGpu => "discrete GPU",
            wgpu::DeviceType::IntegratedGpu => "integrated GPU",
            wgpu::DeviceType::VirtualGpu => "virtual GPU",
            wgpu::DeviceType::Cpu => "software renderer on the CPU",
            wgpu::DeviceType::Other => "unknown kind",
        };
        format!(
            "{} ({:?}, {}, {} kernels)",
            self.info.name,
            self.info.backend,
            kind,
            self.family.name()
        )
    }

    pub fn has_subgroups(&self) -> bool {
        self.features.contains(wgpu::Features::SUBGROUP)
    }

    /// Waits until all submitted work is done.
    pub fn wait(&self) -> Result<()> {
        self.check()?;
        let polled = self.device.poll(wgpu::PollType::wait_indefinitely());
        self.check()?;
        polled.map_err(|e| anyhow!("waiting for the GPU: {e}"))?;
        Ok(())
    }

    /// A storage buffer initialised with `data`.
    pub fn upload_f32(&self, label: &str, data: &[f32]) -> wgpu::Buffer {
        let buf = self.storage_buffer(label, (data.len() * 4) as u64);
        self.queue.write_buffer(&buf, 0, bytemuck::cast_slice(data));
        buf
    }

    /// A standalone tensor of `len` elements stored as `dtype`, initialised
    /// with its raw bytes (`dtype.bytes(len)` of them; see [`Dtype`]).
    pub fn upload_typed(&self, label: &str, len: usize, dtype: Dtype, bytes: &[u8]) -> TensorView {
        let buf = self.storage_buffer(label, dtype.bytes(len));
        let view = TensorView::typed(Arc::new(buf), 0, len, dtype);
        self.write_bytes(&view, bytes);
        view
    }

    /// An empty storage buffer of `bytes` bytes (rounded up to 4), usable as a
    /// copy source and destination.
    pub fn storage_buffer(&self, label: &str, bytes: u64) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.max(4).next_multiple_of(4),
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// Copies `view` back to the CPU. Blocks; for tests, checkpoints and
    /// previews, never inside a denoising step.
    pub fn read_f32(&self, view: &TensorView) -> Result<Vec<f32>> {
        Ok(self.read_many(&[view])?.pop().unwrap())
    }

    /// Copies several views back with one submission and one wait. Packed
    /// views come back widened to f32 (int8 dequantized with their scales).
    pub fn read_many(&self, views: &[&TensorView]) -> Result<Vec<Vec<f32>>> {
        let total: u64 = views.iter().map(|v| v.bytes()).sum();
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: total.max(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.device.create_command_encoder(&Default::default());
        let mut at = 0;
        for v in views {
            enc.copy_buffer_to_buffer(v.buffer(), v.offset, &staging, at, v.bytes());
            at += v.bytes();
        }
        self.queue.submit([enc.finish()]);
        let slice = staging.slice(..);
        let (tx, rx) = crossbeam_channel::bounded(1);
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.wait()?;
        rx.recv()
            .map_err(|_| anyhow!("GPU readback was dropped"))?
            .map_err(|e| anyhow!("GPU readback failed: {e}"))?;
        let data = slice.get_mapped_range().map_err(|e| anyhow!("GPU readback failed: {e:?}"))?;
        let mut out = Vec::with_capacity(views.len());
        let mut at = 0;
        for v in views {
            let bytes = v.bytes() as usize;
            out.push(v.dtype.decode(&data[at..at + bytes], v.len));
            at += bytes;
        }
        drop(data);
        staging.unmap();
        Ok(out)
    }

    /// Writes `data` into `view` (queued; takes effect before the next submission).
    pub fn write_f32(&self, view: &TensorView, data: &[f32]) {
        assert_eq!(data.len(), view.len, "write_f32: length mismatch");
        assert_eq!(view.dtype, Dtype::F32, "write_f32 into a packed tensor");
        self.queue.write_buffer(view.buffer(), view.offset, bytemuck::cast_slice(data));
    }

    /// Writes a tensor's raw bytes in its own format (see [`Dtype`]);
    /// `bytes.len()` must be `view.bytes()`.
    pub fn write_bytes(&self, view: &TensorView, bytes: &[u8]) {
        assert_eq!(bytes.len() as u64, view.bytes(), "write_bytes: length mismatch");
        self.queue.write_buffer(view.buffer(), view.offset, bytes);
    }
}

/// Prefers a discrete GPU, then an integrated one, then anything else, then a
/// software renderer.
/// `PETAL_MAX_STORAGE_BINDING=BYTES` asks the device for a largest storage
/// binding (and buffer) no larger than BYTES, as a smaller GPU would offer:
/// how the tests exercise batches that do not fit without a huge model.
pub const MAX_BINDING_ENV: &str = "PETAL_MAX_STORAGE_BINDING";

fn max_binding_from_env() -> Result<Option<u64>> {
    match std::env::var(MAX_BINDING_ENV) {
        Err(_) => Ok(None),
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(b) if b >= 4096 => Ok(Some(b)),
            _ => Err(anyhow!("{MAX_BINDING_ENV}={v:?}: expected a number of bytes, at least 4096")),
        },
    }
}

fn pick_adapter(adapters: Vec<wgpu::Adapter>) -> Option<wgpu::Adapter> {
    let rank = |a: &wgpu::Adapter| {
        let info = a.get_info();
        let kind = match info.device_type {
            wgpu::DeviceType::DiscreteGpu => 0,
            wgpu::DeviceType::IntegratedGpu => 1,
            wgpu::DeviceType::VirtualGpu => 2,
            wgpu::DeviceType::Other => 3,
            wgpu::DeviceType::Cpu => 4,
        };
        // Vulkan/Metal/DX12 before GL.
        let backend = if info.backend == wgpu::Backend::Gl { 1 } else { 0 };
        (kind, backend)
    };
    adapters.into_iter().min_by_key(rank)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wide_vectors_where_measured_to_pay_or_asked_for() {
        let cpu = |vendor, family, avx512| Some(Cpu { vendor, family, avx512 });
        let zen5 = cpu(CpuVendor::Amd, 0x1A, true);
        let zen4 = cpu(CpuVendor::Amd, 0x19, true);
        let ice_lake = cpu(CpuVendor::Intel, 6, true);
        let no_avx512 = cpu(CpuVendor::Amd, 0x1A, false);
        // Unset: Zen 5 only.
        assert!(wide_vectors_pay(zen5, None));
        assert!(!wide_vectors_pay(zen4, None));
        assert!(!wide_vectors_pay(ice_lake, None));
        assert!(!wide_vectors_pay(cpu(CpuVendor::Other, 0x1A, true), None));
        // "1" on any AVX-512 CPU, "0" or anything else never; no AVX-512, never.
        assert!(wide_vectors_pay(ice_lake, Some("1")));
        assert!(wide_vectors_pay(zen4, Some("1")));
        assert!(!wide_vectors_pay(zen5, Some("0")));
        assert!(!wide_vectors_pay(zen5, Some("yes")));
        assert!(!wide_vectors_pay(no_avx512, Some("1")));
        assert!(!wide_vectors_pay(None, Some("1")));
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn this_cpu_is_read() {
        let cpu = Cpu::this().unwrap();
        assert_eq!(cpu.avx512, std::arch::is_x86_feature_detected!("avx512f"));
        // Every x86-64 CPU's display family is 6 (Intel) or at least 0xF.
        assert!(cpu.family == 6 || cpu.family >= 0xF, "{cpu:?}");
        // Linux says the same in /proc/cpuinfo.
        let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let field = |name: &str| {
            text.lines().find(|l| l.starts_with(name)).and_then(|l| l.split(':').nth(1)).map(|v| v.trim().to_string())
        };
        if let Some(family) = field("cpu family") {
            assert_eq!(family, cpu.family.to_string());
        }
        match field("vendor_id").as_deref() {
            Some("GenuineIntel") => assert_eq!(cpu.vendor, CpuVendor::Intel),
            Some("AuthenticAMD") => assert_eq!(cpu.vendor, CpuVendor::Amd),
            _ => {}
        }
    }
}
