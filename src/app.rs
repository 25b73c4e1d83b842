//! Startup: from the environment to a running server, reporting every problem at once.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use tokio::net::TcpListener;

use crate::auth::TokenSource;
use crate::config::{Config, ConfigError, ConfigErrors, Env, Mode};
use crate::kinds::Kinds;
use crate::state::State;
use crate::upstream::{self, ClientSettings, HttpClient, IdTokens, Upstream};
use crate::{demo, keys, log, server};

/// Why the proxy did not start.
#[derive(Debug)]
pub enum StartupError {
    Config(ConfigErrors),
    Bind(SocketAddr, std::io::Error),
    Demo(std::io::Error),
}

impl std::fmt::Display for StartupError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            StartupError::Config(errors) => write!(f, "{errors}"),
            StartupError::Bind(addr, e) => write!(f, "cannot listen on {addr} (PORT): {e}"),
            StartupError::Demo(e) => write!(f, "cannot start the demo stand-in for Vertex: {e}"),
        }
    }
}

/// Reads the configuration, prepares credentials and serves until SIGTERM or SIGINT.
pub async fn run(env: &dyn Env, mode: Mode) -> Result<(), StartupError> {
    let shutdown = server::shutdown_signal();
    let (state, listener) = prepare(env, mode).await?;
    let state = Arc::new(state);
    if let Some(path) = state.config.keys_file.clone() {
        let watched = state.clone();
        tokio::spawn(keys::watch_file(
            path,
            state.config.keys_reload,
            state.keys.clone(),
            move |json| watched.config.parse_keys(json),
        ));
    }
    server::run(listener, state, shutdown).await;
    Ok(())
}

/// A configuration checked as far as it can be without serving: what `check` reports.
pub struct Loaded {
    pub config: Config,
    pub project: String,
    /// Vertex's access token, and the services' ID tokens.
    pub tokens: (TokenSource, IdTokens),
    pub client: HttpClient,
}

impl Loaded {
    /// A loaded configuration from parts the caller already holds (the tests' fixed
    /// tokens), with the client `load` would build.
    pub fn new(config: Config, project: String, tokens: (TokenSource, IdTokens)) -> Loaded {
        let client = upstream::client(&ClientSettings::of(&config));
        Loaded {
            config,
            project,
            tokens,
            client,
        }
    }
}

/// `vertex-proxy check`: validates exactly as startup does, and returns the configuration
/// summary (no secrets) or every problem.
pub async fn check(env: &dyn Env) -> Result<serde_json::Value, ConfigErrors> {
    let loaded = load(env, Mode::Vertex).await?;
    Ok(loaded.config.summary(&loaded.project))
}

/// Reads and validates the configuration, builds the credential and finds the project,
/// collecting every problem before giving up.
pub async fn load(env: &dyn Env, mode: Mode) -> Result<Loaded, ConfigErrors> {
    let demo_env = demo::DemoEnv(env);
    let parsed = match mode {
        Mode::Demo => Config::from_env(&demo_env, mode),
        Mode::Vertex => Config::from_env(env, mode),
    };
    let mut errors = Vec::new();
    // The metadata server is asked even when the configuration has errors, so that they are
    // all reported at once.
    let settings = parsed.as_ref().map_or_else(
        |_| ClientSettings {
            connect_timeout: Duration::from_secs(10),
            extra_roots: Arc::new([]),
            max_connections: 1,
        },
        ClientSettings::of,
    );
    let client = upstream::client(&settings);

    let tokens = match mode {
        Mode::Demo => Some(TokenSource::Fixed(HeaderValue::from_static(
            demo::TOKEN_HEADER,
        ))),
        Mode::Vertex => match TokenSource::application_default() {
            Ok(tokens) => Some(tokens),
            Err(message) => {
                errors.push(ConfigError {
                    var: "GOOGLE_APPLICATION_CREDENTIALS",
                    message,
                });
                None
            }
        },
    };

    let project_set = env
        .var("GOOGLE_CLOUD_PROJECT")
        .is_some_and(|p| !p.trim().is_empty());
    let project = match (&parsed, mode) {
        (
            Ok(Config {
                project_from_env: Some(p),
                ..
            }),
            _,
        ) => Some(p.clone()),
        (_, Mode::Demo) => Some(demo::PROJECT.to_owned()),
        (_, Mode::Vertex) if !project_set => {
            match upstream::project_from_metadata(&client, env).await {
                Ok(p) => Some(p),
                Err(e) => {
                    errors.push(ConfigError {
                        var: "GOOGLE_CLOUD_PROJECT",
                        message: format!(
                            "is not set, and the project could not be read from the metadata server ({e})"
                        ),
                    });
                    None
                }
            }
        }
        _ => None,
    };

    let config = match parsed {
        Ok(config) => config,
        Err(ConfigErrors(mut parse_errors)) => {
            parse_errors.append(&mut errors);
            return Err(ConfigErrors(parse_errors));
        }
    };
    let id_tokens = id_tokens(&config, mode, &mut errors);
    let (Some(tokens), Some(project), true) = (tokens, project, errors.is_empty()) else {
        return Err(ConfigErrors(errors));
    };
    Ok(Loaded {
        config,
        project,
        tokens: (tokens, id_tokens),
        client,
    })
}

/// An ID-token credential for each audience the services' aliases name. The demo's stand-in
/// checks no token.
fn id_tokens(config: &Config, mode: Mode, errors: &mut Vec<ConfigError>) -> IdTokens {
    let mut id_tokens = IdTokens::new();
    for audience in config.aliases.audiences() {
        let tokens = match mode {
            Mode::Demo => TokenSource::Fixed(HeaderValue::from_static(demo::TOKEN_HEADER)),
            Mode::Vertex => match TokenSource::id_token(&audience) {
                Ok(tokens) => tokens,
                Err(message) => {
                    errors.push(ConfigError {
                        var: "GOOGLE_APPLICATION_CREDENTIALS",
                        message,
                    });
                    continue;
                }
            },
        };
        id_tokens.insert(audience, tokens);
    }
    id_tokens
}

/// Everything up to the first accept, so that the order of startup is in one place.
pub async fn prepare(env: &dyn Env, mode: Mode) -> Result<(State, TcpListener), StartupError> {
    let Loaded {
        mut config,
        project,
        tokens,
        client,
    } = load(env, mode).await.map_err(StartupError::Config)?;
    // The first token fetches run while the socket is bound and the first request travels.
    tokens.0.warm_up(config.timeouts.token);
    for id_tokens in tokens.1.values() {
        id_tokens.warm_up(config.timeouts.token);
    }

    let host = match mode {
        // The demo has a well-known key: keep it off the network.
        Mode::Demo => Ipv4Addr::LOCALHOST,
        Mode::Vertex => Ipv4Addr::UNSPECIFIED,
    };
    if mode == Mode::Demo {
        let stand_in = demo::start_stand_in().await.map_err(StartupError::Demo)?;
        config.base_url = Some(
            format!("http://{stand_in}")
                .parse()
                .expect("a socket address makes a valid origin"),
        );
    }
    let addr = SocketAddr::from((host, config.port));
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| StartupError::Bind(addr, e))?;
    let local = listener
        .local_addr()
        .map_err(|e| StartupError::Bind(addr, e))?;

    let mut summary = config.summary(&project);
    summary["listen"] = local.to_string().into();
    log::emit(&serde_json::json!({
        "severity": "INFO",
        "message": format!("vertex-proxy {} listening on {local}", env!("CARGO_PKG_VERSION")),
        "config": summary,
    }));
    for warning in &config.warnings {
        log::warning(warning);
    }
    if mode == Mode::Demo {
        demo::print_banner(local, !demo::DemoEnv(env).has_own_keys());
    }

    let loaded = Loaded {
        config,
        project,
        tokens,
        client,
    };
    Ok((assemble(loaded), listener))
}

/// The state every request shares, from a loaded configuration: what startup serves, and
/// what the tests serve, so that the two cannot drift apart.
pub fn assemble(loaded: Loaded) -> State {
    let Loaded {
        config,
        project,
        tokens,
        client,
    } = loaded;
    let kinds = Kinds::new(&config, project);
    let upstream = Upstream::new(&config, tokens, client);
    State::new(config, kinds, upstream)
}
