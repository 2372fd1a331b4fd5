//! Saving what the user chose: single images, grids and trajectories as PNG
//! (with the settings in a text chunk) or animated GIF. Plain functions that
//! take a path; the window's save dialog is only their front.

use anyhow::{Context, Result, bail, ensure};
use std::path::Path;

/// An 8-bit image, rows top to bottom, `channels` interleaved values per
/// pixel (1 grey, 3 RGB, 4 RGBA), as DDPMPipeline's `output_type="pil"`
/// makes it: (x / 2 + 0.5).clamp(0, 1), times 255, rounded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image8 {
    pub width: u32,
    pub height: u32,
    pub channels: u8,
    pub data: Vec<u8>,
}

impl Image8 {
    /// Each image of a batch x (B, C, H, W) in [-1, 1]. C is 1, 3 or 4.
    pub fn from_batch(x: &[f32], batch: usize, c: usize, h: usize, w: usize) -> Vec<Image8> {
        assert_eq!(x.len(), batch * c * h * w, "Image8::from_batch: size");
        (0..batch)
            .map(|b| {
                let img = &x[b * c * h * w..(b + 1) * c * h * w];
                let mut data = Vec::with_capacity(c * h * w);
                for p in 0..h * w {
                    for ch in 0..c {
                        data.push(crate::image_io::to_u8(img[ch * h * w + p]));
                    }
                }
                Image8 { width: w as u32, height: h as u32, channels: c as u8, data }
            })
            .collect()
    }

    /// The same image as RGBA (grey is repeated, alpha is opaque where absent).
    pub fn to_rgba(&self) -> Vec<u8> {
        let c = self.channels as usize;
        let mut out = Vec::with_capacity(self.data.len() / c * 4);
        for px in self.data.chunks(c) {
            match c {
                1 => out.extend_from_slice(&[px[0], px[0], px[0], 255]),
                3 => out.extend_from_slice(&[px[0], px[1], px[2], 255]),
                _ => out.extend_from_slice(&px[..4]),
            }
        }
        out
    }

    /// Upscaled by an integer factor with nearest-neighbour sampling.
    pub fn upscale(&self, factor: u32) -> Image8 {
        let f = factor.max(1) as usize;
        if f == 1 {
            return self.clone();
        }
        let (w, h, c) = (self.width as usize, self.height as usize, self.channels as usize);
        let mut data = Vec::with_capacity(self.data.len() * f * f);
        for y in 0..h * f {
            for x in 0..w * f {
                let at = ((y / f) * w + x / f) * c;
                data.extend_from_slice(&self.data[at..at + c]);
            }
        }
        Image8 { width: (w * f) as u32, height: (h * f) as u32, channels: self.channels, data }
    }

    /// Images side by side in rows of ceil(sqrt(n)), `gap` white pixels apart.
    /// All must have the same size and channels.
    pub fn grid(images: &[Image8], gap: u32) -> Result<Image8> {
        let Some(first) = images.first() else { bail!("no images to put in a grid") };
        ensure!(
            images.iter().all(|i| i.width == first.width && i.height == first.height && i.channels == first.channels),
            "the images of a grid must have one size"
        );
        let n = images.len();
        let cols = (n as f64).sqrt().ceil().max(1.0) as usize;
        Self::tiled(images, cols, gap)
    }

    /// Images in rows of `cols`, `gap` white pixels apart.
    pub fn tiled(images: &[Image8], cols: usize, gap: u32) -> Result<Image8> {
        let Some(first) = images.first() else { bail!("no images to tile") };
        let (w, h, c, g) = (first.width as usize, first.height as usize, first.channels as usize, gap as usize);
        let rows = images.len().div_ceil(cols.max(1));
        let (gw, gh) = (cols * w + (cols - 1) * g, rows * h + (rows - 1) * g);
        let mut data = vec![255u8; gw * gh * c];
        for (i, img) in images.iter().enumerate() {
            let (ox, oy) = ((i % cols) * (w + g), (i / cols) * (h + g));
            for y in 0..h {
                let src = &img.data[y * w * c..(y + 1) * w * c];
                let at = ((oy + y) * gw + ox) * c;
                data[at..at + w * c].copy_from_slice(src);
            }
        }
        Ok(Image8 { width: gw as u32, height: gh as u32, channels: first.channels, data })
    }
}

/// The settings that made an image, written into its PNG so they can be
/// typed back in. One line in the spirit of the `parameters` text chunk
/// other diffusion tools write.
#[derive(Clone, Debug, PartialEq)]
pub struct Provenance {
    pub model: String,
    pub seed: u64,
    /// The image's index in its seed's stream; None for a whole grid.
    pub image_index: Option<usize>,
    /// Images in the batch (for a grid).
    pub count: u32,
    pub steps: u32,
    pub scheduler: String,
    pub eta: Option<f32>,
    pub precision: String,
    /// The step shown, when not the last one (a replay export), 1-based.
    pub at_step: Option<usize>,
    /// The run was cancelled after this many steps.
    pub interrupted_at: Option<usize>,
}

impl Provenance {
    /// "Steps: 50, Sampler: DDPM, Seed: 7, Image: 3, ... Petal: 0.1.0".
    pub fn parameters(&self) -> String {
        let mut parts = vec![format!("Steps: {}", self.steps), format!("Sampler: {}", self.scheduler)];
        if let Some(eta) = self.eta {
            parts.push(format!("Eta: {eta}"));
        }
        parts.push(format!("Seed: {}", self.seed));
        match self.image_index {
            Some(i) => parts.push(format!("Image: {i}")),
            None => parts.push(format!("Images: {}", self.count)),
        }
        parts.push(format!("Model: {}", self.model));
        parts.push(format!("Precision: {}", self.precision));
        if let Some(s) = self.at_step {
            parts.push(format!("Shown step: {s}"));
        }
        if let Some(k) = self.interrupted_at {
            parts.push(format!("Interrupted at step: {k}"));
        }
        parts.push(format!("Petal: {}", env!("CARGO_PKG_VERSION")));
        parts.join(", ")
    }
}

/// Writes `path` through a temporary file renamed into place, so a full
/// disk or a crash never leaves half a file under the real name.
fn write_atomically(path: &Path, fill: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> Result<()>) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let file = std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
        let mut w = std::io::BufWriter::new(file);
        fill(&mut w)?;
        let file = w.into_inner().map_err(|e| e.into_error()).with_context(|| format!("writing {}", tmp.display()))?;
        file.sync_all().with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Saves an image as PNG (grey, RGB or RGBA as it is), upscaled by `scale`,
/// with the provenance in a `parameters` text chunk.
pub fn save_png(path: &Path, image: &Image8, scale: u32, provenance: Option<&Provenance>) -> Result<()> {
    let img = image.upscale(scale);
    write_atomically(path, |w| {
        let mut enc = png::Encoder::new(w, img.width, img.height);
        enc.set_color(match img.channels {
            1 => png::ColorType::Grayscale,
            3 => png::ColorType::Rgb,
            4 => png::ColorType::Rgba,
            c => bail!("{} channels cannot be written as PNG", c),
        });
        enc.set_depth(png::BitDepth::Eight);
        if let Some(p) = provenance {
            enc.add_text_chunk("parameters".into(), p.parameters()).with_context(|| format!("writing {}", path.display()))?;
            enc.add_text_chunk("Software".into(), format!("Petal {}", env!("CARGO_PKG_VERSION")))
                .with_context(|| format!("writing {}", path.display()))?;
        }
        let mut writer = enc.write_header().with_context(|| format!("writing {}", path.display()))?;
        writer.write_image_data(&img.data).with_context(|| format!("writing {}", path.display()))?;
        writer.finish().with_context(|| format!("writing {}", path.display()))
    })
}

/// Reads the `parameters` text chunk of a PNG written by [`save_png`].
pub fn read_parameters(path: &Path) -> Result<Option<String>> {
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let decoder = png::Decoder::new(std::io::BufReader::new(file));
    let reader = decoder.read_info().with_context(|| format!("reading {}", path.display()))?;
    let info = reader.info();
    Ok(info.uncompressed_latin1_text.iter().find(|t| t.keyword == "parameters").map(|t| t.text.clone()))
}

/// Saves frames as an animated GIF that loops, `delay_ms` per frame, the
/// last frame held for a second. Frames are upscaled by `scale`.
pub fn save_gif(path: &Path, frames: &[Image8], scale: u32, delay_ms: u32) -> Result<()> {
    ensure!(!frames.is_empty(), "no frames to write to {}", path.display());
    write_atomically(path, |w| {
        let first = frames[0].upscale(scale);
        let (wd, ht) = (u16::try_from(first.width)?, u16::try_from(first.height)?);
        let mut enc = gif::Encoder::new(w, wd, ht, &[]).with_context(|| format!("writing {}", path.display()))?;
        enc.set_repeat(gif::Repeat::Infinite).with_context(|| format!("writing {}", path.display()))?;
        for (i, f) in frames.iter().enumerate() {
            let mut rgba = f.upscale(scale).to_rgba();
            let mut frame = gif::Frame::from_rgba_speed(wd, ht, &mut rgba, 10);
            let last = i + 1 == frames.len();
            frame.delay = if last { 100 } else { (delay_ms / 10).max(2) as u16 };
            enc.write_frame(&frame).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    })
}

/// Saves frames as `step001.png`, `step002.png`, ... in `dir`.
pub fn save_frames(dir: &Path, frames: &[Image8], scale: u32, provenance: Option<&Provenance>) -> Result<()> {
    for (i, f) in frames.iter().enumerate() {
        let p = provenance.map(|p| Provenance { at_step: Some(i + 1), ..p.clone() });
        save_png(&dir.join(format!("step{:03}.png", i + 1)), f, scale, p.as_ref())?;
    }
    Ok(())
}

/// Mean absolute difference of two equally sized sets of images, over every
/// channel value, on 0-255 (how far FP16 or INT8 images are from FP32's).
/// Sets of different sizes, or images of different shapes, compare only
/// their common prefix; an empty comparison is 0.
pub fn mean_abs_diff(a: &[Image8], b: &[Image8]) -> f64 {
    let (mut sum, mut n) = (0u64, 0u64);
    for (x, y) in a.iter().zip(b) {
        for (p, q) in x.data.iter().zip(&y.data) {
            sum += p.abs_diff(*q) as u64;
            n += 1;
        }
    }
    if n == 0 { 0.0 } else { sum as f64 / n as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_abs_diff_of_image_sets() {
        assert_eq!(mean_abs_diff(&[img(10), img(20)], &[img(10), img(20)]), 0.0);
        assert_eq!(mean_abs_diff(&[img(10), img(20)], &[img(14), img(12)]), 6.0);
        assert_eq!(mean_abs_diff(&[], &[]), 0.0);
    }

    fn img(v: u8) -> Image8 {
        Image8 { width: 2, height: 2, channels: 3, data: vec![v; 12] }
    }

    #[test]
    fn batch_conversion_upscale_and_grid() {
        // 2 images of 1 channel 1x2: values -1, 1 and 0, 0.
        let x = [-1.0, 1.0, 0.0, 0.0];
        let imgs = Image8::from_batch(&x, 2, 1, 1, 2);
        assert_eq!(imgs[0].data, vec![0, 255]);
        assert_eq!(imgs[1].data, vec![128, 128]);
        let up = imgs[0].upscale(2);
        assert_eq!((up.width, up.height), (4, 2));
        assert_eq!(up.data, vec![0, 0, 255, 255, 0, 0, 255, 255]);
        let g = Image8::grid(&[img(1), img(2), img(3)], 1).unwrap();
        assert_eq!((g.width, g.height), (5, 5));
        assert_eq!(&g.data[..3], &[1, 1, 1]);
        assert_eq!(&g.data[2 * 3..3 * 3], &[255, 255, 255]); // the gap
        assert_eq!(&g.data[3 * 3..4 * 3], &[2, 2, 2]);
        assert!(Image8::grid(&[], 0).is_err());
    }

    #[test]
    fn png_keeps_the_parameters_and_gif_writes() {
        let dir = tempfile::tempdir().unwrap();
        let p = Provenance {
            model: "flowers".into(),
            seed: 7,
            image_index: Some(3),
            count: 16,
            steps: 50,
            scheduler: "DDPM".into(),
            eta: None,
            precision: "fp32".into(),
            at_step: None,
            interrupted_at: Some(12),
        };
        let path = dir.path().join("a/b.png");
        save_png(&path, &img(9), 4, Some(&p)).unwrap();
        let text = read_parameters(&path).unwrap().unwrap();
        assert!(text.starts_with("Steps: 50, Sampler: DDPM, Seed: 7, Image: 3, Model: flowers"), "{text}");
        assert!(text.contains("Interrupted at step: 12"), "{text}");
        let decoded = image::open(&path).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (8, 8));
        let gif = dir.path().join("t.gif");
        save_gif(&gif, &[img(0), img(255)], 2, 80).unwrap();
        let bytes = std::fs::read(&gif).unwrap();
        assert_eq!(&bytes[..6], b"GIF89a");
        assert!(save_png(Path::new("/dev/full/x.png"), &img(0), 1, None).is_err());
    }
}
