use super::*;

#[test]
fn zarr_errors_keep_their_source() {
    let t = tempfile::tempdir().unwrap();
    let store = open_store(t.path()).unwrap();
    let e = open_array(&store, "/absent").unwrap_err();
    assert!(matches!(e, CoreError::Zarr { .. }), "{e:?}");
    // zarrs' own error is the source, not text folded into ours.
    let source = std::error::Error::source(&e).expect("a source");
    assert!(!source.to_string().is_empty());
    assert_eq!(e.to_string(), "/absent: zarr");
}

#[test]
fn sharded_round_trip_and_describe() {
    let t = tempfile::tempdir().unwrap();
    let store = open_store(t.path()).unwrap();
    create_group(&store, "/", Map::new()).unwrap();
    let layout = Layout {
        shape: vec![10, 3],
        chunk: vec![4, 3],
        subchunk: Some(vec![2, 3]),
        zstd_level: 3,
        dims: vec!["sample".into(), "class".into()],
    };
    let a = create_array(
        &store,
        "/x",
        data_type::float32(),
        0f32,
        &layout,
        Map::new(),
    )
    .unwrap();
    let data: Vec<f32> = (0..30).map(|i| i as f32 * 0.5).collect();
    write_block(&a, &[0, 0], &[10, 3], &data).unwrap();
    let a = open_array(&store, "/x").unwrap();
    assert_eq!(read_all::<f32>(&a).unwrap(), data);
    assert_eq!(
        read_block::<f32>(&a, &[4, 1], &[2, 2]).unwrap(),
        vec![6.5, 7.0, 8.0, 8.5]
    );
    let info = describe(t.path()).unwrap();
    assert_eq!(info.len(), 1);
    assert_eq!(info[0].path, "x");
    assert_eq!(info[0].shard, Some(vec![4, 3]));
    assert_eq!(info[0].chunk, vec![2, 3]);
    assert_eq!(info[0].files, 3);
    assert_eq!(info[0].raw_bytes, 120);
}

fn array(t: &Path, subchunk: Option<Vec<u64>>) -> ZArray {
    let store = open_store(t).unwrap();
    create_group(&store, "/", Map::new()).unwrap();
    let layout = Layout {
        shape: vec![10, 2],
        chunk: vec![4, 2],
        subchunk,
        zstd_level: 3,
        dims: vec![],
    };
    create_array(&store, "/x", data_type::uint8(), 0u8, &layout, Map::new()).unwrap()
}

#[test]
fn absent_chunks_are_refused_naming_file_array_and_chunk() {
    let t = tempfile::tempdir().unwrap();
    let a = array(t.path(), None);
    // Rows 4..8 are all fill value: stored anyway, so they read back.
    let mut data = vec![1u8; 20];
    data[8..16].fill(0);
    write_block(&a, &[0, 0], &[10, 2], &data).unwrap();
    assert!(t.path().join("x/c/1/0").is_file(), "all-fill chunk stored");
    assert_eq!(read_all::<u8>(&a).unwrap(), data);
    std::fs::remove_file(t.path().join("x/c/2/0")).unwrap();
    // Blocks that do not touch the lost chunk still read.
    assert_eq!(read_block::<u8>(&a, &[0, 0], &[8, 2]).unwrap(), data[..16]);
    let e = read_all::<u8>(&a).unwrap_err();
    assert!(matches!(e, CoreError::MissingChunk { .. }));
    let msg = e.to_string();
    assert!(
        msg.contains("x/c/2/0: missing: chunk [2, 0] of array /x (rows 8..10)"),
        "{msg}"
    );
}

#[test]
fn absent_shards_and_inner_chunks_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let a = array(t.path(), Some(vec![2, 2]));
    let mut data = vec![3u8; 20];
    data[4..8].fill(0); // inner chunk [1, 0]: left out of shard 0 by the codec
    write_block(&a, &[0, 0], &[10, 2], &data).unwrap();
    let msg = read_all::<u8>(&a).unwrap_err().to_string();
    assert!(
        msg.contains("x/c/0/0: missing: inner chunk [1, 0] of array /x (rows 2..4, absent from its shard's index)"),
        "{msg}"
    );
    // An array whose data may hold all-fill inner chunks asks for files
    // only; a shard of zeros is still a file.
    write_block(&a, &[4, 0], &[4, 2], &[0u8; 8]).unwrap();
    data[8..16].fill(0);
    assert!(t.path().join("x/c/1/0").is_file(), "all-fill shard stored");
    let (o, s) = whole(&a);
    check_present(&a, &o, &s, Presence::Chunks).unwrap();
    assert_eq!(read_block_unchecked::<u8>(&a, &o, &s).unwrap(), data);
    std::fs::remove_file(t.path().join("x/c/1/0")).unwrap();
    let msg = check_present(&a, &o, &s, Presence::Chunks)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("x/c/1/0: missing: chunk [1, 0] of array /x (rows 4..8)"),
        "{msg}"
    );
}
