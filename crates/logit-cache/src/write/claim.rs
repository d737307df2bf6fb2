//! Claiming `--out` for a build: the store's metadata created once, a store
//! already there checked against the one wanted, and the build lock.
//!
//! An `--out` holding a store of another config or other inputs: a finished
//! one is out of date and rebuilt (Make's rerun after a teacher changed); an
//! unfinished one may be someone's work in progress and is refused unless
//! `--force`; a `--shard` worker never deletes anything. An `--out` holding
//! another stage's artifact or other files is refused by the stage lifecycle
//! (`kd_core::stage`).
//! Two unsharded builds into one directory would both compute every shard:
//! the second finds the build lock taken and stops.

use crate::error::{Result, io_err, store_err};
use crate::layout::{StoreMeta, store_dir};
use std::path::Path;

pub(super) fn remove_if_exists(p: &Path) -> Result<()> {
    match std::fs::remove_dir_all(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(p)(e)),
    }
}

/// Create the store's metadata once: in a private directory renamed into
/// place, so a concurrent worker either sees a complete store or none.
pub(super) fn create_store(out: &Path, meta: &StoreMeta) -> Result<()> {
    let root = store_dir(out);
    if root.exists() {
        return Ok(());
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp = out.join(
        format!(
            ".tmp-{}-{nanos}-{:?}.zarr",
            std::process::id(),
            std::thread::current().id()
        )
        .replace(['(', ')'], ""),
    );
    std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    meta.create(&tmp)?;
    if std::fs::rename(&tmp, &root).is_err() {
        // Another worker won the race; its metadata is checked by the caller.
        remove_if_exists(&tmp)?;
        if !root.exists() {
            return Err(store_err(&root, "could not create the store"));
        }
    }
    Ok(())
}

pub(super) fn check_same_store(out: &Path, key: &serde_json::Value) -> Result<()> {
    let root = store_dir(out);
    let found = StoreMeta::read(&root).map_err(|e| {
        store_err(&root, format!("holds something that is not a logit store of this tool ({e}); use --force to replace it"))
    })?;
    if &found.key != key {
        return Err(store_err(
            &root,
            format!(
                "holds an unfinished store of another config or other inputs ({}); another build may be filling it: use --force to replace it",
                key_diff(&found.key, key)
            ),
        ));
    }
    Ok(())
}

/// What differs between two store keys, as `name stored -> wanted` items.
fn key_diff(found: &serde_json::Value, want: &serde_json::Value) -> String {
    let mut out = vec![];
    if let (Some(a), Some(b)) = (found["config"].as_object(), want["config"].as_object()) {
        // Both ways: `mix` is absent from the key of a store that does not mix.
        let null = serde_json::Value::Null;
        let mut keys: Vec<&String> = b.keys().collect();
        keys.extend(a.keys().filter(|k| !b.contains_key(*k)));
        for k in keys {
            let (old, new) = (a.get(k).unwrap_or(&null), b.get(k).unwrap_or(&null));
            if old != new {
                out.push(format!("{k} {old} -> {new}"));
            }
        }
    }
    let ins = |v: &serde_json::Value| -> Vec<(String, String)> {
        v["inputs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|i| {
                        (
                            i["role"].as_str().unwrap_or("?").to_string(),
                            i["manifest_hash"].as_str().unwrap_or("?").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let (a, b) = (ins(found), ins(want));
    for (role, hash) in &b {
        match a.iter().find(|(r, _)| r == role) {
            None => out.push(format!("new input {role}")),
            Some((_, old)) if old != hash => out.push(format!(
                "{role} hash {} -> {}",
                &old[..old.len().min(12)],
                &hash[..hash.len().min(12)]
            )),
            _ => {}
        }
    }
    for (role, _) in &a {
        if !b.iter().any(|(r, _)| r == role) {
            out.push(format!("input {role} dropped"));
        }
    }
    if out.is_empty() {
        "store metadata differs".into()
    } else {
        out.join(", ")
    }
}

/// The lock that keeps two builds from computing the same shards: an
/// unsharded build (and `finalize`) holds it exclusively, `--shard` workers
/// share it (they fill disjoint shards). Held until the returned file is
/// dropped. A file system without locks (some network file systems) is
/// logged and builds go on unlocked, as before.
pub(super) fn lock_out(out: &Path, shared: bool) -> Result<Option<std::fs::File>> {
    let p = out.join(crate::layout::LOCK);
    let f = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .map_err(io_err(&p))?;
    let got = if shared {
        f.try_lock_shared()
    } else {
        f.try_lock()
    };
    match got {
        Ok(()) => Ok(Some(f)),
        Err(std::fs::TryLockError::WouldBlock) => Err(store_err(
            &p,
            if shared {
                "an unsharded `kd cache build` or `kd cache finalize` is using this store: wait for it to finish"
            } else {
                "another `kd cache build` (or --shard worker) is writing this store: wait for it to finish, or split the work with --shard i/n"
            },
        )),
        Err(std::fs::TryLockError::Error(e)) => {
            tracing::warn!(lock = %p.display(), "cannot lock the store ({e}); building without a lock");
            Ok(None)
        }
    }
}
