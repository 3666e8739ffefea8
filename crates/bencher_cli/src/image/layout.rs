//! Reading an OCI image layout directory (`oci-layout`, `index.json`, `blobs/<alg>/<hex>`,
//! as `skopeo copy … oci:DIR` or `docker buildx --output type=oci` write it) into a push
//! plan. IO: reads the layout's index and manifests, and checks blob sizes on disk;
//! blob contents stay on disk for the upload to stream.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use bencher_client::BlobSource;
use bencher_oci::digest::Digest;
use bencher_oci::manifest::{Descriptor, MANIFEST_MEDIA_TYPES, Manifest, OCI_IMAGE_INDEX};
use serde::Deserialize;

use super::{Plan, PlannedBlob, PlannedManifest, read_capped, short};
use bencher_client::registry::MAX_MANIFEST_SIZE;

/// The annotation naming an image in a layout's `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Indexes nest (an index of per-platform indexes) but never deeply; the bound keeps a
/// malformed layout from recursing without end.
const MAX_DEPTH: usize = 8;

/// Whether `path` looks like an OCI image layout.
pub fn is_layout(path: &Path) -> bool {
    path.join("oci-layout").is_file()
}

/// The plan for the image of `dir` named `source_tag`, or its only image.
pub fn load(dir: &Path, source_tag: Option<&str>) -> anyhow::Result<Plan> {
    #[derive(Deserialize)]
    struct OciLayout {
        #[serde(rename = "imageLayoutVersion")]
        _version: String,
    }
    let marker = read_capped(&dir.join("oci-layout"), 64 << 10)?;
    serde_json::from_slice::<OciLayout>(&marker).with_context(|| {
        format!(
            "{} is not a valid oci-layout file",
            dir.join("oci-layout").display()
        )
    })?;

    let index_path = dir.join("index.json");
    let index_bytes = read_capped(&index_path, MAX_MANIFEST_SIZE)?;
    // `index.json` often has no mediaType; it is an index by definition.
    let index = match Manifest::parse(Some(OCI_IMAGE_INDEX), &index_bytes)
        .with_context(|| format!("{} is not a valid image index", index_path.display()))?
    {
        Manifest::Index(index) => index,
        Manifest::Image(_) => bail!("{} is not an image index", index_path.display()),
    };
    let chosen = choose(&index.manifests, source_tag)?;

    let mut walker = Walker {
        dir,
        plan: Plan::default(),
        blobs: HashSet::new(),
        manifests: HashSet::new(),
    };
    walker.manifest(chosen, 0)?;
    Ok(walker.plan)
}

/// Whether a layout's `ref.name` names `tag`: the whole name, or the tag of a full
/// reference (`localhost/proj:v1`), as different tools write either.
fn names(ref_name: &str, tag: &str) -> bool {
    ref_name == tag
        || ref_name
            .rsplit_once(':')
            .is_some_and(|(_, t)| t == tag && !t.contains('/'))
}

fn choose<'a>(descriptors: &'a [Descriptor], tag: Option<&str>) -> anyhow::Result<&'a Descriptor> {
    let listing = || {
        descriptors
            .iter()
            .map(|d| match d.annotations.get(REF_NAME) {
                Some(name) => format!("`{name}` ({})", short(&d.digest)),
                None => format!("untagged {}", short(&d.digest)),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    match tag {
        Some(tag) => {
            let matching: Vec<_> = descriptors
                .iter()
                .filter(|d| {
                    d.annotations
                        .get(REF_NAME)
                        .is_some_and(|name| names(name, tag))
                })
                .collect();
            match matching.as_slice() {
                [one] => Ok(one),
                [] => bail!(
                    "the layout has no image tagged `{tag}`; it holds: {}",
                    listing()
                ),
                several => bail!(
                    "the layout has {} images tagged `{tag}` and no index joining them: {}",
                    several.len(),
                    listing()
                ),
            }
        }
        None => match descriptors {
            [one] => Ok(one),
            [] => bail!("the layout holds no image"),
            several => bail!(
                "the layout holds {} images ({}); choose one with --source-tag",
                several.len(),
                listing()
            ),
        },
    }
}

struct Walker<'a> {
    dir: &'a Path,
    plan: Plan,
    blobs: HashSet<Digest>,
    manifests: HashSet<Digest>,
}

impl Walker<'_> {
    fn path(&self, digest: &Digest) -> PathBuf {
        // A `Digest` is validated: the algorithm and hex can never step out of `blobs/`.
        self.dir
            .join("blobs")
            .join(digest.algorithm().as_str())
            .join(digest.hex())
    }

    /// Plans `descriptor`'s manifest after everything it refers to: blobs, and for an
    /// index its child manifests, which the registry must have first.
    fn manifest(&mut self, descriptor: &Descriptor, depth: usize) -> anyhow::Result<()> {
        if depth > MAX_DEPTH {
            bail!("image indexes nest more than {MAX_DEPTH} deep");
        }
        if !MANIFEST_MEDIA_TYPES.contains(&descriptor.media_type.as_str()) {
            bail!(
                "{} has media type `{}`, which is not an image manifest or index",
                short(&descriptor.digest),
                descriptor.media_type
            );
        }
        if !self.manifests.insert(descriptor.digest.clone()) {
            return Ok(());
        }
        let path = self.path(&descriptor.digest);
        let bytes = read_capped(&path, MAX_MANIFEST_SIZE)
            .with_context(|| format!("the layout lacks manifest {}", descriptor.digest))?;
        if bytes.len() as u64 != descriptor.size {
            bail!(
                "manifest {} has {} bytes, but its descriptor says {}",
                descriptor.digest,
                bytes.len(),
                descriptor.size
            );
        }
        descriptor
            .digest
            .verify(&bytes)
            .with_context(|| format!("{} is corrupt", path.display()))?;
        let manifest = Manifest::parse(Some(&descriptor.media_type), &bytes)
            .with_context(|| format!("manifest {} is invalid", descriptor.digest))?;
        for child in manifest.children() {
            self.manifest(child, depth + 1)?;
        }
        for blob in manifest.blobs() {
            self.blob(blob)?;
        }
        self.plan.manifests.push(PlannedManifest {
            digest: descriptor.digest.clone(),
            media_type: manifest.media_type().to_owned(),
            bytes: bytes.into(),
        });
        Ok(())
    }

    /// Plans a blob after checking it is there with the size its descriptor says; the
    /// registry checks the digest as it receives the bytes.
    fn blob(&mut self, descriptor: &Descriptor) -> anyhow::Result<()> {
        if !self.blobs.insert(descriptor.digest.clone()) {
            return Ok(());
        }
        let path = self.path(&descriptor.digest);
        let metadata = std::fs::metadata(&path).with_context(|| {
            format!(
                "the layout lacks blob {} ({})",
                descriptor.digest, descriptor.media_type
            )
        })?;
        if metadata.len() != descriptor.size {
            bail!(
                "blob {} has {} bytes, but the manifest says {}",
                path.display(),
                metadata.len(),
                descriptor.size
            );
        }
        self.plan.blobs.push(PlannedBlob {
            digest: descriptor.digest.clone(),
            size: descriptor.size,
            source: BlobSource::File(path),
            media_type: descriptor.media_type.clone(),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn descriptor(name: Option<&str>, seed: &[u8]) -> Descriptor {
        let mut d = Descriptor::new(
            bencher_oci::manifest::OCI_IMAGE_MANIFEST,
            Digest::sha256_of(seed),
            1,
        );
        if let Some(name) = name {
            d.annotations.insert(REF_NAME.to_owned(), name.to_owned());
        }
        d
    }

    #[test]
    fn chooses_by_ref_name_or_the_only_image() {
        let one = [descriptor(None, b"a")];
        assert_eq!(choose(&one, None).expect("only one").digest, one[0].digest);

        let tagged = [
            descriptor(Some("v1"), b"a"),
            descriptor(Some("localhost/proj:v2"), b"b"),
            descriptor(None, b"c"),
        ];
        assert_eq!(
            choose(&tagged, Some("v1")).expect("v1").digest,
            tagged[0].digest
        );
        assert_eq!(
            choose(&tagged, Some("v2")).expect("v2").digest,
            tagged[1].digest
        );
        let err = choose(&tagged, None).expect_err("ambiguous").to_string();
        assert!(
            err.contains("holds 3 images") && err.contains("--source-tag"),
            "{err}"
        );
        assert!(err.contains("`v1`") && err.contains("untagged"), "{err}");
        let err = choose(&tagged, Some("v3")).expect_err("absent").to_string();
        assert!(err.contains("no image tagged `v3`"), "{err}");
        let twice = [descriptor(Some("v1"), b"a"), descriptor(Some("v1"), b"b")];
        let err = choose(&twice, Some("v1")).expect_err("twice").to_string();
        assert!(err.contains("2 images tagged `v1`"), "{err}");
        assert!(choose(&[], None).is_err());
    }

    #[test]
    fn ref_names() {
        assert!(names("v1", "v1"));
        assert!(names("localhost:5000/proj:v1", "v1"));
        assert!(!names("localhost:5000/proj", "5000/proj"));
        assert!(!names("v1", "v2"));
    }
}
