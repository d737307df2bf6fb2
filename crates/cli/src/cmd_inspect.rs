//! `kd inspect`: any artifact's manifest and Zarr arrays. The text form
//! shortens long lists (a folder import records one hash per source file)
//! so that a config stays one readable line; `--json` prints everything.

use crate::ui::{bytes, out};
use kd_core::manifest::Manifest;
use kd_core::zarr::describe;
use serde_json::json;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Artifact directory (holding manifest.json) or a Zarr store.
    path: PathBuf,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// Lists longer than this print as their length.
const LIST_ITEMS: usize = 12;

/// `v` with every list longer than [`LIST_ITEMS`] replaced by its length.
fn brief(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Array(a) if a.len() > LIST_ITEMS => json!(format!("<{} items>", a.len())),
        Value::Array(a) => Value::Array(a.iter().map(brief).collect()),
        Value::Object(m) => Value::Object(m.iter().map(|(k, x)| (k.clone(), brief(x))).collect()),
        x => x.clone(),
    }
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let manifest = match Manifest::read(&a.path) {
        Ok(m) => Some(m),
        Err(kd_core::CoreError::ManifestMissing { .. }) if a.path.join("zarr.json").is_file() => {
            None
        }
        Err(e) => return Err(e.into()),
    };
    // Every Zarr store directly inside the artifact (or the path itself).
    let mut stores = vec![];
    if a.path.join("zarr.json").is_file() {
        stores.push(a.path.clone());
    } else if let Ok(rd) = std::fs::read_dir(&a.path) {
        let mut v: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.join("zarr.json").is_file())
            .collect();
        v.sort();
        stores.extend(v);
    }
    let mut arrays = vec![];
    for s in &stores {
        for info in describe(s)? {
            arrays.push((
                s.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                info,
            ));
        }
    }
    if a.json {
        let arr: Vec<_> = arrays
            .iter()
            .map(|(s, i)| {
                let mut v = serde_json::to_value(i).unwrap_or_default();
                v["store"] = json!(s);
                v
            })
            .collect();
        out(serde_json::to_string_pretty(
            &json!({ "manifest": manifest, "arrays": arr }),
        )?);
        return Ok(());
    }
    if let Some(m) = &manifest {
        out(format!("artifact  {}", a.path.display()));
        out(format!(
            "stage     {} (kd {}, rev {})",
            m.stage, m.tool_version, m.git_rev
        ));
        for i in &m.inputs {
            out(format!(
                "input     {} = {} ({}…)",
                i.role,
                i.path.display(),
                &i.manifest_hash[..12]
            ));
        }
        for o in &m.outputs {
            out(format!("output    {} ({})", o.path, bytes(o.bytes)));
        }
        out(format!(
            "config    {}",
            serde_json::to_string(&brief(&m.config))?
        ));
        if !m.metrics.is_null() {
            out(format!(
                "metrics   {}",
                serde_json::to_string(&brief(&m.metrics))?
            ));
        }
    }
    if !arrays.is_empty() {
        out(format!(
            "{:<36} {:<20} {:<8} {:<16} {:<16} {:>10} {:>7} {:>6}  codecs",
            "array", "shape", "dtype", "chunk", "shard", "stored", "ratio", "files"
        ));
        let dims = |v: &[u64]| {
            v.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join("x")
        };
        for (s, i) in &arrays {
            out(format!(
                "{:<36} {:<20} {:<8} {:<16} {:<16} {:>10} {:>6.2}x {:>6}  {}",
                format!("{s}/{}", i.path),
                dims(&i.shape),
                i.dtype,
                dims(&i.chunk),
                i.shard.as_deref().map(dims).unwrap_or_else(|| "-".into()),
                bytes(i.stored_bytes),
                i.ratio,
                i.files,
                i.codecs.join(", ")
            ));
        }
    }
    Ok(())
}
