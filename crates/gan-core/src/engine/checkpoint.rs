//! Files that survive an interrupted run: every write goes to a temporary file in the same
//! directory and is renamed over the target once complete, so a reader sees the old
//! content or the new, never half of one.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use candle_nn::VarMap;

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename).
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = path
        .file_name()
        .context("a file path is needed")?
        .to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}

/// Saves named tensors as safetensors, atomically, with string metadata (model kind, ...);
/// returns the SHA-256 of the bytes written, for a reader to check them against.
pub fn save_tensors(
    path: &Path,
    tensors: &HashMap<String, Tensor>,
    meta: &HashMap<String, String>,
) -> Result<String> {
    let mut sorted: Vec<_> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let bytes = safetensors::serialize(sorted, Some(meta.clone()))
        .with_context(|| format!("serialising {}", path.display()))?;
    let bytes = canonical_header(bytes)?;
    atomic_write(path, &bytes)?;
    Ok(sha256_hex(&bytes))
}

/// The SHA-256 of `bytes`, in lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Rewrites a safetensors header with its keys sorted. `safetensors` writes the metadata
/// map in hash order, which changes from one map to the next, so the same weights would
/// give files with different bytes and hashes (a judge's SHA-256 names it in reports).
fn canonical_header(bytes: Vec<u8>) -> Result<Vec<u8>> {
    let len = u64::from_le_bytes(bytes[..8].try_into()?) as usize;
    // serde_json's default map is ordered by key.
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + len])?;
    let mut json = serde_json::to_vec(&header)?;
    // Keep the data 8-byte aligned, padding with spaces as safetensors does.
    json.resize(json.len().div_ceil(8) * 8, b' ');
    let mut out = Vec::with_capacity(8 + json.len() + bytes.len() - 8 - len);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&bytes[8 + len..]);
    Ok(out)
}

/// Loads every tensor of a safetensors file onto `device`.
pub fn load_tensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    candle_core::safetensors::load_buffer(&bytes, device)
        .with_context(|| format!("{} is not a valid safetensors file", path.display()))
}

/// The variables of a network, by name.
pub fn var_tensors(vars: &VarMap) -> HashMap<String, Tensor> {
    let data = vars.data().lock().unwrap();
    data.iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect()
}

/// Sets every variable of `vars` from `tensors`. Names and shapes must match exactly,
/// so that a checkpoint of another model, or of the same model with other sizes, is
/// refused with the first difference named.
pub fn load_vars(vars: &VarMap, tensors: &HashMap<String, Tensor>, what: &str) -> Result<()> {
    let data = vars.data().lock().unwrap();
    for (name, var) in data.iter() {
        let Some(t) = tensors.get(name) else {
            anyhow::bail!(
                "{what}: the checkpoint has no tensor {name:?}: it was written by another model"
            )
        };
        if t.shape() != var.shape() {
            anyhow::bail!(
                "{what}: tensor {name:?} is {:?} in the checkpoint but {:?} in this model: \
                 the checkpoint was written with other sizes",
                t.dims(),
                var.dims()
            )
        }
        var.set(&t.to_device(var.device())?.to_dtype(var.dtype())?)?;
    }
    if let Some(extra) = tensors.keys().find(|k| !data.contains_key(*k)) {
        anyhow::bail!("{what}: the checkpoint has a tensor {extra:?} this model does not: it was written by another model")
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        atomic_write(&p, b"one").unwrap();
        atomic_write(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn same_tensors_and_metadata_give_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let t = HashMap::from([(
            "w".to_string(),
            Tensor::arange(0f32, 6., &Device::Cpu).unwrap(),
        )]);
        // Two maps with the same entries iterate in different orders.
        let meta = || -> HashMap<String, String> {
            (0..24)
                .map(|i| (format!("key{i}"), format!("{i}")))
                .collect()
        };
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        save_tensors(&a, &t, &meta()).unwrap();
        save_tensors(&b, &t, &meta()).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        let back = load_tensors(&a, &Device::Cpu).unwrap();
        assert_eq!(
            back["w"].to_vec1::<f32>().unwrap(),
            [0., 1., 2., 3., 4., 5.]
        );
        let (_, m) = safetensors::SafeTensors::read_metadata(&std::fs::read(&a).unwrap()).unwrap();
        assert_eq!(m.metadata().as_ref().unwrap()["key7"], "7");
    }

    #[test]
    fn vars_round_trip_and_refuse_other_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("net.safetensors");
        let a = VarMap::new();
        a.get(
            (2, 2),
            "w",
            candle_nn::Init::Randn {
                mean: 0.0,
                stdev: 1.0,
            },
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        save_tensors(&p, &var_tensors(&a), &HashMap::new()).unwrap();
        let b = VarMap::new();
        b.get(
            (2, 2),
            "w",
            candle_nn::Init::Const(0.0),
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        load_vars(&b, &load_tensors(&p, &Device::Cpu).unwrap(), "test").unwrap();
        assert_eq!(
            var_tensors(&a)["w"].to_vec2::<f32>().unwrap(),
            var_tensors(&b)["w"].to_vec2::<f32>().unwrap()
        );
        let c = VarMap::new();
        c.get(
            (3, 2),
            "w",
            candle_nn::Init::Const(0.0),
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        let err = load_vars(&c, &load_tensors(&p, &Device::Cpu).unwrap(), "test").unwrap_err();
        assert!(err.to_string().contains("other sizes"), "{err}");
        std::fs::write(&p, b"garbage").unwrap();
        assert!(load_tensors(&p, &Device::Cpu).is_err());
    }
}
