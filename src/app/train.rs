//! The Train tab: data, starting weights and the recipe; run controls; the
//! live loss curve, the preview grid and the checkpoints.

use super::{PetalApp, StartChoice, Tab};
use crate::export::Image8;
use crate::train::StepLog;
use crate::train::{ModelSource, RunStarted, TrainOptions};
use crate::worker::{Command, Event};
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    Idle,
    /// StartTraining sent; the worker loads data and model.
    Starting,
    Running,
    /// Stop sent; the checkpoint is being written.
    Stopping,
}

/// Files a data-folder scan skipped, each with why.
pub type Skipped = Vec<(PathBuf, String)>;

/// What the window knows of the current (or last) run.
pub struct TrainingView {
    pub state: RunState,
    pub paused: bool,
    /// The data folder's scan: (folder, usable images, skipped files and why).
    pub scan: Option<(PathBuf, usize, Skipped)>,
    pub scanning: bool,
    /// Why the data folder's last scan failed (it names the folder), until
    /// another folder is chosen or scanned.
    pub scan_error: Option<String>,
    pub images: usize,
    pub total_steps: u64,
    pub steps_per_epoch: u64,
    pub resumed_from: Option<u64>,
    pub parameters: usize,
    pub gpu_bytes: u64,
    pub log: Vec<StepLog>,
    pub preview: Option<(u64, egui::TextureHandle)>,
    pub checkpoints: Vec<(u64, PathBuf)>,
    /// How the last run ended, in words.
    pub outcome: Option<String>,
}

impl Default for TrainingView {
    fn default() -> Self {
        TrainingView {
            state: RunState::Idle,
            paused: false,
            scan: None,
            scanning: false,
            scan_error: None,
            images: 0,
            total_steps: 0,
            steps_per_epoch: 0,
            resumed_from: None,
            parameters: 0,
            gpu_bytes: 0,
            log: Vec::new(),
            preview: None,
            checkpoints: Vec::new(),
            outcome: None,
        }
    }
}

impl TrainingView {
    pub fn is_running(&self) -> bool {
        self.state != RunState::Idle
    }

    pub fn scanned(&mut self, dir: PathBuf, images: usize, skipped: Vec<(PathBuf, String)>) {
        self.scanning = false;
        self.scan_error = None;
        self.scan = Some((dir, images, skipped));
    }

    /// The data folder's scan failed with this message.
    pub fn scan_failed(&mut self, message: &str) {
        self.scanning = false;
        self.scan = None;
        self.scan_error = Some(message.to_string());
    }

    /// An error ended the run.
    pub fn failed(&mut self) {
        if self.is_running() {
            self.state = RunState::Idle;
            self.paused = false;
            let last = self.checkpoints.last().map_or_else(|| "none was written".to_string(), |(s, p)| format!("the last one is {} (step {s})", p.display()));
            self.outcome = Some(format!("The run stopped with an error; checkpoints are kept: {last}."));
        }
    }

    pub fn event(&mut self, ctx: &egui::Context, ev: Event) {
        match ev {
            Event::TrainStarted(RunStarted { images, skipped, total_steps, steps_per_epoch, resumed_from, parameters, gpu_bytes }) => {
                self.state = RunState::Running;
                self.images = images;
                self.total_steps = total_steps;
                self.steps_per_epoch = steps_per_epoch;
                self.resumed_from = resumed_from;
                self.parameters = parameters;
                self.gpu_bytes = gpu_bytes;
                if let Some((_, _, s)) = &mut self.scan {
                    *s = skipped;
                }
            }
            Event::TrainStep(s) => self.log.push(s),
            Event::TrainPreview { step, images } => {
                if let Ok(grid) = Image8::grid(&images, 1) {
                    let img = egui::ColorImage::from_rgba_unmultiplied([grid.width as usize, grid.height as usize], &grid.to_rgba());
                    self.preview = Some((step, ctx.load_texture("train preview", img, egui::TextureOptions::NEAREST)));
                }
            }
            Event::Checkpoint { step, path } => {
                self.checkpoints.retain(|(s, _)| *s != step);
                self.checkpoints.push((step, path));
            }
            Event::TrainPaused(p) => self.paused = p,
            _ => {}
        }
    }

    pub fn done(&mut self, steps_done: u64, last_checkpoint: Option<PathBuf>, stopped: bool) {
        self.state = RunState::Idle;
        self.paused = false;
        let ck = last_checkpoint.map_or_else(|| "no checkpoint".into(), |p| format!("checkpoint {}", p.display()));
        self.outcome = Some(if stopped { format!("Stopped after step {steps_done}; {ck}.") } else { format!("Finished {steps_done} steps; {ck}.") });
    }

    /// Steps per second over the last 20 steps of this process.
    pub fn steps_per_second(&self) -> Option<f64> {
        let n = self.log.len();
        if n < 2 {
            return None;
        }
        let a = &self.log[n.saturating_sub(21)];
        let b = &self.log[n - 1];
        let dt = b.seconds - a.seconds;
        (dt > 0.0).then(|| (b.step - a.step) as f64 / dt)
    }
}

pub fn ui(app: &mut PetalApp, ui: &mut egui::Ui) {
    egui::Panel::left("train settings").resizable(false).default_size(300.0).show(ui, |ui| {
        egui::ScrollArea::vertical().show(ui, |ui| settings_ui(app, ui));
    });
    egui::CentralPanel::default().show(ui, |ui| run_ui(app, ui));
}

/// A folder setting: its label, a Choose button and the folder. True when
/// Choose was clicked (the caller opens the dialog: it needs the app).
fn folder_row(ui: &mut egui::Ui, label: &str, value: &Option<PathBuf>, enabled: bool) -> bool {
    let mut clicked = false;
    ui.label(label);
    ui.horizontal(|ui| {
        clicked = ui.add_enabled(enabled, egui::Button::new("Choose…")).clicked();
        ui.label(value.as_ref().map_or_else(|| "(none)".to_string(), |p| p.display().to_string()));
    });
    ui.end_row();
    clicked
}

/// What trains from a folder without a dialog.
const TRAIN_INSTEAD: &str = "train from the terminal with `petal train --data DIR --out DIR`";

fn settings_ui(app: &mut PetalApp, ui: &mut egui::Ui) {
    let idle = !app.training.is_running();
    ui.heading("Train");
    egui::Grid::new("train folders").num_columns(2).show(ui, |ui| {
        let data = app.settings.train.data.clone();
        if folder_row(ui, "Data folder", &data, idle)
            && let Some(d) = super::dialog::pick_folder("Data folder", TRAIN_INSTEAD, app)
        {
            set_data(app, d);
        }
        let out = app.settings.train.out.clone();
        if folder_row(ui, "Output folder", &out, idle)
            && let Some(d) = super::dialog::pick_folder("Output folder", TRAIN_INSTEAD, app)
        {
            app.settings.train.out = Some(d);
        }
    });
    match &app.training.scan {
        _ if app.training.scanning => {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label("Reading the images…");
            });
        }
        Some((_, n, skipped)) => {
            ui.label(format!("{n} images found{}", if skipped.is_empty() { String::new() } else { format!(", {} skipped:", skipped.len()) }));
            for (p, why) in skipped.iter().take(8) {
                ui.label(egui::RichText::new(format!("{}: {why}", p.file_name().unwrap_or_default().to_string_lossy())).small().weak());
            }
            if skipped.len() > 8 {
                ui.label(egui::RichText::new(format!("… and {} more", skipped.len() - 8)).small().weak());
            }
        }
        None => {
            if let Some(e) = &app.training.scan_error {
                ui.colored_label(ui.visuals().error_fg_color, e);
            }
        }
    }
    ui.separator();
    ui.label("Start from");
    let t = &mut app.settings.train;
    let (mut pick_model, mut pick_checkpoint) = (false, false);
    ui.add_enabled_ui(idle, |ui| {
        let current = matches!(t.start, StartChoice::CurrentModel);
        if ui.radio(current, "the model open in Generate").clicked() {
            t.start = StartChoice::CurrentModel;
        }
        let folder = matches!(t.start, StartChoice::Folder(_));
        pick_model = ui.radio(folder, "another model folder…").clicked();
        let fresh = matches!(t.start, StartChoice::Fresh(_));
        ui.horizontal(|ui| {
            if ui.radio(fresh, "fresh weights:").clicked() && !fresh {
                t.start = StartChoice::Fresh("small".into());
            }
            let mut name = match &t.start {
                StartChoice::Fresh(n) => n.clone(),
                _ => "small".into(),
            };
            let before = name.clone();
            egui::ComboBox::from_id_salt("fresh config").selected_text(&name).show_ui(ui, |ui| {
                for n in ["tiny", "small", "cifar10-32"] {
                    ui.selectable_value(&mut name, n.to_string(), n);
                }
            });
            if name != before {
                t.start = StartChoice::Fresh(name);
            }
        });
        let resume = matches!(t.start, StartChoice::Resume(_));
        pick_checkpoint = ui.radio(resume, "resume a checkpoint…").clicked();
        match &t.start {
            StartChoice::Folder(p) | StartChoice::Resume(p) => {
                ui.label(egui::RichText::new(p.display().to_string()).small());
            }
            _ => {}
        }
    });
    if pick_model && let Some(d) = super::dialog::pick_folder("A model folder to start from", "start from one in the terminal with `petal train --init DIR`", app) {
        app.settings.train.start = StartChoice::Folder(d);
    }
    if pick_checkpoint
        && let Some(d) = super::dialog::pick_folder("A checkpoint-<step> folder", "resume one in the terminal with `petal train --resume DIR`", app)
    {
        app.settings.train.start = StartChoice::Resume(d);
    }
    let t = &mut app.settings.train;
    ui.separator();
    ui.label("Recipe (the seed's: AdamW, cosine schedule with warm-up, MSE on the noise, random flips, EMA)");
    ui.add_enabled_ui(idle, |ui| {
        egui::Grid::new("recipe").num_columns(2).show(ui, |ui| {
            ui.label("Epochs");
            ui.add(egui::DragValue::new(&mut t.epochs).range(1..=100_000));
            ui.end_row();
            ui.label("Max steps");
            ui.add(egui::DragValue::new(&mut t.max_steps).range(0..=10_000_000)).on_hover_text("0: as many as the epochs make");
            ui.end_row();
            ui.label("Batch");
            ui.add(egui::DragValue::new(&mut t.batch).range(1..=1024));
            ui.end_row();
            ui.label("Learning rate");
            ui.add(egui::DragValue::new(&mut t.lr).speed(1e-6).range(1e-7..=1e-1).custom_formatter(|v, _| format!("{v:.1e}")));
            ui.end_row();
            ui.label("Warm-up steps");
            ui.add(egui::DragValue::new(&mut t.warmup).range(0..=100_000));
            ui.end_row();
            ui.label("Checkpoint every");
            ui.add(egui::DragValue::new(&mut t.checkpoint_every).range(0..=1_000_000).suffix(" steps"));
            ui.end_row();
            ui.label("Preview every");
            ui.add(egui::DragValue::new(&mut t.sample_every).range(0..=1_000_000).suffix(" steps"));
            ui.end_row();
            ui.label("Seed");
            ui.add(egui::DragValue::new(&mut t.seed));
            ui.end_row();
        });
    });
    ui.separator();
    controls_ui(app, ui);
}

/// The output folder a data folder suggests: `petal-runs/NAME` beside it.
fn default_out(data: &std::path::Path) -> PathBuf {
    data.parent().unwrap_or(data).join("petal-runs").join(data.file_name().unwrap_or_default())
}

/// The output folder after the data folder changes from `old_data` to
/// `data`: one that was only the old folder's suggestion (or none) follows
/// the new folder; one the user chose stays.
fn out_for_new_data(out: Option<&std::path::Path>, old_data: Option<&std::path::Path>, data: &std::path::Path) -> PathBuf {
    match out {
        Some(o) if old_data.map(default_out).as_deref() != Some(o) => o.to_path_buf(),
        _ => default_out(data),
    }
}

fn set_data(app: &mut PetalApp, d: PathBuf) {
    let t = &mut app.settings.train;
    t.out = Some(out_for_new_data(t.out.as_deref(), t.data.as_deref(), &d));
    t.data = Some(d.clone());
    app.training.scan = None;
    app.training.scan_error = None;
    app.training.scanning = true;
    app.send(Command::ScanData(d));
}

/// The request the settings make, or what is missing.
pub fn request(app: &PetalApp) -> Result<TrainOptions, String> {
    let t = &app.settings.train;
    let data = t.data.clone().ok_or("Choose a data folder")?;
    if app.training.scan_error.is_some() {
        return Err("The data folder could not be read (the error is under it): choose another".into());
    }
    let out = t.out.clone().ok_or("Choose an output folder")?;
    let init = |dir: PathBuf| ModelSource::Init { dir, variant: None };
    let source = match &t.start {
        StartChoice::CurrentModel => init(app.model.as_ref().ok_or("No model is open to start from")?.dir.clone()),
        StartChoice::Folder(p) => init(p.clone()),
        StartChoice::Fresh(n) => ModelSource::builtin(n).map_err(|e| e.to_string())?,
        StartChoice::Resume(p) => ModelSource::Resume(p.clone()),
    };
    // The seed's recipe (TrainOptions::new) with what the window edits.
    let mut o = TrainOptions::new(data, out, source);
    o.epochs = t.epochs;
    o.max_steps = (t.max_steps > 0).then_some(t.max_steps);
    o.batch = t.batch;
    o.lr = t.lr;
    o.warmup = t.warmup;
    o.checkpoint_every = t.checkpoint_every;
    o.sample_every = t.sample_every;
    o.seed = t.seed;
    Ok(o)
}

/// Starts a run with the current settings (what the Start button does).
pub fn start(app: &mut PetalApp) -> Result<(), String> {
    let req = request(app)?;
    if app.generation.running {
        return Err("A generation is running: cancel it first".into());
    }
    let tv = &mut app.training;
    tv.log.clear();
    tv.preview = None;
    tv.checkpoints.clear();
    tv.outcome = None;
    tv.state = RunState::Starting;
    app.send(Command::StartTraining(Box::new(req)));
    Ok(())
}

fn controls_ui(app: &mut PetalApp, ui: &mut egui::Ui) {
    let state = app.training.state;
    ui.horizontal_wrapped(|ui| {
        let ready = request(app);
        let can_start = state == RunState::Idle && ready.is_ok() && !app.generation.running && !app.comparison.running;
        let r = ui.add_enabled(can_start, egui::Button::new(egui::RichText::new("Start training").strong()));
        let r = match (&ready, state) {
            (Err(why), RunState::Idle) => r.on_disabled_hover_text(why.as_str()),
            _ => r,
        };
        if r.clicked()
            && let Err(e) = start(app)
        {
            app.report_error(e);
        }
        let running = state == RunState::Running;
        let label = if app.training.paused { "Resume" } else { "Pause" };
        if ui.add_enabled(running, egui::Button::new(label)).on_hover_text("The model stays in memory").clicked() {
            app.send(if app.training.paused { Command::Resume } else { Command::Pause });
        }
        if ui.add_enabled(running, egui::Button::new("Stop")).on_hover_text("Writes a checkpoint, then ends the run").clicked() {
            app.training.state = RunState::Stopping;
            app.send(Command::Stop);
        }
        if ui.add_enabled(running, egui::Button::new("Sample now")).clicked() {
            app.send(Command::SampleNow);
        }
        if ui.add_enabled(running, egui::Button::new("Save checkpoint now")).clicked() {
            app.send(Command::CheckpointNow);
        }
    });
    if let Err(why) = request(app)
        && state == RunState::Idle
    {
        ui.label(egui::RichText::new(why).weak());
    }
}

fn run_ui(app: &mut PetalApp, ui: &mut egui::Ui) {
    let tv = &app.training;
    match tv.state {
        RunState::Idle => {
            // The last run's outcome, else what the settings still lack.
            let line = tv.outcome.clone().unwrap_or_else(|| match request(app) {
                Ok(_) => "Ready: press Start training.".into(),
                Err(missing) => format!("{missing}, then press Start training."),
            });
            ui.label(line);
        }
        RunState::Starting => {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label("Loading the images and the model…");
            });
        }
        RunState::Running | RunState::Stopping => {
            let last = tv.log.last();
            let step = last.map_or(tv.resumed_from.unwrap_or(0), |s| s.step);
            let mut text = format!("Step {step}/{}", tv.total_steps);
            if let Some(s) = last {
                text += &format!(" · epoch {} · loss {:.4} · lr {:.2e}", s.epoch + 1, s.loss, s.lr);
            }
            if let Some(r) = tv.steps_per_second() {
                let left = (tv.total_steps - step) as f64 / r;
                text += &format!(" · {r:.2} steps/s · {} left", if left < 3600.0 { format!("{:.0} min", left / 60.0) } else { format!("{:.1} h", left / 3600.0) });
            }
            if tv.paused {
                text += " · paused";
            }
            if tv.state == RunState::Stopping {
                text += " · stopping (writing a checkpoint)";
            }
            ui.add(egui::ProgressBar::new(step as f32 / tv.total_steps.max(1) as f32).text(text));
            ui.label(
                egui::RichText::new(format!(
                    "{} images, {} steps per epoch, {:.2}M parameters, {:.0} MiB of GPU buffers",
                    tv.images,
                    tv.steps_per_epoch,
                    tv.parameters as f64 / 1e6,
                    tv.gpu_bytes as f64 / (1 << 20) as f64
                ))
                .weak(),
            );
        }
    }
    ui.separator();
    ui.columns(2, |cols| {
        loss_plot(app, &mut cols[0]);
        side_ui(app, &mut cols[1]);
    });
}

fn loss_plot(app: &mut PetalApp, ui: &mut egui::Ui) {
    let log_scale = &mut app.settings.train.log_scale;
    ui.horizontal(|ui| {
        ui.strong("Loss");
        ui.checkbox(log_scale, "log scale");
    });
    let log = *log_scale;
    let tv = &app.training;
    let y = |v: f64| if log { v.max(1e-12).log10() } else { v };
    let raw: Vec<[f64; 2]> = tv.log.iter().map(|s| [s.step as f64, y(s.loss as f64)]).collect();
    let mut smooth = Vec::with_capacity(raw.len());
    let mut ema = None;
    for s in &tv.log {
        let v = match ema {
            None => s.loss as f64,
            Some(e) => 0.95 * e + 0.05 * s.loss as f64,
        };
        ema = Some(v);
        smooth.push([s.step as f64, y(v)]);
    }
    let plot = egui_plot::Plot::new("loss").height(ui.available_height() * 0.62).legend(egui_plot::Legend::default());
    let plot = if log { plot.y_axis_formatter(|m, _| format!("{:.3}", 10f64.powf(m.value))) } else { plot };
    plot.show(ui, |p| {
        p.line(egui_plot::Line::new("loss", raw).color(egui::Color32::from_gray(140)).width(1.0));
        p.line(egui_plot::Line::new("smoothed", smooth).color(egui::Color32::from_rgb(230, 110, 160)).width(2.0));
    });
    ui.strong("Learning rate");
    let lr: Vec<[f64; 2]> = tv.log.iter().map(|s| [s.step as f64, s.lr]).collect();
    egui_plot::Plot::new("lr").height(ui.available_height()).show(ui, |p| {
        p.line(egui_plot::Line::new("lr", lr).color(egui::Color32::from_rgb(120, 170, 230)));
    });
}

fn side_ui(app: &mut PetalApp, ui: &mut egui::Ui) {
    match &app.training.preview {
        Some((step, tex)) => {
            ui.strong(format!("Preview at step {step} (EMA weights, fixed seed)"));
            let w = ui.available_width().min(360.0);
            let size = tex.size_vec2() * (w / tex.size_vec2().x);
            ui.add(egui::Image::new((tex.id(), size)));
        }
        None => {
            ui.strong("Preview");
            ui.label(egui::RichText::new("A grid sampled with the EMA weights appears every N steps, or on Sample now.").weak());
        }
    }
    ui.separator();
    ui.strong("Checkpoints");
    let mut open = None;
    let busy = app.training.is_running();
    egui::ScrollArea::vertical().id_salt("checkpoints").show(ui, |ui| {
        for (step, path) in app.training.checkpoints.iter().rev() {
            ui.horizontal(|ui| {
                ui.label(format!("step {step}")).on_hover_text(path.display().to_string());
                if ui.add_enabled(!busy, egui::Button::new("Open in Generate")).on_disabled_hover_text("The GPU is training; Stop first").clicked() {
                    open = Some(path.clone());
                }
            });
        }
    });
    if let Some(p) = open {
        app.open_model(p);
        app.tab = Tab::Generate;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn a_suggested_output_folder_follows_the_data_folder_and_a_chosen_one_stays() {
        let (a, b) = (Path::new("/d/empty"), Path::new("/d/flowers"));
        assert_eq!(out_for_new_data(None, None, a), Path::new("/d/petal-runs/empty"));
        // The suggestion for the first folder moves to the second's.
        assert_eq!(out_for_new_data(Some(&default_out(a)), Some(a), b), Path::new("/d/petal-runs/flowers"));
        // A folder the user chose is kept.
        assert_eq!(out_for_new_data(Some(Path::new("/runs/mine")), Some(a), b), Path::new("/runs/mine"));
    }
}
