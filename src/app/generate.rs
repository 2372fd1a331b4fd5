//! The Generate tab: settings, the live grid of every step, the replay
//! slider, the large view of one image with its strip of steps, selection
//! and export.

use super::{PetalApp, View};
use crate::export::{self, Image8, Provenance};
use crate::model::Precision;
use crate::worker::{Command, GenerateRequest, ModelInfo, SchedulerChoice, StepFrame};
use std::collections::BTreeSet;
use std::path::Path;

/// The last generation: its request, every step reached, and what is shown.
#[derive(Default)]
pub struct Generation {
    pub request: Option<GenerateRequest>,
    /// The model that made it (for the export's provenance).
    pub model: Option<ModelInfo>,
    /// Every step received so far, in order (the trajectory the replay shows).
    pub frames: Vec<StepFrame>,
    pub running: bool,
    /// Cancelled after this many steps.
    pub interrupted_at: Option<usize>,
    /// The step shown (index into `frames`); None follows the newest.
    pub replay: Option<usize>,
    pub selected: BTreeSet<usize>,
    anchor: Option<usize>,
    /// The image opened large.
    pub detail: Option<usize>,
    pub seconds: Option<f64>,
    textures: Vec<(egui::TextureHandle, egui::TextureHandle)>,
    /// (step, count) the textures show.
    textures_show: Option<(usize, usize)>,
    strip: Option<(usize, usize, egui::TextureHandle)>,
}

fn color_image(img: &Image8) -> egui::ColorImage {
    egui::ColorImage::from_rgba_unmultiplied([img.width as usize, img.height as usize], &img.to_rgba())
}

impl Generation {
    pub fn started(&mut self, req: GenerateRequest, model: Option<ModelInfo>) {
        let same_size = self.request.as_ref().is_some_and(|r| r.count == req.count);
        if !same_size {
            self.selected.clear();
            self.detail = None;
        }
        self.request = Some(req);
        self.model = model;
        self.frames.clear();
        self.running = true;
        self.interrupted_at = None;
        self.replay = None;
        self.seconds = None;
        self.textures_show = None;
        self.strip = None;
    }

    pub fn step(&mut self, _ctx: &egui::Context, frame: StepFrame) {
        self.frames.push(frame);
    }

    pub fn done(&mut self, interrupted_at: Option<usize>, seconds: f64) {
        self.running = false;
        self.interrupted_at = interrupted_at;
        self.seconds = Some(seconds);
    }

    /// The step shown: the replay position, else the newest.
    pub fn shown_step(&self) -> Option<usize> {
        if self.frames.is_empty() {
            return None;
        }
        Some(self.replay.unwrap_or(self.frames.len() - 1).min(self.frames.len() - 1))
    }

    /// Mean wall time per step so far, in milliseconds (the first step,
    /// which builds pipelines on a cold start, is left out when there are more).
    pub fn millis_per_step(&self) -> Option<f64> {
        let ms: Vec<f64> = self.frames.iter().map(|f| f.millis).collect();
        let ms = if ms.len() > 1 { &ms[1..] } else { &ms[..] };
        (!ms.is_empty()).then(|| ms.iter().sum::<f64>() / ms.len() as f64)
    }

    fn sync_textures(&mut self, ctx: &egui::Context) {
        let Some(step) = self.shown_step() else { return };
        let frame = &self.frames[step];
        let count = frame.x.len();
        if self.textures_show == Some((step, count)) {
            return;
        }
        let opts = egui::TextureOptions::NEAREST;
        if self.textures.len() != count {
            self.textures = (0..count)
                .map(|i| {
                    (
                        ctx.load_texture(format!("x{i}"), color_image(&frame.x[i]), opts),
                        ctx.load_texture(format!("x0_{i}"), color_image(&frame.pred_x0[i]), opts),
                    )
                })
                .collect();
        } else {
            for (i, (tx, t0)) in self.textures.iter_mut().enumerate() {
                tx.set(color_image(&frame.x[i]), opts);
                t0.set(color_image(&frame.pred_x0[i]), opts);
            }
        }
        self.textures_show = Some((step, count));
    }

    /// Click: select one and open it large; Ctrl: toggle; Shift: extend.
    pub fn click(&mut self, i: usize, modifiers: egui::Modifiers) {
        if modifiers.command {
            if !self.selected.remove(&i) {
                self.selected.insert(i);
            }
            self.anchor = Some(i);
        } else if modifiers.shift {
            let a = self.anchor.unwrap_or(i);
            for j in a.min(i)..=a.max(i) {
                self.selected.insert(j);
            }
        } else {
            self.selected.clear();
            self.selected.insert(i);
            self.anchor = Some(i);
            self.detail = Some(i);
        }
    }

    pub fn select_all(&mut self) {
        if let Some(r) = &self.request {
            self.selected = (0..r.count as usize).collect();
        }
    }

    /// Provenance of image `index` (None: the whole grid) at the shown step.
    pub fn provenance(&self, index: Option<usize>) -> Option<Provenance> {
        let req = self.request.as_ref()?;
        let step = self.shown_step()?;
        let last = self.frames.len() == self.frames[step].num_steps && step + 1 == self.frames.len();
        Some(Provenance {
            model: self.model.as_ref().map_or_else(|| "unknown".into(), |m| m.name.clone()),
            seed: req.seed,
            image_index: index,
            count: req.count,
            steps: req.steps,
            scheduler: req.scheduler.name().into(),
            eta: req.scheduler.eta(),
            precision: self.model.as_ref().map_or_else(|| "fp32".into(), |m| m.precision.name().into()),
            at_step: (!last).then_some(step + 1),
            interrupted_at: self.interrupted_at,
        })
    }

    /// The images exported for the shown step: x_t, or the x_0 prediction
    /// when only that is shown (at the last step both are the final image).
    fn export_images(&self, view: View) -> Option<&[Image8]> {
        let f = &self.frames[self.shown_step()?];
        Some(if view == View::Predicted { &f.pred_x0 } else { &f.x })
    }

    /// Saves the selected images of the shown step: one file as `path`,
    /// several as `path` with `-<index>` before the extension.
    pub fn export_selected(&self, path: &Path, view: View, scale: u32) -> anyhow::Result<Vec<std::path::PathBuf>> {
        let Some(images) = self.export_images(view) else { anyhow::bail!("nothing to export yet: generate first") };
        anyhow::ensure!(!self.selected.is_empty(), "no image selected (click one, or Ctrl+A)");
        let mut written = Vec::new();
        for &i in &self.selected {
            let dest = if self.selected.len() == 1 {
                path.to_path_buf()
            } else {
                let stem = path.file_stem().unwrap_or_default().to_string_lossy();
                path.with_file_name(format!("{stem}-{i}.png"))
            };
            export::save_png(&dest, &images[i], scale, self.provenance(Some(i)).as_ref())?;
            written.push(dest);
        }
        Ok(written)
    }

    /// Saves the whole grid of the shown step.
    pub fn export_grid(&self, path: &Path, view: View, scale: u32) -> anyhow::Result<()> {
        let Some(images) = self.export_images(view) else { anyhow::bail!("nothing to export yet: generate first") };
        let up: Vec<Image8> = images.iter().map(|i| i.upscale(scale)).collect();
        let grid = Image8::grid(&up, scale.max(1))?;
        export::save_png(path, &grid, 1, self.provenance(None).as_ref())
    }

    /// One image's trajectory, x_t beside x_0 for every step reached.
    pub fn trajectory(&self, i: usize) -> Vec<Image8> {
        self.frames.iter().filter_map(|f| Image8::tiled(&[f.x[i].clone(), f.pred_x0[i].clone()], 2, 1).ok()).collect()
    }
}

fn seconds_text(s: f64) -> String {
    if s < 60.0 { format!("{s:.1} s") } else { format!("{}:{:02}", (s / 60.0) as u64, s as u64 % 60) }
}

pub fn ui(app: &mut PetalApp, ui: &mut egui::Ui) {
    let ctx = ui.ctx().clone();
    shortcuts(app, &ctx);
    egui::Panel::left("generate settings").resizable(false).default_size(240.0).show(ui, |ui| settings_ui(app, ui));
    if let Some(i) = app.generation.detail {
        egui::Panel::right("detail").default_size(380.0).show(ui, |ui| detail_ui(app, ui, i));
    }
    egui::CentralPanel::default().show(ui, |ui| grid_ui(app, ui));
}

fn can_generate(app: &PetalApp) -> Result<(), &'static str> {
    if app.training.is_running() {
        Err("Training is using the GPU: pause is not enough, Stop it (a checkpoint is written) to generate")
    } else if app.model.is_none() {
        Err("Open a model folder first")
    } else if app.generation.running {
        Err("Generating…")
    } else if app.comparison.running {
        Err("Comparing precisions…")
    } else {
        Ok(())
    }
}

fn generate(app: &mut PetalApp) {
    let s = &app.settings.generate;
    app.send(Command::Generate(GenerateRequest { count: s.count, steps: s.steps, seed: s.seed, scheduler: s.scheduler }));
    app.generation.running = true;
}

fn shortcuts(app: &mut PetalApp, ctx: &egui::Context) {
    // Ctrl+A belongs to a focused text or number field (select its text),
    // not to the image grid.
    let typing = ctx.text_edit_focused();
    let (gen_key, esc, all, save) = ctx.input_mut(|i| {
        (
            i.consume_key(egui::Modifiers::COMMAND, egui::Key::Enter),
            i.consume_key(egui::Modifiers::NONE, egui::Key::Escape),
            !typing && i.consume_key(egui::Modifiers::COMMAND, egui::Key::A),
            i.consume_key(egui::Modifiers::COMMAND, egui::Key::S),
        )
    });
    if gen_key && can_generate(app).is_ok() {
        generate(app);
    }
    if esc && (app.generation.running || app.comparison.running) {
        app.send(Command::Cancel);
    }
    if all {
        app.generation.select_all();
    }
    if save {
        export_selected_dialog(app);
    }
}

fn settings_ui(app: &mut PetalApp, ui: &mut egui::Ui) {
    let max_steps = app.model.as_ref().map_or(1000, |m| m.num_train_timesteps);
    let s = &mut app.settings.generate;
    ui.heading("Generate");
    egui::Grid::new("gen settings").num_columns(2).show(ui, |ui| {
        ui.label("Images");
        ui.add(egui::Slider::new(&mut s.count, 1..=64));
        ui.end_row();
        ui.label("Steps");
        ui.add(egui::DragValue::new(&mut s.steps).range(1..=max_steps));
        ui.end_row();
        ui.label("Seed");
        ui.horizontal(|ui| {
            ui.add(egui::DragValue::new(&mut s.seed));
            if ui.button("Random").on_hover_text("A random seed").clicked() {
                s.seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64 % 1_000_000);
            }
        });
        ui.end_row();
        ui.label("Scheduler");
        let eta = s.scheduler.eta().unwrap_or(0.0);
        egui::ComboBox::from_id_salt("scheduler").selected_text(s.scheduler.name()).show_ui(ui, |ui| {
            ui.selectable_value(&mut s.scheduler, SchedulerChoice::Ddpm, "DDPM");
            ui.selectable_value(&mut s.scheduler, SchedulerChoice::Ddim { eta }, "DDIM");
        });
        ui.end_row();
        if let SchedulerChoice::Ddim { eta } = &mut s.scheduler {
            ui.label("eta");
            ui.add(egui::Slider::new(eta, 0.0..=1.0).step_by(0.05)).on_hover_text("0: deterministic DDIM; 1: as much noise as DDPM");
            ui.end_row();
        }
        ui.label("Show");
        ui.vertical(|ui| {
            ui.radio_value(&mut s.view, View::Both, "x_t and predicted x_0");
            ui.radio_value(&mut s.view, View::Noisy, "x_t (noisy)");
            ui.radio_value(&mut s.view, View::Predicted, "predicted x_0");
        });
        ui.end_row();
        ui.label("Zoom");
        ui.add(egui::Slider::new(&mut s.zoom, 1..=8).suffix("x"));
        ui.end_row();
    });
    precision_ui(app, ui);
    ui.add_space(8.0);
    ui.horizontal(|ui| {
        let ok = can_generate(app);
        let resp = ui.add_enabled(ok.is_ok(), egui::Button::new(egui::RichText::new("Generate images").strong()));
        let resp = match ok {
            Err(why) => resp.on_disabled_hover_text(why),
            Ok(()) => resp.on_hover_text("Ctrl+Enter"),
        };
        if resp.clicked() {
            generate(app);
        }
        if ui.add_enabled(app.generation.running || app.comparison.running, egui::Button::new("Cancel")).on_hover_text("Esc: stop between steps and keep what was reached").clicked() {
            app.send(Command::Cancel);
        }
    });
    compare_button(app, ui);
    if let Err(why) = can_generate(app)
        && !app.generation.running
    {
        ui.label(egui::RichText::new(why).weak());
    }
    ui.separator();
    ui.heading("Export");
    let s = &mut app.settings.generate;
    ui.horizontal(|ui| {
        ui.label("Size");
        for f in [1u32, 4, 8] {
            ui.selectable_value(&mut s.export_scale, f, if f == 1 { "32 px".to_string() } else { format!("x{f}") });
        }
    });
    let has = !app.generation.frames.is_empty();
    let n = app.generation.selected.len();
    if ui.add_enabled(has && n > 0, egui::Button::new(format!("Export {n} selected…"))).on_hover_text("Ctrl+S").clicked() {
        export_selected_dialog(app);
    }
    if ui.add_enabled(has, egui::Button::new("Export grid…")).clicked() {
        export_grid_dialog(app);
    }
    ui.label(egui::RichText::new("Exports show the step on the replay slider.").weak());
}

/// The weights' precision (reloads the open model when it changes) and the
/// button that compares all three.
fn precision_ui(app: &mut PetalApp, ui: &mut egui::Ui) {
    let stored = app.model.as_ref().map(|m| m.stored);
    let before = app.settings.generate.precision;
    let busy = app.busy() || app.loading.is_some();
    ui.horizontal(|ui| {
        ui.label("Weights").on_hover_text(
            "The weights' precision on the GPU; changing it reloads the open model (converted on load when the folder has no file in that precision)",
        );
        ui.add_enabled_ui(!busy, |ui| {
            let stored_text = stored.map_or_else(|| "As stored".to_string(), |s| format!("As stored ({})", s.name().to_uppercase()));
            ui.selectable_value(&mut app.settings.generate.precision, None, stored_text);
            for p in Precision::ALL {
                ui.selectable_value(&mut app.settings.generate.precision, Some(p), p.name().to_uppercase());
            }
        });
    });
    if app.settings.generate.precision != before
        && let Some(m) = &app.model
    {
        let dir = m.dir.clone();
        app.open_model(dir);
    }
}

/// Samples the current settings with FP32, FP16 and INT8 weights, side by side.
fn compare_button(app: &mut PetalApp, ui: &mut egui::Ui) {
    let ok = can_generate(app);
    let resp = ui.add_enabled(ok.is_ok(), egui::Button::new("Compare FP32, FP16, INT8"));
    let resp = match ok {
        Err(why) => resp.on_disabled_hover_text(why),
        Ok(()) => resp.on_hover_text("Sample the same seed and noise with each precision's weights and show the three side by side"),
    };
    if resp.clicked() {
        let s = &app.settings.generate;
        app.send(Command::Compare(GenerateRequest { count: s.count, steps: s.steps, seed: s.seed, scheduler: s.scheduler }));
        app.comparison.running = true;
        app.comparison.open = true;
    }
}

fn export_selected_dialog(app: &mut PetalApp) {
    let g = &app.generation;
    if g.frames.is_empty() || g.selected.is_empty() {
        return;
    }
    let seed = g.request.as_ref().map_or(0, |r| r.seed);
    let first = *g.selected.iter().next().unwrap();
    let name = if g.selected.len() == 1 { format!("petal-seed{seed}-{first}.png") } else { format!("petal-seed{seed}.png") };
    let Some(path) = super::dialog::save_file("Export images", &name, ("PNG", &["png"]), app) else { return };
    let (view, scale) = (app.settings.generate.view, app.settings.generate.export_scale);
    match app.generation.export_selected(&path, view, scale) {
        Ok(files) if files.len() == 1 => super::dialog::saved(app, "the image", &files[0]),
        Ok(files) => {
            let first = files.first().and_then(|f| f.file_name()).map_or(String::new(), |f| f.to_string_lossy().into_owned());
            let what = format!("{} images ({first}, …)", files.len());
            super::dialog::saved(app, &what, path.parent().unwrap_or(&path))
        }
        Err(e) => app.report_error(format!("{e:#}")),
    }
}

fn export_grid_dialog(app: &mut PetalApp) {
    let seed = app.generation.request.as_ref().map_or(0, |r| r.seed);
    let Some(path) = super::dialog::save_file("Export the grid", &format!("petal-seed{seed}-grid.png"), ("PNG", &["png"]), app) else { return };
    let (view, scale) = (app.settings.generate.view, app.settings.generate.export_scale);
    match app.generation.export_grid(&path, view, scale) {
        Ok(()) => super::dialog::saved(app, "the grid", &path),
        Err(e) => app.report_error(format!("{e:#}")),
    }
}

fn progress_ui(app: &mut PetalApp, ui: &mut egui::Ui) {
    let g = &app.generation;
    let Some(req) = &g.request else {
        ui.label("Press Generate (Ctrl+Enter) to watch a batch of flowers bloom, one denoising step at a time.");
        return;
    };
    let reached = g.frames.len();
    let total = g.frames.last().map_or(req.steps as usize, |f| f.num_steps);
    let ms = g.millis_per_step();
    let mut text = format!("Step {reached}/{total}");
    if reached == 0 && g.running {
        text += " · preparing (the first run compiles the kernels)";
    }
    if let Some(f) = g.frames.last() {
        text += &format!(" · t = {}", f.timestep);
    }
    if let Some(ms) = ms {
        text += &format!(" · {ms:.0} ms/step");
        if g.running {
            text += &format!(" · {} left", seconds_text(ms * (total - reached) as f64 / 1e3));
        }
    }
    if let Some(k) = g.interrupted_at {
        text += &format!(" · interrupted at step {k}");
    } else if let Some(s) = g.seconds {
        text += &format!(" · done in {}", seconds_text(s));
    }
    ui.add(egui::ProgressBar::new(reached as f32 / total.max(1) as f32).text(text));
    if reached > 1 {
        let mut shown = g.shown_step().unwrap_or(0) + 1;
        let following = g.replay.is_none();
        ui.horizontal(|ui| {
            ui.label("Replay");
            let r = ui.add(egui::Slider::new(&mut shown, 1..=reached).text("step"));
            if r.changed() {
                app.generation.replay = if shown == reached && app.generation.running { None } else { Some(shown - 1) };
            }
            if !following && ui.button("Follow newest").clicked() {
                app.generation.replay = None;
            }
        });
    }
}

fn grid_ui(app: &mut PetalApp, ui: &mut egui::Ui) {
    progress_ui(app, ui);
    ui.separator();
    let ctx = ui.ctx().clone();
    app.generation.sync_textures(&ctx);
    if app.generation.textures.is_empty() || app.generation.frames.is_empty() {
        if app.model.is_none() && app.loading.is_none() {
            ui.vertical_centered(|ui| {
                ui.add_space(60.0);
                ui.label("Petal needs a diffusers model folder (model_index.json with unet/ and scheduler/, or config.json with the weights).");
                if ui.button("Open model folder…").clicked()
                    && let Some(dir) = super::dialog::pick_folder("Open a diffusers model folder", super::OPEN_MODEL_INSTEAD, app)
                {
                    app.open_model(dir);
                }
            });
        }
        return;
    }
    let view = app.settings.generate.view;
    let zoom = app.settings.generate.zoom.max(1) as f32;
    let first = &app.generation.frames[0].x[0];
    let tile = egui::vec2(first.width as f32 * zoom, first.height as f32 * zoom);
    let per = if view == View::Both { 2.0 } else { 1.0 };
    let cell = egui::vec2(tile.x * per + if per > 1.0 { 2.0 } else { 0.0 }, tile.y);
    let count = app.generation.textures.len();
    let mut clicked = None;
    let stroke = ui.visuals().selection.stroke.color;
    egui::ScrollArea::vertical().show(ui, |ui| {
        ui.horizontal_wrapped(|ui| {
            ui.spacing_mut().item_spacing = egui::vec2(10.0, 10.0);
            for i in 0..count {
                let (tx, t0) = &app.generation.textures[i];
                let (rect, resp) = ui.allocate_exact_size(cell + egui::vec2(6.0, 6.0), egui::Sense::click());
                let inner = rect.shrink(3.0);
                let painter = ui.painter_at(rect);
                let uv = egui::Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0));
                let mut at = inner.min;
                for (show, tex) in [(view != View::Predicted, tx), (view != View::Noisy, t0)] {
                    if show {
                        painter.image(tex.id(), egui::Rect::from_min_size(at, tile), uv, egui::Color32::WHITE);
                        at.x += tile.x + 2.0;
                    }
                }
                if app.generation.selected.contains(&i) {
                    painter.rect_stroke(rect.shrink(1.0), 2.0, egui::Stroke::new(2.0, stroke), egui::StrokeKind::Inside);
                } else if resp.hovered() {
                    painter.rect_stroke(rect.shrink(1.0), 2.0, egui::Stroke::new(1.0, egui::Color32::GRAY), egui::StrokeKind::Inside);
                }
                resp.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Button, true, format!("Select image {i}")));
                let resp = resp.on_hover_text(format!("Image {i}: click to open it large, Ctrl/Shift-click to select more"));
                if resp.clicked() {
                    clicked = Some((i, ui.input(|inp| inp.modifiers)));
                }
            }
        });
    });
    if let Some((i, m)) = clicked {
        app.generation.click(i, m);
    }
}

fn detail_ui(app: &mut PetalApp, ui: &mut egui::Ui, i: usize) {
    let ctx = ui.ctx().clone();
    let g = &mut app.generation;
    if g.frames.first().is_some_and(|f| i >= f.x.len()) {
        g.detail = None;
        return;
    }
    if g.frames.is_empty() {
        ui.heading(format!("Image {i}"));
        ui.label("Waiting for the first step…");
        return;
    }
    ui.horizontal(|ui| {
        ui.heading(format!("Image {i}"));
        if ui.small_button("Close").clicked() {
            g.detail = None;
        }
    });
    let step = g.shown_step().unwrap_or(0);
    g.sync_textures(&ctx);
    let big = egui::vec2(160.0, 160.0);
    let opts = egui::TextureOptions::NEAREST;
    let (tx, t0) = (g.textures[i].0.id(), g.textures[i].1.id());
    ui.horizontal(|ui| {
        ui.vertical(|ui| {
            ui.add(egui::Image::new((tx, big)));
            ui.label(format!("x_t after step {}", step + 1));
        });
        ui.vertical(|ui| {
            ui.add(egui::Image::new((t0, big)));
            ui.label("predicted x_0");
        });
    });
    // The strip of every step: x_t on top, x_0 below.
    let n = g.frames.len();
    if g.strip.as_ref().is_none_or(|(si, sn, _)| *si != i || *sn != n) {
        let xs: Vec<Image8> = g.frames.iter().map(|f| f.x[i].clone()).collect();
        let x0s: Vec<Image8> = g.frames.iter().map(|f| f.pred_x0[i].clone()).collect();
        let all: Vec<Image8> = xs.into_iter().chain(x0s).collect();
        if let Ok(strip) = Image8::tiled(&all, n, 1) {
            g.strip = Some((i, n, ctx.load_texture("strip", color_image(&strip), opts)));
        }
    }
    if let Some((_, _, tex)) = &g.strip {
        ui.label("Every step (top: x_t, bottom: predicted x_0); click to replay");
        let size = tex.size_vec2() * 2.0;
        let mut jump = None;
        egui::ScrollArea::horizontal().show(ui, |ui| {
            let r = ui.add(egui::Image::new((tex.id(), size)).sense(egui::Sense::click()));
            if r.clicked()
                && let Some(p) = r.interact_pointer_pos()
            {
                jump = Some((((p.x - r.rect.left()) / size.x * n as f32) as usize).min(n - 1));
            }
        });
        if let Some(s) = jump {
            g.replay = Some(s);
        }
    }
    ui.separator();
    let seed = g.request.as_ref().map_or(0, |r| r.seed);
    let (mut gif, mut steps) = (false, false);
    ui.horizontal(|ui| {
        gif = ui.button("Save trajectory as GIF…").clicked();
        steps = ui.button("Save steps as PNGs…").clicked();
    });
    if gif && let Some(p) = super::dialog::save_file("Save the trajectory", &format!("petal-seed{seed}-{i}.gif"), ("GIF", &["gif"]), app) {
        match export::save_gif(&p, &app.generation.trajectory(i), 4, 80) {
            Ok(()) => super::dialog::saved(app, "the trajectory", &p),
            Err(e) => app.report_error(format!("{e:#}")),
        }
    }
    if steps && let Some(dir) = super::dialog::save_folder("A folder for the steps", &format!("petal-seed{seed}-{i}-steps"), app) {
        match export::save_frames(&dir, &app.generation.trajectory(i), 4, app.generation.provenance(Some(i)).as_ref()) {
            Ok(()) => super::dialog::saved(app, "the steps", &dir),
            Err(e) => app.report_error(format!("{e:#}")),
        }
    }
}
