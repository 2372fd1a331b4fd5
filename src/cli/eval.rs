//! `petal eval`: sample quality against real images, on the CPU (no GPU):
//! the sliced Wasserstein distance of Karras et al. 2018 per pyramid level,
//! and each generated image's distance to its nearest real image with a
//! picture of the closest pairs (see [`petal::eval`]).

use anyhow::{Context, Result};
use clap::Args;
use petal::eval::{self, SwdOptions};
use std::path::PathBuf;

#[derive(Args)]
pub struct EvalArgs {
    /// Real images: a folder (searched recursively: JPEG, PNG, WebP), each
    /// resized and centre-cropped to --tile px with Lanczos3 as `petal train` loads them.
    #[arg(long)]
    real: PathBuf,
    /// Generated images: a folder, or a grid PNG as `petal sample --out` writes it (no --gap, --scale 1).
    #[arg(long)]
    generated: PathBuf,
    /// Image size in px: the tiles of a grid, and the size real images are resized to.
    #[arg(long, default_value_t = 32)]
    tile: u32,
    /// Write the figures as JSON here (they are printed either way).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write a picture of the closest pairs (generated | nearest real) here.
    #[arg(long)]
    pairs: Option<PathBuf>,
    /// Pairs in the picture, closest first.
    #[arg(long, default_value_t = 8)]
    pairs_count: usize,
    /// Also report the SWD of the real images against themselves blurred
    /// (downscaled to 8x8 and back): a baseline of clearly wrong images.
    #[arg(long)]
    blur_baseline: bool,
    /// Seed of the neighbourhoods and directions.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Directions per repeat (the reference's 128).
    #[arg(long, default_value_t = 128)]
    directions: usize,
    /// Repeats with fresh directions (the reference's 4).
    #[arg(long, default_value_t = 4)]
    repeats: usize,
}

fn swd_json(r: &eval::SwdReport) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for (res, v) in &r.levels {
        m.insert(res.to_string(), serde_json::json!(v));
    }
    m.insert("avg".into(), serde_json::json!(r.avg));
    serde_json::Value::Object(m)
}

fn swd_line(r: &eval::SwdReport) -> String {
    let levels: Vec<String> = r.levels.iter().map(|(s, v)| format!("{s}: {v:.2}")).collect();
    format!("{} | avg {:.2}", levels.join(", "), r.avg)
}

pub fn run(a: EvalArgs) -> Result<()> {
    let opts = SwdOptions { seed: a.seed, dirs_per_repeat: a.directions.max(1), dir_repeats: a.repeats.max(1), ..Default::default() };
    eval::swd_levels(a.tile as usize, &opts).context("--tile")?;
    let (real, skipped_real) = eval::load_real(&a.real, a.tile).context("--real")?;
    let (fake, skipped_fake) = eval::load_generated(&a.generated, a.tile).context("--generated")?;
    for (p, why) in skipped_real.iter().chain(&skipped_fake) {
        eprintln!("warning: skipped {}: {why}", p.display());
    }
    eprintln!("{} real images, {} generated images, {} px", real.n, fake.n, a.tile);
    let swd = eval::swd(&real, &fake, &opts)?;
    println!("SWD x1e3 (real vs generated)   {}", swd_line(&swd));
    let blurred = if a.blur_baseline {
        let b = eval::swd(&real, &eval::blurred(&real), &opts)?;
        println!("SWD x1e3 (real vs real blurred) {}", swd_line(&b));
        Some(b)
    } else {
        None
    };
    let nearest = eval::nearest_real(&real, &fake);
    let dists: Vec<f32> = nearest.iter().map(|n| n.1).collect();
    let mean = dists.iter().map(|&d| d as f64).sum::<f64>() / dists.len() as f64;
    let min = dists.iter().copied().fold(f32::INFINITY, f32::min);
    println!("nearest real image: mean RMS distance {mean:.4}, closest {min:.4} (pixels in [0, 1])");
    let mut order: Vec<usize> = (0..nearest.len()).collect();
    order.sort_by(|&x, &y| nearest[x].1.total_cmp(&nearest[y].1));
    let closest: Vec<serde_json::Value> = order
        .iter()
        .take(a.pairs_count.max(1))
        .map(|&g| {
            serde_json::json!({
                "generated": fake.labels[g],
                "real": real.labels[nearest[g].0],
                "distance": nearest[g].1,
            })
        })
        .collect();
    if let Some(p) = &a.pairs {
        petal::image_io::save_png(&eval::pairs_picture(&real, &fake, &nearest, a.pairs_count, 4), p)?;
        eprintln!("wrote {}", p.display());
    }
    let mut report = serde_json::json!({
        "real": { "source": a.real.display().to_string(), "images": real.n, "skipped": skipped_real.len() },
        "generated": { "source": a.generated.display().to_string(), "images": fake.n, "skipped": skipped_fake.len() },
        "tile": a.tile,
        "swd_x1e3": swd_json(&swd),
        "nearest_real": { "mean_rms": mean, "min_rms": min, "closest": closest },
        "settings": {
            "nhood_size": opts.nhood_size,
            "nhoods_per_image": opts.nhoods_per_image,
            "dirs_per_repeat": opts.dirs_per_repeat,
            "dir_repeats": opts.dir_repeats,
            "seed": opts.seed,
        },
    });
    if let Some(b) = &blurred {
        report["swd_x1e3_real_vs_blurred"] = swd_json(b);
    }
    if let Some(p) = &a.out {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(p, text + "\n").with_context(|| format!("writing {}", p.display()))?;
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}
