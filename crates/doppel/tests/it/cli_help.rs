//! `doppel --help` and every command group's help show examples.

use std::process::Command;

fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_doppel"))
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success(), "doppel {args:?} --help failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn every_command_group_shows_examples() {
    let top = help(&[]);
    assert!(top.contains("Examples:"), "{top}");
    // The groups are the commands `doppel --help` lists.
    let groups: Vec<String> = top
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .filter(|g| g != "help")
        .collect();
    assert!(groups.len() >= 10, "{groups:?}");
    for g in groups {
        let text = help(&[&g]);
        assert!(
            text.contains("Example"),
            "`doppel {g} --help` shows no example:\n{text}"
        );
    }
}
