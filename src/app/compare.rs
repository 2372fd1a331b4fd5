//! The precision comparison: the same seed and noise sampled with the open
//! model's weights in FP32, FP16 and INT8 (issue 10), shown side by side with
//! each one's ms per step, GPU memory, file size and distance from FP32.

use super::PetalApp;
use crate::export::Image8;
use crate::model::Precision;
use crate::worker::{Command, CompareEntry, GenerateRequest};

/// The last comparison, as the window shows it.
#[derive(Default)]
pub struct Comparison {
    pub request: Option<GenerateRequest>,
    /// The precisions it runs, in order.
    pub precisions: Vec<Precision>,
    /// One per precision done so far, with its grid's texture.
    pub entries: Vec<(CompareEntry, Option<egui::TextureHandle>)>,
    pub running: bool,
    /// The precision sampling now, and its step (1-based) of how many.
    pub progress: Option<(Precision, usize, usize)>,
    pub cancelled: bool,
    /// Whether its window is shown.
    pub open: bool,
}

impl Comparison {
    pub fn started(&mut self, request: GenerateRequest, precisions: Vec<Precision>) {
        *self = Comparison { request: Some(request), precisions, running: true, open: true, ..Default::default() };
    }

    pub fn result(&mut self, ctx: &egui::Context, entry: CompareEntry) {
        let tex = grid(&entry.images).map(|g| {
            let img = egui::ColorImage::from_rgba_unmultiplied([g.width as usize, g.height as usize], &g.to_rgba());
            ctx.load_texture(format!("compare {}", entry.precision), img, egui::TextureOptions::NEAREST)
        });
        self.entries.push((entry, tex));
    }

    pub fn done(&mut self, cancelled: bool) {
        self.running = false;
        self.cancelled = cancelled;
    }

    /// The row of figures under one precision's grid.
    pub fn caption(e: &CompareEntry) -> String {
        let mut s = format!(
            "{:.0} ms/step · {:.2} MB GPU · {:.2} MB file{}",
            e.millis_per_step,
            e.gpu_bytes as f64 / 1e6,
            e.file_bytes as f64 / 1e6,
            if e.converted { " (converted on load)" } else { "" }
        );
        if let Some(d) = e.mean_abs_diff {
            s += &format!("\n{d:.2}/255 mean difference from FP32");
        }
        s
    }
}

/// The images as one grid, 1 pixel apart.
fn grid(images: &[Image8]) -> Option<Image8> {
    Image8::grid(images, 1).ok()
}

/// The comparison's window, while it is open.
pub fn window(app: &mut PetalApp, ctx: &egui::Context) {
    if !app.comparison.open {
        return;
    }
    let mut open = true;
    let mut cancel = false;
    let zoom = app.settings.generate.zoom.clamp(1, 2) as f32;
    egui::Window::new("Compare precisions").open(&mut open).resizable(true).default_pos([360.0, 60.0]).default_width(880.0).show(ctx, |ui| {
        let c = &app.comparison;
        if let Some(r) = &c.request {
            ui.label(format!(
                "{} images, {} {} steps, seed {}: the same noise for each precision",
                r.count,
                r.steps,
                r.scheduler.name(),
                r.seed
            ));
        }
        ui.horizontal_top(|ui| {
            for p in &c.precisions {
                ui.vertical(|ui| {
                    ui.strong(p.name().to_uppercase());
                    match c.entries.iter().find(|(e, _)| e.precision == *p) {
                        Some((e, tex)) => {
                            if let Some(t) = tex {
                                ui.add(egui::Image::new((t.id(), t.size_vec2() * zoom)));
                            }
                            ui.label(Comparison::caption(e));
                        }
                        None if c.running => {
                            ui.horizontal(|ui| {
                                if c.entries.len() == c.precisions.iter().position(|q| q == p).unwrap_or(0) {
                                    ui.spinner();
                                    match c.progress {
                                        Some((q, step, n)) if q == *p => ui.label(format!("step {step}/{n}")),
                                        _ => ui.label("loading…"),
                                    };
                                } else {
                                    ui.label("waiting");
                                }
                            });
                        }
                        None => {
                            ui.label(if c.cancelled { "cancelled" } else { "not run" });
                        }
                    }
                });
                ui.add_space(12.0);
            }
        });
        if c.running && ui.button("Cancel").on_hover_text("Esc").clicked() {
            cancel = true;
        }
    });
    if cancel {
        app.send(Command::Cancel);
    }
    if !open {
        app.comparison.open = false;
    }
}
