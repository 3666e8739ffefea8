//! Pulling an image into the cache: resolving the reference to the image manifest for
//! the runner's platform, checking what the manifest lists, then fetching the config
//! and the missing layers (in parallel, bounded) through `download`. IO: the registry
//! through `RegistryClient`; the cache through the other modules.

use std::collections::HashMap;
use std::sync::Arc;

use bencher_client::registry::RegistryClient;
use bencher_oci::config::ImageConfig;
use bencher_oci::digest::Digest;
use bencher_oci::manifest::{
    DOCKER_MANIFEST_V2, Descriptor, ImageManifest, LayerCompression, Manifest, OCI_IMAGE_MANIFEST,
};
use bencher_oci::platform::{Platform, select_manifest};
use bencher_oci::reference::ManifestRef;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};

use super::download::store_blob;
use super::error::{BlobError, ImageError, transient};
use super::evict::touch;
use super::layout::{Layout, LockKind};
use super::{ImageCache, PulledImage};

/// Layers downloaded at once per pull: enough to fill a link when one stream is slow,
/// few enough not to starve the other pulls of a busy runner.
const PARALLEL_FETCHES: usize = 4;
/// Tries per blob or manifest when the failure is transient (see
/// `BlobError::is_transient`), and the delay before the second; it grows linearly.
const FETCH_ATTEMPTS: u32 = 3;
const RETRY_DELAY: std::time::Duration = std::time::Duration::from_millis(250);
/// The largest manifest we accept; the same as the server's registry.
const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// The largest image config we read into memory. Real ones are kilobytes; Docker's
/// history can make them a few hundred.
const MAX_CONFIG_BYTES: u64 = 16 << 20;

impl ImageCache {
    /// Resolves `reference` (by digest; a tag only for local/dev use) to the image for
    /// `platform` (an index selects the platform's manifest; never the wrong
    /// architecture), fetches config and layers not yet cached (in parallel, bounded),
    /// verifying digest and descriptor size while streaming to a temp file in the cache,
    /// then renaming into place. Returns what the executor needs; the image's content
    /// stays pinned against eviction while the returned value lives.
    pub async fn pull(
        &self,
        client: &RegistryClient,
        repository: &str,
        reference: &ManifestRef,
        platform: &Platform,
    ) -> Result<PulledImage, ImageError> {
        let (manifest_digest, manifest) = resolve(client, repository, reference, platform).await?;
        let blobs = blobs_of(&manifest_digest, &manifest)?;
        // Before anything is fetched or found cached, so no eviction can take it away
        // between here and the end of the job.
        let pins = self.pin(&manifest_digest, &blobs).await?;
        let layout = &self.inner.layout;

        // The config first: it is small and says whether the image runs here at all,
        // before a single layer is downloaded.
        self.fetch(client, repository, &manifest.config).await?;
        let config = read_config(
            layout.blob(&manifest.config.digest),
            &manifest_digest,
            &manifest.config,
        )
        .await?;
        let built_for = config.platform();
        if !built_for.runs_on(platform) {
            return Err(ImageError::WrongPlatform {
                repository: repository.to_owned(),
                digest: manifest_digest,
                image: Box::new(built_for),
                wanted: Box::new(platform.clone()),
            });
        }

        let missing: Vec<&Descriptor> = blobs
            .iter()
            .copied()
            .filter(|d| !is_cached(&layout.blob(&d.digest), d.size))
            .collect();
        let incoming: u64 = missing.iter().map(|d| d.size).sum();
        if incoming > 0 {
            // Make room first, so the disk never holds the bound plus the image.
            self.evict(incoming).await?;
        }
        // The futures are built before they enter the stream: a closure inside the stream
        // type would make rustc unable to prove the whole pull `Send`.
        let fetches: Vec<_> = missing
            .into_iter()
            .map(|descriptor| self.fetch(client, repository, descriptor))
            .collect();
        stream::iter(fetches)
            .buffer_unordered(PARALLEL_FETCHES)
            .try_collect::<()>()
            .await?;

        let paths: Vec<_> = blobs.iter().map(|d| layout.blob(&d.digest)).collect();
        self.blocking(move || {
            for path in paths {
                touch(&path).map_err(ImageError::cache("mark as used", path))?;
            }
            Ok(())
        })
        .await?;
        // Another pull may have filled the cache while we downloaded.
        self.evict(0).await?;

        let layers = manifest
            .layers
            .iter()
            .map(|d| (d.clone(), layout.blob(&d.digest)))
            .collect();
        tracing::debug!(repository, digest = %manifest_digest, "pulled an image");
        Ok(PulledImage {
            manifest_digest,
            manifest,
            config,
            layers,
            _pins: Arc::new(pins),
        })
    }

    /// Makes one blob cached: nothing to do when it is, else one download shared by
    /// every task and process that wants it at the same time.
    async fn fetch(
        &self,
        client: &RegistryClient,
        repository: &str,
        descriptor: &Descriptor,
    ) -> Result<(), ImageError> {
        let layout = &self.inner.layout;
        let digest = &descriptor.digest;
        let path = layout.blob(digest);
        if is_cached(&path, descriptor.size) {
            return Ok(());
        }
        let _in_process = self.inner.in_flight.lock(&format!("blob {digest}")).await;
        let _fetch_lock = self.exclusive(LockKind::BlobFetch, digest).await?;
        if is_cached(&path, descriptor.size) {
            // Downloaded by whoever held the lock before us.
            return Ok(());
        }
        let mut attempt = 1;
        loop {
            match download(client, layout, repository, descriptor).await {
                Ok(()) => break,
                Err(error) if attempt < FETCH_ATTEMPTS && error.is_transient() => {
                    tracing::warn!(repository, %digest, attempt, %error, "blob download failed; trying again");
                    tokio::time::sleep(RETRY_DELAY * attempt).await;
                    attempt += 1;
                }
                Err(error) => {
                    return Err(ImageError::Blob {
                        repository: repository.to_owned(),
                        digest: digest.clone(),
                        source: Box::new(error),
                    });
                }
            }
        }
        tracing::debug!(repository, %digest, bytes = descriptor.size, "fetched a blob");
        Ok(())
    }
}

/// One attempt at streaming a blob into the cache; each starts from a fresh temporary
/// file, so a retry never builds on bytes of a failed attempt.
async fn download(
    client: &RegistryClient,
    layout: &Layout,
    repository: &str,
    descriptor: &Descriptor,
) -> Result<(), BlobError> {
    let download = client
        .blob(repository, &descriptor.digest)
        .await
        .map_err(BlobError::Request)?;
    store_blob(layout, descriptor, download.size, download.stream).await?;
    Ok(())
}

/// Whether the blob is at its address. Only verified content is ever renamed there, so
/// the size check only guards against damage from outside; such a file is downloaded
/// again and replaced atomically.
fn is_cached(path: &std::path::Path, size: u64) -> bool {
    std::fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.len() == size)
}

/// The digest and manifest of the image to run: the manifest `reference` names, or the
/// entry of the index it names that runs on `platform`.
async fn resolve(
    client: &RegistryClient,
    repository: &str,
    reference: &ManifestRef,
    platform: &Platform,
) -> Result<(Digest, ImageManifest), ImageError> {
    let (digest, media_type, bytes) = fetch_manifest(client, repository, reference).await?;
    let parse_error = |digest: &Digest| {
        let digest = digest.clone();
        move |source| ImageError::ParseManifest {
            repository: repository.to_owned(),
            digest,
            source,
        }
    };
    let index = match Manifest::parse(Some(&media_type), &bytes).map_err(parse_error(&digest))? {
        Manifest::Image(manifest) => return Ok((digest, manifest)),
        Manifest::Index(index) => index,
    };
    let entry = select_manifest(&index, platform).map_err(|source| ImageError::Platform {
        repository: repository.to_owned(),
        digest: digest.clone(),
        source,
    })?;
    let not_an_image = |media_type: &str| ImageError::NotAnImageManifest {
        repository: repository.to_owned(),
        digest: entry.digest.clone(),
        media_type: media_type.to_owned(),
    };
    if ![OCI_IMAGE_MANIFEST, DOCKER_MANIFEST_V2].contains(&entry.media_type.as_str()) {
        return Err(not_an_image(&entry.media_type));
    }
    if entry.size > MAX_MANIFEST_BYTES {
        return Err(ImageError::ManifestTooLarge {
            repository: repository.to_owned(),
            digest: entry.digest.clone(),
            size: entry.size,
            max: MAX_MANIFEST_BYTES,
        });
    }
    let child = ManifestRef::Digest(entry.digest.clone());
    let (child_digest, media_type, bytes) = fetch_manifest(client, repository, &child).await?;
    if bytes.len() as u64 != entry.size {
        return Err(ImageError::ManifestSize {
            repository: repository.to_owned(),
            digest: child_digest,
            expected: entry.size,
            actual: bytes.len() as u64,
        });
    }
    match Manifest::parse(Some(&media_type), &bytes).map_err(parse_error(&child_digest))? {
        Manifest::Image(manifest) => Ok((child_digest, manifest)),
        Manifest::Index(index) => Err(not_an_image(&index.media_type)),
    }
}

/// A manifest's digest, media type and bytes, verified here too: by the digest asked
/// for, or for a tag by the digest the registry announced.
async fn fetch_manifest(
    client: &RegistryClient,
    repository: &str,
    reference: &ManifestRef,
) -> Result<(Digest, String, Bytes), ImageError> {
    let mut attempt = 1;
    let fetched = loop {
        match client.manifest(repository, reference).await {
            Ok(fetched) => break fetched,
            Err(error) if attempt < FETCH_ATTEMPTS && transient(&error) => {
                tracing::warn!(repository, %reference, attempt, %error, "manifest fetch failed; trying again");
                tokio::time::sleep(RETRY_DELAY * attempt).await;
                attempt += 1;
            }
            Err(error) => {
                return Err(ImageError::FetchManifest {
                    repository: repository.to_owned(),
                    reference: reference.to_string(),
                    source: Box::new(error),
                });
            }
        }
    };
    let size = fetched.bytes.len() as u64;
    if size > MAX_MANIFEST_BYTES {
        return Err(ImageError::ManifestTooLarge {
            repository: repository.to_owned(),
            digest: fetched.digest,
            size,
            max: MAX_MANIFEST_BYTES,
        });
    }
    let expected = match reference {
        ManifestRef::Digest(digest) => digest.clone(),
        ManifestRef::Tag(_) => fetched.digest.clone(),
    };
    expected
        .verify(&fetched.bytes)
        .map_err(|source| ImageError::ManifestDigest {
            repository: repository.to_owned(),
            reference: reference.to_string(),
            source,
        })?;
    Ok((expected, fetched.media_type, fetched.bytes))
}

/// The blobs of an image, config first, each digest once; refuses layers that are no
/// filesystem layers, a config too large to read, and a digest listed with two sizes.
fn blobs_of<'a>(
    manifest_digest: &Digest,
    manifest: &'a ImageManifest,
) -> Result<Vec<&'a Descriptor>, ImageError> {
    if manifest.config.size > MAX_CONFIG_BYTES {
        return Err(ImageError::ConfigTooLarge {
            manifest: manifest_digest.clone(),
            digest: manifest.config.digest.clone(),
            size: manifest.config.size,
            max: MAX_CONFIG_BYTES,
        });
    }
    for layer in &manifest.layers {
        if LayerCompression::from_media_type(&layer.media_type).is_none() {
            return Err(ImageError::NotALayer {
                manifest: manifest_digest.clone(),
                digest: layer.digest.clone(),
                media_type: layer.media_type.clone(),
            });
        }
    }
    let mut sizes: HashMap<&Digest, u64> = HashMap::new();
    let mut unique = Vec::new();
    for descriptor in std::iter::once(&manifest.config).chain(&manifest.layers) {
        match sizes.get(&descriptor.digest) {
            None => {
                sizes.insert(&descriptor.digest, descriptor.size);
                unique.push(descriptor);
            }
            Some(&first) if first != descriptor.size => {
                return Err(ImageError::InconsistentSize {
                    manifest: manifest_digest.clone(),
                    digest: descriptor.digest.clone(),
                    first,
                    second: descriptor.size,
                });
            }
            Some(_) => {}
        }
    }
    Ok(unique)
}

async fn read_config(
    path: std::path::PathBuf,
    manifest: &Digest,
    descriptor: &Descriptor,
) -> Result<ImageConfig, ImageError> {
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(ImageError::cache("read", path))?;
    ImageConfig::parse(&bytes).map_err(|source| ImageError::ParseConfig {
        manifest: manifest.clone(),
        digest: descriptor.digest.clone(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bencher_oci::manifest::{OCI_IMAGE_CONFIG, OCI_LAYER_TAR_GZIP, OCI_LAYER_TAR_ZSTD};

    fn manifest(config: Descriptor, layers: Vec<Descriptor>) -> ImageManifest {
        ImageManifest {
            media_type: OCI_IMAGE_MANIFEST.into(),
            config,
            layers,
            subject: None,
            artifact_type: None,
            annotations: Default::default(),
        }
    }

    fn d(media_type: &str, content: &[u8]) -> Descriptor {
        Descriptor::new(media_type, Digest::sha256_of(content), content.len() as u64)
    }

    #[test]
    fn lists_each_blob_once_config_first() {
        let config = d(OCI_IMAGE_CONFIG, b"{}");
        let a = d(OCI_LAYER_TAR_GZIP, b"a");
        let b = d(OCI_LAYER_TAR_ZSTD, b"bb");
        let m = manifest(config.clone(), vec![a.clone(), b.clone(), a.clone()]);
        let key = Digest::sha256_of(b"m");
        let blobs = blobs_of(&key, &m).unwrap();
        assert_eq!(blobs, [&config, &a, &b]);
    }

    #[test]
    fn refuses_what_cannot_be_a_runnable_image() {
        let key = Digest::sha256_of(b"m");
        let config = d(OCI_IMAGE_CONFIG, b"{}");

        let artifact = manifest(config.clone(), vec![d("application/x-sbom+json", b"x")]);
        let err = blobs_of(&key, &artifact).unwrap_err();
        assert!(matches!(err, ImageError::NotALayer { .. }), "{err:?}");
        assert!(err.to_string().contains("application/x-sbom+json"), "{err}");

        let mut lying = d(OCI_LAYER_TAR_GZIP, b"a");
        lying.size = 2;
        let twice = manifest(config.clone(), vec![d(OCI_LAYER_TAR_GZIP, b"a"), lying]);
        let err = blobs_of(&key, &twice).unwrap_err();
        assert!(
            matches!(
                err,
                ImageError::InconsistentSize {
                    first: 1,
                    second: 2,
                    ..
                }
            ),
            "{err:?}"
        );

        let mut huge = config;
        huge.size = MAX_CONFIG_BYTES + 1;
        let err = blobs_of(&key, &manifest(huge, vec![])).unwrap_err();
        assert!(matches!(err, ImageError::ConfigTooLarge { .. }), "{err:?}");
    }
}
