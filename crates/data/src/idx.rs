//! IDX files (MNIST, Fashion-MNIST, KMNIST), raw or gzipped. A sample's
//! origin is its index in its images file.

use crate::error::{Result, format_err, io_err};
use crate::origin::OriginKind;
use crate::split::{Imported, Split, Traced};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Read a whole file, gunzipping it when it starts with the gzip magic.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(io_err(path))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = vec![];
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| format_err(path, format!("corrupt gzip stream: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parse an IDX file of unsigned bytes: returns its dimensions and payload.
pub fn parse_idx(path: &Path, bytes: &[u8]) -> Result<(Vec<usize>, Vec<u8>)> {
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(format_err(path, "not an IDX file (bad magic number)"));
    }
    if bytes[2] != 0x08 {
        return Err(format_err(
            path,
            format!(
                "IDX element type 0x{:02x} is not unsigned byte (0x08)",
                bytes[2]
            ),
        ));
    }
    let ndim = bytes[3] as usize;
    let header = 4 + 4 * ndim;
    if ndim == 0 || bytes.len() < header {
        return Err(format_err(path, "truncated IDX header"));
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize)
        .collect();
    let expected: usize = dims.iter().product();
    let payload = &bytes[header..];
    if payload.len() != expected {
        return Err(format_err(
            path,
            format!(
                "truncated or oversized IDX data: dimensions {dims:?} need {expected} bytes, found {}",
                payload.len()
            ),
        ));
    }
    Ok((dims, payload.to_vec()))
}

/// Read an images file (`[n, h, w]`) and a labels file (`[n]`) into a split.
pub fn read_pair(images: &Path, labels: &Path, classes: usize) -> Result<Split> {
    let (idims, ibytes) = parse_idx(images, &read_maybe_gz(images)?)?;
    let (ldims, lbytes) = parse_idx(labels, &read_maybe_gz(labels)?)?;
    if idims.len() != 3 {
        return Err(format_err(
            images,
            format!("expected 3 dimensions [n,h,w], found {idims:?}"),
        ));
    }
    if ldims.len() != 1 {
        return Err(format_err(
            labels,
            format!("expected 1 dimension [n], found {ldims:?}"),
        ));
    }
    if idims[0] != ldims[0] {
        return Err(format_err(
            labels,
            format!(
                "{} labels for {} images in {}",
                ldims[0],
                idims[0],
                images.display()
            ),
        ));
    }
    if let Some(pos) = lbytes.iter().position(|&l| l as usize >= classes) {
        return Err(format_err(
            labels,
            format!(
                "label {} at index {pos} is out of range for {classes} classes",
                lbytes[pos]
            ),
        ));
    }
    Ok(Split::in_memory(
        ibytes,
        lbytes.into_iter().map(u16::from).collect(),
        [1, idims[1], idims[2]],
    ))
}

/// Class names of the known IDX data sets, by a hint in the directory name.
pub fn default_class_names(src: &Path) -> Vec<String> {
    let s = src.display().to_string().to_lowercase();
    let names: Vec<&str> = if s.contains("fashion") {
        vec![
            "t-shirt/top",
            "trouser",
            "pullover",
            "dress",
            "coat",
            "sandal",
            "shirt",
            "sneaker",
            "bag",
            "ankle boot",
        ]
    } else if s.contains("kmnist") {
        vec!["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"]
    } else {
        vec!["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]
    };
    names.into_iter().map(String::from).collect()
}

fn find(src: &Path, stem: &str) -> Result<PathBuf> {
    for name in [format!("{stem}.gz"), stem.to_string()] {
        let p = src.join(&name);
        if p.is_file() {
            return Ok(p);
        }
    }
    // Some mirrors use dots instead of dashes (train-images.idx3-ubyte).
    let dotted = stem.replacen("-idx", ".idx", 1);
    for name in [format!("{dotted}.gz"), dotted] {
        let p = src.join(&name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(format_err(
        src.join(stem),
        "missing IDX file (looked for it, raw and .gz)",
    ))
}

/// Import the standard four-file layout from directory `src`.
pub fn import(src: &Path, class_names: Option<Vec<String>>) -> Result<Imported> {
    if !src.is_dir() {
        return Err(format_err(src, "no such directory"));
    }
    let class_names = class_names.unwrap_or_else(|| default_class_names(src));
    let k = class_names.len();
    let train = read_pair(
        &find(src, "train-images-idx3-ubyte")?,
        &find(src, "train-labels-idx1-ubyte")?,
        k,
    )?;
    let test = read_pair(
        &find(src, "t10k-images-idx3-ubyte")?,
        &find(src, "t10k-labels-idx1-ubyte")?,
        k,
    )?;
    Ok(Imported {
        source: format!("idx:{}", src.display()),
        train: Traced::indexed(train),
        test: Traced::indexed(test),
        val: None,
        class_names,
        origin: OriginKind::Index,
    })
}

/// Encode an IDX unsigned-byte file (used by tests and tools).
pub fn encode_idx(dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for &d in dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}
