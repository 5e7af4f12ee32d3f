//! `--repeat`: two repetitions of one quick test on debian:sid, each in its own
//! guest (about 15 s each under TCG). Needs the cached QEMU and kernel.

mod common;

use common::{results, runner};

#[test]
fn two_repetitions_in_fresh_guests_with_a_histogram() {
    let out = tempfile::tempdir().expect("temp dir");
    let status = runner()
        .args([
            "--kernel",
            "debian:sid",
            "--repeat",
            "2",
            "--filter",
            "setup.*",
            "--out",
        ])
        .arg(out.path())
        .status()
        .expect("runner starts");
    assert_eq!(status.code(), Some(0));
    for k in 1..=2 {
        let rep = results(&out.path().join(format!("rep{k}")));
        assert_eq!(rep["runs"][0]["tests"][0]["result"], "pass");
        assert_eq!(rep["runs"][0]["boots"].as_array().map_or(1, Vec::len), 1);
        assert!(out.path().join(format!("rep{k}/console.log")).exists());
    }
    let top = results(out.path());
    assert_eq!(top["runs"][0]["kernel"]["spec"], "debian:sid");
    assert_eq!(top["repetitions"].as_array().unwrap().len(), 2);
    let f = &top["flakiness"][0];
    assert_eq!(f["repetitions"], 2);
    assert_eq!(f["outcomes"]["completed"], 2);
    assert_eq!(f["tests"][0]["test"], "setup.bind_vfio");
    assert_eq!(f["tests"][0]["counts"]["pass"], 2);
}
