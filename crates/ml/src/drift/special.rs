//! The special functions behind Evidently's p-values, reproducing scipy 1.17:
//!
//! - [`ndtr`] / [`erfc`]: the normal CDF (Z-test), ported from cephes `ndtr.h` as scipy's `xsf`
//!   ships it (same rational approximations, same branches);
//! - [`chi2_sf`]: `scipy.special.chdtrc` (chi-square survival function) for integer degrees of
//!   freedom, from the closed forms of the regularised upper incomplete gamma function at integer
//!   and half-integer orders (sums of positive terms, evaluated in log space; relative error
//!   ~1e-13 where scipy's `igamc` is itself accurate to ~1e-14);
//! - [`kstwo_sf`]: `scipy.stats.kstwo.sf(d, n)`, the two-sided one-sample Kolmogorov–Smirnov
//!   distribution that `ks_2samp(method="asymp")` uses, ported from `scipy/stats/_ksstats.py`
//!   (Simard & L'Ecuyer's choice among Ruben–Gambino, Durbin–Marsaglia–Tsang–Wang, Pomeranz,
//!   Pelz–Good and 2×Smirnov), with [`smirnov_sf`] ported from cephes `kolmogorov.h` (in plain
//!   doubles and log space where xsf uses double-double: ~1e-11 relative instead of ~1e-16);
//! - [`ks_2samp_pvalue`]: `scipy.stats.ks_2samp`'s two-sided p-value with `method="auto"`:
//!   exact (Hodges / Viehmann lattice-path recursion, `_compute_outer_prob_inside_method`, or
//!   `_compute_prob_outside_square` for equal sizes) when both samples have at most 10,000
//!   values, else asymptotic (`kstwo.sf(d, round(n1·n2/(n1+n2)))`).

/// `ln(2^1024)`: `exp` of anything larger overflows (cephes `MAXLOG`).
const MAXLOG: f64 = 7.097_827_128_933_84e2;
/// `ln(2^-1075)`: `exp` of anything smaller is 0 (cephes `MINLOG`).
const MINLOG: f64 = -7.451_332_191_019_412e2;

fn polevl(x: f64, coef: &[f64]) -> f64 {
    coef.iter().skip(1).fold(coef[0], |ans, &c| ans * x + c)
}

fn p1evl(x: f64, coef: &[f64]) -> f64 {
    coef.iter().skip(1).fold(x + coef[0], |ans, &c| ans * x + c)
}

const NDTR_P: [f64; 9] = [
    2.461969814735305e-10,
    0.5641895648310689,
    7.463210564422699,
    48.63719709856814,
    196.5208329560771,
    526.4451949954773,
    934.5285271719576,
    1027.5518868951572,
    557.5353353693994,
];
const NDTR_Q: [f64; 8] = [
    13.228195115474499,
    86.70721408859897,
    354.9377788878199,
    975.7085017432055,
    1823.9091668790973,
    2246.3376081871097,
    1656.6630919416134,
    557.5353408177277,
];
const NDTR_R: [f64; 6] = [
    0.5641895835477551,
    1.275366707599781,
    5.019050422511805,
    6.160210979930536,
    7.4097426995044895,
    2.9788666537210022,
];
const NDTR_S: [f64; 6] = [
    2.2605286322011726,
    9.396035249380015,
    12.048953980809666,
    17.08144507475659,
    9.608968090632859,
    3.369076451000815,
];
const NDTR_T: [f64; 5] =
    [9.604973739870516, 90.02601972038427, 2232.005345946843, 7003.325141128051, 55592.30130103949];
const NDTR_U: [f64; 5] =
    [33.56171416475031, 521.3579497801527, 4594.323829709801, 22629.000061389095, 49267.39426086359];

/// The complementary error function (cephes `erfc`).
pub fn erfc(a: f64) -> f64 {
    if a.is_nan() {
        return f64::NAN;
    }
    let x = a.abs();
    if x < 1.0 {
        return 1.0 - erf(a);
    }
    let z = -a * a;
    let under = if a < 0.0 { 2.0 } else { 0.0 };
    if z < -MAXLOG {
        return under;
    }
    let z = z.exp();
    let (p, q) =
        if x < 8.0 { (polevl(x, &NDTR_P), p1evl(x, &NDTR_Q)) } else { (polevl(x, &NDTR_R), p1evl(x, &NDTR_S)) };
    let mut y = (z * p) / q;
    if a < 0.0 {
        y = 2.0 - y;
    }
    if y != 0.0 { y } else { under }
}

/// The error function (cephes `erf`).
pub fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x < 0.0 {
        return -erf(-x);
    }
    if x.abs() > 1.0 {
        return 1.0 - erfc(x);
    }
    let z = x * x;
    x * polevl(z, &NDTR_T) / p1evl(z, &NDTR_U)
}

/// The standard normal CDF (cephes `ndtr`, what `scipy.stats.norm.cdf` calls).
pub fn ndtr(a: f64) -> f64 {
    if a.is_nan() {
        return f64::NAN;
    }
    let x = a * std::f64::consts::FRAC_1_SQRT_2;
    let z = x.abs();
    if z < 1.0 {
        0.5 + 0.5 * erf(x)
    } else {
        let y = 0.5 * erfc(z);
        if x > 0.0 { 1.0 - y } else { y }
    }
}

/// `exp(Σ exp(terms))`-style sum: `Σ exp(t − shift)` evaluated without overflow, returned as
/// `exp(max − shift) · Σ exp(t − max)`.
fn sum_exp(terms: &[f64], shift: f64) -> f64 {
    let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return 0.0;
    }
    let sum: f64 = terms.iter().map(|t| (t - max).exp()).sum();
    (max - shift).exp() * sum
}

/// The chi-square survival function `P(X > x)` with `df` degrees of freedom, as
/// `scipy.special.chdtrc(df, x)` (= `igamc(df/2, x/2)`) for a whole number `df` ≥ 0:
/// 1 for `x < 0`; for `df = 0`, 0 when `x > 0` and NaN at `x = 0` (as scipy).
pub fn chi2_sf(df: u64, x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x < 0.0 {
        return 1.0;
    }
    let a2 = df; // a = df / 2
    let y = x / 2.0;
    if a2 == 0 {
        return if y > 0.0 { 0.0 } else { f64::NAN };
    }
    if y == 0.0 {
        return 1.0;
    }
    if y.is_infinite() {
        return 0.0;
    }
    let ln_y = y.ln();
    if a2.is_multiple_of(2) {
        // Q(k, y) = e^-y Σ_{j<k} y^j / j!
        let k = a2 / 2;
        let mut terms = Vec::with_capacity(k as usize);
        let mut term = 0.0;
        for j in 0..k {
            if j > 0 {
                term += ln_y - (j as f64).ln();
            }
            terms.push(term);
        }
        sum_exp(&terms, y)
    } else {
        // Q(k + 1/2, y) = erfc(√y) + e^-y Σ_{j=1..k} y^(j-1/2) / Γ(j + 1/2)
        let k = a2 / 2;
        let mut terms = Vec::with_capacity(k as usize);
        // Γ(3/2) = √π / 2
        let mut term = 0.5 * ln_y - (std::f64::consts::PI.sqrt() / 2.0).ln();
        for j in 1..=k {
            if j > 1 {
                term += ln_y - (j as f64 - 0.5).ln();
            }
            terms.push(term);
        }
        erfc(y.sqrt()) + sum_exp(&terms, y)
    }
}

/// `x · 2^e` without intermediate overflow or underflow.
fn ldexp(mut x: f64, mut e: i64) -> f64 {
    while e > 1000 {
        x *= 2f64.powi(1000);
        e -= 1000;
    }
    while e < -1000 {
        x *= 2f64.powi(-1000);
        e += 1000;
    }
    x * 2f64.powi(e as i32)
}

const E128: i64 = 128;

fn clip(p: f64) -> f64 {
    p.clamp(0.0, 1.0)
}

/// Kolmogorov distribution CDF `P(D_n ≤ d)` by the Durbin matrix (Marsaglia–Tsang–Wang), as
/// scipy's `_kolmogn_DMTW`.
fn kolmogn_dmtw_cdf(n: u64, d: f64) -> f64 {
    if d >= 1.0 {
        return 1.0;
    }
    let nd = n as f64 * d;
    if nd <= 0.5 {
        return 0.0;
    }
    let k = nd.ceil() as usize;
    let h = k as f64 - nd;
    let m = 2 * k - 1;
    let mut v: Vec<f64> = (1..=m).map(|j| 1.0 - h.powf(j as f64)).collect();
    let mut w = vec![0.0; m];
    let mut fac = 1.0;
    for j in 1..=m {
        w[j - 1] = fac;
        fac /= j as f64;
        v[j - 1] *= fac;
    }
    let tt = (2.0 * h - 1.0).max(0.0).powf(m as f64) - 2.0 * h.powf(m as f64);
    v[m - 1] = (1.0 + tt) * fac;

    let mut hm = vec![0.0; m * m];
    for i in 1..m {
        for r in (i - 1)..m {
            hm[r * m + i] = w[r - (i - 1)];
        }
    }
    for r in 0..m {
        hm[r * m] = v[r];
    }
    for c in 0..m {
        hm[(m - 1) * m + c] = v[m - 1 - c];
    }
    let matmul = |a: &[f64], b: &[f64]| -> Vec<f64> {
        let mut out = vec![0.0; m * m];
        for i in 0..m {
            for l in 0..m {
                let x = a[i * m + l];
                if x == 0.0 {
                    continue;
                }
                for j in 0..m {
                    out[i * m + j] += x * b[l * m + j];
                }
            }
        }
        out
    };
    let mut power: Vec<f64> = (0..m * m).map(|i| if i / m == i % m { 1.0 } else { 0.0 }).collect();
    let mut nn = n;
    let (mut expnt, mut h_expnt) = (0i64, 0i64);
    let ep128 = 2f64.powi(E128 as i32);
    let em128 = 2f64.powi(-(E128 as i32));
    while nn > 0 {
        if nn % 2 == 1 {
            power = matmul(&power, &hm);
            expnt += h_expnt;
        }
        hm = matmul(&hm, &hm);
        h_expnt *= 2;
        if hm[(k - 1) * m + (k - 1)].abs() > ep128 {
            hm.iter_mut().for_each(|x| *x /= ep128);
            h_expnt += E128;
        }
        nn /= 2;
    }
    let mut p = power[(k - 1) * m + (k - 1)];
    for i in 1..=n {
        p = i as f64 * p / n as f64;
        if p.abs() < em128 {
            p *= ep128;
            expnt -= E128;
        }
    }
    if expnt != 0 {
        p = ldexp(p, expnt);
    }
    clip(p)
}

fn pomeranz_j1j2(i: i64, n: i64, ll: i64, ceilf: i64, roundf: i64) -> (i64, i64) {
    let (j1, j2) = if i == 0 {
        (-ll - ceilf - 1, ll + ceilf - 1)
    } else {
        let (ip1div2, ip1mod2) = ((i + 1) / 2, (i + 1) % 2);
        if ip1mod2 == 0 {
            if ip1div2 == n + 1 {
                (n - ll - ceilf - 1, n + ll + ceilf - 1)
            } else {
                (ip1div2 - 1 - ll - roundf - 1, ip1div2 + ll - 1 + ceilf - 1)
            }
        } else {
            (ip1div2 - 1 - ll - 1, ip1div2 + ll + roundf - 1)
        }
    };
    ((j1 + 2).max(0), j2.min(n))
}

/// Kolmogorov distribution CDF by Pomeranz's recursion, as scipy's `_kolmogn_Pomeranz`.
fn kolmogn_pomeranz_cdf(n: u64, x: f64) -> f64 {
    let n_i = n as i64;
    let t = n as f64 * x;
    let ll = t.floor() as i64;
    let f = t - ll as f64;
    let g = f.min(1.0 - f);
    let ceilf = i64::from(f > 0.0);
    let roundf = i64::from(f > 0.5);
    let npwrs = (2 * (ll + 1)) as usize;
    let mut gpower = vec![1.0; npwrs];
    let mut twogpower = vec![1.0; npwrs];
    let mut onem2gpower = vec![1.0; npwrs];
    let nf = n as f64;
    let (g_over_n, two_g_over_n, one_minus_two_g_over_n) = (g / nf, 2.0 * g / nf, (1.0 - 2.0 * g) / nf);
    for m in 1..npwrs {
        gpower[m] = gpower[m - 1] * g_over_n / m as f64;
        twogpower[m] = twogpower[m - 1] * two_g_over_n / m as f64;
        onem2gpower[m] = onem2gpower[m - 1] * one_minus_two_g_over_n / m as f64;
    }
    let mut v0 = vec![0.0; npwrs];
    let mut v1 = vec![0.0; npwrs];
    v1[0] = 1.0;
    let (mut v0s, mut v1s) = (0i64, 0i64);
    let mut expnt = 0i64;
    let ep128 = 2f64.powi(E128 as i32);
    let em128 = 2f64.powi(-(E128 as i32));
    let (mut j1, _) = pomeranz_j1j2(0, n_i, ll, ceilf, roundf);
    for i in 1..(2 * n_i + 2) {
        let k1 = j1;
        std::mem::swap(&mut v0, &mut v1);
        std::mem::swap(&mut v0s, &mut v1s);
        v1.iter_mut().for_each(|x| *x = 0.0);
        let (nj1, j2) = pomeranz_j1j2(i, n_i, ll, ceilf, roundf);
        j1 = nj1;
        let pwrs = if i == 1 || i == 2 * n_i + 1 {
            &gpower
        } else if i % 2 == 1 {
            &twogpower
        } else {
            &onem2gpower
        };
        let ln2 = j2 - k1 + 1;
        if ln2 > 0 {
            let start = (k1 - v0s).max(0) as usize;
            let a: Vec<f64> = v0[start.min(npwrs)..(start + ln2 as usize).min(npwrs)].to_vec();
            let b = &pwrs[..(ln2 as usize).min(npwrs)];
            let mut conv = vec![0.0; a.len() + b.len() - 1];
            for (p, &av) in a.iter().enumerate() {
                for (q, &bv) in b.iter().enumerate() {
                    conv[p + q] += av * bv;
                }
            }
            let conv_start = (j1 - k1).max(0) as usize;
            let conv_len = (j2 - j1 + 1).max(0) as usize;
            for (slot, value) in v1.iter_mut().zip(conv.iter().skip(conv_start).take(conv_len)) {
                *slot = *value;
            }
            let max = v1.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if 0.0 < max && max < em128 {
                v1.iter_mut().for_each(|x| *x *= ep128);
                expnt -= E128;
            }
            v1s = v0s + j1 - k1;
        }
    }
    let mut ans = v1.get((n_i - v1s).max(0) as usize).copied().unwrap_or(0.0);
    for m in 1..=n {
        if ans.abs() > ep128 {
            ans *= em128;
            expnt += E128;
        }
        ans *= m as f64;
    }
    if expnt != 0 {
        ans = ldexp(ans, expnt);
    }
    clip(ans)
}

/// Pelz–Good approximation of the Kolmogorov CDF, as scipy's `_kolmogn_PelzGood`.
fn kolmogn_pelz_good_cdf(n: u64, x: f64) -> f64 {
    use std::f64::consts::PI;
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let z = (n as f64).sqrt() * x;
    let (zsquared, zthree, zfour, zsix) = (z * z, z.powi(3), z.powi(4), z.powi(6));
    let pi2 = PI * PI;
    let pi4 = pi2 * pi2;
    let pi6 = pi4 * pi2;
    let qlog = -pi2 / 8.0 / zsquared;
    if qlog < -708.0 {
        return 0.0;
    }
    let q = qlog.exp();
    let k1a = -zsquared;
    let k1b = pi2 / 4.0;
    let k2a = 6.0 * zsix + 2.0 * zfour;
    let k2b = (2.0 * zfour - 5.0 * zsquared) * pi2 / 4.0;
    let k2c = pi4 * (1.0 - 2.0 * zsquared) / 16.0;
    let k3d = pi6 * (5.0 - 30.0 * zsquared) / 64.0;
    let k3c = pi4 * (-60.0 * zsquared + 212.0 * zfour) / 16.0;
    let k3b = pi2 * (135.0 * zfour - 96.0 * zsix) / 4.0;
    let k3a = -30.0 * zsix - 90.0 * z.powi(8);
    let mut k = [0.0f64; 4];
    let maxk = (16.0 * z / PI).ceil() as i64;
    for kk in (1..=maxk).rev() {
        let m = (2 * kk - 1) as f64;
        let (m2, m4, m6) = (m * m, m.powi(4), m.powi(6));
        let qpower = q.powf(8.0 * kk as f64);
        let coeffs = [1.0, k1a + k1b * m2, k2a + k2b * m2 + k2c * m4, k3a + k3b * m2 + k3c * m4 + k3d * m6];
        for (slot, c) in k.iter_mut().zip(coeffs) {
            *slot = *slot * qpower + c;
        }
    }
    let sqrt2pi = (2.0 * PI).sqrt();
    let divisors = [z, 6.0 * zfour, 72.0 * z.powi(7), 6480.0 * z.powi(10)];
    for (slot, d) in k.iter_mut().zip(divisors) {
        *slot = *slot * q * sqrt2pi / d;
    }
    let q = (-pi2 / 2.0 / zsquared).exp();
    let sqrt3z = 3f64.sqrt() * z;
    let (mut k2extra, mut k3extra) = (0.0, 0.0);
    for kk in (1..=maxk).rev() {
        let ks = kk as f64;
        let ksquared = ks * ks;
        let qpwer = q.powf(ksquared);
        k2extra += ksquared * qpwer;
        let kspi = PI * ks;
        k3extra += (sqrt3z + kspi) * (sqrt3z - kspi) * ksquared * qpwer;
    }
    k[2] += k2extra * pi2 * sqrt2pi / (-36.0 * zthree);
    k[3] += k3extra * pi2 * sqrt2pi / (216.0 * zsix);
    let nf = n as f64;
    for (i, slot) in k.iter_mut().enumerate() {
        *slot /= nf.powf(i as f64 / 2.0);
    }
    k.iter().sum()
}

/// `log(n! / n^n)` by Stirling's series, as scipy's `_log_nfactorial_div_n_pow_n`.
fn log_nfactorial_div_n_pow_n(n: u64) -> f64 {
    const STIRLING: [f64; 8] = [
        -0.029550653594771242,
        0.00641025641025641,
        -0.0019175269175269176,
        0.0008417508417508417,
        -0.0005952380952380953,
        0.0007936507936507937,
        -0.002777777777777778,
        0.08333333333333333,
    ];
    let nf = n as f64;
    let rn = 1.0 / nf;
    nf.ln() / 2.0 - nf + (2.0 * std::f64::consts::PI).ln() / 2.0 + rn * polevl(rn / nf, &STIRLING)
}

/// The one-sided Kolmogorov–Smirnov (Smirnov) survival function `P(D⁺_n > x)`, as
/// `scipy.special.smirnov(n, x)` (cephes `_smirnov`: Birnbaum–Tingey sum over the lower terms, or
/// the few upper terms when that is more accurate). Same terms, branches and stopping rule as
/// cephes; where cephes carries double-double arithmetic, the lower terms here are evaluated in
/// log space from Stirling's decomposition (relative error ~1e-13 up to n = 10⁶).
pub fn smirnov_sf(n: u64, x: f64) -> f64 {
    if !(n > 0 && (0.0..=1.0).contains(&x)) {
        return f64::NAN;
    }
    if n == 1 {
        return 1.0 - x;
    }
    if x == 0.0 {
        return 1.0;
    }
    if x == 1.0 {
        return 0.0;
    }
    let ni = n as i64;
    let nf = n as f64;
    // n·x split exactly into floor and fraction.
    let hi = nf * x;
    let lo = nf.mul_add(x, -hi);
    let mut nxfl = hi.floor();
    let mut alpha = (hi - nxfl) + lo;
    if alpha < 0.0 {
        nxfl -= 1.0;
        alpha += 1.0;
    }
    if alpha >= 1.0 {
        nxfl += 1.0;
        alpha = 0.0;
    }
    let nxfl = nxfl as i64;
    let mut n1mxfl = ni - nxfl - i64::from(alpha != 0.0);
    let mut n1mxceil = ni - nxfl;
    if alpha == 0.0 {
        n1mxfl -= 1;
        n1mxceil += 1;
    }
    if nxfl == 0 || (nxfl == 1 && alpha == 0.0) {
        let t = ((ni - 1) as f64 * x.ln_1p()).exp();
        return clip(1.0 - x * t);
    }
    if -2.0 * nf * x * x < MINLOG {
        return 0.0;
    }
    if nxfl >= ni - 1 {
        return clip((nf * (-x).ln_1p()).exp());
    }
    if n > 1_000_000 {
        let logp = -(6.0 * nf * x + 1.0).powi(2) / 18.0 / nf;
        return clip(if logp < -std::f64::consts::LN_2 { logp.exp() } else { 1.0 + logp.exp_m1() });
    }
    let n_upper_terms = ni - n1mxceil + 1;
    let use_upper = (n_upper_terms <= 1 && x < 0.5) || (ni >= 10 && n_upper_terms <= 3 && x <= 0.5 / nf.sqrt());

    // A_v = C(n, v) (1 - x - v/n)^(n-v) (x + v/n)^(v-1), in log space with its sign.
    let term = |v: i64, ln_binomial: f64| -> f64 {
        let base1 = ((ni - v - nxfl) as f64 - alpha) / nf;
        let base2 = ((nxfl + v) as f64 + alpha) / nf;
        let e1 = ni - v;
        let e2 = v - 1;
        if base1 == 0.0 {
            return if e1 == 0 { (ln_binomial + e2 as f64 * base2.ln()).exp() } else { 0.0 };
        }
        let magnitude = (ln_binomial + e1 as f64 * base1.abs().ln() + e2 as f64 * base2.ln()).exp();
        if base1 < 0.0 && e1 % 2 == 1 { -magnitude } else { magnitude }
    };
    let (start, step, n_terms, first) = if use_upper {
        // v = n: (1 + x)^(n-1)
        (ni, -1i64, ni - n1mxceil + 1, ((ni - 1) as f64 * x.ln_1p()).exp())
    } else {
        // v = 0: (1 - x)^n / x
        (0, 1, n1mxfl + 1, (nf * (-x).ln_1p() - x.ln()).exp())
    };
    // The lower terms by Stirling's decomposition of the binomial (see `ln_lower_term`): their
    // pieces are of the order of n·x, where the direct logarithms are of the order of n.
    let s = nxfl as f64 + alpha;
    let mut sum = first;
    let mut ln_binomial = nf.ln(); // C(n, 1)
    let vmid = ni / 2;
    for j in 1..n_terms {
        let v = start + j * step;
        let aj = if use_upper { term(v, ln_binomial) } else { ln_lower_term(n, v as u64, s).exp() };
        if aj.is_finite() && aj != 0.0 {
            sum += aj;
        }
        if aj != 0.0 {
            if 4.0 * (n_terms - j) as f64 * aj.abs() < f64::EPSILON * sum && j != n_terms - 1 {
                break;
            }
        } else if j > vmid {
            break;
        }
        ln_binomial += ((ni - j) as f64 / (j + 1) as f64).ln();
    }
    let prob = x * sum;
    clip(if step < 0 { 1.0 - prob } else { prob })
}

/// `ln k! − (k ln k − k + ½ ln 2πk)`: Stirling's remainder, exact (from the factorial) below 16,
/// from its asymptotic series above (truncation error < 1e-18).
fn stirling_remainder(k: u64) -> f64 {
    let kf = k as f64;
    if k < 16 {
        let factorial: f64 = (1..=k).map(|i| i as f64).product();
        return factorial.ln() - (kf * kf.ln() - kf + 0.5 * (2.0 * std::f64::consts::PI * kf).ln());
    }
    let r = 1.0 / kf;
    let r2 = r * r;
    r * (1.0 / 12.0
        - r2 * (1.0 / 360.0 - r2 * (1.0 / 1260.0 - r2 * (1.0 / 1680.0 - r2 * (1.0 / 1188.0 - r2 * 691.0 / 360360.0)))))
}

/// `ln A_v` for a lower Smirnov term, `A_v = C(n, v) (1 − (v+s)/n)^(n−v) ((v+s)/n)^(v−1)` with
/// `s = n·x`, `1 ≤ v < n − s`, rearranged with Stirling's formula so that no piece is larger than
/// about `s`:
/// `ln n + v·ln1p(s/v) − ln(v+s) + (n−v)·ln1p(−s/(n−v)) + ½(ln n − ln v − ln(n−v) − ln 2π)
///  + r(n) − r(v) − r(n−v)`.
fn ln_lower_term(n: u64, v: u64, s: f64) -> f64 {
    let (nf, vf) = (n as f64, v as f64);
    let rest = (n - v) as f64;
    nf.ln() + vf * (s / vf).ln_1p() - (vf + s).ln()
        + rest * (-s / rest).ln_1p()
        + 0.5 * (nf.ln() - vf.ln() - rest.ln() - (2.0 * std::f64::consts::PI).ln())
        + stirling_remainder(n)
        - stirling_remainder(v)
        - stirling_remainder(n - v)
}

/// The two-sided one-sample Kolmogorov–Smirnov survival function `P(D_n > x)`, as
/// `scipy.stats.kstwo.sf(x, n)` (`_kolmogn(n, x, cdf=False)`).
pub fn kstwo_sf(n: u64, x: f64) -> f64 {
    if n == 0 || x.is_nan() {
        return f64::NAN;
    }
    let nf = n as f64;
    // Support of kstwo is (0.5/n, 1).
    if x <= 0.5 / nf {
        return 1.0;
    }
    if x >= 1.0 {
        return 0.0;
    }
    let t = nf * x;
    if t <= 1.0 {
        if t <= 0.5 {
            return 1.0;
        }
        let prob = if n <= 140 {
            (1..=n).map(|i| i as f64 * (1.0 / nf) * (2.0 * t - 1.0)).product::<f64>()
        } else {
            (log_nfactorial_div_n_pow_n(n) + nf * (2.0 * t - 1.0).ln()).exp()
        };
        return clip(1.0 - prob);
    }
    if t >= nf - 1.0 {
        return clip(2.0 * (1.0 - x).powf(nf));
    }
    if x >= 0.5 {
        return clip(2.0 * smirnov_sf(n, x));
    }
    let nxsquared = t * x;
    if n <= 140 {
        if nxsquared <= 0.754693 {
            return clip(1.0 - kolmogn_dmtw_cdf(n, x));
        }
        if nxsquared <= 4.0 {
            return clip(1.0 - kolmogn_pomeranz_cdf(n, x));
        }
        return clip(2.0 * smirnov_sf(n, x));
    }
    if nxsquared >= 370.0 {
        return 0.0;
    }
    if nxsquared >= 2.2 {
        return clip(2.0 * smirnov_sf(n, x));
    }
    let cdf = if nxsquared >= 18.0 {
        1.0
    } else if n <= 100_000 && nf * x.powf(1.5) <= 1.4 {
        kolmogn_dmtw_cdf(n, x)
    } else {
        kolmogn_pelz_good_cdf(n, x)
    };
    clip(1.0 - cdf)
}

/// How [`ks_2samp_pvalue`] computed its p-value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KsMode {
    /// The exact distribution of the two-sample statistic.
    Exact,
    /// The asymptotic (one-sample Kolmogorov with `n = n1·n2/(n1+n2)`) distribution.
    Asymp,
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// `_compute_prob_outside_square(n, h)`: `P(D_{n,n} ≥ h/n)`.
fn prob_outside_square(n: u64, h: u64) -> f64 {
    let (n, h) = (n as i64, h as i64);
    let mut p = 0.0;
    let mut k = (n as f64 / h as f64).floor() as i64;
    while k >= 0 {
        let mut p1 = 1.0;
        for j in 0..h {
            p1 = (n - k * h - j) as f64 * p1 / (n + k * h + j + 1) as f64;
        }
        p = p1 * (1.0 - p);
        k -= 1;
    }
    2.0 * p
}

/// `_compute_outer_prob_inside_method(m, n, g, h)`: the proportion of lattice paths that leave
/// the band `|x/m − y/n| < h / lcm(m, n)` (Viehmann's recursion for 1 − p).
fn outer_prob_inside(m: u64, n: u64, g: u64, h: u64) -> f64 {
    let (m, n) = if m < n { (n, m) } else { (m, n) };
    let (m, n, g, h) = (m as i64, n as i64, g as i64, h as i64);
    let mg = m / g;
    let ng = n / g;
    let mut minj = 0i64;
    let mut maxj = ((h as f64 / mg as f64).ceil() as i64).min(n + 1);
    let mut curlen = maxj - minj;
    let len_a = (2 * maxj + 2).min(n + 1).max(0) as usize;
    // Sized for any index the recursion can reach; entries past `len_a` are never read.
    let mut a = vec![1.0f64; (n as usize + 2).max(len_a)];
    for slot in a.iter_mut().take(maxj.max(0) as usize).skip(minj as usize) {
        *slot = 0.0;
    }
    for i in 1..=m {
        let (lastminj, lastlen) = (minj, curlen);
        minj = ((((ng * i - h) as f64 / mg as f64).floor() as i64) + 1).max(0);
        minj = minj.min(n);
        maxj = (((ng * i + h) as f64 / mg as f64).ceil() as i64).min(n + 1);
        if maxj <= minj {
            return 1.0;
        }
        let mut val = if minj == 0 { 0.0 } else { 1.0 };
        for jj in 0..(maxj - minj) {
            let j = jj + minj;
            let from = (jj + minj - lastminj) as usize;
            val = (a[from] * i as f64 + val * j as f64) / (i + j) as f64;
            a[jj as usize] = val;
        }
        curlen = maxj - minj;
        if lastlen > curlen {
            let from = (maxj - minj) as usize;
            for slot in a.iter_mut().skip(from).take((lastlen - curlen) as usize) {
                *slot = 1.0;
            }
        }
    }
    a[(maxj - minj - 1) as usize]
}

/// `scipy.stats.ks_2samp(data1, data2)` (two-sided, `method="auto"`) given the sample sizes and
/// the statistic `d`: returns the statistic as scipy reports it (rounded to a multiple of
/// `1/lcm(n1, n2)` on the exact path), the p-value, and the method used.
pub fn ks_2samp_pvalue(n1: u64, n2: u64, d: f64) -> (f64, f64, KsMode) {
    const MAX_AUTO_N: u64 = 10_000;
    let g = gcd(n1, n2);
    let mut d = d;
    if n1.max(n2) <= MAX_AUTO_N {
        let lcm = (n1 / g) * n2;
        let h = (d * lcm as f64).round_ties_even();
        d = h / lcm as f64;
        if h == 0.0 {
            return (d, 1.0, KsMode::Exact);
        }
        let h = h as u64;
        let prob = if n1 == n2 { prob_outside_square(n1, h) } else { outer_prob_inside(n1, n2, g, h) };
        if (0.0..=1.0).contains(&prob) {
            return (d, prob, KsMode::Exact);
        }
    }
    let (m, n) = (n1.max(n2) as f64, n1.min(n2) as f64);
    let en = m * n / (m + n);
    (d, clip(kstwo_sf(en.round_ties_even() as u64, d)), KsMode::Asymp)
}
