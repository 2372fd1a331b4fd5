//! `config.json` of a diffusers UNet2DModel and `scheduler_config.json` of a
//! DDPMScheduler, with diffusers' defaults for absent keys, and the checks
//! that refuse what Petal does not implement.

use anyhow::{Context, Result, anyhow, bail};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Keys that diffusers' configs carry but no model or scheduler reads, kept
/// loading without a word: every `_`-prefixed key (`_diffusers_version`,
/// `_name_or_path`, `_use_default_values`, ...; `_class_name` is checked) and
/// `tensor_format` of early scheduler configs (google/ddpm-cifar10-32's era).
pub const IGNORED_KEYS: &[&str] = &["tensor_format"];

/// A diffusers config from JSON text: returns the config and the keys it
/// does not know (diffusers ignores those too). A key of the wrong type
/// (`"norm_num_groups": "32"`) is an error naming the key.
fn parse_config<T: DeserializeOwned + Serialize>(text: &str) -> Result<(T, Vec<String>)> {
    let value: serde_json::Value = serde_json::from_str(text)?;
    let obj = value.as_object().ok_or_else(|| anyhow!("expected a JSON object of settings"))?;
    let known = serde_json::to_value(serde_json::from_str::<T>("{}")?)?;
    let known = known.as_object().expect("a config serialises as an object");
    let unknown = obj
        .keys()
        .filter(|k| !known.contains_key(*k) && !k.starts_with('_') && !IGNORED_KEYS.contains(&k.as_str()))
        .cloned()
        .collect();
    match serde_json::from_value::<T>(value.clone()) {
        Ok(cfg) => Ok((cfg, unknown)),
        Err(e) => {
            // Every field has a default, so a one-key object fails only for a bad key.
            for (k, v) in obj {
                let one = serde_json::Value::Object([(k.clone(), v.clone())].into_iter().collect());
                if let Err(e) = serde_json::from_value::<T>(one) {
                    bail!("key {k:?}: {e}");
                }
            }
            Err(e.into())
        }
    }
}

/// One note on stderr for keys diffusers' `class` does not read.
fn note_unknown(path: &Path, unknown: &[String], class: &str) {
    if !unknown.is_empty() {
        eprintln!(
            "note: {}: {} {} not read by diffusers' {class}; ignored, as diffusers ignores {}",
            path.display(),
            if unknown.len() == 1 { "key" } else { "keys" },
            unknown.join(", "),
            if unknown.len() == 1 { "it" } else { "them" }
        );
    }
}

fn d_3() -> u32 {
    3
}
fn d_true() -> bool {
    true
}
fn d_positional() -> String {
    "positional".into()
}
fn d_conv() -> String {
    "conv".into()
}
fn d_silu() -> String {
    "silu".into()
}
fn d_default() -> String {
    "default".into()
}
fn d_one() -> f32 {
    1.0
}
fn d_1u() -> u32 {
    1
}
fn d_2u() -> u32 {
    2
}
fn d_32u() -> u32 {
    32
}
fn d_eps() -> f32 {
    1e-5
}
fn d_head_dim() -> Option<u32> {
    Some(8)
}
fn d_down() -> Vec<String> {
    ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"].map(String::from).to_vec()
}
fn d_up() -> Vec<String> {
    ["AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"].map(String::from).to_vec()
}
fn d_mid() -> Option<String> {
    Some("UNetMidBlock2D".into())
}
fn d_channels() -> Vec<u32> {
    vec![224, 448, 672, 896]
}

/// `sample_size`: one number, or [height, width].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SampleSize {
    Square(u32),
    Rect([u32; 2]),
}

/// The keys of diffusers' UNet2DModel config, defaults as in its __init__.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UNetConfig {
    #[serde(default = "d_unet_class", rename = "_class_name")]
    pub class_name: String,
    #[serde(default)]
    pub sample_size: Option<SampleSize>,
    #[serde(default = "d_3")]
    pub in_channels: u32,
    #[serde(default = "d_3")]
    pub out_channels: u32,
    #[serde(default)]
    pub center_input_sample: bool,
    #[serde(default = "d_positional")]
    pub time_embedding_type: String,
    #[serde(default)]
    pub time_embedding_dim: Option<u32>,
    #[serde(default)]
    pub freq_shift: i32,
    #[serde(default = "d_true")]
    pub flip_sin_to_cos: bool,
    #[serde(default = "d_down")]
    pub down_block_types: Vec<String>,
    /// "UNetMidBlock2D" (the default), or null for no mid block.
    #[serde(default = "d_mid")]
    pub mid_block_type: Option<String>,
    #[serde(default = "d_up")]
    pub up_block_types: Vec<String>,
    #[serde(default = "d_channels")]
    pub block_out_channels: Vec<u32>,
    #[serde(default = "d_2u")]
    pub layers_per_block: u32,
    #[serde(default = "d_one")]
    pub mid_block_scale_factor: f32,
    #[serde(default = "d_1u")]
    pub downsample_padding: u32,
    #[serde(default = "d_conv")]
    pub downsample_type: String,
    #[serde(default = "d_conv")]
    pub upsample_type: String,
    #[serde(default)]
    pub dropout: f32,
    #[serde(default = "d_silu")]
    pub act_fn: String,
    /// Absent means 8 (diffusers' default); null means one head per block.
    #[serde(default = "d_head_dim")]
    pub attention_head_dim: Option<u32>,
    #[serde(default = "d_32u")]
    pub norm_num_groups: u32,
    #[serde(default)]
    pub attn_norm_num_groups: Option<u32>,
    #[serde(default = "d_eps")]
    pub norm_eps: f32,
    #[serde(default = "d_default")]
    pub resnet_time_scale_shift: String,
    #[serde(default = "d_true")]
    pub add_attention: bool,
    #[serde(default)]
    pub class_embed_type: Option<String>,
    #[serde(default)]
    pub num_class_embeds: Option<u32>,
    #[serde(default)]
    pub num_train_timesteps: Option<u32>,
}

fn d_unet_class() -> String {
    "UNet2DModel".into()
}

impl UNetConfig {
    /// Reads and validates a UNet2DModel `config.json`. Every key that
    /// diffusers' UNet2DModel reads is a field here (honoured, or refused by
    /// [`UNetConfig::validate`]); keys it does not read are ignored as
    /// diffusers ignores them, with a note on stderr unless they are
    /// bookkeeping ([`IGNORED_KEYS`]). Errors name the file and the key.
    pub fn from_file(path: &Path) -> Result<UNetConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let (cfg, unknown) = parse_config::<UNetConfig>(&text)
            .with_context(|| format!("{}: not a valid UNet2DModel config", path.display()))?;
        note_unknown(path, &unknown, "UNet2DModel");
        cfg.validate().with_context(|| format!("{}", path.display()))?;
        Ok(cfg)
    }

    pub fn from_json(text: &str) -> Result<UNetConfig> {
        let (cfg, _) = parse_config::<UNetConfig>(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The JSON that diffusers writes for this config.
    pub fn to_json(&self) -> String {
        let mut v = serde_json::to_value(self).expect("config serialises");
        v["_diffusers_version"] = serde_json::Value::String("0.42.1".into());
        serde_json::to_string_pretty(&v).expect("config serialises")
    }

    /// (height, width) of the images the model makes.
    pub fn sample_hw(&self) -> (u32, u32) {
        match &self.sample_size {
            Some(SampleSize::Square(s)) => (*s, *s),
            Some(SampleSize::Rect([h, w])) => (*h, *w),
            None => (32, 32),
        }
    }

    /// Whether the model has a mid block (`mid_block_type` not null).
    pub fn has_mid_block(&self) -> bool {
        self.mid_block_type.is_some()
    }

    /// Whether the mid block has its attention (`add_attention`).
    pub fn has_mid_attention(&self) -> bool {
        self.has_mid_block() && self.add_attention
    }

    pub fn time_embed_dim(&self) -> u32 {
        self.time_embedding_dim.unwrap_or(self.block_out_channels[0] * 4)
    }

    /// Refuses every config value Petal does not implement, naming it.
    pub fn validate(&self) -> Result<()> {
        if self.class_name != "UNet2DModel" {
            bail!("_class_name is {:?}; Petal runs UNet2DModel only", self.class_name);
        }
        let n = self.block_out_channels.len();
        if n == 0 {
            bail!("block_out_channels is empty");
        }
        if self.down_block_types.len() != n || self.up_block_types.len() != n {
            bail!(
                "down_block_types ({}), up_block_types ({}) and block_out_channels ({n}) must have the same length",
                self.down_block_types.len(),
                self.up_block_types.len()
            );
        }
        for t in &self.down_block_types {
            if t != "DownBlock2D" && t != "AttnDownBlock2D" {
                bail!("unsupported down block type {t:?} (supported: DownBlock2D, AttnDownBlock2D)");
            }
        }
        for t in &self.up_block_types {
            if t != "UpBlock2D" && t != "AttnUpBlock2D" {
                bail!("unsupported up block type {t:?} (supported: UpBlock2D, AttnUpBlock2D)");
            }
        }
        if let Some(t) = &self.mid_block_type
            && t != "UNetMidBlock2D"
        {
            bail!("unsupported mid_block_type {t:?} (supported: \"UNetMidBlock2D\" or null for no mid block)");
        }
        let unsupported = |key: &str, value: &dyn std::fmt::Debug, ok: &str| {
            anyhow::anyhow!("unsupported {key} {value:?} (Petal supports {ok})")
        };
        if self.time_embedding_type != "positional" {
            return Err(unsupported("time_embedding_type", &self.time_embedding_type, "\"positional\""));
        }
        if self.act_fn != "silu" {
            return Err(unsupported("act_fn", &self.act_fn, "\"silu\""));
        }
        if self.resnet_time_scale_shift != "default" {
            return Err(unsupported("resnet_time_scale_shift", &self.resnet_time_scale_shift, "\"default\""));
        }
        if self.downsample_type != "conv" {
            return Err(unsupported("downsample_type", &self.downsample_type, "\"conv\""));
        }
        if self.upsample_type != "conv" {
            return Err(unsupported("upsample_type", &self.upsample_type, "\"conv\""));
        }
        if self.class_embed_type.is_some() || self.num_class_embeds.is_some() {
            bail!("class-conditional UNets (class_embed_type / num_class_embeds) are not supported");
        }
        if self.center_input_sample {
            return Err(unsupported("center_input_sample", &true, "false"));
        }
        if self.downsample_padding > 1 {
            return Err(unsupported("downsample_padding", &self.downsample_padding, "0 or 1"));
        }
        if self.in_channels == 0 || self.out_channels == 0 {
            bail!("in_channels and out_channels must be positive");
        }
        if self.layers_per_block == 0 {
            bail!("layers_per_block must be at least 1");
        }
        if self.norm_eps.is_nan() || self.norm_eps <= 0.0 {
            bail!("norm_eps must be positive");
        }
        let groups = self.norm_num_groups;
        for &c in &self.block_out_channels {
            if c == 0 || groups == 0 || c % groups != 0 {
                bail!("block_out_channels value {c} is not divisible by norm_num_groups {groups}");
            }
        }
        if let Some(g) = self.attn_norm_num_groups {
            let c = *self.block_out_channels.last().unwrap();
            if g == 0 || !c.is_multiple_of(g) {
                bail!("attn_norm_num_groups {g} does not divide {c} channels");
            }
        }
        if let Some(d) = self.attention_head_dim {
            for (i, &c) in self.block_out_channels.iter().enumerate() {
                let uses_attention = self.down_block_types[i].starts_with("Attn")
                    || self.up_block_types[n - 1 - i].starts_with("Attn")
                    || (i == n - 1 && self.has_mid_attention());
                if uses_attention && (d == 0 || c % d != 0) {
                    bail!("attention_head_dim {d} does not divide block_out_channels value {c}");
                }
            }
        }
        let (h, w) = self.sample_hw();
        if h == 0 || w == 0 {
            bail!("sample_size {h}x{w}: must be positive");
        }
        if n > 16 {
            bail!("block_out_channels has {n} entries; at most 16 are supported");
        }
        let down = 1u32 << (n - 1);
        if h % down != 0 || w % down != 0 {
            bail!("sample_size {h}x{w} cannot be halved {} times", n - 1);
        }
        if self.time_embed_dim() == 0 {
            bail!("time embedding dimension is 0");
        }
        Ok(())
    }

    /// Built-in configs for training from scratch.
    pub fn builtin(name: &str) -> Option<UNetConfig> {
        let (channels, groups, layers, head_dim): (&[u32], u32, u32, Option<u32>) = match name {
            // google/ddpm-cifar10-32, the architecture of the seed model.
            "cifar10-32" => (&[128, 256, 256, 256], 32, 2, None),
            // A quarter of the width: trains on a laptop GPU in minutes.
            "small" => (&[32, 64, 64, 64], 8, 2, None),
            // For tests.
            "tiny" => (&[16, 32, 32, 32], 8, 2, None),
            _ => return None,
        };
        let cfg = UNetConfig {
            class_name: "UNet2DModel".into(),
            sample_size: Some(SampleSize::Square(32)),
            in_channels: 3,
            out_channels: 3,
            center_input_sample: false,
            time_embedding_type: "positional".into(),
            time_embedding_dim: None,
            freq_shift: 1,
            flip_sin_to_cos: false,
            down_block_types: ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"]
                .map(String::from)
                .to_vec(),
            mid_block_type: d_mid(),
            up_block_types: ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"].map(String::from).to_vec(),
            block_out_channels: channels.to_vec(),
            layers_per_block: layers,
            mid_block_scale_factor: 1.0,
            downsample_padding: 0,
            downsample_type: "conv".into(),
            upsample_type: "conv".into(),
            dropout: 0.0,
            act_fn: "silu".into(),
            attention_head_dim: head_dim,
            norm_num_groups: groups,
            attn_norm_num_groups: None,
            norm_eps: 1e-6,
            resnet_time_scale_shift: "default".into(),
            add_attention: true,
            class_embed_type: None,
            num_class_embeds: None,
            num_train_timesteps: None,
        };
        Some(cfg)
    }
}

fn d_sched_class() -> String {
    "DDPMScheduler".into()
}
fn d_1000() -> u32 {
    1000
}
fn d_beta_start() -> f64 {
    0.0001
}
fn d_beta_end() -> f64 {
    0.02
}
fn d_linear() -> String {
    "linear".into()
}
fn d_fixed_small() -> String {
    "fixed_small".into()
}
fn d_epsilon() -> String {
    "epsilon".into()
}
fn d_leading() -> String {
    "leading".into()
}
fn d_ratio() -> f32 {
    0.995
}

/// The keys of diffusers' DDPMScheduler config, defaults as in its __init__.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SchedulerConfig {
    #[serde(default = "d_sched_class", rename = "_class_name")]
    pub class_name: String,
    #[serde(default = "d_1000")]
    pub num_train_timesteps: u32,
    /// f64, as Python holds it: scaled_linear takes its square root first.
    #[serde(default = "d_beta_start")]
    pub beta_start: f64,
    #[serde(default = "d_beta_end")]
    pub beta_end: f64,
    #[serde(default = "d_linear")]
    pub beta_schedule: String,
    #[serde(default)]
    pub trained_betas: Option<Vec<f32>>,
    #[serde(default = "d_fixed_small")]
    pub variance_type: String,
    #[serde(default = "d_true")]
    pub clip_sample: bool,
    #[serde(default = "d_epsilon")]
    pub prediction_type: String,
    #[serde(default)]
    pub thresholding: bool,
    #[serde(default = "d_ratio")]
    pub dynamic_thresholding_ratio: f32,
    #[serde(default = "d_one")]
    pub clip_sample_range: f32,
    #[serde(default = "d_one")]
    pub sample_max_value: f32,
    #[serde(default = "d_leading")]
    pub timestep_spacing: String,
    #[serde(default)]
    pub steps_offset: u32,
    #[serde(default)]
    pub rescale_betas_zero_snr: bool,
    /// DDIMScheduler's key (absent from DDPMScheduler configs): whether the
    /// step after the last uses alpha_prod 1 (true, DDIM's default) or
    /// alphas_cumprod[0]. Read by [`crate::diffusion::DdimScheduler`] only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_alpha_to_one: Option<bool>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        serde_json::from_str("{}").expect("defaults parse")
    }
}

impl SchedulerConfig {
    /// `prediction_type` as the scheduler-step kernel codes it
    /// (shaders/ddpm_step.wgsl): 0 epsilon, 1 sample, 2 v_prediction.
    /// Other values are refused when the config is read.
    pub fn prediction_code(&self) -> u32 {
        match self.prediction_type.as_str() {
            "sample" => 1,
            "v_prediction" => 2,
            _ => 0,
        }
    }

    pub fn from_file(path: &Path) -> Result<SchedulerConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let (cfg, unknown) = parse_config::<SchedulerConfig>(&text)
            .with_context(|| format!("{}: not a valid DDPMScheduler config", path.display()))?;
        note_unknown(path, &unknown, "DDPMScheduler");
        cfg.validate().with_context(|| format!("{}", path.display()))?;
        Ok(cfg)
    }

    pub fn to_json(&self) -> String {
        let mut v = serde_json::to_value(self).expect("config serialises");
        v["_diffusers_version"] = serde_json::Value::String("0.42.1".into());
        serde_json::to_string_pretty(&v).expect("config serialises")
    }

    /// Refuses every value Petal does not implement or that would put NaNs
    /// into the sampling loop, naming the key.
    pub fn validate(&self) -> Result<()> {
        if !["linear", "scaled_linear", "squaredcos_cap_v2"].contains(&self.beta_schedule.as_str())
            && self.trained_betas.is_none()
        {
            bail!(
                "unsupported beta_schedule {:?} (Petal supports linear, scaled_linear, squaredcos_cap_v2)",
                self.beta_schedule
            );
        }
        if !["fixed_small", "fixed_large", "learned_range"].contains(&self.variance_type.as_str()) {
            bail!(
                "unsupported variance_type {:?} (Petal supports fixed_small, fixed_large, learned_range)",
                self.variance_type
            );
        }
        // Betas outside (0, 1) make alphas_cumprod 1, negative or NaN: the step
        // would divide by zero or take square roots of negatives.
        let betas_ok = |b: f64| b.is_finite() && b > 0.0 && b < 1.0;
        if let Some(b) = &self.trained_betas {
            if let Some(i) = b.iter().position(|&v| !betas_ok(v as f64)) {
                bail!("trained_betas[{i}] is {}; betas must lie in (0, 1)", b[i]);
            }
        } else if self.beta_schedule != "squaredcos_cap_v2" {
            for (key, v) in [("beta_start", self.beta_start), ("beta_end", self.beta_end)] {
                if !betas_ok(v) {
                    bail!("{key} is {v}; betas must lie in (0, 1)");
                }
            }
        }
        if self.clip_sample_range.is_nan() || self.clip_sample_range <= 0.0 {
            bail!("clip_sample_range is {}; it must be positive", self.clip_sample_range);
        }
        if !["epsilon", "sample", "v_prediction"].contains(&self.prediction_type.as_str()) {
            bail!("unsupported prediction_type {:?}", self.prediction_type);
        }
        if !["leading", "trailing", "linspace"].contains(&self.timestep_spacing.as_str()) {
            bail!("unsupported timestep_spacing {:?}", self.timestep_spacing);
        }
        if self.thresholding {
            bail!("unsupported thresholding true (dynamic thresholding is not implemented)");
        }
        if self.rescale_betas_zero_snr {
            bail!("unsupported rescale_betas_zero_snr true");
        }
        if self.num_train_timesteps < 2 {
            bail!("num_train_timesteps must be at least 2");
        }
        if let Some(b) = &self.trained_betas
            && b.len() != self.num_train_timesteps as usize
        {
            bail!("trained_betas has {} values for {} train timesteps", b.len(), self.num_train_timesteps);
        }
        Ok(())
    }
}

/// Checks that a UNet's channels fit its scheduler, as DDPMScheduler.step
/// needs: `out_channels` equal to `in_channels`, or twice it (epsilon and a
/// predicted variance per channel, improved DDPM's layout) with
/// `variance_type` "learned_range". Errors name config.json (`unet_file`)
/// and the mismatch.
pub fn check_pair(unet: &UNetConfig, unet_file: &Path, sched: &SchedulerConfig) -> Result<()> {
    let (i, o) = (unet.in_channels, unet.out_channels);
    let learned = sched.variance_type == "learned_range";
    if learned && o != 2 * i {
        bail!(
            "{}: out_channels is {o}, but the scheduler's variance_type \"learned_range\" needs twice in_channels ({}): \
             the model must predict a variance per channel",
            unet_file.display(),
            2 * i
        );
    }
    if !learned && o != i {
        bail!(
            "{}: out_channels {o} differs from in_channels {i}; the scheduler's variance_type {:?} needs them equal{}",
            unet_file.display(),
            sched.variance_type,
            if o == 2 * i { " (twice in_channels is the learned-variance layout: variance_type \"learned_range\")" } else { "" }
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mini_json() -> serde_json::Value {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mini/unet/config.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn every_key_diffusers_writes_is_known() {
        // The fixture's config is the full one diffusers 0.42.1 writes.
        let (cfg, unknown) = parse_config::<UNetConfig>(&mini_json().to_string()).unwrap();
        assert!(unknown.is_empty(), "{unknown:?}");
        assert_eq!(cfg.mid_block_type.as_deref(), Some("UNetMidBlock2D"));
        let sched = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mini/scheduler/scheduler_config.json")).unwrap();
        let (_, unknown) = parse_config::<SchedulerConfig>(&sched).unwrap();
        assert!(unknown.is_empty(), "{unknown:?}");
    }

    #[test]
    fn bookkeeping_and_deprecated_keys_keep_loading() {
        let mut v = mini_json();
        v["_name_or_path"] = "google/ddpm-cifar10-32".into();
        v["_use_default_values"] = serde_json::json!(["dropout"]);
        v["some_future_key"] = 3.into();
        let (_, unknown) = parse_config::<UNetConfig>(&v.to_string()).unwrap();
        assert_eq!(unknown, vec!["some_future_key".to_string()]);
        // google/ddpm-cifar10-32's era of scheduler config.
        let old = r#"{"_class_name": "DDPMScheduler", "_diffusers_version": "0.1.1", "beta_end": 0.02,
            "beta_schedule": "linear", "beta_start": 0.0001, "clip_sample": true, "num_train_timesteps": 1000,
            "tensor_format": "pt", "trained_betas": null, "variance_type": "fixed_small"}"#;
        let (s, unknown) = parse_config::<SchedulerConfig>(old).unwrap();
        assert!(unknown.is_empty(), "{unknown:?}");
        s.validate().unwrap();
    }

    #[test]
    fn a_value_of_the_wrong_type_names_its_key() {
        let mut v = mini_json();
        v["norm_num_groups"] = "4".into();
        let e = format!("{:#}", UNetConfig::from_json(&v.to_string()).unwrap_err());
        assert!(e.contains("norm_num_groups") && e.contains("invalid type"), "{e}");
        let e = format!("{:#}", parse_config::<SchedulerConfig>(r#"{"beta_end": "0.02"}"#).unwrap_err());
        assert!(e.contains("beta_end"), "{e}");
    }

    #[test]
    fn mid_block_type_null_and_unknown() {
        let mut v = mini_json();
        v["mid_block_type"] = serde_json::Value::Null;
        let cfg = UNetConfig::from_json(&v.to_string()).unwrap();
        assert!(!cfg.has_mid_block() && !cfg.has_mid_attention());
        let g = crate::model::unet::build_graph(&cfg);
        assert!(g.params.iter().all(|p| !p.name.starts_with("mid_block.")));
        v["mid_block_type"] = "UNetMidBlock2DCrossAttn".into();
        let e = format!("{:#}", UNetConfig::from_json(&v.to_string()).unwrap_err());
        assert!(e.contains("mid_block_type") && e.contains("UNetMidBlock2DCrossAttn"), "{e}");
        let mut v = mini_json();
        v["add_attention"] = false.into();
        let g = crate::model::unet::build_graph(&UNetConfig::from_json(&v.to_string()).unwrap());
        assert!(g.params.iter().any(|p| p.name.starts_with("mid_block.resnets.1")));
        assert!(g.params.iter().all(|p| !p.name.starts_with("mid_block.attentions")));
    }

    #[test]
    fn schedulers_that_would_make_nans_are_refused() {
        let bad = |json: &str, key: &str| {
            let s: SchedulerConfig = serde_json::from_str(json).unwrap();
            let e = s.validate().unwrap_err().to_string();
            assert!(e.contains(key), "{json}: {e}");
        };
        bad(r#"{"beta_schedule": "exponential"}"#, "beta_schedule");
        bad(r#"{"beta_end": 1.5}"#, "beta_end");
        bad(r#"{"beta_start": 0.0}"#, "beta_start");
        bad(r#"{"beta_schedule": "scaled_linear", "beta_end": 2.0}"#, "beta_end");
        bad(r#"{"num_train_timesteps": 2, "trained_betas": [0.1, 1.0]}"#, "trained_betas[1]");
        bad(r#"{"variance_type": "fixed_large_log"}"#, "variance_type");
        bad(r#"{"variance_type": "learned"}"#, "variance_type");
        let ok: SchedulerConfig = serde_json::from_str(r#"{"variance_type": "learned_range"}"#).unwrap();
        ok.validate().unwrap();
    }

    #[test]
    fn channels_must_fit_the_variance_type() {
        let mut unet = UNetConfig::builtin("tiny").unwrap();
        let fixed = SchedulerConfig::default();
        let learned: SchedulerConfig = serde_json::from_str(r#"{"variance_type": "learned_range"}"#).unwrap();
        let p = Path::new("m/unet/config.json");
        check_pair(&unet, p, &fixed).unwrap();
        let e = check_pair(&unet, p, &learned).unwrap_err().to_string();
        assert!(e.contains("config.json") && e.contains("out_channels is 3") && e.contains("learned_range"), "{e}");
        unet.out_channels = 6;
        check_pair(&unet, p, &learned).unwrap();
        let e = check_pair(&unet, p, &fixed).unwrap_err().to_string();
        assert!(e.contains("config.json") && e.contains("out_channels 6 differs from in_channels 3") && e.contains("learned_range"), "{e}");
        unet.out_channels = 5;
        assert!(check_pair(&unet, p, &fixed).unwrap_err().to_string().contains("out_channels 5"));
    }
}
