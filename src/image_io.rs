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

/// Refuses channel counts that have no PNG image mode. DDPMPipeline's
/// numpy_to_pil makes 1 channel grey ("L"), 3 RGB and 4 RGBA.
pub fn check_channels(channels: u32) -> Result<()> {
    if !matches!(channels, 1 | 3 | 4) {
        anyhow::bail!(
            "the model makes images of {channels} channels (in_channels in config.json); \
             Petal writes 1 (grey), 3 (RGB) or 4 (RGBA) as PNG"
        );
    }
    Ok(())
}

/// A grid of the batch x (B, C, H, W) as [`grid`] lays it out, in the image
/// mode DDPMPipeline returns: C = 1 grey, 3 RGB, 4 RGBA (the background and
/// gaps white and opaque). Other channel counts: see [`check_channels`].
pub fn grid_image(x: &[f32], batch: usize, c: usize, h: usize, w: usize, opts: GridOptions) -> Result<image::DynamicImage> {
    check_channels(c as u32)?;
    anyhow::ensure!(x.len() == batch * c * h * w, "grid: {} values for {batch}x{c}x{h}x{w}", x.len());
    let cols = (batch as f64).sqrt().ceil().max(1.0) as usize;
    let rows = batch.div_ceil(cols).max(1);
    let s = opts.scale.max(1) as usize;
    let gap = opts.gap as usize;
    let (tw, th) = (w * s, h * s);
    let (width, height) = (cols * tw + (cols - 1) * gap, rows * th + (rows - 1) * gap);
    // Interleaved pixels, c bytes each.
    let mut buf = vec![255u8; width * height * c];
    for b in 0..batch {
        let (gx, gy) = ((b % cols) * (tw + gap), (b / cols) * (th + gap));
        for y in 0..th {
            for xx in 0..tw {
                let at = ((gy + y) * width + gx + xx) * c;
                for ch in 0..c {
                    buf[at + ch] = to_u8(x[((b * c + ch) * h + y / s) * w + xx / s]);
                }
            }
        }
    }
    let (wu, hu) = (width as u32, height as u32);
    Ok(match c {
        1 => image::DynamicImage::ImageLuma8(image::GrayImage::from_raw(wu, hu, buf).expect("sized")),
        3 => image::DynamicImage::ImageRgb8(image::RgbImage::from_raw(wu, hu, buf).expect("sized")),
        _ => image::DynamicImage::ImageRgba8(image::RgbaImage::from_raw(wu, hu, buf).expect("sized")),
    })
}

/// [`grid_image`] written as a PNG (see [`save_png`]).
pub fn save_grid(x: &[f32], batch: usize, c: usize, h: usize, w: usize, opts: GridOptions, path: &Path) -> Result<()> {
    save_dynamic_png(&grid_image(x, batch, c, h, w, opts)?, path)
}

/// Writes a PNG, creating the parent folder, through a temporary file that
/// is renamed into place.
pub fn save_png(img: &image::RgbImage, path: &Path) -> Result<()> {
    write_via_tmp(path, |tmp| img.save_with_format(tmp, image::ImageFormat::Png))
}

/// [`save_png`] for an image of any mode (grey, RGB, RGBA).
pub fn save_dynamic_png(img: &image::DynamicImage, path: &Path) -> Result<()> {
    write_via_tmp(path, |tmp| img.save_with_format(tmp, image::ImageFormat::Png))
}

fn write_via_tmp(path: &Path, write: impl FnOnce(&Path) -> image::ImageResult<()>) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("png.tmp");
    write(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
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

    #[test]
    fn grey_rgb_and_rgba_grids_keep_every_channel() {
        // 2 images of 1x2; channel k of image b at pixel p is a distinct value.
        let (b, h, w) = (2, 1, 2);
        for c in [1usize, 3, 4] {
            let x: Vec<f32> = (0..b * c * h * w).map(|i| -1.0 + 2.0 * i as f32 / 255.0 * 8.0).collect();
            let img = grid_image(&x, b, c, h, w, GridOptions::default()).unwrap();
            assert_eq!(img.color().channel_count() as usize, c);
            assert_eq!((img.width(), img.height()), (4, 1));
            let raw = img.as_bytes();
            for bi in 0..b {
                for p in 0..w {
                    for ch in 0..c {
                        let want = to_u8(x[(bi * c + ch) * h * w + p]);
                        assert_eq!(raw[(bi * w + p) * c + ch], want, "c={c} image {bi} pixel {p} channel {ch}");
                    }
                }
            }
        }
        assert!(grid_image(&[0.0; 4], 1, 2, 1, 2, GridOptions::default()).is_err());
        assert!(check_channels(6).unwrap_err().to_string().contains("6 channels"));
    }
}
