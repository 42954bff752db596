use super::*;

#[test]
fn pitch_shift_drops_notes_leaving_the_range() {
    let t = tok();
    let seq = ids(
        &t,
        "<S> piano:120:80 onset:0 dur:100 drum:36 onset:10 piano:60:80 onset:20 dur:10 <E>",
    );
    assert_eq!(
        strs(&t, &t.pitch_shift(&seq, 10)),
        "<S> drum:36 onset:10 piano:70:80 onset:20 dur:10 <E>"
    );
    assert_eq!(
        strs(&t, &t.pitch_shift(&seq, -61)),
        "<S> piano:59:80 onset:0 dur:100 drum:36 onset:10 <E>"
    );
    assert_eq!(t.pitch_shift(&seq, 0), seq);
    assert_eq!(
        strs(&t, &t.pitch_shift(&seq, i32::MIN)),
        "<S> drum:36 onset:10 <E>"
    );
}

#[test]
fn velocity_shift_clamps() {
    let t = tok();
    let seq = ids(
        &t,
        "piano:60:10 onset:0 dur:10 piano:61:120 onset:0 dur:10 drum:40 onset:0",
    );
    assert_eq!(
        strs(&t, &t.velocity_shift(&seq, 1)),
        "piano:60:20 onset:0 dur:10 piano:61:127 onset:0 dur:10 drum:40 onset:0"
    );
    assert_eq!(
        strs(&t, &t.velocity_shift(&seq, -100)),
        "piano:60:10 onset:0 dur:10 piano:61:10 onset:0 dur:10 drum:40 onset:0"
    );
}

#[test]
fn tempo_scale_piece_and_prompt() {
    let t = tok();
    for f in [0.24, 4.01, f64::NAN, f64::INFINITY] {
        assert!(err_text(t.tempo_scale(&[], f)).contains("factor"));
    }
    let piece = t.encode_piece(&example());
    assert_eq!(
        strs(&t, &t.tempo_scale(&piece, 2.0).unwrap()),
        "<S> <A_SECTION> piano:60:80 onset:0 dur:1000 piano:64:60 onset:2000 dur:1000 \
         <T> <T> <D> <B_SECTION> drum:36 onset:2000 piano:67:100 onset:2000 dur:4000 <E>"
    );
    assert_eq!(
        strs(&t, &t.tempo_scale(&piece, 0.5).unwrap()),
        "<S> <A_SECTION> piano:60:80 onset:0 dur:250 piano:64:60 onset:500 dur:250 \
         <D> <B_SECTION> drum:36 onset:3000 piano:67:100 onset:3000 dur:1000 <E>"
    );
    assert_eq!(t.tempo_scale(&piece, 1.0).unwrap(), piece);

    // Each snippet keeps its own time line; the piece restarts at `<S>`.
    let seq = ids(
        &t,
        "style:reel <PROMPT_START> <A_SECTION> piano:60:80 onset:3000 dur:100 <B_SECTION> piano:62:80 onset:2600 dur:100 \
         <PROMPT_END> <S> piano:64:80 onset:2500 dur:5000 <T> <T> <C_SECTION> <E>",
    );
    assert_eq!(
        strs(&t, &t.tempo_scale(&seq, 2.0).unwrap()),
        "style:reel <PROMPT_START> <A_SECTION> <T> piano:60:80 onset:1000 dur:200 <B_SECTION> <T> piano:62:80 onset:200 \
         dur:200 <PROMPT_END> <S> <T> piano:64:80 onset:0 dur:5000 <T> <T> <T> <C_SECTION> <E>"
    );
}
