//! Checks of numeric settings before any work, one message each naming the
//! setting (the same name as the flag and the profile key).

use crate::error::{CoreError, Result, SettingError};

fn bad(name: &str, v: impl std::fmt::Display, want: &str) -> CoreError {
    SettingError::out_of_range(name, v, want).into()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_setting_out_of_range_is_one_typed_error_naming_it() {
        let e = within("alpha", 2.0, 0.0, 1.0, false).unwrap_err();
        assert!(
            matches!(&e, CoreError::Setting(SettingError::OutOfRange { setting, value, .. }) if setting == "alpha" && value == "2"),
            "{e:?}"
        );
        assert_eq!(e.to_string(), "setting alpha = 2: must be in [0, 1]");
        let setting = |r: Result<()>| r.unwrap_err().as_setting().map(|s| s.setting().to_string());
        assert_eq!(setting(positive("lr", f64::NAN)).as_deref(), Some("lr"));
        assert_eq!(setting(count("epochs", 0)).as_deref(), Some("epochs"));
        assert!(non_negative("tau", 0.0).is_ok() && count("epochs", 1).is_ok());
    }
}
