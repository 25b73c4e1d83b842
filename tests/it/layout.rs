//! The tests' own layout: one test binary, and no test file left out of it.

use std::path::Path;

const TESTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests");

fn names_in(dir: &Path) -> Vec<(String, bool)> {
    let mut names: Vec<(String, bool)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            (name, entry.file_type().unwrap().is_dir())
        })
        .collect();
    names.sort();
    names
}

/// Cargo makes a test binary of every `tests/*.rs` and `tests/*/main.rs`: only `it` may be
/// one, and each file in `tests/it` must be a module of it, or it would never be compiled.
#[test]
fn one_test_binary() {
    let mut binaries = Vec::new();
    for (name, is_dir) in names_in(Path::new(TESTS)) {
        if !is_dir && name.ends_with(".rs") {
            binaries.push(name);
        } else if is_dir && Path::new(TESTS).join(&name).join("main.rs").exists() {
            binaries.push(format!("{name}/main.rs"));
        }
    }
    assert_eq!(binaries, ["it/main.rs"]);

    let main = std::fs::read_to_string(Path::new(TESTS).join("it/main.rs")).unwrap();
    let mut declared: Vec<&str> = (main.lines())
        .filter_map(|l| l.strip_prefix("mod ")?.strip_suffix(';'))
        .filter(|&m| m != "support")
        .collect();
    declared.sort();
    let files: Vec<String> = (names_in(&Path::new(TESTS).join("it")).into_iter())
        .filter_map(|(name, is_dir)| {
            assert!(!is_dir, "tests/it/{name}: a folder in the test binary");
            Some(name.strip_suffix(".rs")?.to_owned())
        })
        .filter(|name| name != "main")
        .collect();
    assert_eq!(
        declared, files,
        "tests/it/main.rs declares every file in tests/it"
    );
}
