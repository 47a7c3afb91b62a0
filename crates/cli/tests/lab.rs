//! The experiment layer from the command line: the tour's catalog.

mod common;

use common::{assert_ok, assert_one_line_error, interplab};

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_tour_lists_every_experiment_with_its_question() {
    let out = interplab(&["tour"]);
    assert_ok(&out);
    let text = stdout(&out);
    for name in [
        "run",
        "heads",
        "compose",
        "ablate",
        "lens",
        "patch",
        "trace",
        "diff",
        "ioi",
        "toy-superposition",
        "toy-grokking",
        "toy-induction",
        "toy-whispers",
    ] {
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} not listed: {text}"));
        assert!(
            line.trim_end().ends_with('?'),
            "no question for {name}: {line}"
        );
    }
    assert_one_line_error(&interplab(&["tour", "no-such", "--quick"]), "no experiment");
}
