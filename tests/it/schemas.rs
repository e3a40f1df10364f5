//! The JSON Schemas in schemas/ against the README's examples and the
//! contract's vectors (validated by Python's `jsonschema`, an outside tool).

use std::process::Command;

#[test]
fn readme_examples_and_vectors_validate_against_the_schemas() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("python3")
        .arg(format!("{root}/tests/py/validate_readme.py"))
        .arg(format!("{root}/README.md"))
        .arg("--vectors")
        .arg(format!("{root}/tests/data/contract-v1.json"))
        .output()
        .expect("python3 runs (the test command installs jsonschema)");
    assert!(
        out.status.success(),
        "schema validation failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("ok event") && stdout.contains("ok receipt"),
        "{stdout}"
    );
}
