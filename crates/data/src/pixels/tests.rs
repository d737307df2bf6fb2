use super::*;

#[test]
fn sizes_parse_with_binary_suffixes() {
    assert_eq!(parse_size("2G"), Some(2 << 30));
    assert_eq!(parse_size("512M"), Some(512 << 20));
    assert_eq!(parse_size("0.5k"), Some(512));
    assert_eq!(parse_size("1024"), Some(1024));
    assert_eq!(parse_size("lots"), None);
    assert_eq!(parse_size("-1G"), None);
    assert_eq!(parse_size(""), None);
}

#[test]
fn chunks_stay_4096_images_for_small_images() {
    assert_eq!(chunk_images(784, 60_000), 4096);
    assert_eq!(chunk_images(3 * 32 * 32, 50_000), 4096);
    assert_eq!(chunk_images(3 * 224 * 224, 200_000), 445);
    assert_eq!(chunk_images(784, 10), 10);
    assert_eq!(chunk_images(usize::MAX / 2, 10), 1);
}
