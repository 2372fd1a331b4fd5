//! Training images: a folder read recursively (JPEG, PNG, WebP; any colour
//! mode, converted to RGB), each resized so its shorter side fits and centre
//! cropped (torchvision's Resize + CenterCrop, with a Lanczos filter), kept in
//! memory as [-1, 1] floats. Files that do not decode, or decode only in
//! part (a truncated JPEG), are skipped with a warning naming them. Hidden
//! files and folders are skipped, and no file or folder is read twice.

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

/// Hidden files and folders (`.ipynb_checkpoints`, `.DS_Store`, `.git`):
/// copies and bookkeeping of other tools, never training data.
fn is_hidden(name: &std::ffi::OsStr) -> bool {
    name.to_string_lossy().starts_with('.')
}

/// Image files under `dir`, sorted by name within each folder, each distinct
/// file once: folders and files are compared by canonical path, so a symbolic
/// link back to a parent (or a second link to the same photo) is not read
/// twice, and hidden entries are skipped.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    walk_inner(dir, &mut seen, out)
}

fn walk_inner(dir: &Path, seen: &mut std::collections::HashSet<PathBuf>, out: &mut Vec<PathBuf>) -> Result<()> {
    let canonical = std::fs::canonicalize(dir).map_err(|e| anyhow::anyhow!("reading {}: {e}", dir.display()))?;
    if !seen.insert(canonical) {
        return Ok(());
    }
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| !is_hidden(&e.file_name()))
        .collect();
    // Real entries before symbolic links, so a file reached both ways is
    // listed under its own name.
    entries.sort_by_key(|e| (e.file_type().is_ok_and(|t| t.is_symlink()), e.file_name()));
    for e in entries {
        let p = e.path();
        if p.is_dir() {
            walk_inner(&p, seen, out)?;
        } else if is_image(&p) {
            // A dangling link fails to canonicalize: kept, so it is reported as unreadable.
            let key = std::fs::canonicalize(&p).unwrap_or_else(|_| p.clone());
            if seen.insert(key) {
                out.push(p);
            }
        }
    }
    Ok(())
}

/// Whether JPEG bytes run to their end-of-image marker. The decoder fills a
/// cut-off JPEG with grey without an error, so a truncated file is found by
/// walking its markers: segments up to each start-of-scan, then the
/// entropy-coded data (where 0xFF is followed by 0x00 or a restart marker)
/// up to the next marker, until EOI (0xFFD9). Running out first means truncated.
fn jpeg_is_complete(b: &[u8]) -> bool {
    if b.len() < 4 || b[0] != 0xFF || b[1] != 0xD8 {
        return false;
    }
    let mut i = 2;
    loop {
        // Skip fill bytes before a marker.
        while i < b.len() && b[i] == 0xFF && i + 1 < b.len() && b[i + 1] == 0xFF {
            i += 1;
        }
        if i + 1 >= b.len() || b[i] != 0xFF {
            return false;
        }
        let marker = b[i + 1];
        i += 2;
        match marker {
            0xD9 => return true,
            0xD0..=0xD7 | 0x01 => continue,
            _ => {}
        }
        if i + 1 >= b.len() {
            return false;
        }
        let len = u16::from_be_bytes([b[i], b[i + 1]]) as usize;
        if len < 2 || i + len > b.len() {
            return false;
        }
        i += len;
        if marker == 0xDA {
            // Entropy-coded data up to the next real marker.
            loop {
                if i + 1 >= b.len() {
                    return false;
                }
                if b[i] == 0xFF && b[i + 1] != 0x00 && !(0xD0..=0xD7).contains(&b[i + 1]) && b[i + 1] != 0xFF {
                    break;
                }
                i += 1;
            }
        }
    }
}

/// One image as (3, h, w) floats in [-1, 1].
/// A file that decodes only in part is refused whatever its format: JPEG by
/// [`jpeg_is_complete`], PNG and WebP by their decoders' errors.
pub fn load_image(path: &Path, h: u32, w: u32) -> Result<Vec<f32>> {
    let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let reader = image::ImageReader::new(std::io::Cursor::new(&bytes[..]))
        .with_guessed_format()
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if reader.format() == Some(image::ImageFormat::Jpeg) && !jpeg_is_complete(&bytes) {
        bail!("{}: truncated JPEG (the data ends before the end-of-image marker)", path.display());
    }
    let img = reader
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

#[cfg(test)]
mod tests {
    use super::*;

    fn flower() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/flowers/daisy-image_0801.jpg")
    }

    #[test]
    fn truncated_images_are_refused_whatever_their_format() {
        let dir = tempfile::tempdir().unwrap();
        let jpeg = std::fs::read(flower()).unwrap();
        assert!(jpeg_is_complete(&jpeg));
        let img = image::load_from_memory(&jpeg).unwrap().resize_exact(64, 48, FilterType::Triangle);
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
        let mut webp = Vec::new();
        img.to_rgb8().write_to(&mut std::io::Cursor::new(&mut webp), image::ImageFormat::WebP).unwrap();
        for (name, bytes) in [("a.jpg", &jpeg), ("a.png", &png), ("a.webp", &webp)] {
            let whole = dir.path().join(name);
            std::fs::write(&whole, bytes).unwrap();
            load_image(&whole, 8, 8).unwrap_or_else(|e| panic!("{name} whole: {e:#}"));
            for frac in [0.5, 0.9] {
                let cut = dir.path().join(format!("cut-{frac}-{name}"));
                std::fs::write(&cut, &bytes[..(bytes.len() as f64 * frac) as usize]).unwrap();
                let e = load_image(&cut, 8, 8).expect_err(&format!("{name} cut at {frac} decoded"));
                assert!(format!("{e:#}").contains(&format!("cut-{frac}-{name}")), "{e:#}");
            }
        }
        // A baseline JPEG the image crate writes, and one with bytes after its end.
        let mut small = Vec::new();
        img.to_rgb8().write_to(&mut std::io::Cursor::new(&mut small), image::ImageFormat::Jpeg).unwrap();
        assert!(jpeg_is_complete(&small));
        assert!(!jpeg_is_complete(&small[..small.len() - 2]));
        small.extend_from_slice(b"trailing bytes");
        assert!(jpeg_is_complete(&small));
    }

    #[cfg(unix)]
    #[test]
    fn no_folder_or_file_is_read_twice_and_hidden_ones_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir_all(root.join(".ipynb_checkpoints")).unwrap();
        for p in ["a.jpg", "sub/b.jpg", ".ipynb_checkpoints/a-checkpoint.jpg", ".hidden.jpg"] {
            std::fs::copy(flower(), root.join(p)).unwrap();
        }
        // A link back to the parent, a link to the same folder twice, a second name for a file.
        std::os::unix::fs::symlink(&root, root.join("sub/loop")).unwrap();
        std::os::unix::fs::symlink(root.join("sub"), root.join("sub-again")).unwrap();
        std::os::unix::fs::symlink(root.join("a.jpg"), root.join("a-link.jpg")).unwrap();
        let mut found = Vec::new();
        walk(&root, &mut found).unwrap();
        let names: Vec<String> = found.iter().map(|p| p.strip_prefix(&root).unwrap().display().to_string()).collect();
        assert_eq!(names, vec!["a.jpg", "sub/b.jpg"]);
        let d = Dataset::load(&root, 8, 8).unwrap();
        assert_eq!((d.len, d.skipped.len()), (2, 0));
    }
}
