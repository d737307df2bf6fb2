use super::*;
use crate::config::{DEFAULT_TOP_K, TOP_K_FROM_CLASSES};

#[test]
fn top_k_defaults_by_class_count() {
    let unset = CacheConfig::default();
    assert_eq!(unset.resolved(10).top_k, None);
    assert_eq!(unset.resolved(99).top_k, None);
    assert_eq!(
        unset.resolved(TOP_K_FROM_CLASSES).top_k,
        Some(DEFAULT_TOP_K)
    );
    assert_eq!(unset.resolved(1000).top_k, Some(DEFAULT_TOP_K));
    let dense = CacheConfig {
        top_k: Some(0),
        ..CacheConfig::default()
    };
    assert!(dense.validate(1000).is_ok());
    assert_eq!(dense.resolved(1000).top_k, None);
    let five = CacheConfig {
        top_k: Some(5),
        ..CacheConfig::default()
    };
    assert_eq!(five.resolved(10).top_k, Some(5));
    assert_eq!(five.resolved(1000).top_k, Some(5));
    let e = CacheConfig {
        top_k: Some(11),
        ..CacheConfig::default()
    }
    .validate(10)
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("top_k = 11") && e.contains("0 for every logit"),
        "{e}"
    );
}
