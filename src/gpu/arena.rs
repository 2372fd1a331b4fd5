//! Tensors live in a few large "slab" buffers at named offsets (as llm.c keeps
//! one allocation for all parameters and one for all activations). A slab is
//! at most as large as one storage binding may be, so every tensor can be
//! bound on its own; tensors start at the adapter's storage-offset alignment.

use std::num::NonZeroU64;
use std::sync::Arc;

/// A range of f32 elements inside a GPU buffer.
#[derive(Clone, Debug)]
pub struct TensorView {
    buf: Arc<wgpu::Buffer>,
    /// Byte offset into the buffer.
    pub offset: u64,
    /// Number of f32 elements.
    pub len: usize,
}

impl TensorView {
    pub fn new(buf: Arc<wgpu::Buffer>, offset: u64, len: usize) -> TensorView {
        assert!(offset + (len as u64) * 4 <= buf.size(), "tensor view outside its buffer");
        TensorView { buf, offset, len }
    }

    /// A view of a whole standalone buffer.
    pub fn whole(buf: wgpu::Buffer) -> TensorView {
        let len = (buf.size() / 4) as usize;
        TensorView { buf: Arc::new(buf), offset: 0, len }
    }

    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buf
    }

    pub fn bytes(&self) -> u64 {
        self.len as u64 * 4
    }

    /// The bind-group resource for this range.
    pub fn binding(&self) -> wgpu::BindingResource<'_> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &self.buf,
            offset: self.offset,
            size: NonZeroU64::new(self.bytes().max(4)),
        })
    }

    /// Elements `start..start+len` of this view. The sub-view can be read and
    /// written; bind it only if its offset meets the storage alignment.
    pub fn slice(&self, start: usize, len: usize) -> TensorView {
        assert!(start + len <= self.len, "slice outside tensor view");
        TensorView { buf: self.buf.clone(), offset: self.offset + start as u64 * 4, len }
    }

    /// The same start with another length (within the buffer).
    pub fn clone_with_len(&self, len: usize) -> TensorView {
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
