//! What a job runs, decided before anything runs: the argv (Docker's entrypoint/cmd
//! rule), the environment (image, then job, then defaults), the working directory, and
//! the credentials of the image's `User` looked up in the image's own `/etc/passwd` and
//! `/etc/group`. Pure; the caller reads those two files (confined to the root
//! filesystem) and hands their contents in.

use std::collections::BTreeMap;

use bencher_oci::config::ImageConfig;
use bencher_types::protocol::JobConfig;

/// `PATH` when neither the image nor the job sets one: Docker's default.
pub(super) const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// `HOME` when the job sets none and the user has no passwd entry: Docker's default.
const DEFAULT_HOME: &str = "/";

/// Why a job cannot start; each message names what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "nothing to run: the image has no entrypoint or cmd and the job gives none; pass a command"
    )]
    NoCommand,
    #[error("argument {index} of the command contains a NUL byte")]
    NulInArgument { index: usize },
    #[error(
        "environment variable name `{0}` is invalid: it must be non-empty and contain neither `=` nor NUL"
    )]
    EnvName(String),
    #[error("the value of environment variable `{0}` contains a NUL byte")]
    EnvValue(String),
    #[error("the image's working directory `{0}` contains a NUL byte")]
    WorkingDir(String),
    #[error("the image's user `{0}` is invalid: expected `user`, `uid`, `user:group` or `uid:gid`")]
    UserSyntax(String),
    #[error("the image's user `{0}` is not in the image's /etc/passwd")]
    UnknownUser(String),
    #[error("the image's group `{0}` is not in the image's /etc/group")]
    UnknownGroup(String),
}

/// The identity the benchmark runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, set with `setgroups` (empty clears the runner's).
    pub groups: Vec<u32>,
    /// The passwd entry's home directory, the default for `HOME`.
    pub home: Option<String>,
}

/// The argv: Docker's rule over the image's entrypoint and cmd and the job's.
pub(super) fn command(image: &ImageConfig, job: &JobConfig) -> Result<Vec<String>, PlanError> {
    let argv = image.command(job.entrypoint.as_deref(), job.cmd.as_deref());
    if argv.is_empty() || argv[0].is_empty() {
        return Err(PlanError::NoCommand);
    }
    if let Some(index) = argv.iter().position(|arg| arg.contains('\0')) {
        return Err(PlanError::NulInArgument { index });
    }
    Ok(argv)
}

/// The environment: the image's `Env` in image order, the job's variables replacing or
/// added after them, then `PATH` (Docker's default) and `HOME` (the user's passwd home,
/// else `/`) when neither set them. A name given twice keeps its last value and its
/// first position.
pub(super) fn environment(
    image: &ImageConfig,
    job: Option<&BTreeMap<String, String>>,
    home: Option<&str>,
) -> Result<Vec<(String, String)>, PlanError> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |key: &str, value: &str| match env.iter_mut().find(|(k, _)| k == key) {
        Some(entry) => entry.1 = value.to_owned(),
        None => env.push((key.to_owned(), value.to_owned())),
    };
    let image_env = image.config.env.iter().map(|(k, v)| (k, v));
    for (key, value) in image_env.chain(job.into_iter().flatten()) {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return Err(PlanError::EnvName(key.clone()));
        }
        if value.contains('\0') {
            return Err(PlanError::EnvValue(key.clone()));
        }
        set(key, value);
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".to_owned(), DEFAULT_PATH.to_owned()));
    }
    if !env.iter().any(|(k, _)| k == "HOME") {
        env.push(("HOME".to_owned(), home.unwrap_or(DEFAULT_HOME).to_owned()));
    }
    Ok(env)
}

/// The working directory, absolute: the image's `WorkingDir` (a relative one is taken
/// from `/`, as Docker does), else `/`.
pub(super) fn working_dir(image: &ImageConfig) -> Result<String, PlanError> {
    let dir = image.working_dir().unwrap_or("/");
    if dir.contains('\0') {
        return Err(PlanError::WorkingDir(dir.to_owned()));
    }
    Ok(if dir.starts_with('/') {
        dir.to_owned()
    } else {
        format!("/{dir}")
    })
}

/// The image's `User` (`user`, `uid`, `user:group`, `uid:gid`, any mix), resolved the
/// way runc does against the image's passwd and group files (`None` when the image has
/// none):
/// - a name must have a passwd entry; a numeric uid may lack one (then gid 0 and no
///   home);
/// - without a group, the gid is the passwd entry's, and the supplementary groups are
///   those listing the user by name in the group file;
/// - with a group (a name must be in the group file), there are no supplementary
///   groups.
///
/// No user, or an empty one, is root.
pub(super) fn credentials(
    user: Option<&str>,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<Credentials, PlanError> {
    let spec = user.unwrap_or("").trim();
    let (user_part, group_part) = match spec.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (spec, None),
    };
    let syntax = || PlanError::UserSyntax(spec.to_owned());
    if group_part.is_some_and(|g| g.is_empty() || g.contains(':')) {
        return Err(syntax());
    }
    let user_part = if user_part.is_empty() {
        if group_part.is_some() {
            return Err(syntax());
        }
        "0"
    } else {
        user_part
    };
    let users = passwd.map(parse_passwd).unwrap_or_default();
    let groups = group.map(parse_group).unwrap_or_default();

    let entry = match user_part.parse::<u32>() {
        Ok(uid) => users
            .iter()
            .find(|u| u.uid == uid)
            .cloned()
            .or(Some(PasswdEntry {
                name: None,
                uid,
                gid: 0,
                home: None,
            })),
        Err(_) => users
            .iter()
            .find(|u| u.name.as_deref() == Some(user_part))
            .cloned(),
    };
    let Some(entry) = entry else {
        return Err(PlanError::UnknownUser(user_part.to_owned()));
    };

    let (gid, supplementary) = match group_part {
        Some(group_part) => {
            let gid = match group_part.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => groups
                    .iter()
                    .find(|g| g.name == group_part)
                    .map(|g| g.gid)
                    .ok_or_else(|| PlanError::UnknownGroup(group_part.to_owned()))?,
            };
            (gid, Vec::new())
        }
        None => {
            let mut supplementary: Vec<u32> = match &entry.name {
                Some(name) => groups
                    .iter()
                    .filter(|g| g.members.iter().any(|m| m == name))
                    .map(|g| g.gid)
                    .collect(),
                None => Vec::new(),
            };
            supplementary.sort_unstable();
            supplementary.dedup();
            (entry.gid, supplementary)
        }
    };
    Ok(Credentials {
        uid: entry.uid,
        gid,
        groups: supplementary,
        home: entry.home,
    })
}

#[derive(Debug, Clone)]
struct PasswdEntry {
    /// `None` for a numeric uid without an entry.
    name: Option<String>,
    uid: u32,
    gid: u32,
    home: Option<String>,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// `name:password:uid:gid:gecos:home:shell` lines; comments, blank and malformed lines
/// are skipped, as libc does.
fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            let [name, _, uid, gid, _, home, ..] = fields.as_slice() else {
                return None;
            };
            if name.is_empty() {
                return None;
            }
            Some(PasswdEntry {
                name: Some((*name).to_owned()),
                uid: uid.trim().parse().ok()?,
                gid: gid.trim().parse().ok()?,
                home: Some((*home).to_owned()).filter(|h| !h.is_empty()),
            })
        })
        .collect()
}

/// `name:password:gid:member,member` lines.
fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            let [name, _, gid, members, ..] = fields.as_slice() else {
                return None;
            };
            if name.is_empty() {
                return None;
            }
            Some(GroupEntry {
                name: (*name).to_owned(),
                gid: gid.trim().parse().ok()?,
                members: members
                    .split(',')
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .map(str::to_owned)
                    .collect(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(json: &str) -> ImageConfig {
        let text = format!(
            r#"{{"architecture":"amd64","os":"linux","config":{json},"rootfs":{{"type":"layers","diff_ids":[]}}}}"#
        );
        ImageConfig::parse(text.as_bytes()).expect("test image config")
    }

    fn job() -> JobConfig {
        serde_json::from_value(serde_json::json!({
            "registry": "http://localhost:6610",
            "project": "00000000-0000-4000-8000-000000000000",
            "digest": format!("sha256:{}", "a".repeat(64)),
            "timeout": 60,
        }))
        .expect("test job config")
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn command_follows_dockers_rule() {
        let img = image(r#"{"Entrypoint":["/bench"],"Cmd":["--fast"]}"#);
        let mut job = job();
        assert_eq!(command(&img, &job).unwrap(), ["/bench", "--fast"]);
        job.cmd = Some(strings(&["--slow"]));
        assert_eq!(command(&img, &job).unwrap(), ["/bench", "--slow"]);
        job.entrypoint = Some(strings(&["/bin/sh", "-c"]));
        job.cmd = None;
        assert_eq!(command(&img, &job).unwrap(), ["/bin/sh", "-c"]);

        let empty = image("{}");
        assert_eq!(command(&empty, &self::job()), Err(PlanError::NoCommand));
        let mut job = self::job();
        job.cmd = Some(strings(&["a", "b\0c"]));
        assert_eq!(
            command(&empty, &job),
            Err(PlanError::NulInArgument { index: 1 })
        );
    }

    #[test]
    fn environment_merges_image_then_job_then_defaults() {
        let img = image(r#"{"Env":["A=1","B=2","PATH=/opt/bin"]}"#);
        let job_env = BTreeMap::from([
            ("B".to_owned(), "3".to_owned()),
            ("C".to_owned(), "x=y".to_owned()),
        ]);
        let env = environment(&img, Some(&job_env), Some("/home/bench")).unwrap();
        let expected: Vec<(String, String)> = [
            ("A", "1"),
            ("B", "3"),
            ("PATH", "/opt/bin"),
            ("C", "x=y"),
            ("HOME", "/home/bench"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        assert_eq!(env, expected);

        let env = environment(&image("{}"), None, None).unwrap();
        assert_eq!(env[0], ("PATH".to_owned(), DEFAULT_PATH.to_owned()));
        assert_eq!(env[1], ("HOME".to_owned(), "/".to_owned()));

        let job_home = BTreeMap::from([("HOME".to_owned(), "/work".to_owned())]);
        let env = environment(&image("{}"), Some(&job_home), Some("/root")).unwrap();
        assert!(env.contains(&("HOME".to_owned(), "/work".to_owned())));
        assert_eq!(env.iter().filter(|(k, _)| k == "HOME").count(), 1);

        for bad in ["", "A=B", "A\0"] {
            let bad_env = BTreeMap::from([(bad.to_owned(), "v".to_owned())]);
            assert_eq!(
                environment(&image("{}"), Some(&bad_env), None),
                Err(PlanError::EnvName(bad.to_owned()))
            );
        }
    }

    #[test]
    fn working_dir_is_absolute() {
        assert_eq!(working_dir(&image("{}")).unwrap(), "/");
        assert_eq!(
            working_dir(&image(r#"{"WorkingDir":"/work"}"#)).unwrap(),
            "/work"
        );
        assert_eq!(
            working_dir(&image(r#"{"WorkingDir":"work"}"#)).unwrap(),
            "/work"
        );
    }

    const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/sh
# a comment
broken line
bench:x:1234:2345:Bench User:/home/bench:/bin/sh
nohome:x:1500:1500:::/bin/sh
";
    const GROUP: &str = "\
root:x:0:
bench:x:2345:
extra:x:3456:bench,other
more:x:4567:other, bench
";

    #[test]
    fn credentials_resolve_in_the_images_files() {
        let creds = |user| credentials(Some(user), Some(PASSWD), Some(GROUP));
        assert_eq!(
            creds("").unwrap(),
            Credentials {
                uid: 0,
                gid: 0,
                groups: vec![],
                home: Some("/root".into())
            }
        );
        assert_eq!(
            credentials(None, None, None).unwrap(),
            Credentials {
                uid: 0,
                gid: 0,
                groups: vec![],
                home: None
            }
        );
        assert_eq!(
            creds("bench").unwrap(),
            Credentials {
                uid: 1234,
                gid: 2345,
                groups: vec![3456, 4567],
                home: Some("/home/bench".into())
            }
        );
        // By uid: the same entry and groups.
        assert_eq!(creds("1234").unwrap(), creds("bench").unwrap());
        // An explicit group: no supplementary groups.
        assert_eq!(
            creds("bench:extra").unwrap(),
            Credentials {
                uid: 1234,
                gid: 3456,
                groups: vec![],
                home: Some("/home/bench".into())
            }
        );
        assert_eq!(creds("bench:99").unwrap().gid, 99);
        // A numeric uid without an entry: gid 0, no home.
        assert_eq!(
            creds("4242").unwrap(),
            Credentials {
                uid: 4242,
                gid: 0,
                groups: vec![],
                home: None
            }
        );
        assert_eq!(creds("4242:7").unwrap().gid, 7);
        assert_eq!(creds("nohome").unwrap().home, None);
        // Without passwd and group files only numbers work.
        assert_eq!(credentials(Some("10:20"), None, None).unwrap().gid, 20);
        assert_eq!(
            credentials(Some("bench"), None, None),
            Err(PlanError::UnknownUser("bench".into()))
        );
        assert_eq!(
            creds("nobody"),
            Err(PlanError::UnknownUser("nobody".into()))
        );
        assert_eq!(
            creds("bench:nogroup"),
            Err(PlanError::UnknownGroup("nogroup".into()))
        );
        for bad in ["bench:", ":bench", "a:b:c"] {
            assert_eq!(creds(bad), Err(PlanError::UserSyntax(bad.into())), "{bad}");
        }
    }
}
