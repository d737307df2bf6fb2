//! Two ranks as two threads of one process, on a free localhost port: the
//! collectives compute what they should, and a peer that goes away makes
//! the survivor's next collective fail promptly instead of hanging.

use kd_dist::{Backend, Group, Launch};
use std::net::TcpListener;
use std::time::{Duration, Instant};
use tch::{Kind, Tensor};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn launch(rank: usize, port: u16) -> Launch {
    Launch {
        rank,
        world_size: 2,
        local_rank: rank,
        master_addr: "127.0.0.1".into(),
        master_port: port,
        agent_store: false,
        store_prefix: "kd-test/".into(),
    }
}

/// `f` on each of two Gloo ranks (threads), given the rank it launched;
/// their results in rank order.
fn on_two_ranks<T: Send + 'static>(f: fn(usize, Group) -> T) -> Vec<T> {
    let port = free_port();
    let ranks: Vec<_> = (0..2)
        .map(|r| {
            std::thread::spawn(move || {
                let g =
                    Group::join(&launch(r, port), Duration::from_secs(30), Backend::Gloo).unwrap();
                f(r, g)
            })
        })
        .collect();
    ranks.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn all_reduce_broadcast_and_barrier_on_two_ranks() {
    let results = on_two_ranks(|r, g| {
        assert_eq!((g.rank(), g.size(), g.is_leader()), (r, 2, r == 0));
        let t = Tensor::from_slice(&[1.0f32, 2.0, 3.0]) * (r as f64 + 1.0);
        g.all_reduce_sum(&t).unwrap();
        let sum = Vec::<f32>::try_from(&t).unwrap();
        let b = Tensor::full([4], r as f64 + 10.0, (Kind::Int64, tch::Device::Cpu));
        g.broadcast(&b, 1).unwrap();
        let bcast = Vec::<i64>::try_from(&b).unwrap();
        g.barrier().unwrap();
        let strided = Tensor::zeros([3, 3], (Kind::Float, tch::Device::Cpu)).tr();
        let e = g.all_reduce_sum(&strided).unwrap_err().to_string();
        assert!(e.contains("not contiguous"), "{e}");
        (sum, bcast)
    });
    for (sum, bcast) in results {
        assert_eq!(sum, vec![3.0, 6.0, 9.0]);
        assert_eq!(bcast, vec![11; 4]);
    }
}

#[test]
fn a_peer_that_leaves_fails_the_next_collective_within_the_timeout() {
    let port = free_port();
    let timeout = Duration::from_secs(20);
    let leaver = std::thread::spawn(move || {
        let g = Group::join(&launch(1, port), timeout, Backend::Gloo).unwrap();
        g.barrier().unwrap();
        // Dropping the group closes its connections, as a killed process would.
        drop(g);
    });
    let g = Group::join(&launch(0, port), timeout, Backend::Gloo).unwrap();
    g.barrier().unwrap();
    leaver.join().unwrap();
    let t0 = Instant::now();
    let t = Tensor::ones([8], (Kind::Float, tch::Device::Cpu));
    let e = g.all_reduce_sum(&t).unwrap_err().to_string();
    assert!(
        t0.elapsed() < timeout + Duration::from_secs(5),
        "took {:?}",
        t0.elapsed()
    );
    assert!(e.contains("all-reduce failed on rank 0 of 2"), "{e}");
    assert!(!e.contains('\n'), "one line: {e}");
}

#[test]
fn a_rank_whose_peers_never_come_fails_the_rendezvous() {
    let t0 = Instant::now();
    let e = Group::join(
        &launch(0, free_port()),
        Duration::from_secs(2),
        Backend::Gloo,
    )
    .unwrap_err()
    .to_string();
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "took {:?}",
        t0.elapsed()
    );
    assert!(e.contains("rendezvous") && e.contains("rank 0 of 2"), "{e}");
}

#[test]
fn a_peer_that_stalls_fails_the_collective_after_the_timeout() {
    let port = free_port();
    let timeout = Duration::from_secs(2);
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let staller = std::thread::spawn(move || {
        let g = Group::join(&launch(1, port), timeout, Backend::Gloo).unwrap();
        // Alive but never joining the all-reduce (a hung rank), until told.
        rx.recv().unwrap();
        drop(g);
    });
    let g = Group::join(&launch(0, port), timeout, Backend::Gloo).unwrap();
    let t0 = Instant::now();
    let t = Tensor::ones([8], (Kind::Float, tch::Device::Cpu));
    let e = g.all_reduce_sum(&t).unwrap_err().to_string();
    let took = t0.elapsed();
    tx.send(()).unwrap();
    staller.join().unwrap();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(15),
        "failed after {took:?} with a 2 s timeout"
    );
    assert!(
        e.contains("all-reduce failed on rank 0 of 2") && e.contains("2s"),
        "{e}"
    );
}

/// One rank's copy of a small two-layer model (the same values on every
/// rank), with a parameter only rank 0's forward reaches and one none does.
fn model() -> Vec<Tensor> {
    let p = |n: i64, shape: &[i64]| {
        (Tensor::arange(n, (Kind::Float, tch::Device::Cpu)) * 0.37 - 1.1)
            .sin()
            .reshape(shape)
            .set_requires_grad(true)
    };
    vec![
        p(12, &[4, 3]),
        p(3, &[3]),
        p(6, &[3, 2]),
        p(2, &[2]),
        p(5, &[5]),
    ]
}

/// Rank `r`'s share-scaled loss on its own inputs at step `step`; at step 1
/// rank 1 has no samples and reaches the first parameter alone, with zero
/// gradient (as the training loop does), so what goes unreached changes
/// from step to step.
fn loss(ps: &[Tensor], r: usize, step: usize) -> Tensor {
    if (r, step) == (1, 1) {
        return ps[0].sum(Kind::Float) * 0.0;
    }
    let x = (Tensor::arange(8, (Kind::Float, tch::Device::Cpu)) * (0.3 + r as f64) + step as f64)
        .cos()
        .reshape([2, 4]);
    let y = (x.matmul(&ps[0]) + &ps[1]).relu().matmul(&ps[2]);
    let mut l = y.pow_tensor_scalar(2).sum(Kind::Float) * (0.25 + 0.5 * r as f64);
    if r == 0 {
        l = l + ps[3].sum(Kind::Float) * 2.0;
    }
    l
}

fn grads(ps: &[Tensor]) -> Vec<Option<Vec<f32>>> {
    ps.iter()
        .map(|p| {
            let g = p.grad();
            g.defined()
                .then(|| Vec::<f32>::try_from(&g.flatten(0, -1)).unwrap())
        })
        .collect()
}

#[test]
fn bucketed_gradients_are_the_all_reduced_sum_and_unreached_parameters_keep_none() {
    let results = on_two_ranks(|r, g| {
        let ps = model();
        // 16 bytes: a bucket per parameter or two, so several
        // all-reduces run while the backward pass goes on.
        let reducer = g.reducer(&ps, 16).unwrap();
        let mut steps = vec![];
        for step in 0..3 {
            for p in &ps {
                let mut gr = p.grad();
                if gr.defined() {
                    let _ = gr.zero_();
                }
            }
            reducer.backward(&loss(&ps, r, step)).unwrap();
            let bucketed = grads(&ps);
            // The reference: this rank's own gradients, summed one
            // parameter at a time (zeros where the rank has none).
            let refs = model();
            loss(&refs, r, step).backward();
            let summed: Vec<Vec<f32>> = refs
                .iter()
                .map(|p| {
                    let gr = p.grad();
                    let t = if gr.defined() {
                        gr.flatten(0, -1)
                    } else {
                        p.zeros_like().flatten(0, -1)
                    };
                    g.all_reduce_sum(&t).unwrap();
                    Vec::<f32>::try_from(&t).unwrap()
                })
                .collect();
            steps.push((bucketed, summed));
        }
        steps
    });
    for steps in results {
        for (bucketed, summed) in steps {
            for i in 0..4 {
                assert_eq!(
                    bucketed[i].as_deref(),
                    Some(&summed[i][..]),
                    "parameter {i}"
                );
            }
            // Rank 0's alone, seen by both ranks.
            assert_eq!(bucketed[3].as_deref(), Some(&[2.0f32, 2.0][..]));
            assert_eq!(bucketed[4], None, "reached by no rank: no gradient");
        }
    }
}

#[test]
fn a_peer_that_leaves_fails_the_bucketed_backward_within_the_timeout() {
    let port = free_port();
    let timeout = Duration::from_secs(10);
    let leaver = std::thread::spawn(move || {
        let g = Group::join(&launch(1, port), timeout, Backend::Gloo).unwrap();
        g.barrier().unwrap();
        drop(g);
    });
    let g = Group::join(&launch(0, port), timeout, Backend::Gloo).unwrap();
    let ps = model();
    let reducer = g.reducer(&ps, 16).unwrap();
    g.barrier().unwrap();
    leaver.join().unwrap();
    let t0 = Instant::now();
    let e = reducer.backward(&loss(&ps, 0, 0)).unwrap_err().to_string();
    assert!(
        t0.elapsed() < timeout + Duration::from_secs(5),
        "took {:?}",
        t0.elapsed()
    );
    assert!(
        e.contains("bucketed all-reduce failed on rank 0 of 2"),
        "{e}"
    );
    assert!(!e.contains('\n'), "one line: {e}");
}
