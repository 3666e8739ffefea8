//! Shared by the runner's integration tests: an image made of the host's `sh` and
//! `sleep` with their libraries, pushed to a test server's registry. No network or
//! package needed.

use bencher_oci::digest::Digest;
use bencher_test_support::TestServer;
use bencher_test_support::reqwest::Method;
use serde_json::{Value, json};

/// The repository (and project slug) the test image is pushed to.
pub const E2E_REPO: &str = "agent-e2e";

/// An image of the host's `sh` and `sleep` with the libraries `ldd` lists: no network
/// or package needed. Returns (config, layer blob, manifest).
pub fn host_image() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let mut files: std::collections::BTreeMap<String, std::path::PathBuf> = Default::default();
    for (name, host) in [("bin/sh", "/bin/sh"), ("bin/sleep", "/bin/sleep")] {
        let host = std::path::Path::new(host).canonicalize().unwrap();
        let ldd = std::process::Command::new("ldd")
            .arg(&host)
            .output()
            .expect("ldd");
        for library in String::from_utf8_lossy(&ldd.stdout)
            .split_whitespace()
            .filter(|word| word.starts_with('/'))
        {
            files.insert(library.trim_start_matches('/').to_owned(), library.into());
        }
        files.insert(name.to_owned(), host);
    }
    let mut builder = tar::Builder::new(Vec::new());
    let mut dirs = std::collections::BTreeSet::new();
    for path in files.keys() {
        let mut parent = std::path::Path::new(path).parent();
        while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(dir.to_string_lossy().into_owned());
            parent = dir.parent();
        }
    }
    for dir in dirs
        .iter()
        .chain(["etc".to_owned(), "tmp".to_owned()].iter())
    {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_size(0);
        builder.append_data(&mut header, dir, &[][..]).unwrap();
    }
    for (path, host) in &files {
        let contents = std::fs::read(host).unwrap();
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o755);
        header.set_size(contents.len() as u64);
        builder
            .append_data(&mut header, path, &contents[..])
            .unwrap();
    }
    let passwd = b"root:x:0:0:root:/root:/bin/sh\n";
    let mut header = tar::Header::new_gnu();
    header.set_mode(0o644);
    header.set_size(passwd.len() as u64);
    builder
        .append_data(&mut header, "etc/passwd", &passwd[..])
        .unwrap();
    let tar = builder.into_inner().unwrap();
    let diff_id = Digest::sha256_of(&tar);
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut encoder, &tar).unwrap();
    let layer = encoder.finish().unwrap();

    let config = serde_json::to_vec(&json!({
        "architecture": bencher_oci::platform::Platform::host().architecture,
        "os": "linux",
        "config": {"Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]},
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": Digest::sha256_of(&config).to_string(),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": Digest::sha256_of(&layer).to_string(),
            "size": layer.len(),
        }],
    }))
    .unwrap();
    (config, layer, manifest)
}

/// Pushes the host image; returns the project's UUID and the manifest digest.
pub async fn push_host_image(server: &TestServer) -> (String, String) {
    let (config, layer, manifest) = host_image();
    for blob in [&config, &layer] {
        let digest = Digest::sha256_of(blob);
        let response = server
            .request(
                Method::POST,
                &format!("/v2/{E2E_REPO}/blobs/uploads/?digest={digest}"),
            )
            .header("content-type", "application/octet-stream")
            .body(blob.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{:?}", response.text().await);
    }
    let response = server
        .request(Method::PUT, &format!("/v2/{E2E_REPO}/manifests/v1"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{:?}", response.text().await);
    let project: Value = server
        .request(Method::GET, &format!("/v0/projects/{E2E_REPO}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let uuid = project["uuid"].as_str().expect("project uuid").to_owned();
    (uuid, Digest::sha256_of(&manifest).to_string())
}
