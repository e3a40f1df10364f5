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
        stdout.contains("ok event")
            && stdout.contains("ok receipt")
            && stdout.contains("ok posture"),
        "{stdout}"
    );
}

/// Checks JSON objects a test got from the server against a schema of
/// schemas/ (with the same outside validator).
pub fn assert_valid(kind: &str, objects: &[serde_json::Value]) {
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = tempfile::tempdir().unwrap();
    let md = dir.path().join("objects.md");
    let mut text = String::new();
    for o in objects {
        text.push_str(&format!("<!-- schema: {kind} -->\n```json\n{o:#}\n```\n\n"));
    }
    std::fs::write(&md, text).unwrap();
    let out = Command::new("python3")
        .arg(format!("{root}/tests/py/validate_readme.py"))
        .arg(&md)
        .args(["--only", kind])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{kind} objects do not match the schema:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
