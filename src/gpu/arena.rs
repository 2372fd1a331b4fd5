//! Tensors live in a few large "slab" buffers at named offsets (as llm.c keeps
//! one allocation for all parameters and one for all activations). A slab is
//! at most as large as one storage binding may be, so every tensor can be
//! bound on its own; tensors start at the adapter's storage-offset alignment.

use std::num::NonZeroU64;
use std::sync::Arc;

/// How a tensor's elements are stored in its buffer. Activations, gradients
/// and optimizer state are always [`Dtype::F32`]; inference weights may be
/// stored narrower and are widened inside the kernels that read them, through
/// the WGSL snippet of their format (`shaders/snippets/weights_*.wgsl`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dtype {
    /// One f32 per element.
    F32,
    /// IEEE half precision, two per 32-bit word (element 2i in the low half,
    /// as WGSL's `unpack2x16float` reads it).
    F16,
    /// Symmetric int8 for a (rows, len / rows) matrix: four per 32-bit word
    /// (element 4i in the lowest byte), then `rows` f32 scales, one per row
    /// (output channel), starting at the next word. Value = q * scale[row].
    I8 { rows: u32 },
}

impl Dtype {
    /// Bytes `len` elements take, rounded up to whole 32-bit words (for I8,
    /// including the scales).
    pub fn bytes(self, len: usize) -> u64 {
        let len = len as u64;
        match self {
            Dtype::F32 => len * 4,
            Dtype::F16 => (len * 2).next_multiple_of(4),
            Dtype::I8 { rows } => len.next_multiple_of(4) + rows as u64 * 4,
        }
    }

    /// The name of the shader snippet that reads this format
    /// (`shaders/snippets/weights_<name>.wgsl`): "f32", "f16" or "i8".
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
            Dtype::I8 { .. } => "i8",
        }
    }

    /// Decodes the raw little-endian bytes of `len` elements to f32
    /// (dequantized, for I8).
    pub fn decode(self, bytes: &[u8], len: usize) -> Vec<f32> {
        match self {
            Dtype::F32 => bytemuck::cast_slice::<u8, f32>(&bytes[..len * 4]).to_vec(),
            Dtype::F16 => bytes[..len * 2]
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::I8 { rows } => {
                let at = len.next_multiple_of(4);
                let scales: &[f32] = bytemuck::cast_slice(&bytes[at..at + rows as usize * 4]);
                let per_row = len / rows.max(1) as usize;
                (0..len).map(|i| bytes[i] as i8 as f32 * scales[i / per_row.max(1)]).collect()
            }
        }
    }
}

/// A range of elements inside a GPU buffer, stored as `dtype`.
#[derive(Clone, Debug)]
pub struct TensorView {
    buf: Arc<wgpu::Buffer>,
    /// Byte offset into the buffer.
    pub offset: u64,
    /// Number of elements.
    pub len: usize,
    pub dtype: Dtype,
}

impl TensorView {
    /// An f32 view.
    pub fn new(buf: Arc<wgpu::Buffer>, offset: u64, len: usize) -> TensorView {
        TensorView::typed(buf, offset, len, Dtype::F32)
    }

    /// A view of `len` elements stored as `dtype`.
    pub fn typed(buf: Arc<wgpu::Buffer>, offset: u64, len: usize, dtype: Dtype) -> TensorView {
        assert!(offset + dtype.bytes(len) <= buf.size(), "tensor view outside its buffer");
        TensorView { buf, offset, len, dtype }
    }

    /// An f32 view of a whole standalone buffer.
    pub fn whole(buf: wgpu::Buffer) -> TensorView {
        let len = (buf.size() / 4) as usize;
        TensorView { buf: Arc::new(buf), offset: 0, len, dtype: Dtype::F32 }
    }

    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buf
    }

    /// Bytes the view covers (whole 32-bit words; for I8 with its scales).
    pub fn bytes(&self) -> u64 {
        self.dtype.bytes(self.len)
    }

    /// The bind-group resource for this range.
    pub fn binding(&self) -> wgpu::BindingResource<'_> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &self.buf,
            offset: self.offset,
            size: NonZeroU64::new(self.bytes().max(4)),
        })
    }

    /// This f32 view with its length rounded up to a multiple of `n`
    /// elements, when its buffer holds them (the extra elements are whatever
    /// follows the tensor: padding or the next tensor). For kernels that read
    /// a weight in vec4 groups; None if the buffer ends too soon.
    pub fn rounded_up(&self, n: usize) -> Option<TensorView> {
        let len = self.len.next_multiple_of(n);
        (self.dtype == Dtype::F32 && self.offset + len as u64 * 4 <= self.buf.size())
            .then(|| TensorView { buf: self.buf.clone(), offset: self.offset, len, dtype: Dtype::F32 })
    }

    /// Elements `start..start+len` of this view. The sub-view can be read and
    /// written; bind it only if its offset meets the storage alignment.
    pub fn slice(&self, start: usize, len: usize) -> TensorView {
        assert!(start + len <= self.len, "slice outside tensor view");
        assert_eq!(self.dtype, Dtype::F32, "slice of a packed tensor");
        TensorView { buf: self.buf.clone(), offset: self.offset + start as u64 * 4, len, dtype: Dtype::F32 }
    }

    /// The same start with another length (within the buffer).
    pub fn clone_with_len(&self, len: usize) -> TensorView {
        assert_eq!(self.dtype, Dtype::F32, "clone_with_len of a packed tensor");
        TensorView::new(self.buf.clone(), self.offset, len)
    }

    pub fn same_buffer(&self, other: &TensorView) -> bool {
        Arc::ptr_eq(&self.buf, &other.buf)
    }
}

/// The largest tensor (in bytes) an arena can hold on a device with these
/// limits: the largest storage binding, or buffer if smaller, rounded down
/// to the storage-offset alignment so the last aligned tensor always fits.
pub fn max_tensor_bytes(limits: &wgpu::Limits) -> u64 {
    let align = (limits.min_storage_buffer_offset_alignment as u64).max(16);
    let max = limits.max_storage_buffer_binding_size.min(limits.max_buffer_size);
    (max / align) * align
}

/// Where a tensor will live once the arena is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub slab: usize,
    /// Byte offset in the slab.
    pub offset: u64,
    pub len: usize,
}

/// Plans slab offsets first, then creates the buffers in one go, so slabs are
/// exactly as large as they need to be.
///
/// wgpu tracks buffer usage per whole buffer, so a dispatch may not read one
/// range of a buffer read-only while writing another range of it. Parameters
/// (read-only in every kernel that reads them) share slabs; activations, which
/// kernels both read and write, use [`Arena::separate`]: one buffer each.
#[derive(Clone, Debug)]
pub struct Arena {
    label: String,
    separate: bool,
    align: u64,
    max_slab: u64,
    used: Vec<u64>,
    buffers: Vec<Arc<wgpu::Buffer>>,
}

impl Arena {
    pub fn new(label: &str, limits: &wgpu::Limits) -> Arena {
        let align = (limits.min_storage_buffer_offset_alignment as u64).max(16);
        let max_slab = max_tensor_bytes(limits);
        Arena {
            label: label.to_string(),
            separate: false,
            align,
            max_slab,
            used: Vec::new(),
            buffers: Vec::new(),
        }
    }

    /// An arena that gives every allocation a buffer of its own.
    pub fn separate(label: &str, limits: &wgpu::Limits) -> Arena {
        Arena { separate: true, ..Arena::new(label, limits) }
    }

    /// Reserves room for `len` f32 elements.
    pub fn alloc(&mut self, len: usize) -> Slot {
        self.alloc_group(&[len])[0]
    }

    /// Reserves `bytes` bytes (rounded up to whole words); the slot's `len`
    /// is in 32-bit words. For packed tensors, viewed with [`Arena::view_typed`].
    pub fn alloc_bytes(&mut self, bytes: u64) -> Slot {
        self.alloc(bytes.div_ceil(4) as usize)
    }

    /// Reserves several tensors back to back with no padding between them, so
    /// the group can also be bound as one tensor (to_q, to_k and to_v become
    /// one (3C, C) matrix this way).
    pub fn alloc_group(&mut self, lens: &[usize]) -> Vec<Slot> {
        assert!(self.buffers.is_empty(), "arena already built");
        let total: u64 = lens.iter().map(|&l| l as u64 * 4).sum::<u64>().max(4);
        assert!(
            total <= self.max_slab,
            "tensor of {total} bytes is larger than the largest storage binding ({})",
            self.max_slab
        );
        let fits = |&u: &u64| u.next_multiple_of(self.align) + total <= self.max_slab;
        let found = if self.separate { None } else { self.used.iter().position(fits) };
        let slab = match found {
            Some(i) => i,
            None => {
                self.used.push(0);
                self.used.len() - 1
            }
        };
        let mut offset = self.used[slab].next_multiple_of(self.align);
        self.used[slab] = offset + total;
        lens.iter()
            .map(|&len| {
                let s = Slot { slab, offset, len };
                offset += len as u64 * 4;
                s
            })
            .collect()
    }

    /// Creates the slab buffers.
    pub fn build(&mut self, device: &wgpu::Device) {
        assert!(self.buffers.is_empty(), "arena already built");
        self.buffers = self
            .used
            .iter()
            .enumerate()
            .map(|(i, &bytes)| {
                Arc::new(device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(&format!("{} slab {i}", self.label)),
                    size: bytes.next_multiple_of(self.align).max(16),
                    usage: wgpu::BufferUsages::STORAGE
                        | wgpu::BufferUsages::COPY_SRC
                        | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                }))
            })
            .collect();
    }

    pub fn view(&self, slot: Slot) -> TensorView {
        TensorView::new(self.buffers[slot.slab].clone(), slot.offset, slot.len)
    }

    /// `len` elements stored as `dtype` at byte `offset` past the start of `slot`.
    pub fn view_typed(&self, slot: Slot, offset: u64, len: usize, dtype: Dtype) -> TensorView {
        assert!(offset + dtype.bytes(len) <= slot.len as u64 * 4, "typed view outside its slot");
        TensorView::typed(self.buffers[slot.slab].clone(), slot.offset + offset, len, dtype)
    }

    /// Every slab as one view, for whole-arena passes (clearing gradients,
    /// the optimizer step).
    pub fn slabs(&self) -> Vec<TensorView> {
        self.buffers
            .iter()
            .zip(&self.used)
            .map(|(b, &u)| TensorView::new(b.clone(), 0, (u / 4) as usize))
            .collect()
    }

    /// Bytes the arena occupies on the GPU.
    pub fn bytes(&self) -> u64 {
        self.used.iter().map(|u| u.next_multiple_of(self.align)).sum()
    }
}
