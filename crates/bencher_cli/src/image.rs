//! `bencher image …`: push an OCI image layout or a `docker save` archive to a Bencher
//! server's registry, and list a project's tags with their digests. IO: reads the
//! source from disk (`layout`, `archive`), talks to the registry through
//! `RegistryClient`, draws progress bars on stderr, prints results on stdout.
//!
//! A push uploads every blob first (a few at a time, largest first so the long ones
//! overlap), then the manifests in dependency order (an index's children by digest),
//! and tags only the last one: a tag never names an image whose parts are missing.

mod archive;
mod layout;

use std::cmp::Reverse;
use std::io::{IsTerminal as _, Read as _};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, bail};
use bencher_client::{
    BlobSource, PushOutcome, RegistryClient, RegistryCredential, RegistryError, error_chain,
};
use bencher_oci::digest::Digest;
use bencher_oci::manifest::{
    DOCKER_MANIFEST_LIST, DOCKER_MANIFEST_V2, Manifest, OCI_IMAGE_INDEX, OCI_IMAGE_MANIFEST,
};
use bencher_oci::reference::{DEFAULT_REGISTRY, ManifestRef, Reference, Tag};
use bencher_types::{ApiToken, ResourceId};
use bytes::Bytes;
use clap::{Args, Subcommand};
use futures_util::stream::{self, StreamExt as _, TryStreamExt as _};
use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use tempfile::TempDir;
use url::{Host, Url};

use crate::cli::Context;
use crate::output::{self, Format};

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum ImageCommand {
    /// Push an OCI image layout or a `docker save` archive to a project's repository
    Push(PushArgs),
    /// List a project's image tags and their manifest digests
    List(ListArgs),
}

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct PushArgs {
    /// An OCI image layout directory, or a `docker save` archive (plain or gzip)
    #[arg(value_name = "SOURCE")]
    pub source: PathBuf,
    /// Where to: `HOST:PORT/<project>:<tag>`, or `<project>:<tag>` on the server of
    /// --host. A project that does not exist yet is created.
    #[arg(value_name = "REF", value_parser = parse_target)]
    pub target: ImageTarget,
    /// The image of SOURCE to push: a layout's `org.opencontainers.image.ref.name` or a
    /// RepoTag of an archive [default: its only image]
    #[arg(long, value_name = "TAG")]
    pub source_tag: Option<String>,
    /// How many blobs upload at once
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=16))]
    pub jobs: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ListArgs {
    /// UUID or slug of the project
    pub project: ResourceId,
}

/// A push destination, validated before anything is read or sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageTarget {
    /// `host[:port]` when REF named one; otherwise the server of --host.
    pub registry: Option<String>,
    pub project: ResourceId,
    pub tag: Tag,
}

/// Parses REF with Docker's reference grammar. A REF without a registry would be
/// Docker Hub's (`library/<name>`) to that grammar; here it means the server of
/// --host, so it is parsed again under a placeholder registry to keep the name as
/// written.
fn parse_target(text: &str) -> Result<ImageTarget, String> {
    let reference: Reference = text.parse().map_err(|e| error_chain(&e))?;
    let explicit_hub = ["docker.io/", "index.docker.io/"]
        .iter()
        .any(|prefix| text.starts_with(prefix));
    let (registry, reference) = if reference.registry != DEFAULT_REGISTRY {
        (Some(reference.registry.clone()), reference)
    } else if explicit_hub {
        return Err(
            "Docker Hub is not a Bencher registry: write `HOST:PORT/<project>:<tag>` or `<project>:<tag>`"
                .to_owned(),
        );
    } else {
        let local: Reference = format!("localhost/{text}")
            .parse()
            .map_err(|e| error_chain(&e))?;
        (None, local)
    };
    if reference.digest.is_some() {
        return Err(
            "push to a tag (`<project>:<tag>`), not a digest: the digest comes from the content"
                .to_owned(),
        );
    }
    let project: ResourceId = reference
        .repository
        .parse()
        .map_err(|e| format!("the repository must be a project: {e}"))?;
    let tag = reference
        .tag_or_latest()
        .parse()
        .map_err(|e| error_chain(&e))?;
    Ok(ImageTarget {
        registry,
        project,
        tag,
    })
}

/// What to push: blobs in any order, then manifests in this order, the last tagged.
#[derive(Default)]
pub(crate) struct Plan {
    pub(crate) blobs: Vec<PlannedBlob>,
    pub(crate) manifests: Vec<PlannedManifest>,
    /// Where a compressed archive was unpacked; removed when the plan is dropped.
    pub(crate) _unpacked: Option<TempDir>,
}

pub(crate) struct PlannedBlob {
    pub(crate) digest: Digest,
    pub(crate) size: u64,
    pub(crate) source: BlobSource,
    pub(crate) media_type: String,
}

pub(crate) struct PlannedManifest {
    pub(crate) digest: Digest,
    pub(crate) media_type: String,
    pub(crate) bytes: Bytes,
}

/// Reads a small file whole, refusing one larger than `limit`.
pub(crate) fn read_capped(path: &Path, limit: usize) -> anyhow::Result<Vec<u8>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() > limit {
        bail!("{} is larger than {limit} bytes", path.display());
    }
    Ok(bytes)
}

/// `sha256:0123456789ab`: enough to tell blobs apart on a terminal line.
pub(crate) fn short(digest: &Digest) -> String {
    let hex = digest.hex();
    format!("{}:{}", digest.algorithm(), &hex[..hex.len().min(12)])
}

/// The plan for SOURCE: a layout directory or an archive file.
fn load(source: &Path, source_tag: Option<&str>) -> anyhow::Result<Plan> {
    let plan = if source.is_dir() {
        if !layout::is_layout(source) {
            bail!(
                "{} is a directory but not an OCI image layout (it has no oci-layout file)",
                source.display()
            );
        }
        layout::load(source, source_tag)
    } else if source.is_file() {
        archive::load(source, source_tag)
    } else {
        bail!("{} does not exist", source.display());
    }
    .with_context(|| format!("cannot read the image at {}", source.display()))?;
    if plan.manifests.is_empty() {
        bail!("{} holds no manifest to push", source.display());
    }
    Ok(plan)
}

pub async fn run(
    ctx: &Context,
    token: Option<ApiToken>,
    command: ImageCommand,
) -> anyhow::Result<()> {
    let credential = token.map_or(RegistryCredential::Anonymous, RegistryCredential::ApiToken);
    match command {
        ImageCommand::Push(args) => push(ctx, credential, args).await,
        ImageCommand::List(args) => list(ctx, credential, args).await,
    }
}

/// The registry REF names: the server of --host when REF names none or names that
/// same server (keeping --host's scheme and path prefix); otherwise that host over
/// https, or over http when it is this machine, as Docker treats loopback registries.
fn registry_url(host: &Url, registry: Option<&str>) -> anyhow::Result<Url> {
    let Some(registry) = registry else {
        return Ok(host.clone());
    };
    let parse = |scheme: &str| {
        Url::parse(&format!("{scheme}://{registry}"))
            .with_context(|| format!("`{registry}` is not a usable registry address"))
    };
    let loopback = match parse("https")?.host() {
        Some(Host::Domain(name)) => name == "localhost" || name.ends_with(".localhost"),
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    let url = parse(if loopback { "http" } else { "https" })?;
    if url.host_str() == host.host_str()
        && url.port_or_known_default() == host.port_or_known_default()
    {
        return Ok(host.clone());
    }
    Ok(url)
}

/// `host:port` of a registry URL, as image references spell it.
fn authority(url: &Url) -> String {
    match (url.host_str(), url.port_or_known_default()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        (None, _) => url.to_string(),
    }
}

fn kind(media_type: &str) -> &'static str {
    if media_type.contains("config") {
        "config"
    } else {
        "layer"
    }
}

/// The machine-readable result of a push.
#[derive(Serialize)]
struct Pushed {
    reference: String,
    digest: String,
    project: String,
}

async fn push(ctx: &Context, credential: RegistryCredential, args: PushArgs) -> anyhow::Result<()> {
    let registry = registry_url(ctx.client.host(), args.target.registry.as_deref())?;
    let project = args.target.project.to_string();
    let reference = format!("{}/{project}:{}", authority(&registry), args.target.tag);
    let client = RegistryClient::new(registry, credential)?;

    let (source, source_tag) = (args.source.clone(), args.source_tag.clone());
    // Reading a layout is quick, but an archive is hashed whole: off the async threads.
    let plan = tokio::task::spawn_blocking(move || load(&source, source_tag.as_deref()))
        .await
        .context("reading the image failed")??;

    let show = ctx.format == Format::Human && std::io::stdout().is_terminal();
    let bars = MultiProgress::with_draw_target(if show {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let style = ProgressStyle::with_template(
        "{prefix} [{bar:30}] {bytes:>10} / {total_bytes:<10} {binary_bytes_per_sec:>12} {msg}",
    )
    .context("progress bar template")?
    .progress_chars("=> ");

    let started = Instant::now();
    let mut order: Vec<&PlannedBlob> = plan.blobs.iter().collect();
    order.sort_by_key(|blob| Reverse(blob.size));
    let outcomes: Vec<(PushOutcome, u64)> = stream::iter(order)
        .map(|blob| {
            let bar = bars.add(
                ProgressBar::new(blob.size)
                    .with_style(style.clone())
                    .with_prefix(format!(
                        "{:<6} {}",
                        kind(&blob.media_type),
                        short(&blob.digest)
                    )),
            );
            let (client, project) = (&client, &project);
            async move {
                let outcome = client
                    .push_blob(
                        project,
                        &blob.digest,
                        blob.size,
                        blob.source.clone(),
                        None,
                        &|sent| bar.set_position(sent),
                    )
                    .await
                    .with_context(|| {
                        format!("cannot push {} {}", kind(&blob.media_type), blob.digest)
                    });
                let outcome = match outcome {
                    Ok(outcome) => outcome,
                    Err(e) => {
                        bar.abandon_with_message("failed");
                        return Err(e);
                    }
                };
                bar.set_position(blob.size);
                bar.finish_with_message(match outcome {
                    PushOutcome::Uploaded => "pushed",
                    PushOutcome::AlreadyPresent => "already there",
                    PushOutcome::Mounted => "mounted",
                });
                Ok((outcome, blob.size))
            }
        })
        .buffer_unordered(usize::from(args.jobs))
        .try_collect()
        .await?;

    let mut digest = None;
    let count = plan.manifests.len();
    for (i, manifest) in plan.manifests.iter().enumerate() {
        let target = if i + 1 == count {
            ManifestRef::Tag(args.target.tag.clone())
        } else {
            ManifestRef::Digest(manifest.digest.clone())
        };
        let pushed = client
            .put_manifest(
                &project,
                &target,
                &manifest.media_type,
                manifest.bytes.clone(),
            )
            .await
            .with_context(|| format!("cannot push manifest {}", manifest.digest))?;
        digest = Some(pushed);
    }
    let digest = digest.context("nothing was pushed")?;

    match ctx.format {
        Format::Json => output::emit_json(&Pushed {
            reference,
            digest: digest.to_string(),
            project,
        }),
        Format::Human => {
            let (uploaded, bytes) = outcomes
                .iter()
                .filter(|(outcome, _)| *outcome == PushOutcome::Uploaded)
                .fold((0, 0), |(n, total), (_, size)| (n + 1, total + size));
            let skipped = outcomes.len() - uploaded;
            output::emit(&format!(
                "Uploaded {uploaded} of {} blobs ({}; {skipped} already there) in {:.1} s.\nPushed {reference}@{digest}",
                outcomes.len(),
                HumanBytes(bytes),
                started.elapsed().as_secs_f64(),
            ))
        }
    }
}

/// One row of `bencher image list`.
#[derive(Serialize)]
struct TagRow {
    tag: String,
    digest: String,
    media_type: String,
    /// Bytes of the image's config and layers as stored; `None` for an index, whose
    /// platforms each have their own.
    size: Option<u64>,
}

fn describe(media_type: &str) -> &str {
    match media_type {
        OCI_IMAGE_MANIFEST => "OCI image",
        OCI_IMAGE_INDEX => "OCI index",
        DOCKER_MANIFEST_V2 => "Docker image",
        DOCKER_MANIFEST_LIST => "Docker list",
        other => other,
    }
}

async fn list(ctx: &Context, credential: RegistryCredential, args: ListArgs) -> anyhow::Result<()> {
    let client = RegistryClient::new(ctx.client.host().clone(), credential)?;
    let project = args.project.to_string();
    let mut tags = client
        .tags(&project)
        .await
        .with_context(|| format!("cannot list the images of `{project}`"))?;
    tags.sort();
    let rows: Vec<Option<TagRow>> = stream::iter(tags)
        .map(|tag| {
            let (client, project) = (&client, &project);
            async move {
                let reference = ManifestRef::Tag(
                    tag.parse()
                        .with_context(|| format!("the registry listed an invalid tag `{tag}`"))?,
                );
                let fetched = match client.manifest(project, &reference).await {
                    Ok(fetched) => fetched,
                    // Deleted since the listing: simply gone.
                    Err(RegistryError::Api { status: 404, .. }) => return Ok(None),
                    Err(e) => {
                        return Err(
                            anyhow::Error::new(e).context(format!("cannot read `{project}:{tag}`"))
                        );
                    }
                };
                let manifest = Manifest::parse(Some(&fetched.media_type), &fetched.bytes)
                    .with_context(|| format!("`{project}:{tag}` has an invalid manifest"))?;
                let size = match &manifest {
                    Manifest::Image(_) => Some(manifest.blobs().iter().map(|b| b.size).sum()),
                    Manifest::Index(_) => None,
                };
                Ok::<_, anyhow::Error>(Some(TagRow {
                    tag,
                    digest: fetched.digest.to_string(),
                    media_type: manifest.media_type().to_owned(),
                    size,
                }))
            }
        })
        .buffered(8)
        .try_collect()
        .await?;
    let rows: Vec<TagRow> = rows.into_iter().flatten().collect();
    match ctx.format {
        Format::Json => output::emit_json(&rows),
        Format::Human => {
            if !rows.is_empty() {
                let mut table = output::table(["TAG", "DIGEST", "TYPE", "SIZE"]);
                for row in &rows {
                    table.add_row([
                        row.tag.clone(),
                        row.digest.clone(),
                        describe(&row.media_type).to_owned(),
                        row.size
                            .map_or_else(String::new, |size| format!("{size} B")),
                    ]);
                }
                output::emit(&table.to_string())?;
            }
            output::emit(&output::footer(
                rows.len(),
                rows.len() as u64,
                "tag",
                "tags",
            ))
        }
    }
}

/// A next step for a registry error, printed under it.
pub fn hint(error: &RegistryError, has_token: bool) -> Option<String> {
    match error {
        RegistryError::Auth {
            status: Some(401), ..
        }
        | RegistryError::Api { status: 401, .. }
            if !has_token =>
        {
            Some("pass an API token with --token or BENCHER_API_TOKEN.".to_owned())
        }
        RegistryError::Auth {
            status: Some(401), ..
        } => Some(
            "the server refused the API token: check that it is active with `bencher token list`."
                .to_owned(),
        ),
        RegistryError::Transport { source, .. } if source.is_connect() => Some(
            "is a Bencher API server running there? The registry is the server of --host, or the HOST:PORT in REF."
                .to_owned(),
        ),
        RegistryError::Api { code, .. } if code == "NAME_UNKNOWN" => Some(
            "no such project: pushing an image to a new slug creates it; see `bencher project list`."
                .to_owned(),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(text: &str) -> ImageTarget {
        parse_target(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn refs_with_and_without_a_registry() {
        let t = target("my-proj:v1");
        assert_eq!(t.registry, None);
        assert_eq!(t.project.to_string(), "my-proj");
        assert_eq!(t.tag.as_str(), "v1");

        let t = target("localhost:6610/my-proj:v1.2");
        assert_eq!(t.registry.as_deref(), Some("localhost:6610"));
        assert_eq!(t.tag.as_str(), "v1.2");

        let t = target("registry.example.com/proj");
        assert_eq!(t.registry.as_deref(), Some("registry.example.com"));
        assert_eq!(t.tag.as_str(), "latest");

        let uuid = "67e55044-10b1-426f-9247-bb680e5fe0c8";
        assert_eq!(target(&format!("{uuid}:x")).project.to_string(), uuid);
    }

    #[test]
    fn refuses_refs_that_name_no_project() {
        for (text, why) in [
            ("", "must not be empty"),
            ("docker.io/library/proj:v1", "Docker Hub"),
            ("team/proj:v1", "must be a project"),
            ("localhost:6610/My_Proj:v1", "lowercase"),
            ("proj:bad tag", "tag"),
            (
                "proj@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                "not a digest",
            ),
            ("proj:-v1", "tag"),
        ] {
            let err = parse_target(text).expect_err(text);
            assert!(err.contains(why), "{text}: {err}");
        }
    }

    #[test]
    fn registry_urls() {
        let host = Url::parse("http://localhost:6610").expect("URL");
        assert_eq!(registry_url(&host, None).expect("url"), host);
        assert_eq!(
            registry_url(&host, Some("localhost:6610")).expect("url"),
            host
        );
        let url = registry_url(&host, Some("127.0.0.1:7000")).expect("url");
        assert_eq!(url.as_str(), "http://127.0.0.1:7000/");
        let url = registry_url(&host, Some("bench.example.com")).expect("url");
        assert_eq!(url.as_str(), "https://bench.example.com/");
        let behind_proxy = Url::parse("https://bench.example.com/api").expect("URL");
        let url = registry_url(&behind_proxy, Some("bench.example.com")).expect("url");
        assert_eq!(url, behind_proxy);
        assert_eq!(authority(&host), "localhost:6610");
        assert_eq!(authority(&url), "bench.example.com:443");
    }

    #[test]
    fn hints() {
        let auth = RegistryError::Auth {
            realm: "http://localhost:6610/v0/auth/oci/token".to_owned(),
            status: Some(401),
            message: "invalid".to_owned(),
        };
        assert!(hint(&auth, false).is_some_and(|h| h.contains("BENCHER_API_TOKEN")));
        assert!(hint(&auth, true).is_some_and(|h| h.contains("token list")));
        let unknown = RegistryError::Api {
            status: 404,
            code: "NAME_UNKNOWN".to_owned(),
            message: "no".to_owned(),
        };
        assert!(hint(&unknown, true).is_some_and(|h| h.contains("project list")));
    }
}
