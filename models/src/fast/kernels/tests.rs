//! The kernels on every instruction set this CPU has, against each other and their definitions.

use super::*;

fn lcg(seed: &mut u64) -> f32 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

/// Rows of `kp` f32 weights packed as f16 bits and as offset int8 with their block scales.
fn pack(w: &[f32], kp: usize) -> (Vec<u16>, Vec<u8>, Vec<f32>) {
    let wh = w
        .iter()
        .map(|v| half::f16::from_f32(*v).to_bits())
        .collect();
    let mut wq = vec![0u8; w.len()];
    let mut ws = vec![0f32; w.len() / QBLOCK];
    let rows = w.chunks_exact(kp).zip(wq.chunks_exact_mut(kp));
    for ((row, q), s) in rows.zip(ws.chunks_exact_mut(kp / QBLOCK)) {
        quantize_weight_row(row, q, s);
    }
    (wh, wq, ws)
}

#[test]
fn f16_conversion_agrees_on_every_isa() {
    let mut seed = 5u64;
    let x: Vec<f32> = (0..77).map(|_| lcg(&mut seed) * 100.0).collect();
    let h: Vec<u16> = x.iter().map(|v| f32_to_f16_sat(*v)).collect();
    for isa in Isa::available() {
        let mut y = vec![0f32; 77];
        f16_to_f32(isa, &h, &mut y);
        for (a, b) in y.iter().zip(&x) {
            assert!((a - b).abs() <= b.abs() * 1e-3, "{isa:?}: {a} vs {b}");
        }
    }
    assert_eq!(half::f16::from_bits(f32_to_f16_sat(1e9)).to_f32(), 65504.0);
    assert_eq!(
        half::f16::from_bits(f32_to_f16_sat(-1e9)).to_f32(),
        -65504.0
    );
}

#[test]
fn exp_approx_is_accurate() {
    let mut x = -87.0f32;
    while x < 88.0 {
        let e = x.exp();
        let a = exp_approx(x);
        assert!(((a - e) / e).abs() < 1e-6, "exp({x}) = {e}, approx {a}");
        x += 0.0137;
    }
    assert_eq!(exp_approx(f32::NEG_INFINITY), exp_approx(-87.0));
    assert!(exp_approx(-1000.0) < 1e-37);
}

#[test]
fn matvecs_agree_on_every_isa() {
    let mut seed = 7u64;
    let (rows, kp) = (37, 192);
    let w: Vec<f32> = (0..rows * kp).map(|_| lcg(&mut seed)).collect();
    let x: Vec<f32> = (0..kp).map(|_| lcg(&mut seed) * 3.0).collect();
    let exact: Vec<f32> = (0..rows)
        .map(|r| {
            (0..kp)
                .map(|i| w[r * kp + i] as f64 * x[i] as f64)
                .sum::<f64>() as f32
        })
        .collect();
    let (wh, wq, ws) = pack(&w, kp);
    let mut xq = vec![0i8; kp];
    let mut dx = vec![0f32; kp / 4];
    let mut bias = vec![0i32; kp / 4];
    quantize_acts(Isa::detect(), &x, &mut xq, &mut dx, &mut bias);
    let acts = QActs {
        xq: &xq,
        dx: &dx,
        bias: &bias,
    };
    let mut q8_ref = None::<Vec<f32>>;
    for isa in Isa::available() {
        let mut y = vec![0f32; rows];
        matvec_f32(isa, &w, kp, &x, &mut y);
        for (a, b) in y.iter().zip(&exact) {
            assert!((a - b).abs() < 1e-4, "{isa:?} f32: {a} vs {b}");
        }
        matvec_f16(isa, &wh, kp, &x, &mut y);
        for (a, b) in y.iter().zip(&exact) {
            assert!((a - b).abs() < 0.05, "{isa:?} f16: {a} vs {b}");
        }
        matvec_q8(isa, &wq, &ws, kp, &acts, &mut y);
        for (a, b) in y.iter().zip(&exact) {
            assert!((a - b).abs() < 0.3, "{isa:?} q8: {a} vs {b}");
        }
        // All ISAs compute the same integer block sums, so they agree tightly.
        match &q8_ref {
            None => q8_ref = Some(y.clone()),
            Some(r0) => {
                for (a, b) in y.iter().zip(r0) {
                    assert!(
                        (a - b).abs() < 1e-4,
                        "{isa:?} q8 differs from scalar: {a} vs {b}"
                    );
                }
            }
        }
    }
}

/// The quantization equals its plain sequential definition bit for bit on every ISA
/// (zero blocks, signed zeros, ties, NaN lanes included).
#[test]
fn quantize_acts_matches_its_definition() {
    let mut seed = 23u64;
    let n = 256;
    let mut x: Vec<f32> = (0..n).map(|_| lcg(&mut seed) * 4.0).collect();
    x[32..64].fill(0.0);
    x[64..96].fill(-0.0);
    x[96] = f32::NAN;
    x[130] = 127.0;
    x[131] = -63.5;
    x[160..192]
        .iter_mut()
        .for_each(|v| *v = (*v * 8.0).round() / 8.0);
    let mut want_q = vec![0i8; n];
    let mut want_d = vec![0f32; n / 4];
    let mut want_b = vec![0i32; n / 4];
    for b in 0..n / QBLOCK {
        let xs = &x[b * QBLOCK..(b + 1) * QBLOCK];
        let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        for (i, v) in xs.iter().enumerate() {
            want_q[b * QBLOCK + i] = round_small(v * id).clamp(-127.0, 127.0) as i8;
        }
        for l in 0..QBLOCK / 4 {
            let k = b * QBLOCK / 4 + l;
            want_d[k] = d;
            want_b[k] = -128 * (0..4).map(|j| want_q[4 * k + j] as i32).sum::<i32>();
        }
    }
    for isa in Isa::available() {
        let (mut q, mut d, mut b) = (vec![0i8; n], vec![0f32; n / 4], vec![0i32; n / 4]);
        quantize_acts(isa, &x, &mut q, &mut d, &mut b);
        assert_eq!(q, want_q, "{isa:?}");
        assert_eq!(bits(&d), bits(&want_d), "{isa:?}");
        assert_eq!(b, want_b, "{isa:?}");
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Every token of a multi-token mat-mul equals the mat-vec of that token, bit for bit, on
/// every ISA, for odd row and token counts (edge blocks) and strided rows.
#[test]
fn matmuls_equal_matvecs_bit_for_bit() {
    let mut seed = 17u64;
    for (rows, kp, n) in [(37, 192, 7), (2, 64, 1), (5, 128, 12), (64, 64, 16)] {
        let (xs, ys) = (kp + 64, rows + 3);
        let w: Vec<f32> = (0..rows * kp).map(|_| lcg(&mut seed)).collect();
        let x: Vec<f32> = (0..n * xs).map(|_| lcg(&mut seed) * 3.0).collect();
        let (wh, wq, ws) = pack(&w, kp);
        let mut xq = vec![0i8; n * kp];
        let mut dx = vec![0f32; n * kp / 4];
        let mut bias = vec![0i32; n * kp / 4];
        for t in 0..n {
            let k4 = kp / 4;
            quantize_acts(
                Isa::detect(),
                &x[t * xs..t * xs + kp],
                &mut xq[t * kp..(t + 1) * kp],
                &mut dx[t * k4..(t + 1) * k4],
                &mut bias[t * k4..(t + 1) * k4],
            );
        }
        let all = QActs {
            xq: &xq,
            dx: &dx,
            bias: &bias,
        };
        for isa in Isa::available() {
            let mut y = vec![f32::NAN; n * ys];
            let mut one = vec![0f32; rows];
            let check = |y: &[f32], t: usize, one: &[f32], what: &str| {
                for r in 0..rows {
                    assert_eq!(
                        y[t * ys + r].to_bits(),
                        one[r].to_bits(),
                        "{isa:?} {what} rows {rows} n {n}: token {t} row {r}"
                    );
                }
            };
            let xr = Rows::new(&x, n, kp, xs);
            matmul_f32(isa, &w, kp, xr, RowsMut::new(&mut y, n, rows, ys));
            for t in 0..n {
                matvec_f32(isa, &w, kp, &x[t * xs..t * xs + kp], &mut one);
                check(&y, t, &one, "f32");
            }
            let yr = RowsMut::new(&mut y, n, rows, ys);
            matmul_f16(isa, &wh, kp, xr, yr, &mut vec![0.0; 2 * kp]);
            for t in 0..n {
                matvec_f16(isa, &wh, kp, &x[t * xs..t * xs + kp], &mut one);
                check(&y, t, &one, "f16");
            }
            matmul_q8(isa, &wq, &ws, kp, &all, RowsMut::new(&mut y, n, rows, ys));
            for t in 0..n {
                matvec_q8(isa, &wq, &ws, kp, &all.token(t, kp), &mut one);
                check(&y, t, &one, "q8");
            }
            // The gaps between output rows are not written.
            assert!(y[rows..ys].iter().all(|v| v.is_nan()));
        }
    }
}

#[test]
fn elementwise_kernels_agree_on_every_isa() {
    let mut seed = 3u64;
    for hd in [6, 7, 16, 64] {
        attention_kernels(hd, 37, &mut seed);
    }
    let n = 19;
    for isa in Isa::available() {
        let raw: Vec<f32> = (0..n).map(|_| lcg(&mut seed) * 3.0).collect();
        let a: Vec<f32> = (0..n).map(|_| lcg(&mut seed) * 10.0).collect();
        let mut g = vec![0f32; n];
        swiglu(isa, &a, &raw, &mut g);
        for i in 0..n {
            let e = a[i] / (1.0 + (-a[i]).exp()) * raw[i];
            assert!((g[i] - e).abs() < 1e-5 * (1.0 + e.abs()));
        }
        let w: Vec<f32> = (0..n).map(|_| lcg(&mut seed)).collect();
        layer_norm(isa, &a, &w, 1e-5, &mut g);
        let mean: f32 = a.iter().sum::<f32>() / n as f32;
        let var: f32 = a.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / n as f32;
        for i in 0..n {
            let e = (a[i] - mean) / (var + 1e-5).sqrt() * w[i];
            assert!((g[i] - e).abs() < 1e-5);
        }
    }
}

fn attention_kernels(hd: usize, n: usize, seed: &mut u64) {
    let q: Vec<f32> = (0..hd).map(|_| lcg(seed)).collect();
    let keys: Vec<f32> = (0..n * hd).map(|_| lcg(seed)).collect();
    let mut kb = vec![f32::NAN; n.div_ceil(KEY_BLOCK) * KEY_BLOCK * hd];
    for t in 0..n {
        for j in 0..hd {
            kb[kblock_index(hd, t, j)] = keys[t * hd + j];
        }
    }
    // Unwritten tail positions of the last block hold garbage; it must not leak.
    for x in kb.iter_mut().filter(|x| x.is_nan()) {
        *x = 1e30;
    }
    let v: Vec<f32> = (0..n * hd).map(|_| lcg(seed)).collect();
    for isa in Isa::available() {
        let mut s = vec![0f32; n];
        scores_blocked(isa, &q, &kb, 0.5, &mut s);
        for t in 0..n {
            let e: f32 = (0..hd).map(|j| q[j] * keys[t * hd + j]).sum::<f32>() * 0.5;
            assert!((s[t] - e).abs() < 1e-5, "hd {hd} t {t}: {} vs {e}", s[t]);
        }
        let raw = s.clone();
        softmax(isa, &mut s);
        let m = raw.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let z: f32 = raw.iter().map(|x| (x - m).exp()).sum();
        for t in 0..n {
            assert!((s[t] - (raw[t] - m).exp() / z).abs() < 1e-6);
        }
        let mut out = vec![0f32; hd];
        weighted_sum(isa, &s, &v, &mut out);
        for j in 0..hd {
            let e: f32 = (0..n).map(|t| s[t] * v[t * hd + j]).sum();
            assert!((out[j] - e).abs() < 1e-5);
        }
    }
}
