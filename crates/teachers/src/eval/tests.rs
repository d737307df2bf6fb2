use super::*;

#[test]
fn ensemble_stats_by_hand() {
    // 4 images, 3 classes, labels 0 1 2 0.
    // a predicts 0 1 1 0 (3 right); b predicts 0 2 2 1 (2 right).
    // Averaged: image 1: a (0.1, 0.6, 0.3) b (0.1, 0.3, 0.6) -> tie
    // between 1 and 2 at 0.45, first wins: 1 (right). Image 3: a (0.5,
    // 0.4, 0.1) b (0.2, 0.7, 0.1) -> (0.35, 0.55, 0.1): 1 (wrong).
    let a = vec![
        0.8, 0.1, 0.1, //
        0.1, 0.6, 0.3, //
        0.2, 0.5, 0.3, //
        0.5, 0.4, 0.1,
    ];
    let b = vec![
        0.7, 0.2, 0.1, //
        0.1, 0.3, 0.6, //
        0.1, 0.1, 0.8, //
        0.2, 0.7, 0.1,
    ];
    let names = vec!["a".to_string(), "b".to_string()];
    let s = ensemble_stats(&names, &[a, b], &[0, 1, 2, 0], 3);
    assert_eq!(s.samples, 4);
    assert_eq!(s.accuracy, vec![0.75, 0.5]);
    // Averaged image 2: (0.15, 0.3, 0.55) -> 2 (right). So 0, 1, 2 right.
    assert_eq!(s.averaged_accuracy, 0.75);
    assert_eq!(s.best, "a");
    assert_eq!(s.averaged_gain, 0.0);
    assert_eq!(
        s.pairs,
        vec![PairStats {
            a: "a".into(),
            b: "b".into(),
            agreement: 0.25,
            both_right: 0.25,
            only_a_right: 0.5,
            only_b_right: 0.25,
            both_wrong: 0.0,
        }]
    );
}
