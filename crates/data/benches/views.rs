//! View assembly throughput on Fashion-MNIST (or synthetic 28x28 images when
//! it is absent): crop + flip + normalise a batch of 128 into a tensor.
//! Prints markdown table rows; `scripts/bench.sh` gathers them.

use kd_core::ViewSpec;
use kd_data::augment::{batch_tensor, lut};
use kd_data::{Split, idx};
use std::path::Path;
use std::time::Instant;

#[allow(clippy::print_stdout)]
fn main() {
    let src = std::env::var("KD_FMNIST").unwrap_or_else(|_| "data/raw/fashion-mnist".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(&src);
    let (split, what) = match idx::import(&root, None) {
        Ok(imp) => (imp.train.split, "Fashion-MNIST train"),
        Err(_) => (
            Split {
                images: (0..60000 * 784).map(|i| (i % 251) as u8).collect(),
                labels: vec![0; 60000],
                chw: [1, 28, 28],
            },
            "synthetic 28x28",
        ),
    };
    let spec = ViewSpec::default();
    let table = lut(&[0.286], &[0.353]);
    let batch = 128;
    let n = split.len();
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let t0 = Instant::now();
            let mut done = 0;
            let mut b = 0usize;
            while t0.elapsed().as_secs_f64() < 2.0 {
                let idx: Vec<usize> = (0..batch).map(|i| (b * batch + i * 7919) % n).collect();
                let views: Vec<_> = idx
                    .iter()
                    .map(|&i| spec.draw([28, 28], 0, i as u64, 1 + b as u64 % 8))
                    .collect();
                let t =
                    batch_tensor(&split, &idx, &views, &spec, &table, tch::Device::Cpu).unwrap();
                assert_eq!(t.size()[0], batch as i64);
                done += batch;
                b += 1;
            }
            done as f64 / t0.elapsed().as_secs_f64()
        })
    };
    let one = run(1);
    let all_threads = rayon::current_num_threads();
    let all = run(all_threads);
    println!("| what | images/s |");
    println!("|---|---|");
    println!("| view assembly ({what}, batch {batch}, 1 thread) | {one:.0} |");
    println!("| view assembly ({what}, batch {batch}, {all_threads} threads) | {all:.0} |");
}
