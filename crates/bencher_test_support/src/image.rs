//! OCI images built in code for tests: an OCI image layout directory (what `skopeo`,
//! `crane` and `bencher image push` read) with gzip layers made from in-memory files.

use std::path::Path;

use sha2::{Digest as _, Sha256};

/// One file of a layer: path inside the image, contents, mode.
pub struct File<'a> {
    pub path: &'a str,
    pub contents: &'a [u8],
    pub mode: u32,
}

/// What was written, for assertions.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    pub manifest_digest: String,
    pub config_digest: String,
    pub layer_digests: Vec<String>,
    pub manifest: Vec<u8>,
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

fn write_blob(layout: &Path, bytes: &[u8]) -> String {
    let digest = sha256(bytes);
    let path = layout.join("blobs/sha256").join(&digest["sha256:".len()..]);
    std::fs::write(path, bytes).expect("write blob");
    digest
}

/// A gzip-compressed tar of `files`, and the digest of the uncompressed tar (its diff ID).
pub fn gzip_layer(files: &[File<'_>]) -> (Vec<u8>, String) {
    let mut builder = tar::Builder::new(Vec::new());
    for file in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(file.contents.len() as u64);
        header.set_mode(file.mode);
        header.set_mtime(1_700_000_000);
        header.set_cksum();
        builder
            .append_data(&mut header, file.path, file.contents)
            .expect("append to tar");
    }
    let tar = builder.into_inner().expect("finish tar");
    let diff_id = sha256(&tar);
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut encoder, &tar).expect("gzip");
    (encoder.finish().expect("gzip"), diff_id)
}

/// Writes an OCI image layout at `layout` holding one linux/amd64 image tagged `tag`,
/// with one layer per entry of `layers` and the given command.
pub fn write_layout(
    layout: &Path,
    tag: &str,
    layers: &[Vec<File<'_>>],
    cmd: &[&str],
) -> BuiltImage {
    std::fs::create_dir_all(layout.join("blobs/sha256")).expect("layout dirs");
    std::fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("oci-layout");
    let mut layer_descriptors = Vec::new();
    let mut diff_ids = Vec::new();
    let mut layer_digests = Vec::new();
    for files in layers {
        let (blob, diff_id) = gzip_layer(files);
        let digest = write_blob(layout, &blob);
        layer_descriptors.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": digest,
            "size": blob.len(),
        }));
        diff_ids.push(diff_id);
        layer_digests.push(digest);
    }
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Cmd": cmd, "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"], "WorkingDir": "/" },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    });
    let config = serde_json::to_vec(&config).expect("config JSON");
    let config_digest = write_blob(layout, &config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": layer_descriptors,
    }))
    .expect("manifest JSON");
    let manifest_digest = write_blob(layout, &manifest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": { "org.opencontainers.image.ref.name": tag },
        }],
    });
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).expect("index JSON"),
    )
    .expect("index.json");
    BuiltImage {
        manifest_digest,
        config_digest,
        layer_digests,
        manifest,
    }
}
