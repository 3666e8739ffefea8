//! Registry authentication: the credential a client holds, the Docker token flow
//! (a 401's `WWW-Authenticate: Bearer realm=…,service=…,scope=…` challenge, a token
//! fetched from the realm, cached per scope until shortly before it expires), and the
//! parsing of challenges and scopes. IO: HTTP requests to the token endpoint.
//!
//! Secrets (the API token, registry tokens) live only in `RegistryCredential`,
//! `CachedToken` and `Authorization`, whose `Debug` impls are redacted, and leave the
//! process only in an `Authorization` header that reqwest marks sensitive.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::time::Duration;

use bencher_types::ApiToken;
use reqwest::header::{HeaderMap, WWW_AUTHENTICATE};
use reqwest::{RequestBuilder, StatusCode};
use serde::Deserialize;
use tokio::time::Instant;
use url::Url;

use super::error::{RegistryError, decode_error_body};

/// A token is dropped from the cache this long before the realm says it expires, so a
/// request never leaves with a token that dies in flight.
const EXPIRY_MARGIN: Duration = Duration::from_secs(30);
/// The lifetime the token spec assumes when a realm does not say.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// The user name sent with an API token in Basic credentials; the server ignores it.
const BASIC_USER: &str = "bencher";
/// The largest token response read; a token is a few hundred bytes.
const MAX_TOKEN_RESPONSE: usize = 64 << 10;

/// What a [`RegistryClient`](super::RegistryClient) authenticates with.
#[derive(Clone)]
pub enum RegistryCredential {
    /// A Bencher API token: exchanged at the token endpoint of a Bearer challenge (as the
    /// password of Basic credentials) for a short-lived registry token, or sent directly
    /// when the registry offers no token flow.
    ApiToken(ApiToken),
    /// A ready registry token, such as a runner's per-job pull token: sent as it is,
    /// never exchanged.
    Bearer(String),
    /// No credentials; anonymous tokens are requested when a registry offers them.
    Anonymous,
}

impl fmt::Debug for RegistryCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // `ApiToken`'s own `Debug` is redacted.
            Self::ApiToken(token) => f.debug_tuple("ApiToken").field(token).finish(),
            Self::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            Self::Anonymous => f.write_str("Anonymous"),
        }
    }
}

/// What goes in the `Authorization` header of one request.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Authorization {
    Bearer(String),
    /// Basic credentials whose password is the API token.
    Basic(String),
}

impl fmt::Debug for Authorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            Self::Basic(_) => f.write_str("Basic(<redacted>)"),
        }
    }
}

impl Authorization {
    /// Sets the header; both reqwest helpers mark it sensitive, so it is never printed.
    pub(crate) fn apply(&self, request: RequestBuilder) -> RequestBuilder {
        match self {
            Self::Bearer(token) => request.bearer_auth(token),
            Self::Basic(password) => request.basic_auth(BASIC_USER, Some(password)),
        }
    }
}

/// The scopes one operation needs, such as `repository:my-project:pull,push`. Also the
/// key of the token cache, so an operation reuses the token of the same scopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scope(Vec<String>);

impl Scope {
    pub(crate) fn pull(repository: &str) -> Self {
        Self(vec![format!("repository:{repository}:pull")])
    }

    /// Push implies pull: a push checks for existing blobs before uploading.
    pub(crate) fn push(repository: &str) -> Self {
        Self(vec![format!("repository:{repository}:pull,push")])
    }

    /// This scope plus pull access to `repository`, for a cross-repository mount.
    pub(crate) fn and_pull(mut self, repository: &str) -> Self {
        self.0.push(format!("repository:{repository}:pull"));
        self.0 = merge_scopes(self.0.iter().map(String::as_str));
        self
    }

    fn key(&self) -> String {
        self.0.join(" ")
    }
}

/// Merges scopes (`type:name:actions`) so each resource appears once with the union of
/// its actions, in a stable order. Scopes that do not parse are kept as they are.
fn merge_scopes<'a>(scopes: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut resources: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut opaque = Vec::new();
    for scope in scopes {
        // The name may contain `:` (a registry host with a port never appears here, but
        // be exact anyway): actions follow the last `:`.
        match scope.rsplit_once(':') {
            Some((resource, actions)) if resource.contains(':') => {
                resources
                    .entry(resource)
                    .or_default()
                    .extend(actions.split(',').filter(|a| !a.is_empty()));
            }
            _ => opaque.push(scope.to_owned()),
        }
    }
    resources
        .into_iter()
        .map(|(resource, actions)| {
            format!(
                "{resource}:{}",
                actions.into_iter().collect::<Vec<_>>().join(",")
            )
        })
        .chain(opaque)
        .collect()
}

/// One challenge of a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Challenge {
    pub(crate) scheme: String,
    pub(crate) params: Vec<(String, String)>,
}

impl Challenge {
    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// Every challenge of every `WWW-Authenticate` header of a response.
pub(crate) fn challenges(headers: &HeaderMap) -> Vec<Challenge> {
    headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(parse_challenges)
        .collect()
}

fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// Parses `challenge *( "," challenge )` of RFC 7235, where a challenge is a scheme and
/// comma-separated `name=value` parameters (value a quoted string or bare text). A token68
/// (`Basic dXNlcg==`) is skipped. Lenient: garbage ends the parse, keeping what came
/// before, because a header we cannot read must not hide the challenges we can.
pub(crate) fn parse_challenges(value: &str) -> Vec<Challenge> {
    let chars: Vec<char> = value.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    let skip = |i: &mut usize, set: &str| {
        while *i < chars.len() && set.contains(chars[*i]) {
            *i += 1;
        }
    };
    let token = |i: &mut usize| {
        let start = *i;
        while *i < chars.len() && is_tchar(chars[*i]) {
            *i += 1;
        }
        chars[start..*i].iter().collect::<String>()
    };
    loop {
        skip(&mut i, " \t,");
        let scheme = token(&mut i);
        if scheme.is_empty() {
            break;
        }
        let mut challenge = Challenge {
            scheme,
            params: Vec::new(),
        };
        loop {
            let before = i;
            skip(&mut i, " \t,");
            let name = token(&mut i);
            skip(&mut i, " \t");
            if name.is_empty() || chars.get(i) != Some(&'=') {
                // Either the end, or the scheme of the next challenge: not ours.
                i = before;
                break;
            }
            i += 1;
            if chars.get(i) == Some(&'=') {
                // A token68 ending in padding: no parameters to find here.
                skip(&mut i, "=");
                continue;
            }
            skip(&mut i, " \t");
            let value = if chars.get(i) == Some(&'"') {
                i += 1;
                let mut value = String::new();
                while let Some(&c) = chars.get(i) {
                    i += 1;
                    match c {
                        '"' => break,
                        '\\' => {
                            if let Some(&escaped) = chars.get(i) {
                                value.push(escaped);
                                i += 1;
                            }
                        }
                        c => value.push(c),
                    }
                }
                value
            } else {
                // RFC 7235 says a token, but realms unquoted by a sloppy server are URLs:
                // read up to the next separator instead.
                let start = i;
                while i < chars.len() && !matches!(chars[i], ',' | ' ' | '\t' | '"') {
                    i += 1;
                }
                chars[start..i].iter().collect()
            };
            challenge.params.push((name.to_ascii_lowercase(), value));
        }
        out.push(challenge);
        // Anything that is neither a separator nor a token ends the header.
        skip(&mut i, " \t");
        if i < chars.len() && chars[i] != ',' && !is_tchar(chars[i]) {
            break;
        }
    }
    out
}

/// A registry token from the cache.
struct CachedToken {
    token: String,
    until: Instant,
}

/// What the registry was found to want.
enum Flow {
    /// Nothing learned yet: requests go without credentials until a 401 says more.
    Unknown,
    /// The Docker token flow at `realm`.
    Token { realm: Url, service: Option<String> },
    /// No token flow offered: the API token goes directly in every request.
    Direct { basic: bool },
}

struct State {
    flow: Flow,
    tokens: HashMap<String, CachedToken>,
}

/// The token response of the Docker token flow; `token` and `access_token` are the
/// same, and realms send either or both.
#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// Authentication of one client: the credential and what was learned from challenges.
/// The state's lock is held across a token fetch, so requests that need the same token
/// at the same moment wait for one fetch instead of each making their own.
pub(crate) struct Auth {
    credential: RegistryCredential,
    registry: Url,
    state: tokio::sync::Mutex<State>,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("credential", &self.credential)
            .finish_non_exhaustive()
    }
}

impl Auth {
    pub(crate) fn new(credential: RegistryCredential, registry: Url) -> Self {
        Self {
            credential,
            registry,
            state: tokio::sync::Mutex::new(State {
                flow: Flow::Unknown,
                tokens: HashMap::new(),
            }),
        }
    }

    /// The `Authorization` to send for `scope` before the registry has said anything
    /// about this request: a cached or freshly fetched token once the token flow is
    /// known, the API token once the registry is known to want it directly, else none.
    pub(crate) async fn authorization(
        &self,
        http: &reqwest::Client,
        scope: &Scope,
    ) -> Result<Option<Authorization>, RegistryError> {
        let token = match &self.credential {
            RegistryCredential::Bearer(token) => {
                return Ok(Some(Authorization::Bearer(token.clone())));
            }
            RegistryCredential::ApiToken(token) => Some(token),
            RegistryCredential::Anonymous => None,
        };
        let mut state = self.state.lock().await;
        if let Some(cached) = valid(&state, &scope.key()) {
            return Ok(Some(Authorization::Bearer(cached)));
        }
        match &state.flow {
            Flow::Unknown => Ok(None),
            Flow::Direct { basic } => Ok(token.map(|t| direct(t, *basic))),
            Flow::Token { realm, service } => {
                let (realm, service) = (realm.clone(), service.clone());
                let fetched = self
                    .fetch(http, &realm, service.as_deref(), &scope.0)
                    .await?;
                let auth = Authorization::Bearer(fetched.token.clone());
                state.tokens.insert(scope.key(), fetched);
                Ok(Some(auth))
            }
        }
    }

    /// After a 401 answered a request that carried `sent`: what to send on the one
    /// retry, or `None` when there is nothing better to try (the caller then reports the
    /// 401 itself).
    pub(crate) async fn after_unauthorized(
        &self,
        http: &reqwest::Client,
        scope: &Scope,
        headers: &HeaderMap,
        sent: Option<&Authorization>,
    ) -> Result<Option<Authorization>, RegistryError> {
        let api_token = match &self.credential {
            // A ready token is all we have; exchanging it is not ours to do.
            RegistryCredential::Bearer(_) => return Ok(None),
            RegistryCredential::ApiToken(token) => Some(token),
            RegistryCredential::Anonymous => None,
        };
        let challenges = challenges(headers);
        let bearer = challenges.iter().find(|c| {
            c.scheme.eq_ignore_ascii_case("bearer")
                && c.param("realm").is_some_and(|r| !r.is_empty())
        });
        let mut state = self.state.lock().await;
        let key = scope.key();

        let Some(bearer) = bearer else {
            // No token flow on offer: the API token itself is the only thing to try, once.
            let Some(token) = api_token else {
                return Ok(None);
            };
            if matches!(sent, Some(Authorization::Basic(_)))
                || matches!((sent, &state.flow), (Some(_), Flow::Direct { .. }))
            {
                return Ok(None);
            }
            let basic = challenges
                .iter()
                .any(|c| c.scheme.eq_ignore_ascii_case("basic"));
            state.flow = Flow::Direct { basic };
            return Ok(Some(direct(token, basic)));
        };

        // Another request may have fetched a token while this one waited for its 401.
        if let Some(cached) = valid(&state, &key)
            && sent != Some(&Authorization::Bearer(cached.clone()))
        {
            return Ok(Some(Authorization::Bearer(cached)));
        }
        state.tokens.remove(&key);

        let realm_text = bearer.param("realm").unwrap_or_default();
        let realm = Url::parse(realm_text).map_err(|_| RegistryError::Auth {
            realm: realm_text.to_owned(),
            status: None,
            message: "the registry's challenge names a realm that is not a URL".to_owned(),
        })?;
        let service = bearer.param("service").map(str::to_owned);
        // Ask for what the operation needs and what the challenge names, in one token.
        let wanted = merge_scopes(
            scope
                .0
                .iter()
                .map(String::as_str)
                .chain(bearer.param("scope").into_iter().flat_map(|s| s.split(' '))),
        );
        state.flow = Flow::Token {
            realm: realm.clone(),
            service: service.clone(),
        };
        let fetched = self
            .fetch(http, &realm, service.as_deref(), &wanted)
            .await?;
        let auth = Authorization::Bearer(fetched.token.clone());
        state.tokens.insert(key, fetched);
        Ok(Some(auth))
    }

    /// Requests a token for `scopes` from `realm`.
    async fn fetch(
        &self,
        http: &reqwest::Client,
        realm: &Url,
        service: Option<&str>,
        scopes: &[String],
    ) -> Result<CachedToken, RegistryError> {
        let shown = shown_realm(realm);
        let mut url = realm.clone();
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = service {
                query.append_pair("service", service);
            }
            for scope in scopes {
                query.append_pair("scope", scope);
            }
        }
        let mut request = http.get(url);
        if let RegistryCredential::ApiToken(token) = &self.credential {
            self.check_realm(realm)?;
            request = Authorization::Basic(token.expose_secret().to_owned()).apply(request);
        }
        let started = Instant::now();
        let transport = |source: reqwest::Error| RegistryError::Transport {
            method: "GET".to_owned(),
            url: shown.clone(),
            source: source.without_url(),
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let body = super::read_limited(response, MAX_TOKEN_RESPONSE)
            .await
            .map_err(transport)?;
        if status != StatusCode::OK {
            let (_, message) = decode_error_body(status, &body.bytes);
            return Err(RegistryError::Auth {
                realm: shown,
                status: Some(status.as_u16()),
                message,
            });
        }
        let decode = |reason: String| RegistryError::Decode {
            method: "GET".to_owned(),
            url: shown.clone(),
            reason,
        };
        if body.truncated {
            return Err(decode(format!(
                "the token response is larger than {MAX_TOKEN_RESPONSE} bytes"
            )));
        }
        let parsed: TokenResponse = serde_json::from_slice(&body.bytes)
            .map_err(|e| decode(format!("not a token response: {e}")))?;
        let token = parsed
            .token
            .filter(|t| !t.is_empty())
            .or(parsed.access_token.filter(|t| !t.is_empty()))
            .ok_or_else(|| decode("the token response has no token".to_owned()))?;
        let lifetime = match parsed.expires_in {
            Some(seconds) if seconds > 0 => Duration::from_secs(seconds),
            _ => DEFAULT_TOKEN_LIFETIME,
        };
        Ok(CachedToken {
            token,
            until: started + lifetime.saturating_sub(EXPIRY_MARGIN.min(lifetime / 2)),
        })
    }

    /// The API token goes only to a realm on the registry's own host, and never from
    /// https down to http: a challenge is just a header, and any server (or a proxy in
    /// between) could name a realm that collects tokens.
    fn check_realm(&self, realm: &Url) -> Result<(), RegistryError> {
        let refuse = |why: &str| RegistryError::Auth {
            realm: shown_realm(realm),
            status: None,
            message: format!("refusing to send the API token there: {why}"),
        };
        if !matches!(realm.scheme(), "http" | "https") {
            return Err(refuse("the realm is not an http(s) URL"));
        }
        if realm.host_str() != self.registry.host_str() {
            return Err(refuse(&format!(
                "it is not on the registry's host `{}`",
                self.registry.host_str().unwrap_or_default()
            )));
        }
        if self.registry.scheme() == "https" && realm.scheme() == "http" {
            return Err(refuse("the registry is https but the realm is plain http"));
        }
        Ok(())
    }
}

fn valid(state: &State, key: &str) -> Option<String> {
    state
        .tokens
        .get(key)
        .filter(|cached| cached.until > Instant::now())
        .map(|cached| cached.token.clone())
}

fn direct(token: &ApiToken, basic: bool) -> Authorization {
    let secret = token.expose_secret().to_owned();
    if basic {
        Authorization::Basic(secret)
    } else {
        Authorization::Bearer(secret)
    }
}

/// The realm as errors show it: without a query, which a realm could use for anything.
fn shown_realm(realm: &Url) -> String {
    let mut shown = realm.clone();
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(c: &Challenge) -> Vec<(&str, &str)> {
        c.params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    #[test]
    fn parses_our_servers_challenge() {
        let header = r#"Bearer realm="http://127.0.0.1:6610/v0/auth/oci/token",service="bencher",scope="repository:proj:pull,push""#;
        let parsed = parse_challenges(header);
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].scheme, "Bearer");
        assert_eq!(
            params(&parsed[0]),
            [
                ("realm", "http://127.0.0.1:6610/v0/auth/oci/token"),
                ("service", "bencher"),
                ("scope", "repository:proj:pull,push"),
            ]
        );
    }

    #[test]
    fn parses_several_challenges_tokens_and_escapes() {
        let header = r#"Basic realm="a \"quoted\" realm", Bearer realm=https://auth.example.com/token , service = "x,y" ,error=insufficient_scope"#;
        let parsed = parse_challenges(header);
        assert_eq!(parsed.len(), 2, "{parsed:?}");
        assert_eq!(parsed[0].scheme, "Basic");
        assert_eq!(params(&parsed[0]), [("realm", "a \"quoted\" realm")]);
        assert_eq!(parsed[1].scheme, "Bearer");
        assert_eq!(
            parsed[1].param("realm"),
            Some("https://auth.example.com/token")
        );
        assert_eq!(parsed[1].param("SERVICE"), Some("x,y"));
        assert_eq!(parsed[1].param("error"), Some("insufficient_scope"));
    }

    #[test]
    fn tolerates_token68_bare_schemes_and_garbage() {
        let parsed = parse_challenges("Negotiate abc==, Bearer realm=\"r\"");
        assert_eq!(parsed.len(), 2, "{parsed:?}");
        assert_eq!(parsed[1].param("realm"), Some("r"));
        assert_eq!(parse_challenges("Bearer").len(), 1);
        assert!(parse_challenges("").is_empty());
        assert!(parse_challenges("   ,  ").is_empty());
        // Unterminated quotes and stray characters end the parse without panicking.
        let parsed = parse_challenges("Bearer realm=\"unterminated");
        assert_eq!(parsed[0].param("realm"), Some("unterminated"));
        for header in [
            "Bearer realm=",
            "Bearer =x",
            "Bearer realm=\"\\",
            "@@",
            "Bearer a=b;c",
        ] {
            let _ = parse_challenges(header);
        }
    }

    #[test]
    fn merges_scopes() {
        let merged = merge_scopes([
            "repository:a:push",
            "repository:a:pull",
            "repository:b:pull",
            "registry:catalog:*",
            "weird",
        ]);
        assert_eq!(
            merged,
            [
                "registry:catalog:*",
                "repository:a:pull,push",
                "repository:b:pull",
                "weird"
            ]
        );
        let scope = Scope::push("a").and_pull("b").and_pull("a");
        assert_eq!(scope.key(), "repository:a:pull,push repository:b:pull");
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let token: ApiToken = "bencher_user_0123456789abcdefghijABCDEFGHIJ"
            .parse()
            .expect("test token parses");
        for value in [
            format!("{:?}", RegistryCredential::ApiToken(token.clone())),
            format!("{:?}", RegistryCredential::Bearer("s3cr3t.sig".to_owned())),
            format!("{:?}", Authorization::Bearer("s3cr3t.sig".to_owned())),
            format!(
                "{:?}",
                Authorization::Basic(token.expose_secret().to_owned())
            ),
        ] {
            assert!(!value.contains("0123456789abcdefghij"), "{value}");
            assert!(!value.contains("s3cr3t"), "{value}");
        }
    }

    fn auth(registry: &str) -> Auth {
        let token: ApiToken = "bencher_user_0123456789abcdefghijABCDEFGHIJ"
            .parse()
            .expect("test token parses");
        Auth::new(
            RegistryCredential::ApiToken(token),
            Url::parse(registry).expect("test URL"),
        )
    }

    #[test]
    fn api_tokens_go_only_to_the_registrys_host() {
        let a = auth("http://127.0.0.1:6610");
        let ok = |realm: &str| a.check_realm(&Url::parse(realm).expect("realm URL"));
        assert!(ok("http://127.0.0.1:6610/v0/auth/oci/token").is_ok());
        assert!(ok("https://127.0.0.1/v0/auth/oci/token").is_ok());
        let err = ok("http://evil.example.com/token").expect_err("other host");
        assert!(
            err.to_string().contains("not on the registry's host"),
            "{err}"
        );
        assert!(ok("ftp://127.0.0.1/token").is_err());

        let secure = auth("https://registry.example.com");
        let err = secure
            .check_realm(&Url::parse("http://registry.example.com/token").expect("realm URL"))
            .expect_err("downgrade");
        assert!(err.to_string().contains("plain http"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn cached_tokens_expire_before_the_realm_says() {
        let a = auth("http://127.0.0.1:6610");
        let scope = Scope::pull("p");
        {
            let mut state = a.state.lock().await;
            let lifetime = Duration::from_secs(600);
            state.tokens.insert(
                scope.key(),
                CachedToken {
                    token: "t".to_owned(),
                    until: Instant::now() + lifetime.saturating_sub(EXPIRY_MARGIN),
                },
            );
        }
        let http = reqwest::Client::new();
        let got = a.authorization(&http, &scope).await.expect("cached");
        assert_eq!(got, Some(Authorization::Bearer("t".to_owned())));
        tokio::time::advance(Duration::from_secs(571)).await;
        // Expired, and the flow is still unknown: nothing to send, no fetch attempted.
        let got = a.authorization(&http, &scope).await.expect("no fetch");
        assert_eq!(got, None);
    }
}
