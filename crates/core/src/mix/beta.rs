//! Beta(a, a) draws for mixup's lambda, from the keyed stream alone (no
//! outside RNG), so a view's mixing stays a pure function of its key.

use crate::rng::Rng;

/// Standard normal by Box-Muller (one of the pair).
fn normal(r: &mut Rng) -> f64 {
    let u1 = 1.0 - r.unit();
    let u2 = r.unit();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Gamma(a, 1) by Marsaglia-Tsang; a < 1 through Gamma(a + 1) * U^(1/a).
fn gamma(r: &mut Rng, a: f64) -> f64 {
    if a < 1.0 {
        let u = 1.0 - r.unit();
        return gamma(r, a + 1.0) * u.powf(1.0 / a);
    }
    let d = a - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = normal(r);
        let v = 1.0 + c * x;
        if v <= 0.0 {
            continue;
        }
        let v = v * v * v;
        let u = 1.0 - r.unit();
        if u < 1.0 - 0.0331 * x.powi(4) || u.ln() < 0.5 * x * x + d * (1.0 - v + v.ln()) {
            return d * v;
        }
    }
}

/// Beta(a, a) in [0, 1].
pub(super) fn beta_sym(r: &mut Rng, a: f64) -> f64 {
    let x = gamma(r, a);
    let y = gamma(r, a);
    let s = x + y;
    if s > 0.0 && s.is_finite() {
        (x / s).clamp(0.0, 1.0)
    } else {
        // Both underflowed (alpha near 0): Beta(a, a) sits on 0 and 1 then.
        (r.next_u64() >> 63) as f64
    }
}
