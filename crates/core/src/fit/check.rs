//! Checks of numeric settings before any work, one message each naming the
//! setting (the same name as the flag and the profile key).

use crate::error::{CoreError, Result};

fn bad(name: &str, v: impl std::fmt::Display, want: &str) -> CoreError {
    CoreError::Invalid(format!("setting {name} = {v}: must be {want}"))
}

/// Finite and > 0.
pub fn positive(name: &str, v: f64) -> Result<()> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(bad(name, v, "a finite number > 0"))
    }
}

/// Finite and >= 0.
pub fn non_negative(name: &str, v: f64) -> Result<()> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(bad(name, v, "a finite number >= 0"))
    }
}

/// In `[lo, hi]` (`hi_open`: `[lo, hi)`).
pub fn within(name: &str, v: f64, lo: f64, hi: f64, hi_open: bool) -> Result<()> {
    let ok = v.is_finite() && v >= lo && if hi_open { v < hi } else { v <= hi };
    if ok {
        Ok(())
    } else {
        Err(bad(
            name,
            v,
            &format!("in [{lo}, {hi}{}", if hi_open { ")" } else { "]" }),
        ))
    }
}

/// At least 1.
pub fn count(name: &str, v: usize) -> Result<()> {
    if v >= 1 {
        Ok(())
    } else {
        Err(bad(name, v, "at least 1"))
    }
}
