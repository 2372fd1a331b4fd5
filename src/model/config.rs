//! `config.json` of a diffusers UNet2DModel and `scheduler_config.json` of a
//! DDPMScheduler, with diffusers' defaults for absent keys, and the checks
//! that refuse what Petal does not implement.

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::path::Path;

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
    pub fn from_file(path: &Path) -> Result<UNetConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let cfg: UNetConfig =
            serde_json::from_str(&text).with_context(|| format!("{}: not a valid UNet2DModel config", path.display()))?;
        cfg.validate().with_context(|| format!("{}", path.display()))?;
        Ok(cfg)
    }

    pub fn from_json(text: &str) -> Result<UNetConfig> {
        let cfg: UNetConfig = serde_json::from_str(text)?;
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
        if !(self.norm_eps > 0.0) {
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
            if g == 0 || c % g != 0 {
                bail!("attn_norm_num_groups {g} does not divide {c} channels");
            }
        }
        if let Some(d) = self.attention_head_dim {
            for (i, &c) in self.block_out_channels.iter().enumerate() {
                let uses_attention = self.down_block_types[i].starts_with("Attn")
                    || self.up_block_types[n - 1 - i].starts_with("Attn")
                    || (i == n - 1 && self.add_attention);
                if uses_attention && (d == 0 || c % d != 0) {
                    bail!("attention_head_dim {d} does not divide block_out_channels value {c}");
                }
            }
        }
        let (h, w) = self.sample_hw();
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
    pub fn from_file(path: &Path) -> Result<SchedulerConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let cfg: SchedulerConfig = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a valid DDPMScheduler config", path.display()))?;
        cfg.validate().with_context(|| format!("{}", path.display()))?;
        Ok(cfg)
    }

    pub fn to_json(&self) -> String {
        let mut v = serde_json::to_value(self).expect("config serialises");
        v["_diffusers_version"] = serde_json::Value::String("0.42.1".into());
        serde_json::to_string_pretty(&v).expect("config serialises")
    }

    pub fn validate(&self) -> Result<()> {
        if !["linear", "scaled_linear", "squaredcos_cap_v2"].contains(&self.beta_schedule.as_str())
            && self.trained_betas.is_none()
        {
            bail!(
                "unsupported beta_schedule {:?} (Petal supports linear, scaled_linear, squaredcos_cap_v2)",
                self.beta_schedule
            );
        }
        if !["fixed_small", "fixed_large"].contains(&self.variance_type.as_str()) {
            bail!("unsupported variance_type {:?} (Petal supports fixed_small, fixed_large)", self.variance_type);
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
        if let Some(b) = &self.trained_betas {
            if b.len() != self.num_train_timesteps as usize {
                bail!("trained_betas has {} values for {} train timesteps", b.len(), self.num_train_timesteps);
            }
        }
        Ok(())
    }
}
