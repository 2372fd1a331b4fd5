//! Reading and writing diffusers safetensors: float32, float16 and bfloat16
//! on the way in (widened to f32), float32 or float16 on the way out. Every
//! problem is reported with the file and tensor it concerns.

use super::graph::Graph;
use anyhow::{Context, Result, anyhow, bail};
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::Path;

/// Legacy attention names of older checkpoints (google/ddpm-cifar10-32) and
/// the names diffusers uses today.
const LEGACY_ATTENTION: [(&str, &str); 4] =
    [("to_q", "query"), ("to_k", "key"), ("to_v", "value"), ("to_out.0", "proj_attn")];

/// The legacy name of a current attention parameter name, if it has one.
pub fn legacy_name(name: &str) -> Option<String> {
    if !name.contains(".attentions.") {
        return None;
    }
    for (new, old) in LEGACY_ATTENTION {
        let pat = format!(".{new}.");
        if let Some(pos) = name.find(&pat) {
            return Some(format!("{}.{old}.{}", &name[..pos], &name[pos + pat.len()..]));
        }
    }
    None
}

/// Reads a safetensors file into f32 tensors by name.
pub fn read_safetensors(path: &Path) -> Result<HashMap<String, (Vec<usize>, Vec<f32>)>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    parse_safetensors(&bytes).with_context(|| format!("{}", path.display()))
}

/// Parses safetensors bytes into f32 tensors (integer tensors are converted
/// too, so fixture files with int64 timesteps read the same way).
pub fn parse_safetensors(bytes: &[u8]) -> Result<HashMap<String, (Vec<usize>, Vec<f32>)>> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| anyhow!("not a valid safetensors file: {e}"))?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let data = view.data();
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(),
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes(c.try_into().unwrap()).to_f32())
                .collect(),
            Dtype::BF16 => data
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes(c.try_into().unwrap()).to_f32())
                .collect(),
            Dtype::F64 => data.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32).collect(),
            Dtype::I64 => data.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32).collect(),
            Dtype::I32 => data.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f32).collect(),
            other => bail!("tensor {name}: unsupported dtype {other:?}"),
        };
        out.insert(name, (view.shape().to_vec(), values));
    }
    Ok(out)
}

/// The parameters of `graph` from a diffusers weights file, in graph order,
/// widened to f32 (int8 files dequantized). Missing tensors, wrong shapes,
/// tensors the config has no place for and inconsistent int8 files are
/// errors naming the file and tensor (see [`super::precision::read_weights`]).
pub fn load_params(path: &Path, graph: &Graph) -> Result<Vec<Vec<f32>>> {
    Ok(super::precision::read_weights(path, graph)?.0)
}

/// How parameters are stored on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreDtype {
    F32,
    F16,
}

/// Serialises named f32 tensors as safetensors bytes.
pub fn safetensors_bytes(tensors: &[(String, Vec<usize>, &[f32])], dtype: StoreDtype) -> Result<Vec<u8>> {
    let datas: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| match dtype {
            StoreDtype::F32 => bytemuck::cast_slice(v).to_vec(),
            StoreDtype::F16 => v.iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect(),
        })
        .collect();
    let st_dtype = match dtype {
        StoreDtype::F32 => Dtype::F32,
        StoreDtype::F16 => Dtype::F16,
    };
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .zip(&datas)
        .map(|((name, shape, _), d)| {
            let v = safetensors::tensor::TensorView::new(st_dtype, shape.clone(), d)
                .map_err(|e| anyhow!("tensor {name}: {e}"))?;
            Ok((name.clone(), v))
        })
        .collect::<Result<_>>()?;
    let meta: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    safetensors::serialize(views, Some(meta)).map_err(|e| anyhow!("serialising safetensors: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_names() {
        assert_eq!(
            legacy_name("down_blocks.1.attentions.0.to_out.0.weight").as_deref(),
            Some("down_blocks.1.attentions.0.proj_attn.weight")
        );
        assert_eq!(legacy_name("mid_block.attentions.0.to_q.bias").as_deref(), Some("mid_block.attentions.0.query.bias"));
        assert_eq!(legacy_name("conv_in.weight"), None);
        assert_eq!(legacy_name("mid_block.attentions.0.group_norm.weight"), None);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse_safetensors(b"").is_err());
        assert!(parse_safetensors(&[0xff; 64]).is_err());
        let good = safetensors_bytes(&[("a".into(), vec![2, 2], &[1.0, 2.0, 3.0, 4.0])], StoreDtype::F16).unwrap();
        for cut in [1, 8, good.len() / 2, good.len() - 1] {
            assert!(parse_safetensors(&good[..cut]).is_err(), "truncated at {cut}");
        }
        let back = parse_safetensors(&good).unwrap();
        assert_eq!(back["a"].1, vec![1.0, 2.0, 3.0, 4.0]);
    }
}
