//! Build script: converts the admin REST OpenAPI spec (`openapi/admin_rest.yaml`) to JSON in
//! `OUT_DIR`, so the server embeds it and serves it at `{admin_rest_base}/openapi.json` without
//! carrying a YAML parser. A spec that does not parse fails the build.

use std::path::PathBuf;

fn main() {
    let spec = "openapi/admin_rest.yaml";
    println!("cargo::rerun-if-changed={spec}");
    let text = match std::fs::read_to_string(spec) {
        Ok(t) => t,
        Err(e) => {
            println!("cargo::error={spec}: {e}");
            std::process::exit(1);
        }
    };
    let value: serde_json::Value = match serde_norway::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            println!("cargo::error={spec} is not valid YAML: {e}");
            std::process::exit(1);
        }
    };
    let out =
        PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default()).join("admin_rest.json");
    let json = serde_json::to_string(&value).unwrap_or_default();
    // Write a new file and rename it over the old: a target dir copied with hard links
    // (`cp -al`) must not see this build's spec through a shared inode.
    let tmp = out.with_extension("json.tmp");
    if let Err(e) = std::fs::write(&tmp, json).and_then(|()| std::fs::rename(&tmp, &out)) {
        println!("cargo::error={}: {e}", out.display());
        std::process::exit(1);
    }
}
