//! Reading a `docker save` archive (`manifest.json`, a config, layer tars; the old
//! `<id>/layer.tar` layout and Docker 25's `blobs/sha256/<hex>` alike) into a push plan
//! with an OCI image manifest. IO: reads the archive once to hash every file, and for a
//! gzip-compressed archive unpacks the files into a temporary directory.
//!
//! A plain archive is never copied: each layer is pushed straight from its byte range
//! inside the archive, so memory and disk use stay flat whatever the image's size.
//! Layers keep their bytes, so their digests are the SHA-256 of each stored layer, and
//! their media type says whether those bytes are a tar, or a gzip or zstd tar.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek as _, SeekFrom, Write as _};
use std::path::{Component, Path};

use anyhow::{Context as _, bail};
use bencher_client::BlobSource;
use bencher_oci::config::ImageConfig;
use bencher_oci::digest::{Digest, DigestAlgorithm, DigestHasher};
use bencher_oci::manifest::{
    Descriptor, ImageManifest, Manifest, OCI_IMAGE_CONFIG, OCI_IMAGE_MANIFEST, OCI_LAYER_TAR,
    OCI_LAYER_TAR_GZIP, OCI_LAYER_TAR_ZSTD,
};
use serde::Deserialize;

use super::{Plan, PlannedBlob, PlannedManifest};

/// The largest `manifest.json` or config read into memory.
const MAX_METADATA_SIZE: u64 = 16 << 20;
/// Read buffer of the hashing pass.
const CHUNK: usize = 1 << 20;
/// Links in an archive point at files, or at most at a link or two; more is a loop.
const MAX_LINK_HOPS: usize = 16;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// One regular file of the archive.
struct Stored {
    size: u64,
    digest: Digest,
    /// The first bytes, to tell a compressed layer from a plain tar.
    magic: Vec<u8>,
    source: BlobSource,
}

enum Node {
    File(Stored),
    /// A symlink or hard link, with its target as an archive path.
    Link(String),
}

/// One entry of `manifest.json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ArchiveImage {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// The plan for the image of the archive at `path` tagged `source_tag`, or its only
/// image. For a compressed archive the returned plan owns the temporary directory the
/// files were unpacked to.
pub fn load(path: &Path, source_tag: Option<&str>) -> anyhow::Result<Plan> {
    let open = || File::open(path).with_context(|| format!("cannot open {}", path.display()));
    let mut head = [0u8; 2];
    let mut file = open()?;
    let read = file.read(&mut head).context("cannot read the archive")?;
    let (nodes, temp) = if read == 2 && head == GZIP_MAGIC {
        let temp = tempfile::tempdir().context("cannot create a directory to unpack into")?;
        let reader = flate2::read::GzDecoder::new(BufReader::new(open()?));
        (scan(reader, path, Some(temp.path()))?, Some(temp))
    } else {
        (scan(BufReader::new(open()?), path, None)?, None)
    };
    let files = Files { nodes };

    let manifest_json = files.read("manifest.json").context(
        "this is not a `docker save` archive: it has no manifest.json \
         (an OCI image layout must be a directory)",
    )?;
    let images: Vec<ArchiveImage> =
        serde_json::from_slice(&manifest_json).context("the archive's manifest.json is invalid")?;
    let image = choose(&images, source_tag)?;

    let config = files
        .read(&image.config)
        .with_context(|| format!("the archive's config `{}`", image.config))?;
    let parsed = ImageConfig::parse(&config)
        .with_context(|| format!("`{}` is not a valid image config", image.config))?;
    if parsed.diff_ids().len() != image.layers.len() {
        bail!(
            "the config lists {} layers but manifest.json {}",
            parsed.diff_ids().len(),
            image.layers.len()
        );
    }
    let config_digest = Digest::sha256_of(&config);
    let mut plan = Plan {
        blobs: vec![PlannedBlob {
            digest: config_digest.clone(),
            size: config.len() as u64,
            source: BlobSource::Bytes(config.clone().into()),
            media_type: OCI_IMAGE_CONFIG.to_owned(),
        }],
        manifests: Vec::new(),
        _unpacked: temp,
    };
    let mut seen = HashSet::from([config_digest.clone()]);
    let mut layers = Vec::with_capacity(image.layers.len());
    for name in &image.layers {
        let stored = files
            .resolve(name)
            .with_context(|| format!("the archive's layer `{name}`"))?;
        let media_type = layer_media_type(&stored.magic);
        layers.push(Descriptor::new(
            media_type,
            stored.digest.clone(),
            stored.size,
        ));
        // An image may repeat a layer (two identical empty layers); push it once.
        if seen.insert(stored.digest.clone()) {
            plan.blobs.push(PlannedBlob {
                digest: stored.digest.clone(),
                size: stored.size,
                source: stored.source.clone(),
                media_type: media_type.to_owned(),
            });
        }
    }
    let manifest = Manifest::Image(ImageManifest {
        media_type: OCI_IMAGE_MANIFEST.to_owned(),
        config: Descriptor::new(OCI_IMAGE_CONFIG, config_digest, config.len() as u64),
        layers,
        subject: None,
        artifact_type: None,
        annotations: Default::default(),
    });
    let bytes = serde_json::to_vec(&manifest).context("cannot encode the image manifest")?;
    plan.manifests.push(PlannedManifest {
        digest: Digest::sha256_of(&bytes),
        media_type: OCI_IMAGE_MANIFEST.to_owned(),
        bytes: bytes.into(),
    });
    Ok(plan)
}

fn layer_media_type(magic: &[u8]) -> &'static str {
    if magic.starts_with(&GZIP_MAGIC) {
        OCI_LAYER_TAR_GZIP
    } else if magic.starts_with(&ZSTD_MAGIC) {
        OCI_LAYER_TAR_ZSTD
    } else {
        OCI_LAYER_TAR
    }
}

/// Whether a `RepoTags` entry names `tag`: the whole `name:tag`, or just its tag.
fn tagged(repo_tag: &str, tag: &str) -> bool {
    repo_tag == tag
        || repo_tag
            .rsplit_once(':')
            .is_some_and(|(_, t)| t == tag && !t.contains('/'))
}

fn choose<'a>(images: &'a [ArchiveImage], tag: Option<&str>) -> anyhow::Result<&'a ArchiveImage> {
    let listing = || {
        images
            .iter()
            .map(|image| match image.repo_tags.as_deref() {
                Some(tags) if !tags.is_empty() => tags.join(" "),
                _ => format!("untagged ({})", image.config),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    match tag {
        Some(tag) => {
            let matching: Vec<_> = images
                .iter()
                .filter(|image| {
                    image
                        .repo_tags
                        .iter()
                        .flatten()
                        .any(|repo_tag| tagged(repo_tag, tag))
                })
                .collect();
            match matching.as_slice() {
                [one] => Ok(one),
                [] => bail!(
                    "the archive has no image tagged `{tag}`; it holds: {}",
                    listing()
                ),
                several => bail!(
                    "{} images of the archive are tagged `{tag}`; name one fully (`name:tag`): {}",
                    several.len(),
                    listing()
                ),
            }
        }
        None => match images {
            [one] => Ok(one),
            [] => bail!("the archive's manifest.json lists no image"),
            several => bail!(
                "the archive holds {} images ({}); choose one with --source-tag",
                several.len(),
                listing()
            ),
        },
    }
}

/// The archive's files by normalized path.
struct Files {
    nodes: HashMap<String, Node>,
}

impl Files {
    /// The file at `name`, through links.
    fn resolve(&self, name: &str) -> anyhow::Result<&Stored> {
        let mut current = normalize(Path::new(name));
        for _ in 0..MAX_LINK_HOPS {
            match self.nodes.get(&current) {
                Some(Node::File(stored)) => return Ok(stored),
                Some(Node::Link(target)) => current = target.clone(),
                None => bail!("the archive has no file `{current}`"),
            }
        }
        bail!("`{name}` is a link loop")
    }

    /// The bytes of a small file (a manifest or config).
    fn read(&self, name: &str) -> anyhow::Result<Vec<u8>> {
        let stored = self.resolve(name)?;
        if stored.size > MAX_METADATA_SIZE {
            bail!("`{name}` is larger than {MAX_METADATA_SIZE} bytes");
        }
        let mut bytes = Vec::new();
        match &stored.source {
            BlobSource::Bytes(data) => bytes.extend_from_slice(data),
            BlobSource::File(path) => {
                File::open(path)?
                    .take(stored.size)
                    .read_to_end(&mut bytes)?;
            }
            BlobSource::FileRange { path, offset } => {
                let mut file = File::open(path)?;
                file.seek(SeekFrom::Start(*offset))?;
                file.take(stored.size).read_to_end(&mut bytes)?;
            }
        }
        if bytes.len() as u64 != stored.size {
            bail!("`{name}` was cut short: the archive changed while being read");
        }
        Ok(bytes)
    }
}

/// An archive path as a lookup key: `/`-separated, without `.`, leading `./` or `/`,
/// with `..` applied. Used only for lookups, never to write anywhere.
fn normalize(path: &Path) -> String {
    let mut parts: Vec<String> = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_string_lossy().into_owned()),
            Component::ParentDir => {
                parts.pop();
            }
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    parts.join("/")
}

/// One pass over the archive: every regular file hashed (its digest is needed anyway,
/// and reading it all once costs less than seeking for the few that matter), links
/// recorded. With `unpack_to`, each file is also written there, for archives whose
/// bytes cannot be addressed by offset.
fn scan<R: Read>(
    reader: R,
    archive_path: &Path,
    unpack_to: Option<&Path>,
) -> anyhow::Result<HashMap<String, Node>> {
    let mut archive = tar::Archive::new(reader);
    let mut nodes = HashMap::new();
    let mut buffer = vec![0u8; CHUNK];
    let bad = || format!("{} is not a readable tar archive", archive_path.display());
    for (index, entry) in archive.entries().with_context(bad)?.enumerate() {
        let mut entry = entry.with_context(bad)?;
        let name = normalize(&entry.path().with_context(bad)?);
        let node = match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.size();
                let offset = entry.raw_file_position();
                // Unpacked files are named by position: archive names never touch disk.
                let unpacked = unpack_to.map(|dir| dir.join(index.to_string()));
                let mut sink = match &unpacked {
                    Some(path) => Some(BufWriter::with_capacity(
                        CHUNK,
                        File::create(path)
                            .with_context(|| format!("cannot create {}", path.display()))?,
                    )),
                    None => None,
                };
                let mut hasher = DigestHasher::new(DigestAlgorithm::Sha256);
                let mut magic = Vec::with_capacity(4);
                loop {
                    let n = match entry.read(&mut buffer) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e).with_context(bad),
                    };
                    let chunk = &buffer[..n];
                    hasher.update(chunk);
                    if magic.len() < 4 {
                        magic.extend(chunk.iter().take(4 - magic.len()));
                    }
                    if let Some(sink) = &mut sink {
                        sink.write_all(chunk)
                            .context("cannot write the unpacked file")?;
                    }
                }
                if let Some(mut sink) = sink {
                    sink.flush().context("cannot write the unpacked file")?;
                }
                let source = match unpacked {
                    Some(path) => BlobSource::File(path),
                    None => BlobSource::FileRange {
                        path: archive_path.to_owned(),
                        offset,
                    },
                };
                Node::File(Stored {
                    size,
                    digest: hasher.finish(),
                    magic,
                    source,
                })
            }
            tar::EntryType::Symlink => {
                let Some(target) = entry.link_name().with_context(bad)? else {
                    continue;
                };
                // Relative to the link's directory, as the filesystem would resolve it.
                let parent = Path::new(&name).parent().unwrap_or(Path::new(""));
                Node::Link(normalize(&parent.join(target)))
            }
            tar::EntryType::Link => {
                let Some(target) = entry.link_name().with_context(bad)? else {
                    continue;
                };
                // Hard links name their target from the archive's root.
                Node::Link(normalize(&target))
            }
            _ => continue,
        };
        nodes.insert(name, node);
    }
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_archive_paths() {
        assert_eq!(normalize(Path::new("./manifest.json")), "manifest.json");
        assert_eq!(normalize(Path::new("/abc/layer.tar")), "abc/layer.tar");
        assert_eq!(
            normalize(&Path::new("abc").join("../blobs/sha256/ff")),
            "blobs/sha256/ff"
        );
        assert_eq!(normalize(Path::new("../../x")), "x");
    }

    #[test]
    fn layer_media_types_follow_the_bytes() {
        assert_eq!(layer_media_type(&[0x1f, 0x8b, 8, 0]), OCI_LAYER_TAR_GZIP);
        assert_eq!(layer_media_type(&ZSTD_MAGIC), OCI_LAYER_TAR_ZSTD);
        assert_eq!(layer_media_type(b"bin/"), OCI_LAYER_TAR);
        assert_eq!(layer_media_type(b""), OCI_LAYER_TAR);
    }

    #[test]
    fn chooses_by_repo_tag() {
        let image = |tags: &[&str]| ArchiveImage {
            config: "c.json".to_owned(),
            repo_tags: Some(tags.iter().map(|t| (*t).to_owned()).collect()),
            layers: Vec::new(),
        };
        let images = [image(&["bench:v1"]), image(&["bench:v2", "other:v1"])];
        let chosen = choose(&images, Some("bench:v2")).expect("full name");
        assert_eq!(
            chosen.repo_tags.as_deref(),
            Some(&["bench:v2".to_owned(), "other:v1".to_owned()][..])
        );
        let err = choose(&images, Some("v1"))
            .expect_err("two images tagged v1")
            .to_string();
        assert!(err.contains("2 images"), "{err}");
        let err = choose(&images, None).expect_err("ambiguous").to_string();
        assert!(
            err.contains("--source-tag") && err.contains("bench:v1"),
            "{err}"
        );
        assert!(choose(&images[..1], None).is_ok());
    }
}
