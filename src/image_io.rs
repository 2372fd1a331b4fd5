//! Turning model tensors into images: the pipeline's final mapping to 8-bit,
//! grids of a batch, PNG files.

use anyhow::{Context, Result};
use std::path::Path;

/// diffusers' conversion: (x / 2 + 0.5).clamp(0, 1), then numpy's round(v * 255).
pub fn to_unit(x: f32) -> f32 {
    (x / 2.0 + 0.5).clamp(0.0, 1.0)
}

pub fn to_u8(x: f32) -> u8 {
    (to_unit(x) * 255.0).round_ties_even() as u8
}

/// How to lay out a batch.
#[derive(Clone, Copy, Debug)]
pub struct GridOptions {
    /// Integer upscaling of each tile (nearest).
    pub scale: u32,
    /// Pixels between tiles.
    pub gap: u32,
}

impl Default for GridOptions {
    fn default() -> Self {
        GridOptions { scale: 1, gap: 0 }
    }
}

/// A grid of the batch x (B, C, H, W) with ceil(sqrt(B)) tiles per row.
/// C is 3 (RGB) or 1 (grey).
pub fn grid(x: &[f32], batch: usize, c: usize, h: usize, w: usize, opts: GridOptions) -> image::RgbImage {
    let cols = (batch as f64).sqrt().ceil().max(1.0) as usize;
    let rows = batch.div_ceil(cols).max(1);
    let s = opts.scale.max(1) as usize;
    let gap = opts.gap as usize;
    let (tw, th) = (w * s, h * s);
    let width = cols * tw + (cols - 1) * gap;
    let height = rows * th + (rows - 1) * gap;
    let mut img = image::RgbImage::from_pixel(width as u32, height as u32, image::Rgb([255, 255, 255]));
    for b in 0..batch {
        let (gx, gy) = ((b % cols) * (tw + gap), (b / cols) * (th + gap));
        for y in 0..th {
            for xx in 0..tw {
                let (sy, sx) = (y / s, xx / s);
                let px = |ch: usize| to_u8(x[((b * c + ch.min(c - 1)) * h + sy) * w + sx]);
                img.put_pixel((gx + xx) as u32, (gy + y) as u32, image::Rgb([px(0), px(1), px(2)]));
            }
        }
    }
    img
}

/// Writes a PNG, creating the parent folder, through a temporary file that
/// is renamed into place.
pub fn save_png(img: &image::RgbImage, path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("png.tmp");
    img.save_with_format(&tmp, image::ImageFormat::Png).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_layout_and_values() {
        // 5 images of 2x3 -> 3 per row, 2 rows.
        let (b, c, h, w) = (5, 3, 2, 3);
        let mut x = vec![-1.0f32; b * c * h * w];
        x[(4 * c) * h * w] = 1.0; // image 4, red, pixel (0, 0)
        let img = grid(&x, b, c, h, w, GridOptions::default());
        assert_eq!(img.dimensions(), (9, 4));
        assert_eq!(img.get_pixel(3, 2).0, [255, 0, 0]);
        assert_eq!(img.get_pixel(0, 0).0, [0, 0, 0]);
        let img = grid(&x, b, c, h, w, GridOptions { scale: 2, gap: 1 });
        assert_eq!(img.dimensions(), (3 * 6 + 2, 2 * 4 + 1));
        assert_eq!(to_u8(0.0), 128);
    }
}
