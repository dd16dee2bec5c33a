//! Builds the dashboards' files into the binary: every file of `app/` (but the npm files and
//! `node_modules`), and Apache ECharts from `app/node_modules`, installed here with `npm ci` from
//! the pinned `app/package-lock.json` when it is missing. Each file is also gzipped here, so that
//! the server sends the compressed bytes without compressing per request.

// A build script reports a failure by panicking with its reason.
#![allow(clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the page asks for ECharts, and where npm puts it.
const ECHARTS_URL: &str = "vendor/echarts.min.js";
const ECHARTS_FILE: &str = "node_modules/echarts/dist/echarts.min.js";

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
    let web = manifest.join("app");
    println!("cargo:rerun-if-changed=app/package-lock.json");
    let echarts = web.join(ECHARTS_FILE);
    if !echarts.exists() || installed_version(&web) != pinned_version(&web) {
        install(&web);
    }
    let mut files = Vec::new();
    collect(&web, &web, &mut files);
    files.sort();
    let mut assets = vec![(ECHARTS_URL.to_owned(), echarts)];
    assets.extend(files);
    let mut code = String::from("pub static ASSETS: &[Asset] = &[\n");
    for (i, (url, path)) in assets.iter().enumerate() {
        let bytes =
            std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let gz = out.join(format!("asset-{i}.gz"));
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(&bytes).expect("gzip in memory");
        std::fs::write(&gz, encoder.finish().expect("gzip in memory"))
            .unwrap_or_else(|e| panic!("writing {}: {e}", gz.display()));
        let mut crc = flate2::Crc::new();
        crc.update(&bytes);
        code.push_str(&format!(
            "    Asset {{ path: {url:?}, content_type: {ct:?}, etag: \"\\\"{crc:08x}-{len:x}\\\"\", body: include_bytes!({body:?}), gzip: include_bytes!({gz:?}) }},\n",
            ct = content_type(url),
            crc = crc.sum(),
            len = bytes.len(),
            body = path.display().to_string(),
            gz = gz.display().to_string(),
        ));
    }
    code.push_str("];\n");
    std::fs::write(out.join("assets.rs"), code).expect("writing assets.rs");
}

/// The ECharts version `app/package-lock.json` pins.
fn pinned_version(web: &Path) -> Option<String> {
    let lock: serde_json::Value =
        serde_json::from_slice(&std::fs::read(web.join("package-lock.json")).ok()?).ok()?;
    lock["packages"]["node_modules/echarts"]["version"]
        .as_str()
        .map(str::to_owned)
}

/// The ECharts version installed in `app/node_modules`.
fn installed_version(web: &Path) -> Option<String> {
    let package: serde_json::Value =
        serde_json::from_slice(&std::fs::read(web.join("node_modules/echarts/package.json")).ok()?)
            .ok()?;
    package["version"].as_str().map(str::to_owned)
}

/// `npm ci` in `web`: ECharts at the version the lock file pins.
fn install(web: &Path) {
    eprintln!(
        "installing the dashboards' npm packages (npm ci in {})",
        web.display()
    );
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(web)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!(
            "`npm ci` in {} failed ({s}): the dashboards need Apache ECharts from the npm registry",
            web.display()
        ),
        Err(e) => panic!(
            "could not run npm ({e}): the dashboards need Node.js and npm to install Apache ECharts (`npm ci` in {})",
            web.display()
        ),
    }
}

/// The files under `dir` the page is made of, with their URL below `/dashboards/`.
fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, PathBuf)>) {
    println!("cargo:rerun-if-changed={}", dir.display());
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with('.')
            || matches!(name, "node_modules" | "package.json" | "package-lock.json")
        {
            continue;
        }
        if path.is_dir() {
            collect(root, &path, files);
        } else if !content_type(name).is_empty() {
            println!("cargo:rerun-if-changed={}", path.display());
            let url = path
                .strip_prefix(root)
                .expect("below the root")
                .to_string_lossy()
                .replace('\\', "/");
            files.push((url, path));
        }
    }
}

/// The content type of a file the page serves; empty for files that are not served.
fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next().unwrap_or_default() {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        _ => "",
    }
}
