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

/// f32 tensors by name: (shape, values in row-major order).
pub type Tensors = HashMap<String, (Vec<usize>, Vec<f32>)>;

/// Reads a safetensors file into f32 tensors by name.
pub fn read_safetensors(path: &Path) -> Result<Tensors> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    parse_safetensors(&bytes).with_context(|| format!("{}", path.display()))
}

/// Parses safetensors bytes into f32 tensors (integer tensors are converted
/// too, so fixture files with int64 timesteps read the same way).
pub fn parse_safetensors(bytes: &[u8]) -> Result<Tensors> {
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

/// The dtypes Petal reads model weights in: widened to f32 on load.
/// (The project's own int8 format, once it exists, is read by its own loader.)
pub const WEIGHT_DTYPES: [Dtype; 3] = [Dtype::F32, Dtype::F16, Dtype::BF16];

/// Parses the safetensors bytes of a weights file (`file` is named in
/// errors) into f32 tensors by name, refusing any tensor whose dtype is not
/// one of [`WEIGHT_DTYPES`] (an I64 `conv_in.bias`, say): unlike
/// [`parse_safetensors`], which also reads the integer timesteps of fixtures.
/// Errors: not safetensors; a tensor of another dtype, naming it and its dtype.
pub fn parse_weights(file: &Path, bytes: &[u8]) -> Result<Tensors> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| anyhow!("{}: not a valid safetensors file: {e}", file.display()))?;
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    for name in &names {
        let view = st.tensor(name).map_err(|e| anyhow!("{}: tensor {name}: {e}", file.display()))?;
        if !WEIGHT_DTYPES.contains(&view.dtype()) {
            bail!(
                "{}: tensor {name} is stored as {:?}; model weights must be F32, F16 or BF16",
                file.display(),
                view.dtype()
            );
        }
    }
    parse_safetensors(bytes).with_context(|| format!("{}", file.display()))
}

/// Reads the weights of a model: one safetensors file, or the
/// `*.safetensors.index.json` of a sharded checkpoint (as diffusers'
/// `save_pretrained(max_shard_size=...)` writes it: `{"weight_map": {tensor:
/// shard file}}`, the shards beside it). Every tensor is checked against
/// [`WEIGHT_DTYPES`]. Errors name the file (the index for a shard that is
/// missing, or a tensor that is not in the shard the index names).
pub fn read_weights(path: &Path) -> Result<Tensors> {
    if path.to_string_lossy().ends_with(".index.json") {
        return read_sharded(path);
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    parse_weights(path, &bytes)
}

/// The tensors of a sharded checkpoint, read shard by shard as its index says.
fn read_sharded(index: &Path) -> Result<Tensors> {
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: std::collections::BTreeMap<String, String>,
    }
    let text = std::fs::read_to_string(index).with_context(|| format!("reading {}", index.display()))?;
    let idx: Index = serde_json::from_str(&text)
        .map_err(|e| anyhow!("{}: not a valid safetensors index (expected {{\"weight_map\": {{tensor: file}}}}): {e}", index.display()))?;
    if idx.weight_map.is_empty() {
        bail!("{}: the index lists no tensors", index.display());
    }
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut shards: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for (tensor, file) in &idx.weight_map {
        if file.contains('/') || file.contains('\\') || file == ".." {
            bail!("{}: shard {file:?} of tensor {tensor} is not a file name beside the index", index.display());
        }
        shards.entry(file.as_str()).or_default().push(tensor.as_str());
    }
    let mut out = HashMap::new();
    for (file, tensors) in shards {
        let path = dir.join(file);
        if !path.is_file() {
            bail!("{}: shard {file} (named by the index) is missing", index.display());
        }
        let mut got = read_weights(&path)?;
        for t in tensors {
            let v = got
                .remove(t)
                .with_context(|| format!("{}: tensor {t} is not in {file}, the shard the index names", index.display()))?;
            out.insert(t.to_string(), v);
        }
        if let Some(extra) = got.keys().min() {
            bail!("{}: {} holds tensor {extra}, which the index does not list", index.display(), path.display());
        }
    }
    Ok(out)
}

/// The parameters of `graph` from a diffusers weights file (or a sharded
/// checkpoint's index, see [`read_weights`]), in graph order, widened to f32
/// (int8 files dequantized). Tensors of a dtype Petal does not read, missing
/// tensors, wrong shapes, non-finite values, tensors the config has no place
/// for and inconsistent int8 files are errors naming the file and tensor
/// (see [`super::precision::read_weights`]), so nothing malformed reaches a
/// GPU kernel.
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

    fn raw(name: &str, dtype: Dtype, shape: Vec<usize>, data: &[u8]) -> Vec<u8> {
        let v = safetensors::tensor::TensorView::new(dtype, shape, data).unwrap();
        safetensors::serialize(vec![(name.to_string(), v)], None).unwrap()
    }

    #[test]
    fn weights_of_a_non_float_dtype_are_refused_by_name() {
        let f = Path::new("unet/diffusion_pytorch_model.safetensors");
        let ints: Vec<u8> = [0i64, 1, 2].iter().flat_map(|v| v.to_le_bytes()).collect();
        for (dtype, data) in [(Dtype::I64, &ints[..]), (Dtype::F64, &ints[..]), (Dtype::I32, &ints[..12]), (Dtype::U8, &ints[..3])] {
            let bytes = raw("conv_in.bias", dtype, vec![3], data);
            let e = parse_weights(f, &bytes).unwrap_err().to_string();
            assert!(
                e.contains("diffusion_pytorch_model.safetensors") && e.contains("conv_in.bias") && e.contains(&format!("{dtype:?}")),
                "{e}"
            );
            // Fixtures (int64 timesteps) still read through parse_safetensors.
            if dtype != Dtype::U8 {
                assert_eq!(parse_safetensors(&bytes).unwrap()["conv_in.bias"].1.len(), 3);
            }
        }
        let bf16: Vec<u8> = [1.0f32, 2.0, 3.0].iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect();
        assert_eq!(parse_weights(f, &raw("b", Dtype::BF16, vec![3], &bf16)).unwrap()["b"].1, vec![1.0, 2.0, 3.0]);
    }

    #[test]
    fn sharded_weights_read_through_their_index() {
        let dir = tempfile::tempdir().unwrap();
        let a = safetensors_bytes(&[("a".into(), vec![2], &[1.0, 2.0])], StoreDtype::F32).unwrap();
        let b = safetensors_bytes(&[("b".into(), vec![1], &[3.0])], StoreDtype::F16).unwrap();
        std::fs::write(dir.path().join("m-00001-of-00002.safetensors"), a).unwrap();
        std::fs::write(dir.path().join("m-00002-of-00002.safetensors"), b).unwrap();
        let index = dir.path().join("m.safetensors.index.json");
        let write_index = |map: &str| std::fs::write(&index, format!(r#"{{"metadata": {{"total_size": 10}}, "weight_map": {map}}}"#)).unwrap();
        write_index(r#"{"a": "m-00001-of-00002.safetensors", "b": "m-00002-of-00002.safetensors"}"#);
        let t = read_weights(&index).unwrap();
        assert_eq!((t["a"].1.clone(), t["b"].1.clone()), (vec![1.0, 2.0], vec![3.0]));
        // A tensor in the wrong shard, a missing shard, a shard tensor the index does not list.
        write_index(r#"{"a": "m-00002-of-00002.safetensors", "b": "m-00002-of-00002.safetensors"}"#);
        let e = read_weights(&index).unwrap_err().to_string();
        assert!(e.contains("m.safetensors.index.json") && e.contains("tensor a"), "{e}");
        write_index(r#"{"a": "m-00001-of-00002.safetensors", "b": "m-00003-of-00002.safetensors"}"#);
        let e = read_weights(&index).unwrap_err().to_string();
        assert!(e.contains("m.safetensors.index.json") && e.contains("m-00003-of-00002.safetensors") && e.contains("missing"), "{e}");
        write_index(r#"{"a": "m-00001-of-00002.safetensors"}"#);
        assert!(read_weights(&index).is_ok(), "an unlisted shard is not read");
        std::fs::write(&index, "{}").unwrap();
        assert!(read_weights(&index).unwrap_err().to_string().contains("m.safetensors.index.json"));
    }
}
