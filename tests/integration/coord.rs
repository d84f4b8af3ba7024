use shapewise::coord::{CoordAxis, CoordOptions, run_coord_check};
use shapewise::param::{AttentionScale, Parameterization};

/// The depth coordinate check of the spec (Fig. 7 of the paper) at a size CI can afford: width 64,
/// depths 2..32, a few steps. Thresholds were set from measurements (see the README) with room for
/// seed noise, and fail if the residual multiplier or the depth LR rules are wrong: without the
/// multiplier, CompleteP's residual grows like SP's.
#[test]
fn depth_coordinate_check_has_the_expected_shapes() {
    let options = CoordOptions {
        axis: CoordAxis::Depth,
        parameterizations: vec![
            Parameterization::Sp,
            Parameterization::Mup,
            Parameterization::DepthMup,
            Parameterization::CompleteP,
        ],
        depths: vec![2, 4, 8, 16, 32],
        widths: vec![],
        width: 64,
        depth: 2,
        steps: 6,
        seeds: 2,
        lr: 2f64.powi(-8),
        batch: 4,
        context: 32,
        d_head: 32,
        attention_scale: AttentionScale::DHead,
    };
    let table = run_coord_check(&options, &mut |_| {}).unwrap();
    eprintln!("{}", table.summary());
    let last = table.last_step();
    let k = |p, step| table.residual_slope(p, step);
    // SP and muP: about L^1/2 at init, faster than linear after a few steps.
    for p in [Parameterization::Sp, Parameterization::Mup] {
        assert!(k(p, 1) > 0.35, "{p} step 1 exponent {}", k(p, 1));
        assert!(k(p, last) > 0.7, "{p} step {last} exponent {}", k(p, last));
    }
    // depth-muP: flat from the start; CompleteP: falling at init (branches weigh 1/L), then flat.
    assert!(k(Parameterization::DepthMup, 1).abs() < 0.1);
    assert!(k(Parameterization::CompleteP, 1) < -0.05);
    for p in [Parameterization::DepthMup, Parameterization::CompleteP] {
        assert!(
            k(p, last).abs() < 0.3,
            "{p} step {last} exponent {}",
            k(p, last)
        );
    }
}
