//! The window (eframe/egui). UI only: it records no GPU work; the worker
//! thread ([`crate::worker`]) owns the device, the model, the sampler and
//! the trainer. Events are drained at the top of each frame ([`PetalApp::logic`]).
//!
//! Layout follows the egui demo app: a persisted [`Settings`] struct beside
//! runtime state, one `ui_*` function per part of the window, errors in a
//! bar at the bottom.

mod compare;
pub mod dialog;
mod generate;
pub mod settings;
mod train;

pub use compare::Comparison;
pub use generate::Generation;
pub use settings::{Settings, StartChoice, View};
pub use train::TrainingView;

use crate::gpu::GpuOptions;
use crate::worker::{self, Activity, Command, Event, ModelInfo, WorkerHandle};
use anyhow::Result;
use std::path::PathBuf;

/// What opens a model folder without a dialog.
const OPEN_MODEL_INSTEAD: &str = "open one from the terminal with `petal --model DIR`";

/// How the window was asked to open.
#[derive(Clone, Debug, Default)]
pub struct Launch {
    /// Open on this model folder instead of the bundled or last-used one.
    pub model: Option<PathBuf>,
    pub gpu: GpuOptions,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tab {
    Generate,
    Train,
}

/// The whole window's state.
pub struct PetalApp {
    pub settings: Settings,
    pub tab: Tab,
    worker: WorkerHandle,
    worker_lost: bool,
    pub adapter: Option<String>,
    pub model: Option<ModelInfo>,
    /// A model folder asked for and not loaded yet.
    pub loading: Option<PathBuf>,
    pub generation: Generation,
    /// The last FP32/FP16/INT8 comparison (shown in its own window).
    pub comparison: Comparison,
    pub training: TrainingView,
    /// Errors shown in the bottom bar until dismissed (newest last).
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    /// Closing was asked for while training runs: ask first.
    confirm_close: bool,
    /// Close once the stopped run has written its checkpoint.
    close_after_stop: bool,
}

impl PetalApp {
    /// Starts the worker (its events wake `ctx`) and opens the first model:
    /// `launch.model`, else the bundled flowers
    /// ([`crate::model::folder::bundled`]), else the last one used (if it is
    /// still there), as issue 7 asks.
    pub fn new(ctx: &egui::Context, settings: Settings, launch: Launch) -> PetalApp {
        let repaint = ctx.clone();
        let worker = worker::spawn(launch.gpu.clone(), move || repaint.request_repaint());
        let mut app = PetalApp {
            settings,
            tab: Tab::Generate,
            worker,
            worker_lost: false,
            adapter: None,
            model: None,
            loading: None,
            generation: Generation::default(),
            comparison: Comparison::default(),
            training: TrainingView::default(),
            errors: Vec::new(),
            warnings: Vec::new(),
            confirm_close: false,
            close_after_stop: false,
        };
        let first = launch.model.or_else(crate::model::folder::bundled).or_else(|| app.settings.last_model.clone().filter(|p| p.is_dir()));
        if let Some(dir) = first {
            app.open_model(dir);
        }
        // The data folder remembered from last time is counted again (it may
        // have changed since).
        if let Some(d) = app.settings.train.data.clone().filter(|d| d.is_dir()) {
            app.training.scanning = true;
            app.send(Command::ScanData(d));
        }
        app
    }

    fn from_creation(cc: &eframe::CreationContext<'_>, launch: Launch) -> PetalApp {
        let settings: Settings = cc.storage.and_then(|s| eframe::get_value(s, eframe::APP_KEY)).unwrap_or_default();
        PetalApp::new(&cc.egui_ctx, settings, launch)
    }

    pub fn send(&self, c: Command) {
        self.worker.send(c);
    }

    /// Asks the worker to load a model folder for generation, at the
    /// precision chosen in the settings.
    pub fn open_model(&mut self, dir: PathBuf) {
        self.loading = Some(dir.clone());
        self.send(Command::LoadModel { dir, precision: self.settings.generate.precision });
    }

    /// Whether the GPU is busy with a generation, a comparison or training.
    pub fn busy(&self) -> bool {
        self.generation.running || self.comparison.running || self.training.is_running()
    }

    /// Shows an error in the window and on stderr.
    pub fn report_error(&mut self, e: String) {
        eprintln!("petal: error: {e}");
        self.errors.push(e);
    }

    /// Shows a notice (something done differently than asked, such as a save
    /// without a dialog) in the window's status bar and on stderr.
    pub fn notice(&mut self, n: String) {
        eprintln!("petal: {n}");
        self.warnings.push(n);
    }

    /// Drains the worker's events. Call once per frame before drawing.
    pub fn logic(&mut self, ctx: &egui::Context) {
        while let Ok(ev) = self.worker.events.try_recv() {
            match ev {
                Event::Adapter(a) => self.adapter = Some(a),
                Event::ModelLoaded(info) => {
                    self.settings.last_model = Some(std::fs::canonicalize(&info.dir).unwrap_or_else(|_| info.dir.clone()));
                    self.loading = None;
                    let steps = self.settings.generate.steps.clamp(1, info.num_train_timesteps);
                    self.settings.generate.steps = steps;
                    self.model = Some(info);
                }
                Event::GenerationStarted(req) => self.generation.started(req, self.model.clone()),
                Event::Step(frame) => self.generation.step(ctx, frame),
                Event::GenerationDone { interrupted_at, seconds } => self.generation.done(interrupted_at, seconds),
                Event::CompareStarted { request, precisions } => self.comparison.started(request, precisions),
                Event::CompareStep { precision, step, num_steps } => self.comparison.progress = Some((precision, step, num_steps)),
                Event::CompareResult(entry) => self.comparison.result(ctx, entry),
                Event::CompareDone { cancelled } => self.comparison.done(cancelled),
                Event::DataScanned { dir, images, skipped } => {
                    // The previous folder's failed scan is no longer news.
                    if let Some(e) = self.training.scan_error.take() {
                        self.errors.retain(|x| x != &e);
                    }
                    self.training.scanned(dir, images, skipped);
                }
                Event::TrainStarted(_)
                | Event::TrainStep(_)
                | Event::TrainPreview { .. }
                | Event::Checkpoint { .. }
                | Event::TrainPaused(_) => self.training.event(ctx, ev),
                Event::TrainDone { steps_done, last_checkpoint, stopped } => {
                    self.training.done(steps_done, last_checkpoint, stopped);
                    if self.close_after_stop {
                        ctx.send_viewport_cmd(egui::ViewportCommand::Close);
                    }
                }
                Event::Warning(w) => {
                    eprintln!("petal: warning: {w}");
                    self.warnings.push(w);
                }
                Event::Refused(why) => self.report_error(why),
                Event::Failed { activity, message } => {
                    match activity {
                        Activity::OpeningGpu => {}
                        Activity::LoadingModel => self.loading = None,
                        Activity::Generating => self.generation.running = false,
                        Activity::Comparing => self.comparison.running = false,
                        Activity::ScanningData => self.training.scan_failed(&message),
                        Activity::Training => self.training.failed(),
                    }
                    self.report_error(message);
                }
            }
        }
        if self.worker.is_finished() && !self.worker_lost {
            self.worker_lost = true;
            self.report_error("the worker thread ended unexpectedly; restart Petal (the last checkpoint is on disk)".into());
        }
    }

    /// Draws the window.
    pub fn ui(&mut self, ui: &mut egui::Ui) {
        let ctx = ui.ctx().clone();
        self.handle_close(&ctx);
        egui::Panel::top("top").show(ui, |ui| self.ui_top(ui));
        egui::Panel::bottom("status").show(ui, |ui| self.ui_status(ui));
        match self.tab {
            Tab::Generate => generate::ui(self, ui),
            Tab::Train => train::ui(self, ui),
        }
        if self.confirm_close {
            self.ui_confirm_close(&ctx);
        }
        compare::window(self, &ctx);
    }

    fn ui_top(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            ui.heading("Petal");
            ui.separator();
            ui.selectable_value(&mut self.tab, Tab::Generate, "Generate");
            ui.selectable_value(&mut self.tab, Tab::Train, "Train");
            ui.separator();
            match (&self.model, &self.loading) {
                (_, Some(dir)) => {
                    ui.spinner();
                    ui.label(format!("Opening {}", dir.display()));
                }
                (Some(m), None) => {
                    ui.label(egui::RichText::new(&m.name).strong()).on_hover_text(m.dir.display().to_string());
                    let stored = if m.stored == m.precision { String::new() } else { format!(" (stored {}, converted on load)", m.stored) };
                    ui.label(format!("{:.2}M parameters, {}x{}, {}{stored}", m.parameters as f64 / 1e6, m.width, m.height, m.precision)).on_hover_text(format!(
                        "{}\n{}: {:.2} MB on disk, {:.2} MB on the GPU",
                        m.precision_note,
                        m.weights_file.display(),
                        m.file_bytes as f64 / 1e6,
                        m.gpu_bytes as f64 / 1e6
                    ));
                }
                (None, None) => {
                    ui.label("No model open");
                }
            }
            let busy = self.busy();
            if ui.add_enabled(!busy, egui::Button::new("Open model…")).on_disabled_hover_text("Wait until the current run ends").clicked()
                && let Some(dir) = dialog::pick_folder("Open a diffusers model folder", OPEN_MODEL_INSTEAD, self)
            {
                self.open_model(dir);
            }
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                ui.label(egui::RichText::new(self.adapter.as_deref().unwrap_or("opening the GPU…")).weak());
            });
        });
    }

    fn ui_status(&mut self, ui: &mut egui::Ui) {
        let mut dismiss = None;
        for (i, e) in self.errors.iter().enumerate() {
            ui.horizontal(|ui| {
                if ui.small_button("Dismiss").clicked() {
                    dismiss = Some(i);
                }
                ui.colored_label(ui.visuals().error_fg_color, format!("Error: {e}"));
            });
        }
        if let Some(i) = dismiss {
            self.errors.remove(i);
        }
        let mut dismiss_w = None;
        for (i, w) in self.warnings.iter().enumerate().rev().take(3) {
            ui.horizontal(|ui| {
                if ui.small_button("Dismiss").clicked() {
                    dismiss_w = Some(i);
                }
                ui.colored_label(ui.visuals().warn_fg_color, format!("Warning: {w}"));
            });
        }
        if let Some(i) = dismiss_w {
            self.warnings.remove(i);
        }
        if self.errors.is_empty() && self.warnings.is_empty() {
            ui.label(egui::RichText::new("Ctrl+Enter generate · Esc cancel · Ctrl+A select all · Ctrl+S export").weak());
        }
    }

    /// Closing while training asks first: stop with a checkpoint, or keep going.
    fn handle_close(&mut self, ctx: &egui::Context) {
        if ctx.input(|i| i.viewport().close_requested()) && self.training.is_running() && !self.close_after_stop {
            ctx.send_viewport_cmd(egui::ViewportCommand::CancelClose);
            self.confirm_close = true;
        }
    }

    fn ui_confirm_close(&mut self, ctx: &egui::Context) {
        egui::Modal::new(egui::Id::NULL.with("confirm close")).show(ctx, |ui| {
            ui.heading("Training is running");
            ui.label("Quitting stops the run. Petal writes a checkpoint of the current step first, so no work is lost.");
            ui.horizontal(|ui| {
                if ui.button("Stop, save a checkpoint and quit").clicked() {
                    self.close_after_stop = true;
                    self.confirm_close = false;
                    self.send(Command::Stop);
                    if self.training.paused {
                        self.send(Command::Resume);
                    }
                }
                if ui.button("Keep training").clicked() {
                    self.confirm_close = false;
                }
            });
        });
    }
}

impl eframe::App for PetalApp {
    fn logic(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        PetalApp::logic(self, ctx);
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        PetalApp::ui(self, ui);
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, eframe::APP_KEY, &self.settings);
    }
}

/// Opens the window and runs until it is closed.
pub fn run(launch: Launch) -> Result<()> {
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default().with_title("Petal").with_inner_size([1280.0, 860.0]).with_min_inner_size([800.0, 560.0]),
        ..Default::default()
    };
    eframe::run_native("Petal", options, Box::new(|cc| Ok(Box::new(PetalApp::from_creation(cc, launch)))))
        .map_err(|e| anyhow::anyhow!("opening the window: {e}"))
}
