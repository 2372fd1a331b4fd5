//! Training images: a folder read recursively (JPEG, PNG, WebP; any colour
//! mode, converted to RGB), each resized so its shorter side fits and centre
//! cropped (torchvision's Resize + CenterCrop, with a Lanczos filter), kept in
//! memory as [-1, 1] floats. Files that do not decode are skipped with a
//! warning naming them.

use anyhow::{Result, bail};
use image::imageops::FilterType;
use std::path::{Path, PathBuf};

pub struct Dataset {
    /// (N, 3, H, W) in [-1, 1].
    pub pixels: Vec<f32>,
    pub len: usize,
    pub h: u32,
    pub w: u32,
    pub files: Vec<PathBuf>,
    /// Files that could not be used, and why.
    pub skipped: Vec<(PathBuf, String)>,
}

fn is_image(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()).as_deref(),
        Some("jpg" | "jpeg" | "png" | "webp")
    )
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", dir.display()))?
        .filter_map(|e| e.ok())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else if is_image(&p) {
            out.push(p);
        }
    }
    Ok(())
}

/// One image as (3, h, w) floats in [-1, 1].
pub fn load_image(path: &Path, h: u32, w: u32) -> Result<Vec<f32>> {
    let img = image::ImageReader::open(path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        .with_guessed_format()
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        .decode()
        .map_err(|e| anyhow::anyhow!("{}: does not decode: {e}", path.display()))?
        .to_rgb8();
    let (iw, ih) = img.dimensions();
    if iw == 0 || ih == 0 {
        bail!("{}: empty image", path.display());
    }
    // Scale so the image covers h x w, then take the centre.
    let scale = (h as f64 / ih as f64).max(w as f64 / iw as f64);
    let (sw, sh) = (((iw as f64 * scale).round() as u32).max(w), ((ih as f64 * scale).round() as u32).max(h));
    let resized = image::imageops::resize(&img, sw, sh, FilterType::Lanczos3);
    let (x0, y0) = ((sw - w) / 2, (sh - h) / 2);
    let mut out = vec![0f32; (3 * h * w) as usize];
    for y in 0..h {
        for x in 0..w {
            let px = resized.get_pixel(x0 + x, y0 + y).0;
            for c in 0..3 {
                out[((c as u32 * h + y) * w + x) as usize] = px[c] as f32 / 255.0 * 2.0 - 1.0;
            }
        }
    }
    Ok(out)
}

impl Dataset {
    /// Loads every usable image under `dir`, resized to h x w.
    pub fn load(dir: &Path, h: u32, w: u32) -> Result<Dataset> {
        if !dir.exists() {
            bail!("{}: no such data folder", dir.display());
        }
        if !dir.is_dir() {
            bail!("{}: not a folder", dir.display());
        }
        let mut paths = Vec::new();
        walk(dir, &mut paths)?;
        let mut pixels = Vec::new();
        let mut files = Vec::new();
        let mut skipped = Vec::new();
        for p in paths {
            match load_image(&p, h, w) {
                Ok(v) => {
                    pixels.extend_from_slice(&v);
                    files.push(p);
                }
                Err(e) => skipped.push((p, format!("{e:#}"))),
            }
        }
        if files.is_empty() {
            bail!(
                "{}: no usable images (looked for .jpg, .jpeg, .png, .webp in it and its subfolders{})",
                dir.display(),
                if skipped.is_empty() { String::new() } else { format!("; {} failed to decode", skipped.len()) }
            );
        }
        Ok(Dataset { pixels, len: files.len(), h, w, files, skipped })
    }

    pub fn image(&self, i: usize) -> &[f32] {
        let n = (3 * self.h * self.w) as usize;
        &self.pixels[i * n..(i + 1) * n]
    }

    /// Image i, mirrored left-right when `flip`, appended to `out`.
    pub fn push_image(&self, i: usize, flip: bool, out: &mut Vec<f32>) {
        let src = self.image(i);
        let w = self.w as usize;
        for row in src.chunks(w) {
            if flip {
                out.extend(row.iter().rev());
            } else {
                out.extend_from_slice(row);
            }
        }
    }
}
